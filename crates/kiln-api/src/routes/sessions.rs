use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use kiln_services::sessions::{sandbox_path, Action, CreateSession};
use serde_json::Value;

use super::sessions_models::*;
use super::v1::auth::Client;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_range, CurrentUser, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

const MAX_PATH_BYTES: usize = 4096;
const MAX_PAGE_SIZE: i64 = 100;

/// Create a new session: a sandbox of the sample's environment, its repository at
/// base_commit in /testbed. Answers at once with `creating`; GET the session to wait.
#[utoipa::path(post, path = "/sessions", tag = "sessions", operation_id = "create_session_sessions_post",
    request_body = SessionCreateRequest,
    responses((status = 201, body = SessionCreateResponse),
              (status = 402, description = "insufficient_balance", body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    Client(client): Client,
    ValidJson(req): ValidJson<SessionCreateRequest>,
) -> ApiResult<(StatusCode, Json<SessionCreateResponse>)> {
    for (name, value) in [("dataset", &req.dataset), ("sample_id", &req.sample_id)] {
        if value.is_empty() {
            return Err(ApiError::invalid(
                &["body", name],
                "String should have at least 1 character",
                "string_too_short",
            ));
        }
    }
    let session = state
        .kiln
        .sessions
        .create(CreateSession::sample(
            &me.user.user_id,
            &req.dataset,
            &req.sample_id,
            req.ttl_minutes,
        ))
        .await?;
    state
        .kiln
        .orgs
        .record_acting(&me, "session.created", &session.session_id, &client)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(SessionCreateResponse {
            session_id: session.session_id,
            status: session.status.into(),
            expires_at: session.expires_at,
        }),
    ))
}

/// List the caller's sessions, newest first.
#[utoipa::path(get, path = "/sessions", tag = "sessions", operation_id = "list_sessions_sessions_get",
    params(SessionListParams),
    responses((status = 200, body = SessionListResponse), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidQuery(params): ValidQuery<SessionListParams>,
) -> ApiResult<Json<SessionListResponse>> {
    if let Some(page) = params.page {
        check_range(&["query", "page"], page, Some(1), None)?;
    }
    if let Some(size) = params.page_size {
        check_range(&["query", "page_size"], size, Some(1), Some(MAX_PAGE_SIZE))?;
    }
    let page = params.page.unwrap_or(1) as u64;
    let size = params.page_size.unwrap_or(MAX_PAGE_SIZE) as u64;
    let offset = (page - 1).saturating_mul(size);
    let (sessions, total) = state
        .kiln
        .sessions
        .list(&me.user.user_id, size, offset)
        .await?;
    let has_more = offset.saturating_add(sessions.len() as u64) < total;
    Ok(Json(SessionListResponse {
        total_count: total,
        has_more,
        sessions: sessions.into_iter().map(SessionView::from).collect(),
    }))
}

/// Get a session. While it is `creating`, this waits (up to the long-poll limit) and
/// answers the moment it becomes `ready` or `error`.
#[utoipa::path(get, path = "/sessions/{session_id}", tag = "sessions", operation_id = "get_session_sessions__session_id__get",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(session_id): ValidPath<String>,
) -> ApiResult<Json<SessionView>> {
    let session = state
        .kiln
        .sessions
        .get(&me.user.user_id, &session_id, true)
        .await?;
    Ok(Json(session.into()))
}

/// Close a session: its sandbox is destroyed and its time stops counting.
#[utoipa::path(delete, path = "/sessions/{session_id}", tag = "sessions", operation_id = "close_session_sessions__session_id__delete",
    params(("session_id" = String, Path)),
    responses((status = 200, body = SessionDeleteResponse), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn close(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    Client(client): Client,
    ValidPath(session_id): ValidPath<String>,
) -> ApiResult<Json<SessionDeleteResponse>> {
    let ended = state
        .kiln
        .sessions
        .close(&me.user.user_id, &session_id)
        .await?;
    state
        .kiln
        .orgs
        .record_acting(&me, "session.closed", &session_id, &client)
        .await;
    Ok(Json(SessionDeleteResponse {
        message: format!("session {session_id} closed"),
        duration_seconds: duration_seconds(&ended).unwrap_or(0.0),
    }))
}

/// Start a command (bash) in a session. Commands of one session run one at a time, in
/// the order received; GET the interaction to wait for the result.
#[utoipa::path(post, path = "/sessions/{session_id}/exec", tag = "sessions", operation_id = "execute_command_sessions__session_id__exec_post",
    params(("session_id" = String, Path)), request_body = ExecRequest,
    responses((status = 202, body = ExecStartResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn exec(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(session_id): ValidPath<String>,
    ValidJson(req): ValidJson<ExecRequest>,
) -> ApiResult<(StatusCode, Json<ExecStartResponse>)> {
    // The service checks the command and its timeout; out of `u32`'s range is out of its
    // range too (0 is below the minimum, `u32::MAX` above the maximum), so it says which.
    let timeout = req.command_timeout.map_or(
        state.kiln.sessions.config().default_command_timeout_secs,
        |t| u32::try_from(t.max(0)).unwrap_or(u32::MAX),
    );
    let action = Action::Exec {
        command: req.command,
        timeout_secs: timeout,
    };
    let record = state
        .kiln
        .sessions
        .submit(&me.user.user_id, &session_id, action)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExecStartResponse {
            interaction_id: record.interaction_id,
            status: "pending".into(),
        }),
    ))
}

