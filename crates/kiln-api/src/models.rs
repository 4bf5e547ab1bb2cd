//! The shapes every route shares: the FastAPI error bodies and the contract's timestamps.
//! Each resource's own request and response types sit beside its routes (`routes/`).
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

/// RFC 3339 in UTC with a `Z`, microsecond precision: what the SDK's parser expects.
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

pub fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// A FastAPI validation error item.
#[derive(Serialize, ToSchema)]
pub struct ValidationError {
    /// Where the problem is: `body`/`query`/`path`, then field names and list indices
    /// (integers, as FastAPI sends them).
    #[schema(schema_with = loc_schema)]
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `loc` items are strings or integers: FastAPI's own `ValidationError` schema.
fn loc_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .title(Some("Location"))
        .items(
            AnyOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(ObjectBuilder::new().schema_type(Type::Integer)),
        )
        .build()
}

#[derive(Serialize, ToSchema)]
pub struct HTTPValidationError {
    pub detail: Vec<ValidationError>,
}

/// Every non-validation error: `{"detail": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: ErrorInfo,
}

/// Details about an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}
