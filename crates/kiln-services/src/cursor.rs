//! Keyset cursors, opaque to clients: `<number>:<id>` in base64url, where the number and
//! the id are the last row's sort key (a time in µs and an id, a version and a family).
//! Anything a server did not give out is a 422 on `cursor`.
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::error::{ServiceError, ServiceResult};

/// Longer cursors are refused before decoding (ids are short).
const MAX_CURSOR_CHARS: usize = 256;

pub(crate) fn encode(number: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{number}:{id}"))
}

/// The 422 of a cursor this server did not give out.
pub(crate) fn bad() -> ServiceError {
    ServiceError::invalid(
        &["cursor"],
        "cursor is not one this server gave out (use next_cursor from the previous page)",
        "value_error",
    )
}

pub(crate) fn decode(cursor: &str) -> ServiceResult<(i64, String)> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(bad());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (number, id) = text.split_once(':').ok_or_else(bad)?;
    let number: i64 = number.parse().map_err(|_| bad())?;
    if id.is_empty() || id.contains('\0') {
        return Err(bad());
    }
    Ok((number, id.to_string()))
}

/// A cursor after a row sorted by a time and an id.
pub(crate) fn encode_at(at: DateTime<Utc>, id: &str) -> String {
    encode(at.timestamp_micros(), id)
}

pub(crate) fn decode_at(cursor: &str) -> ServiceResult<(DateTime<Utc>, String)> {
    let (micros, id) = decode(cursor)?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let cursor = encode_at(at, "ajob_1");
        assert_eq!(decode_at(&cursor).expect("decodes"), (at, "ajob_1".into()));
        assert_eq!(
            decode(&encode(7, "py:3")).expect("decodes"),
            (7, "py:3".into())
        );
        for bad in ["", "!!", "bm90LWEtY3Vyc29y", &"A".repeat(300)] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let far = encode(i64::MAX, "x");
        assert!(decode_at(&far).is_err(), "a time out of range");
    }
}
