//! How the store keeps instants: UTC with microsecond precision on both backends.
//!
//! PostgreSQL's TIMESTAMPTZ holds microseconds; SQLite has no time type, so the SQLite store
//! writes one fixed-width text form. Truncating to microseconds before every write makes a
//! value read back equal to the value written, whichever backend holds it.
use chrono::{DateTime, SubsecRound, Utc};

use crate::StoreError;

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
}
