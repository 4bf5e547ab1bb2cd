//! How the store keeps instants: UTC with microsecond precision on both backends, through
//! one Rust type, [`Stamp`], that every query binds and reads.
//!
//! PostgreSQL's TIMESTAMPTZ holds microseconds; SQLite has no time type, so its columns hold
//! one fixed-width text form. The two column forms are fixed by released migrations and stay
//! as they are; what is shared is the path: `Stamp` truncates to microseconds before every
//! write, so a value read back equals the value written, whichever backend holds it, and a
//! comparison in SQL (`expires_at > $2`) compares instants on both.
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

use crate::StoreError;

/// An instant as a query argument or a column value: the only way timestamps enter or leave
/// SQL in this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Stamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

/// `Some(stamp)` for `Some(instant)`: optional columns.
pub(crate) fn opt(value: Option<DateTime<Utc>>) -> Option<Stamp> {
    value.map(Stamp)
}

/// `value` without its sub-microsecond digits: exactly what either backend can keep.
pub(crate) fn to_micros(value: DateTime<Utc>) -> DateTime<Utc> {
    value.trunc_subsecs(6)
}

/// The SQLite column form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always six fractional digits, so
/// that comparing two stored strings compares the instants (for years 0000–9999).
pub(crate) fn to_sqlite_text(value: DateTime<Utc>) -> String {
    to_micros(value)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub(crate) fn from_sqlite_text(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

impl Type<Sqlite> for Stamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Stamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(to_sqlite_text(self.0), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Stamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Self(from_sqlite_text(text)?))
    }
}

impl Type<Postgres> for Stamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Stamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(to_micros(self.0), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Stamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sqlite_text_is_fixed_width_and_round_trips_microseconds() {
        let whole = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 1).unwrap();
        assert_eq!(to_sqlite_text(whole), "2024-02-29T23:59:01.000000Z");

        let fine = whole + chrono::Duration::nanoseconds(123_456_789);
        let text = to_sqlite_text(fine);
        assert_eq!(text, "2024-02-29T23:59:01.123456Z");
        assert_eq!(from_sqlite_text(&text).unwrap(), to_micros(fine));
        assert_ne!(to_micros(fine), fine, "nanoseconds must be dropped");
    }

    #[test]
    fn sqlite_text_order_is_time_order() {
        let a = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 9).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        let c = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 10).unwrap();
        assert!(to_sqlite_text(a) < to_sqlite_text(b));
        assert!(to_sqlite_text(b) < to_sqlite_text(c));
    }

    #[test]
    fn garbage_is_reported_as_corrupt() {
        assert!(matches!(
            from_sqlite_text("yesterday"),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// The SQLite column form is what released databases hold: `Stamp` must write exactly it
    /// and read it back, so that existing files open unchanged.
    #[tokio::test]
    async fn stamp_binds_and_reads_the_sqlite_column_form() {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let fine = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 1).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let row = sqlx::query(
            "SELECT typeof($1) AS kind, $1 AS bound, '2024-02-29T23:59:01.123456Z' AS stored",
        )
        .bind(Stamp(fine))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(row.get::<String, _>("kind"), "text");
        assert_eq!(row.get::<String, _>("bound"), "2024-02-29T23:59:01.123456Z");
        assert_eq!(row.get::<Stamp, _>("stored"), Stamp(to_micros(fine)));
        let garbage = sqlx::query("SELECT 'yesterday' AS t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(garbage.try_get::<Stamp, _>("t").is_err());
    }
}
