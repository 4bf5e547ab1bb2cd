//! The `record` column: a [`SampleRecord`] as JSON text, identical on both backends.
use crate::{SampleRecord, StoreError};

pub(crate) fn encode(record: &SampleRecord) -> Result<String, StoreError> {
    serde_json::to_string(record)
        .map_err(|e| StoreError::Corrupt(format!("sample record does not serialize: {e}")))
}

pub(crate) fn decode(text: &str) -> Result<SampleRecord, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("sample record is not valid JSON: {e}")))
}
