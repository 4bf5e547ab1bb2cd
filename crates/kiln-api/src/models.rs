//! The contract's JSON shapes (`spec/codeset-openapi.json`), as the API sends and
//! receives them. Store records are mapped to these here and nowhere else.
use chrono::{DateTime, SecondsFormat, Utc};
use kiln_domain::{ApiKeyRecord, Dataset, Sample, User};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::{IntoParams, ToSchema};

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

/// Response model for health check endpoint.
#[derive(Serialize, ToSchema)]
pub struct HealthCheckResponse {
    pub status: String,
    pub service: String,
    pub version: String,
    pub timestamp: String,
}

/// Represents an API key for a user. `key` is the full secret only in the response
/// that creates it; listings show it masked.
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub key_id: String,
    pub key: String,
    pub name: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn from_record(record: &ApiKeyRecord, key: String) -> Self {
        Self {
            key_id: record.key_id.clone(),
            key,
            name: record.name.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            is_active: record.revoked_at.is_none()
                && record.expires_at.is_none_or(|e| e > Utc::now()),
            last_used_at: record.last_used_at,
        }
    }
}

/// Represents a user in the system.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub github_id: Option<String>,
    pub github_login: Option<String>,
    pub api_keys: Vec<ApiKey>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    #[serde(serialize_with = "rfc3339_opt")]
    pub terms_accepted_at: Option<DateTime<Utc>>,
}

impl UserView {
    pub fn new(user: User, keys: &[ApiKeyRecord]) -> Self {
        Self {
            api_keys: keys
                .iter()
                .map(|k| ApiKey::from_record(k, k.masked.clone()))
                .collect(),
            user_id: user.user_id,
            name: user.name,
            email: user.email,
            github_id: user.github_id,
            github_login: user.github_login,
            created_at: user.created_at,
            last_login_at: user.last_login_at,
            is_active: user.is_active,
            terms_accepted_at: user.terms_accepted_at,
        }
    }
}

/// Request to create a new API key for a user.
#[derive(Deserialize, Default, ToSchema)]
pub struct ApiKeyCreateRequest {
    pub name: Option<String>,
}

/// Response for creating an API key.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreateResponse {
    pub api_key: ApiKey,
}

/// Request to revoke an API key.
#[derive(Deserialize, ToSchema)]
pub struct ApiKeyRevokeRequest {
    pub key_id: String,
}

/// Response for revoking an API key.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyRevokeResponse {
    pub message: String,
    pub revoked_key_id: String,
}

/// Request to refresh an access token.
#[derive(Deserialize, ToSchema)]
pub struct TokenRefreshRequest {
    pub refresh_token: String,
}

/// Response for token refresh. `refresh_token` is a Kiln addition: refresh tokens
/// rotate, so every refresh hands out the next one.
#[derive(Serialize, ToSchema)]
pub struct TokenRefreshResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// Information about a dataset.
#[derive(Serialize, ToSchema)]
#[schema(as = Dataset)]
pub struct DatasetView {
    pub name: String,
    pub description: Option<String>,
    pub sample_count: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub created_at: Option<DateTime<Utc>>,
}

impl From<Dataset> for DatasetView {
    fn from(d: Dataset) -> Self {
        Self {
            name: d.name,
            description: d.description,
            sample_count: d.sample_count,
            created_at: Some(d.created_at),
        }
    }
}

/// Type of verification tool used.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerificationTool {
    TestSuite,
    StaticAnalysis,
    Linter,
    Custom,
}

/// Information about a software engineering task sample.
#[derive(Serialize, ToSchema)]
#[schema(as = Sample)]
pub struct SampleView {
    pub sample_id: String,
    pub description: Option<String>,
    pub language: String,
    #[schema(value_type = VerificationTool)]
    pub verifier: String,
    pub dataset: Option<String>,
    pub version: Option<i64>,
    pub version_description: Option<String>,
    pub latest: Option<bool>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub created_at: Option<DateTime<Utc>>,
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    pub patch: String,
    pub non_code_patch: String,
    pub test_patch: String,
    pub problem_statement: String,
    pub hints_text: String,
    pub environment_setup_commit: String,
    pub fail_to_pass: Vec<String>,
    pub pass_to_pass: Vec<String>,
    pub fail_to_fail: Vec<String>,
    /// Kiln addition: the environment image sessions of this sample run in.
    pub image: Option<String>,
}

impl From<Sample> for SampleView {
    fn from(s: Sample) -> Self {
        let r = s.record;
        Self {
            sample_id: s.sample_id,
            description: r.description,
            language: r.language,
            verifier: r.verifier,
            dataset: Some(s.dataset),
            version: Some(s.version),
            version_description: s.version_description,
            latest: Some(s.latest),
            created_at: Some(s.created_at),
            instance_id: r.instance_id,
            repo: r.repo,
            base_commit: r.base_commit,
            patch: r.patch,
            non_code_patch: r.non_code_patch,
            test_patch: r.test_patch,
            problem_statement: r.problem_statement,
            hints_text: r.hints_text,
            environment_setup_commit: r.environment_setup_commit,
            fail_to_pass: r.fail_to_pass,
            pass_to_pass: r.pass_to_pass,
            fail_to_fail: r.fail_to_fail,
            image: r.image,
        }
    }
}

/// Response for listing samples with pagination.
#[derive(Serialize, ToSchema)]
pub struct SampleListResponse {
    pub samples: Vec<SampleView>,
    pub total_count: u64,
    pub page: u64,
    pub page_size: u64,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SampleListParams {
    /// Filter samples by dataset name
    pub dataset: Option<String>,
    /// Search for samples by instance_id
    pub search: Option<String>,
    /// Page number (1-based). If not provided, returns all samples
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Number of samples per page (max 100). If not provided, returns all samples
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadParams {
    /// A specific version of the sample; the latest when absent.
    #[param(minimum = 1)]
    pub version: Option<i64>,
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
