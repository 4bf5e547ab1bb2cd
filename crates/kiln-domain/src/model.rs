//! Plain records as the store keeps them. They are not the HTTP shapes: the API crate
//! maps them to the contract's JSON.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub github_id: Option<String>,
    pub github_login: Option<String>,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub github_id: Option<String>,
    pub github_login: Option<String>,
    pub is_admin: bool,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub terms_accepted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub key_id: String,
    pub user_id: String,
    pub name: Option<String>,
    /// Hex SHA-256 of the full secret; the secret itself is never stored.
    pub key_hash: String,
    /// What listings show instead of the secret, e.g. `kiln_AbCd…wXyZ`.
    pub masked: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub masked: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    /// The token's `jti`.
    pub token_id: String,
    /// All tokens rotated from one sign-in share a family; reuse revokes the family.
    pub family_id: String,
    pub user_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// First use of a live token: it is now marked used.
    Consumed { user_id: String, family_id: String },
    /// The token was already used or its family revoked: a replay.
    Reused { user_id: String, family_id: String },
    /// Past `expires_at`.
    Expired,
    /// No such token.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub description: Option<String>,
    /// Number of samples (latest versions only).
    pub sample_count: i64,
    pub created_at: DateTime<Utc>,
    /// The account (an organization's) that alone sees a private dataset; `None`: public.
    pub owner_user_id: Option<String>,
}

impl Dataset {
    /// Whether the account `viewer` (the org a request acts in) may see this dataset.
    pub fn visible_to(&self, viewer: &str) -> bool {
        self.owner_user_id
            .as_deref()
            .is_none_or(|owner| owner == viewer)
    }
}

/// One sample version. The SWE-bench fields are columns of their own where the store
/// queries them; everything a sample carries is in `record`, verbatim, so that no
/// field a dataset ships is lost and later features (verifier configuration, images)
/// need no schema change to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub dataset: String,
    pub sample_id: String,
    pub version: i64,
    pub latest: bool,
    pub version_description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    pub record: SampleRecord,
}

/// The normalized content of a sample (what `kiln datasets import` produces).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SampleRecord {
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    #[serde(default)]
    pub patch: String,
    #[serde(default)]
    pub test_patch: String,
    #[serde(default)]
    pub non_code_patch: String,
    #[serde(default)]
    pub problem_statement: String,
    #[serde(default)]
    pub hints_text: String,
    #[serde(default)]
    pub environment_setup_commit: String,
    #[serde(default)]
    pub fail_to_pass: Vec<String>,
    #[serde(default)]
    pub pass_to_pass: Vec<String>,
    #[serde(default)]
    pub fail_to_fail: Vec<String>,
    #[serde(default)]
    pub language: String,
    /// `test_suite`, `static_analysis`, `linter` or `custom`.
    #[serde(default = "default_verifier")]
    pub verifier: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The environment image this sample runs in, e.g. `kiln-demo/python:1`.
    #[serde(default)]
    pub image: Option<String>,
    /// SWE-bench's own `version` field (e.g. "3.0"), which is not our version number.
    #[serde(default)]
    pub swebench_version: Option<String>,
    /// Every field of the source record that Kiln does not model, kept verbatim.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_verifier() -> String {
    "test_suite".to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewSample {
    pub sample_id: String,
    pub record: SampleRecord,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SampleImport {
    pub dataset: String,
    pub description: Option<String>,
    pub version_description: Option<String>,
    pub samples: Vec<NewSample>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Samples that did not exist before.
    pub created: u64,
    /// Samples that got a new version.
    pub updated: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SampleQuery {
    /// Only the samples of datasets this account may see (public ones and its org's
    /// private ones); `None`: every dataset (the server's own work: validation, grading).
    pub visible_to: Option<String>,
    pub dataset: Option<String>,
    /// Case-insensitive substring of `instance_id`.
    pub search: Option<String>,
    /// `None`: every matching sample.
    pub limit: Option<u64>,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplePage {
    pub samples: Vec<Sample>,
    /// All matches, regardless of limit/offset.
    pub total: u64,
}
