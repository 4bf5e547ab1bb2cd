//! Exec in an instance: synchronous, history, Server-Sent Events streams, kill.
//!
//! A stream's frames are SSE events named `start`, `stdout`, `stderr`, `exit` and `error`,
//! each with an `id:` (the offset of the server's spool just past it) and JSON `data:`:
//! output as `{"text": …}` when the chunk is UTF-8, else `{"base64": …}`. A client that
//! reconnects to `GET …/exec/{exec_id}/stream` with `Last-Event-ID` gets every later frame
//! once, in order.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use futures_util::Stream;
use kiln_services::instances::exec::{ExecCommand, ExecMode, ExecSpec, ExecStream};
use kiln_services::ServiceError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::exec_models::*;
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{check_range, CurrentUser, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

const DEFAULT_PAGE: i64 = 50;
/// Names the exec of a stream before its first frame arrives.
const EXEC_ID_HEADER: &str = "x-kiln-exec-id";

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(exec, list))
        .routes(routes!(stream))
        .routes(routes!(get))
        .routes(routes!(resume))
        .routes(routes!(kill))
}

/// Run a command in an instance. By default the answer is the finished exec (200); with
/// `background: true` it is 202 at once. Execs run beside each other and beside the
/// Codeset session's own commands; a client that goes away does not stop one.
#[utoipa::path(post, path = "/instances/{id}/exec", tag = "exec",
    params(("id" = String, Path)), request_body = ExecBody,
    responses((status = 200, body = ExecView), (status = 202, body = ExecStartedView),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
async fn exec(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidJson(body): ValidJson<ExecBody>,
) -> ApiResult<Response> {
    let mode = if body.background {
        ExecMode::Background
    } else {
        ExecMode::Sync
    };
    let spec = spec_of(body, mode)?;
    let record = state
        .kiln
        .instances
        .exec(&me.user.user_id, &id, spec)
        .await?;
    Ok(match mode {
        ExecMode::Sync => Json(ExecView::from(record)).into_response(),
        _ => (
            StatusCode::ACCEPTED,
            Json(ExecStartedView {
                exec_id: record.exec_id,
                status: "running".into(),
            }),
        )
            .into_response(),
    })
}

/// Run a command and stream its output as Server-Sent Events: `start` (`{"exec_id"}`),
/// `stdout`/`stderr` (`{"text"}` or `{"base64"}`), then `exit` (`{"status","exit_code",
/// "signal","timed_out","duration_ms"}`) or `error` (`{"message"}`). The exec id is also in
/// the `X-Kiln-Exec-Id` header. Dropping the connection does not stop the command unless
/// `kill_on_disconnect` is set; resume with `GET …/exec/{exec_id}/stream`.
#[utoipa::path(post, path = "/instances/{id}/exec/stream", tag = "exec",
    params(("id" = String, Path)), request_body = ExecBody,
    responses((status = 200, content_type = "text/event-stream", description = "the exec's frames"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
async fn stream(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidJson(body): ValidJson<ExecBody>,
) -> ApiResult<Response> {
    let kill_on_disconnect = body.kill_on_disconnect;
    let spec = spec_of(body, ExecMode::Stream)?;
    let instances = &state.kiln.instances;
    let record = instances.exec(&me.user.user_id, &id, spec).await?;
    let frames = instances
        .exec_stream(
            &me.user.user_id,
            &id,
            &record.exec_id,
            0,
            kill_on_disconnect,
        )
        .await?;
    Ok(sse_response(&state, frames, &record.exec_id))
}

/// Resume (or attach to) the stream of a background or streamed exec: every frame after
/// `Last-Event-ID` (header, or `last_event_id` in the query), once, in order; from the
/// start without one. Streams are kept `exec.stream_retention_secs` after the exec ended.
#[utoipa::path(get, path = "/instances/{id}/exec/{exec_id}/stream", tag = "exec",
    params(("id" = String, Path), ("exec_id" = String, Path), StreamParams,
           ("Last-Event-ID" = Option<String>, Header, description = "the last event id received")),
    responses((status = 200, content_type = "text/event-stream", description = "the exec's frames"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
async fn resume(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, exec_id)): ValidPath<(String, String)>,
    ValidQuery(params): ValidQuery<StreamParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (place, name, value) = match headers.get("last-event-id") {
        Some(value) => (
            "header",
            "Last-Event-ID",
            Some(value.to_str().unwrap_or("?")),
        ),
        None => ("query", "last_event_id", params.last_event_id.as_deref()),
    };
    let from = match value {
        Some(value) => parse_event_id(Some(value), place, name)?,
        None => 0,
    };
    let frames = state
        .kiln
        .instances
        .exec_stream(
            &me.user.user_id,
            &id,
            &exec_id,
            from,
            params.kill_on_disconnect,
        )
        .await
        .map_err(|e| match e {
            ServiceError::Validation(_) => ApiError::invalid(
                &[place, name],
                "not an event id of this stream",
                "value_error",
            ),
            other => other.into(),
        })?;
    Ok(sse_response(&state, frames, &exec_id))
}

/// An instance's execs, newest first.
#[utoipa::path(get, path = "/instances/{id}/exec", tag = "exec",
    params(("id" = String, Path), ExecListParams),
    responses((status = 200, body = ExecListView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<ExecListParams>,
) -> ApiResult<Json<ExecListView>> {
    if let Some(limit) = params.limit {
        check_range(&["query", "limit"], limit, Some(1), Some(100))?;
    }
    let limit = params.limit.unwrap_or(DEFAULT_PAGE) as u64;
    let items = state
        .kiln
        .instances
        .exec_list(&me.user.user_id, &id, params.after.as_deref(), limit)
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    let next_after = (items.len() as u64 == limit)
        .then(|| items.last().map(|e| e.exec_id.clone()))
        .flatten();
    Ok(Json(ExecListView {
        items: items.into_iter().map(ExecView::from).collect(),
        next_after,
    }))
}

/// One exec: its status, and its output once it ended.
#[utoipa::path(get, path = "/instances/{id}/exec/{exec_id}", tag = "exec",
    params(("id" = String, Path), ("exec_id" = String, Path)),
    responses((status = 200, body = ExecView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, exec_id)): ValidPath<(String, String)>,
) -> ApiResult<Json<ExecView>> {
    let record = state
        .kiln
        .instances
        .exec_get(&me.user.user_id, &id, &exec_id)
        .await?;
    Ok(Json(record.into()))
}

/// Signal a running exec's process group (every process of the command that did not leave
/// it): background, streamed, or synchronous (found by another request in the history
/// while it runs; its caller then gets the end). 409 until the agent has started it.
#[utoipa::path(post, path = "/instances/{id}/exec/{exec_id}/kill", tag = "exec",
    params(("id" = String, Path), ("exec_id" = String, Path)), request_body = KillBody,
    responses((status = 200, body = KillView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
async fn kill(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, exec_id)): ValidPath<(String, String)>,
    ValidJson(body): ValidJson<KillBody>,
) -> ApiResult<Json<KillView>> {
    let signal = match &body.signal {
        None => 15,
        Some(spec) => spec.number().ok_or_else(|| {
            ApiError::invalid(
                &["body", "signal"],
                "a signal is a name (TERM, KILL, INT, HUP, QUIT, USR1, USR2, CONT, STOP) or a number from 1 to 64",
                "value_error",
            )
        })?,
    };
    state
        .kiln
        .instances
        .exec_kill(&me.user.user_id, &id, &exec_id, signal)
        .await?;
    Ok(Json(KillView { exec_id, signal }))
}

fn spec_of(body: ExecBody, mode: ExecMode) -> ApiResult<ExecSpec> {
    let command = match (body.command, body.argv) {
        (Some(command), None) => ExecCommand::Shell(command),
        (None, Some(argv)) => ExecCommand::Argv(argv),
        _ => {
            return Err(ApiError::invalid(
                &["body", "command"],
                "give exactly one of command (a shell command line) and argv",
                "value_error",
            ))
        }
    };
    let stdin = match (body.stdin, body.stdin_base64) {
        (None, None) => None,
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(encoded)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| {
                    ApiError::invalid(
                        &["body", "stdin_base64"],
                        format!("not base64: {e}"),
                        "value_error",
                    )
                })?,
        ),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                &["body", "stdin"],
                "give at most one of stdin and stdin_base64",
                "value_error",
            ))
        }
    };
    Ok(ExecSpec {
        command,
        // Out of `u32`'s range is out of the allowed range too; the service says which.
        timeout_secs: body
            .timeout_secs
            .map(|t| u32::try_from(t.max(0)).unwrap_or(u32::MAX)),
        cwd: body.cwd,
        env: body.env,
        stdin,
        mode,
    })
}

fn parse_event_id(value: Option<&str>, place: &str, name: &str) -> ApiResult<u64> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                &[place, name],
                "an event id is a number this server sent as an `id:`",
                "int_parsing",
            )
        })
}

fn sse_response(state: &AppState, frames: ExecStream, exec_id: &str) -> Response {
    let keep_alive = Duration::from_secs(state.kiln.instances.exec_config().keep_alive_secs);
    let mut response = Sse::new(events(frames))
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    if let Ok(value) = HeaderValue::from_str(exec_id) {
        response.headers_mut().insert(EXEC_ID_HEADER, value);
    }
    // Proxies (nginx) must pass frames on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn events(frames: ExecStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(frames, |mut frames| async move {
        let frame = frames.next().await?;
        // Compact JSON has no raw line breaks: one `data:` line per frame.
        let event = Event::default()
            .event(frame.kind.as_str())
            .id(frame.id.to_string())
            .data(frame.data_json().to_string());
        Some((Ok(event), frames))
    })
}
