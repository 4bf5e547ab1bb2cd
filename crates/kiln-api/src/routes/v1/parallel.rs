//! Eval runs on the server (`/v1/parallel/runs`): start, list, watch, cancel; the
//! caller's own runs only (anyone else's is a 404).
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use kiln_services::eval_runs::parallel::{NewRun, RunStatus};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parallel_models::*;
use crate::error::{ApiError, ApiResult};
use crate::extract::{CurrentUser, ValidJson, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(regrade))
        .routes(routes!(members))
        .routes(routes!(results))
        .routes(routes!(stream))
}

fn body(value: impl serde::Serialize) -> ApiResult<Json<RunBody>> {
    serde_json::to_value(value)
        .map(|v| Json(RunBody(v)))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Start an eval run; it runs in the background (watch it with `GET …/{run_id}` or
/// `…/stream`).
#[utoipa::path(post, path = "/parallel/runs", tag = "parallel", request_body = RunCreateRequest,
    responses((status = 201, body = RunBody), (status = 422, body = HTTPValidationError),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidJson(req): ValidJson<RunCreateRequest>,
) -> ApiResult<(StatusCode, Json<RunBody>)> {
    let new = NewRun {
        dataset: req.dataset,
        predictions: req.predictions,
        instance_ids: req.instance_ids,
        max_workers: req.max_workers,
        timeout_secs: req.timeout_secs,
        run_id: req.run_id,
    };
    let kiln = &state.kiln;
    let view = kiln
        .parallel_runs
        .start(&kiln.datasets, &me.user.user_id, new)
        .await?;
    Ok((StatusCode::CREATED, body(view)?))
}

/// The caller's runs, oldest first.
#[utoipa::path(get, path = "/parallel/runs", tag = "parallel",
    responses((status = 200, body = RunBody)), security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
) -> ApiResult<Json<RunBody>> {
    let runs = state.kiln.parallel_runs.list(&me.user.user_id);
    body(serde_json::json!({ "runs": runs }))
}

/// A run: status, counts, and the run report once it has ended.
#[utoipa::path(get, path = "/parallel/runs/{run_id}", tag = "parallel",
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(run_id): ValidPath<String>,
) -> ApiResult<Json<RunBody>> {
    body(state.kiln.parallel_runs.get(&me.user.user_id, &run_id)?)
}

/// Stop a run: no new instance starts, running ones end (their sessions closed).
#[utoipa::path(post, path = "/parallel/runs/{run_id}/cancel", tag = "parallel",
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(run_id): ValidPath<String>,
) -> ApiResult<Json<RunBody>> {
    body(state.kiln.parallel_runs.cancel(&me.user.user_id, &run_id)?)
}

/// Grade a finished run again from its saved test logs (nothing runs): each instance
/// with a complete test log gets a new `report.json`, the run report is rebuilt, and
/// the run's `regrade` says how many were re-graded and whose verdict changed.
/// Instances without a test log (the patch did not apply, infrastructure failures) keep
/// their report. 409 while the run is running or already being re-graded.
#[utoipa::path(post, path = "/parallel/runs/{run_id}/regrade", tag = "parallel",
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn regrade(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(run_id): ValidPath<String>,
) -> ApiResult<Json<RunBody>> {
    let kiln = &state.kiln;
    body(
        kiln.parallel_runs
            .regrade(&kiln.datasets, &me.user.user_id, &run_id)
            .await?,
    )
}

/// Every instance of the run with its state and timing.
#[utoipa::path(get, path = "/parallel/runs/{run_id}/members", tag = "parallel",
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn members(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(run_id): ValidPath<String>,
) -> ApiResult<Json<RunBody>> {
    let members = state
        .kiln
        .parallel_runs
        .members(&me.user.user_id, &run_id)?;
    body(serde_json::json!({ "members": members }))
}

/// The harness's `report.json` entries of the instances that have one.
#[utoipa::path(get, path = "/parallel/runs/{run_id}/results", tag = "parallel",
    params(("run_id" = String, Path)),
    responses((status = 200, body = RunBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn results(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(run_id): ValidPath<String>,
) -> ApiResult<Json<RunBody>> {
    body(
        state
            .kiln
            .parallel_runs
            .results(&me.user.user_id, &run_id)?,
    )
}

/// Server-sent events: a `progress` event (the run) at every change, `end` when it ends.
#[utoipa::path(get, path = "/parallel/runs/{run_id}/stream", tag = "parallel",
    params(("run_id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String),
              (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn stream(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(run_id): ValidPath<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let user = me.user.user_id.clone();
    let changes = state.kiln.parallel_runs.watch(&user, &run_id)?;
    let first = true;
    let events = futures_util::stream::unfold(
        (state, user, run_id, changes, first, false),
        |(state, user, run_id, mut changes, first, ended)| async move {
            if ended {
                return None;
            }
            if !first {
                // A run that cannot change any more ends the stream below.
                let _ = changes.changed().await;
            }
            changes.borrow_and_update();
            let view = state.kiln.parallel_runs.get(&user, &run_id).ok()?;
            let done = view.status != RunStatus::Running;
            let data = serde_json::to_string(&view).unwrap_or_default();
            let event = Event::default()
                .event(if done { "end" } else { "progress" })
                .data(data);
            Some((Ok(event), (state, user, run_id, changes, false, done)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