/// Get an interaction. While it is unfinished (`exit_code` null), this waits (up to
/// the long-poll limit) and answers the moment it finishes.
#[utoipa::path(get, path = "/sessions/{session_id}/interactions/{interaction_id}", tag = "sessions",
    operation_id = "get_interaction_sessions__session_id__interactions__interaction_id__get",
    params(("session_id" = String, Path), ("interaction_id" = String, Path)),
    responses((status = 200, body = ExecCommandInteraction), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn interaction(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((session_id, interaction_id)): ValidPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let record = state
        .kiln
        .sessions
        .interaction(&me.user.user_id, &session_id, &interaction_id, true)
        .await?;
    Ok(Json(interaction_json(&record)))
}

fn check_path(loc: &str, path: &str) -> ApiResult<()> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(ApiError::invalid(
            &["body", loc],
            format!("a file path of 1 to {MAX_PATH_BYTES} bytes without NUL is required"),
            "value_error",
        ));
    }
    Ok(())
}

/// Replace a string in a file: it must occur exactly once (SWE-agent's rule); otherwise
/// nothing changes and `success` is false with a message saying how many were found.
#[utoipa::path(post, path = "/sessions/{session_id}/str_replace", tag = "sessions",
    operation_id = "string_replace_sessions__session_id__str_replace_post",
    params(("session_id" = String, Path)), request_body = StringReplaceRequest,
    responses((status = 200, body = StringReplaceResponse), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn str_replace(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(session_id): ValidPath<String>,
    ValidJson(req): ValidJson<StringReplaceRequest>,
) -> ApiResult<Json<StringReplaceResponse>> {
    check_path("file_path", &req.file_path)?;
    if req.str_to_replace.is_empty() {
        return Err(ApiError::invalid(
            &["body", "str_to_replace"],
            "String should have at least 1 character",
            "string_too_short",
        ));
    }
    let max = state.kiln.sessions.config().max_upload_bytes;
    if req.str_to_replace.len() + req.str_to_insert.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "str_to_replace and str_to_insert together exceed {max} bytes"
        )));
    }
    let action = Action::StrReplace {
        path: sandbox_path(&req.file_path),
        old: req.str_to_replace,
        new: req.str_to_insert,
    };
    let (_, outcome) = state
        .kiln
        .sessions
        .submit_and_wait(&me.user.user_id, &session_id, action)
        .await?;
    if outcome.exit_code == kiln_services::sessions::INFRA_EXIT_CODE {
        return Err(ApiError::Internal(outcome.message.unwrap_or_default()));
    }
    Ok(Json(StringReplaceResponse {
        success: outcome.success,
        message: outcome.message.unwrap_or_default(),
    }))
}

/// Upload a file (base64) into the session; parent directories are created.
#[utoipa::path(post, path = "/sessions/{session_id}/upload", tag = "sessions",
    operation_id = "upload_file_sessions__session_id__upload_post",
    params(("session_id" = String, Path)), request_body = FileUploadRequest,
    responses((status = 200, body = FileUploadResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(session_id): ValidPath<String>,
    ValidJson(req): ValidJson<FileUploadRequest>,
) -> ApiResult<Json<FileUploadResponse>> {
    check_path("file_path", &req.file_path)?;
    let content = base64::engine::general_purpose::STANDARD
        .decode(req.content_base64.trim())
        .map_err(|e| {
            ApiError::invalid(
                &["body", "content_base64"],
                format!("not valid base64: {e}"),
                "value_error",
            )
        })?;
    let max = state.kiln.sessions.config().max_upload_bytes;
    if content.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the file is {} bytes; uploads are limited to {max}",
            content.len()
        )));
    }
    let size = content.len() as u64;
    let path = sandbox_path(&req.file_path);
    let action = Action::Upload {
        path: path.clone(),
        content,
        executable: req.make_executable,
    };
    let (_, outcome) = state
        .kiln
        .sessions
        .submit_and_wait(&me.user.user_id, &session_id, action)
        .await?;
    if outcome.exit_code == kiln_services::sessions::INFRA_EXIT_CODE {
        return Err(ApiError::Internal(outcome.message.unwrap_or_default()));
    }
    Ok(Json(FileUploadResponse {
        success: outcome.success,
        message: outcome.message.unwrap_or_default(),
        file_path: path,
        size_bytes: if outcome.success { size } else { 0 },
    }))
}

/// Start verification: the sample's tests run against the session's current state, as
/// the SWE-bench harness runs them; the session is left as it was. Queued behind the
/// session's earlier commands. An empty body is accepted.
#[utoipa::path(post, path = "/sessions/{session_id}/verify", tag = "sessions",
    operation_id = "start_verification_sessions__session_id__verify_post",
    params(("session_id" = String, Path)),
    responses((status = 202, body = VerifyStartResponse), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn verify(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(session_id): ValidPath<String>,
) -> ApiResult<(StatusCode, Json<VerifyStartResponse>)> {
    let job = state
        .kiln
        .sessions
        .start_verification(&me.user.user_id, &session_id)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(VerifyStartResponse {
            job_id: job.job_id,
            status: job.status.into(),
            started_at: job.created_at,
        }),
    ))
}

/// Get a verification job. While it is unfinished, this waits (up to the long-poll
/// limit) and answers the moment it finishes.
#[utoipa::path(get, path = "/sessions/{session_id}/verify/{job_id}", tag = "sessions",
    operation_id = "get_verification_job_sessions__session_id__verify__job_id__get",
    params(("session_id" = String, Path), ("job_id" = String, Path)),
    responses((status = 200, body = VerificationJobView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn verification_job(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((session_id, job_id)): ValidPath<(String, String)>,
) -> ApiResult<Json<VerificationJobView>> {
    let job = state
        .kiln
        .sessions
        .verification_job(&me.user.user_id, &session_id, &job_id, true)
        .await?;
    Ok(Json(job.into()))
}
