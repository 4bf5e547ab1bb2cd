//! Errors of inserts that refer to other records: a foreign-key violation becomes
//! [`StoreError::Missing`], a unique violation [`StoreError::Conflict`].
use crate::unique_violation::conflict_or;
use crate::StoreError;

/// `missing` names what the row refers to, as a caller would understand it ("session",
/// "user or sample version"): SQLite's message does not say which foreign key failed, so
/// both backends report the same description rather than the constraint.
pub(crate) fn insert_error(
    err: sqlx::Error,
    primary: &'static str,
    missing: &'static str,
) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_foreign_key_violation() {
            return StoreError::Missing(missing);
        }
    }
    conflict_or(err, primary, &[])
}
