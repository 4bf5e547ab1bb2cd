//! Kiln's storage. Everything that must survive a restart lives behind [`Store`]:
//! users, API keys, refresh tokens, datasets and samples (and, as the service grows,
//! sessions, interactions, verification jobs and the ledger).
//!
//! Two implementations share one test suite: [`sqlite::SqliteStore`] (the default, one
//! file, WAL) and [`postgres::PgStore`] (multi-node). [`connect`] picks one from the URL.
#![forbid(unsafe_code)]

mod error;
mod model;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use error::StoreError;
pub use model::*;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage interface. Every method is one atomic operation: an implementation
/// must never leave a half-applied change visible (imports in particular).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is ("sqlite" or "postgres"), for logs and `/health`.
    fn backend(&self) -> &'static str;

    /// Cheap liveness check of the connection.
    async fn ping(&self) -> Result<()>;

    // ---- users -------------------------------------------------------------------
    async fn create_user(&self, user: &NewUser) -> Result<User>;
    async fn get_user(&self, user_id: &str) -> Result<Option<User>>;
    async fn get_user_by_github_id(&self, github_id: &str) -> Result<Option<User>>;
    async fn count_users(&self) -> Result<u64>;
    async fn set_terms_accepted(&self, user_id: &str, at: DateTime<Utc>) -> Result<()>;
    async fn set_last_login(&self, user_id: &str, at: DateTime<Utc>) -> Result<()>;

    // ---- API keys ------------------------------------------------------------------
    /// Stores a new key. Only the hash of the secret is stored, never the secret.
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord>;
    /// The active (not revoked, not expired at `now`) key with this hash, and its user.
    async fn find_api_key(&self, key_hash: &str, now: DateTime<Utc>) -> Result<Option<(ApiKeyRecord, User)>>;
    /// All keys of a user, revoked ones included, oldest first.
    async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes the user's key. `false` if the user has no such active key.
    async fn revoke_api_key(&self, user_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool>;
    async fn touch_api_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<()>;

    // ---- refresh tokens -------------------------------------------------------------
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> Result<()>;
    /// Atomically marks the token used. Exactly one caller can ever get `Consumed`
    /// for a given token id, even under concurrency.
    async fn consume_refresh_token(&self, token_id: &str, now: DateTime<Utc>) -> Result<RefreshOutcome>;
    /// Revokes every token of a family (used when a reuse is detected).
    async fn revoke_refresh_family(&self, family_id: &str, at: DateTime<Utc>) -> Result<()>;

    // ---- datasets and samples ------------------------------------------------------
    /// All datasets, ordered by name, with the count of their latest samples.
    async fn list_datasets(&self) -> Result<Vec<Dataset>>;
    async fn get_dataset(&self, name: &str) -> Result<Option<Dataset>>;
    /// Creates the dataset if needed (keeping an existing description when `description`
    /// is `None`) and inserts every sample as a new version, moving `latest`; all in one
    /// transaction: on error nothing is imported.
    async fn import_samples(&self, import: &SampleImport) -> Result<ImportSummary>;
    /// Latest versions only, ordered by (dataset, sample_id).
    async fn list_samples(&self, query: &SampleQuery) -> Result<SamplePage>;
    /// One sample; the latest version when `version` is `None`.
    async fn get_sample(&self, dataset: &str, sample_id: &str, version: Option<i64>) -> Result<Option<Sample>>;
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing) or
/// `postgres://…` / `postgresql://…`. Migrations are applied before it returns.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
