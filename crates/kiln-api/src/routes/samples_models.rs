//! The contract's shapes of samples and their listing.
use chrono::{DateTime, Utc};
use kiln_domain::Sample;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::rfc3339_opt;

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
