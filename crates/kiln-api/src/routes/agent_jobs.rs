//! Agent jobs: an agent run over a repository in a sandbox; its diff and logs come back
//! as a tar.gz. The completion endpoint is the agent's, authenticated by the job's secret
//! alone (no user credentials), and answers an unknown job and a wrong secret alike.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use kiln_domain::AgentJobRecord;
use kiln_services::agent_jobs::{CreateAgentJob, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::sessions_models::JobStatusView;
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{CurrentUser, ValidJson, ValidPath, ValidQuery};
use crate::models::{rfc3339, rfc3339_opt, ErrorBody, HTTPValidationError};
use crate::AppState;

const DEFAULT_PAGE_SIZE: i64 = 20;

#[derive(Deserialize, ToSchema)]
pub struct AgentJobRequest {
    /// Repository: `owner/repo` (on the server's git host), an `https://` or `http://`
    /// git URL, or a local path / `file://` URL under the server's local repository root.
    pub repo: String,
    /// Branch, tag or commit; the repository's HEAD when absent.
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    /// Agent type: one of the server's configured agents (`script` is built in).
    #[schema(min_length = 1, max_length = 64)]
    pub agent_id: String,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum CompletionOutcome {
    Completed,
    Error,
}

#[derive(Deserialize, ToSchema)]
pub struct AgentJobCompletionRequest {
    /// Must match the job's completion secret (given to the agent as `KILN_JOB_SECRET`).
    pub secret: String,
    pub outcome: CompletionOutcome,
    /// When outcome is error, stored on the job.
    #[serde(default)]
    pub error_message: Option<String>,
}

/// An agent job as clients see it. The secret is never shown.
#[derive(Serialize, ToSchema)]
pub struct AgentJobView {
    pub job_id: String,
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub agent_id: String,
    pub status: JobStatusView,
    /// What the job is doing now, in words.
    pub progress: Option<String>,
    /// Whether `GET /agent-jobs/{job_id}/result` has an archive to give.
    pub result_available: bool,
    /// Why the job failed, when its status is `error`.
    pub error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<AgentJobRecord> for AgentJobView {
    fn from(job: AgentJobRecord) -> Self {
        Self {
            job_id: job.job_id,
            repo: job.repo,
            git_ref: job.git_ref,
            agent_id: job.agent_id,
            status: job.status.into(),
            progress: job.progress,
            result_available: job.result_path.is_some(),
            error: job.error_message,
            created_at: job.created_at,
            started_at: job.started_at,
            completed_at: job.completed_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AgentJobListResponse {
    /// Newest first.
    pub jobs: Vec<AgentJobView>,
    pub has_more: bool,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentJobListParams {
    /// Jobs per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Start an agent job: the repository is cloned and checked out at `ref`, and the agent's
/// command runs over it in a sandbox without network. Answers at once with `pending`.
#[utoipa::path(post, path = "/agent-jobs", tag = "agent-jobs", operation_id = "create_agent_job_agent_jobs_post",
    request_body = AgentJobRequest,
    responses((status = 202, body = AgentJobView),
              (status = 402, description = "insufficient_balance", body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidJson(req): ValidJson<AgentJobRequest>,
) -> ApiResult<(StatusCode, Json<AgentJobView>)> {
    let job = state
        .kiln
        .agent_jobs
        .create(CreateAgentJob {
            user_id: &me.user.user_id,
            repo: &req.repo,
            git_ref: req.git_ref.as_deref(),
            agent_id: &req.agent_id,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// List the caller's agent jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/agent-jobs", tag = "agent-jobs", operation_id = "list_agent_jobs_agent_jobs_get",
    params(AgentJobListParams),
    responses((status = 200, body = AgentJobListResponse), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidQuery(params): ValidQuery<AgentJobListParams>,
) -> ApiResult<Json<AgentJobListResponse>> {
    // The service checks the range; below 0 is below it as 0 is.
    let limit = u64::try_from(params.limit.unwrap_or(DEFAULT_PAGE_SIZE).max(0)).unwrap_or(0);
    let page = state
        .kiln
        .agent_jobs
        .list(&me.user.user_id, limit, params.cursor.as_deref())
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    Ok(Json(AgentJobListResponse {
        has_more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        jobs: page.jobs.into_iter().map(AgentJobView::from).collect(),
    }))
}

/// Get an agent job: status, progress, whether its result is available, its error.
#[utoipa::path(get, path = "/agent-jobs/{job_id}", tag = "agent-jobs", operation_id = "get_agent_job_agent_jobs__job_id__get",
    params(("job_id" = String, Path)),
    responses((status = 200, body = AgentJobView), (status = 404, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(job_id): ValidPath<String>,
) -> ApiResult<Json<AgentJobView>> {
    let job = state.kiln.agent_jobs.get(&me.user.user_id, &job_id).await?;
    Ok(Json(job.into()))
}

/// The agent reports its outcome, authenticated by the job's secret (no user
/// credentials). On a job that has already ended it changes nothing and answers the job
/// as it is. An unknown job and a wrong secret are the same 404.
#[utoipa::path(post, path = "/agent-jobs/{job_id}/completion", tag = "agent-jobs",
    operation_id = "agent_job_completion_agent_jobs__job_id__completion_post",
    params(("job_id" = String, Path)), request_body = AgentJobCompletionRequest,
    responses((status = 200, body = AgentJobView), (status = 404, body = ErrorBody), (status = 422, body = HTTPValidationError)))]
pub async fn completion(
    State(state): State<Arc<AppState>>,
    ValidPath(job_id): ValidPath<String>,
    ValidJson(req): ValidJson<AgentJobCompletionRequest>,
) -> ApiResult<Json<AgentJobView>> {
    let outcome = match req.outcome {
        CompletionOutcome::Completed => Outcome::Completed,
        CompletionOutcome::Error => {
            let message = req
                .error_message
                .unwrap_or_else(|| "the agent reported an error".into());
            Outcome::Error(message)
        }
    };
    let job = state
        .kiln
        .agent_jobs
        .complete(&job_id, &req.secret, outcome)
        .await?;
    Ok(Json(job.into()))
}

/// The job's result: a tar.gz with `diff.patch` (the workspace against `ref`, new files
/// included), `logs/stdout.log`, `logs/stderr.log` and `job.json`. 409 until it exists.
/// `agent_id` is accepted for compatibility with the contract and not used.
#[utoipa::path(get, path = "/agent-jobs/{job_id}/result", tag = "agent-jobs",
    operation_id = "get_agent_job_result_agent_jobs__job_id__result_get",
    params(("job_id" = String, Path),
           ("agent_id" = Option<Vec<String>>, Query, description = "Accepted for compatibility; not used")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(job_id): ValidPath<String>,
) -> ApiResult<Response> {
    let (job, path) = state
        .kiln
        .agent_jobs
        .result(&me.user.user_id, &job_id)
        .await?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::Internal(format!(
            "result of {} at {}: {e}",
            job.job_id,
            path.display()
        ))
    })?;
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{}.tar.gz\"", job.job_id))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    Ok(response)
}
