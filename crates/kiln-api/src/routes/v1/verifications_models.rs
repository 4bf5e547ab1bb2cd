//! Shapes of an instance's list of verification jobs.
use chrono::{DateTime, Utc};
use kiln_domain::VerificationJobRecord;
use kiln_verify::{Grading, SuccessFailure};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt, ErrorInfo};
use crate::routes::sessions_models::JobStatusView;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerificationListParams {
    /// Jobs per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The last job id of the previous page (its `next_after`).
    pub after: Option<String>,
}

/// How many of one group of expected tests passed and failed.
#[derive(Serialize, ToSchema)]
pub struct TestGroupCounts {
    pub passed: u64,
    pub failed: u64,
}

impl From<&SuccessFailure> for TestGroupCounts {
    fn from(group: &SuccessFailure) -> Self {
        Self {
            passed: group.success.len() as u64,
            failed: group.failure.len() as u64,
        }
    }
}

/// One verification job of the instance, without its log (`GET /api/v1/sessions/{id}/
/// verify/{job_id}` has the whole result).
#[derive(Serialize, ToSchema)]
pub struct VerificationSummary {
    pub job_id: String,
    pub status: JobStatusView,
    /// Whether the work is resolved; `null` until the job completed.
    pub resolved: Option<bool>,
    /// FAIL_TO_PASS counts, when graded by the SWE-bench rules.
    pub fail_to_pass: Option<TestGroupCounts>,
    /// PASS_TO_PASS counts, when graded by the SWE-bench rules.
    pub pass_to_pass: Option<TestGroupCounts>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it completed, failed or was cancelled.
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<ErrorInfo>,
}

impl From<VerificationJobRecord> for VerificationSummary {
    fn from(j: VerificationJobRecord) -> Self {
        let tests = j.result.as_ref().and_then(|r| match &r.grading {
            Grading::Swebench(g) => Some(&g.tests_status),
            Grading::Codeset(_) => None,
        });
        Self {
            job_id: j.job_id,
            status: j.status.into(),
            resolved: j.result.as_ref().map(|r| r.is_success),
            fail_to_pass: tests.map(|t| (&t.fail_to_pass).into()),
            pass_to_pass: tests.map(|t| (&t.pass_to_pass).into()),
            created_at: j.created_at,
            finished_at: j.completed_at,
            error: j.error_code.map(|code| ErrorInfo {
                code,
                message: j.error_message.unwrap_or_default(),
            }),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VerificationListView {
    /// Newest first.
    pub items: Vec<VerificationSummary>,
    /// Pass as `after` for the next page; absent when this page is the last.
    pub next_after: Option<String>,
}
