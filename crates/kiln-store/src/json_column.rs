//! JSON columns other than sample records (interaction requests, job results): JSON text on
//! both backends. Not JSONB on PostgreSQL, which refuses the `\u0000` escape that a command
//! or a test's output can contain.
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("JSON value does not serialize: {e}")))
}

/// `column` names the column in the error, should stored text not be JSON of a `T`.
pub(crate) fn decode<T: DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{column} is not valid JSON: {e}")))
}
