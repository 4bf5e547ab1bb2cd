//! Turning a database's unique-key violation into [`StoreError::Conflict`] naming the field.
use crate::StoreError;

/// Maps a unique violation to `Conflict(field)`: the first of `named` whose name appears in
/// the violated constraint (PostgreSQL names it, e.g. `users_github_id_key`) or in the
/// message (SQLite says `UNIQUE constraint failed: users.github_id`), else `primary`
/// (primary-key constraints are named `<table>_pkey`, without the column). Any other error
/// passes through.
pub(crate) fn conflict_or(
    err: sqlx::Error,
    primary: &'static str,
    named: &[&'static str],
) -> StoreError {
    let sqlx::Error::Database(db) = &err else {
        return err.into();
    };
    if !db.is_unique_violation() {
        return err.into();
    }
    let constraint = db.constraint().unwrap_or_default();
    let message = db.message();
    let field = named
        .iter()
        .copied()
        .find(|field| constraint.contains(field) || message.contains(&format!(".{field}")))
        .unwrap_or(primary);
    StoreError::Conflict(field)
}
