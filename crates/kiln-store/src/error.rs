use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("a record with the same {0} already exists")]
    Conflict(&'static str),
    /// A record refers to one that does not exist (a session of an unknown user or sample
    /// version, an interaction of an unknown session, …). Names what was missing.
    #[error("the referenced {0} does not exist")]
    Missing(&'static str),
    /// The caller asked for something the store's contract forbids (e.g. ending a session
    /// with a status other than `Closed` or `Terminated`): a bug in the caller.
    #[error("invalid store request: {0}")]
    Invalid(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open the database: {0}")]
    Open(String),
}
