//! Reading SQLite rows into records. Timestamps are the store's fixed-width text
//! (see [`crate::timestamp`]); booleans are INTEGER 0/1, which sqlx decodes as `bool`.
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::timestamp::from_sqlite_text;
use crate::Result;

pub(super) fn time(row: &SqliteRow, name: &str) -> Result<DateTime<Utc>> {
    let text: String = row.try_get(name)?;
    from_sqlite_text(&text)
}

pub(super) fn optional_time(row: &SqliteRow, name: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(name)?;
    text.as_deref().map(from_sqlite_text).transpose()
}
