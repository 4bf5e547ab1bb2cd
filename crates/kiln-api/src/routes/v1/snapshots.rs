//! Snapshots, checkpoints, rollback and forks of an instance.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::snapshots_models::*;
use crate::error::ApiResult;
use crate::extract::{check_range, CurrentUser, OptionalJson, ValidJson, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, delete))
        .routes(routes!(restore))
        .routes(routes!(rollback))
        .routes(routes!(fork))
}

/// Take a snapshot (`kind: snapshot`, the default) or a checkpoint of a ready instance's
/// files, at one consistent point in time (its processes are frozen for the copy and keep
/// running). Past the caller's quota (count or bytes): 429.
#[utoipa::path(post, path = "/instances/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "The instance (a session id works too)")),
    request_body = SnapshotCreateRequest,
    responses((status = 201, body = SnapshotView), (status = 404, body = ErrorBody),
              (status = 409, description = "not ready, or the name is taken", body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    OptionalJson(req): OptionalJson<SnapshotCreateRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotView>)> {
    let snapshot = state
        .kiln
        .instances
        .create_snapshot(&me.user.user_id, &id, req.name.as_deref(), req.kind.into())
        .await?;
    Ok((StatusCode::CREATED, Json(snapshot.into())))
}

/// List an instance's snapshots, newest first, with their size and parent. An instance
/// that has ended keeps its snapshots.
#[utoipa::path(get, path = "/instances/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path)),
    responses((status = 200, body = SnapshotListResponse), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<SnapshotListResponse>> {
    let snapshots = state
        .kiln
        .instances
        .list_snapshots(&me.user.user_id, &id)
        .await?;
    Ok(Json(SnapshotListResponse {
        snapshots: snapshots.into_iter().map(SnapshotView::from).collect(),
    }))
}

/// Get one snapshot.
#[utoipa::path(get, path = "/instances/{id}/snapshots/{snapshot_id}", tag = "snapshots",
    params(("id" = String, Path), ("snapshot_id" = String, Path)),
    responses((status = 200, body = SnapshotView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, snapshot_id)): ValidPath<(String, String)>,
) -> ApiResult<Json<SnapshotView>> {
    let snapshot = state
        .kiln
        .instances
        .get_snapshot(&me.user.user_id, &id, &snapshot_id)
        .await?;
    Ok(Json(snapshot.into()))
}

/// Delete a snapshot. It disappears from listings and the quota at once; its files are
/// removed as soon as no instance forked or restored from it runs and no snapshot of such
/// an instance is kept (`removed` says whether that was already the case).
#[utoipa::path(delete, path = "/instances/{id}/snapshots/{snapshot_id}", tag = "snapshots",
    params(("id" = String, Path), ("snapshot_id" = String, Path)),
    responses((status = 200, body = SnapshotDeleteResponse), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, snapshot_id)): ValidPath<(String, String)>,
) -> ApiResult<Json<SnapshotDeleteResponse>> {
    let removed = state
        .kiln
        .instances
        .delete_snapshot(&me.user.user_id, &id, &snapshot_id)
        .await?;
    Ok(Json(SnapshotDeleteResponse {
        snapshot_id,
        removed,
    }))
}

/// Restore a snapshot: into its instance (200; the instance keeps its id, its sandbox is
/// replaced by one started from the snapshot: files as they were, running processes are
/// not kept, a command running at that moment is cut off), or with `new_instance: true`
/// into a new instance of the same sample (201, `creating`; GET it to wait).
#[utoipa::path(post, path = "/instances/{id}/snapshots/{snapshot_id}/restore", tag = "snapshots",
    params(("id" = String, Path), ("snapshot_id" = String, Path)),
    request_body = RestoreRequest,
    responses((status = 200, body = RestoreResponse), (status = 201, body = RestoreResponse),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, snapshot_id)): ValidPath<(String, String)>,
    OptionalJson(req): OptionalJson<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<RestoreResponse>)> {
    let restored = state
        .kiln
        .instances
        .restore(&me.user.user_id, &id, &snapshot_id, req.new_instance)
        .await?;
    let status = if restored.new_instance {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(RestoreResponse {
            snapshot_id,
            instance: restored.instance.into(),
            new_instance: restored.new_instance,
        }),
    ))
}

/// Roll a ready instance back to its latest checkpoint (or the one named): its files
/// become byte for byte what they were then (see restore for what is not kept).
#[utoipa::path(post, path = "/instances/{id}/rollback", tag = "snapshots",
    params(("id" = String, Path)),
    request_body = RollbackRequest,
    responses((status = 200, body = RestoreResponse), (status = 404, body = ErrorBody),
              (status = 409, description = "not ready, or no checkpoint", body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    OptionalJson(req): OptionalJson<RollbackRequest>,
) -> ApiResult<Json<RestoreResponse>> {
    let (checkpoint, instance) = state
        .kiln
        .instances
        .rollback(&me.user.user_id, &id, req.checkpoint.as_deref())
        .await?;
    Ok(Json(RestoreResponse {
        snapshot_id: checkpoint.snapshot_id,
        instance: instance.into(),
        new_instance: false,
    }))
}

/// Fork a ready instance: one consistent snapshot, then `count` new instances from it
/// (same owner and sample, so a forked Codeset session can still be verified), answered
/// at once as `creating`; GET each to wait until it is ready. All or nothing: the balance,
/// the live-session limit and room on the node are checked for all `count` first, and a
/// refusal (402, 429, 503) makes none.
#[utoipa::path(post, path = "/instances/{id}/fork", tag = "snapshots",
    params(("id" = String, Path)),
    request_body = ForkRequest,
    responses((status = 201, body = ForkResponse), (status = 402, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn fork(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidJson(req): ValidJson<ForkRequest>,
) -> ApiResult<(StatusCode, Json<ForkResponse>)> {
    let max = i64::from(state.kiln.config.snapshots.max_fork_count);
    check_range(&["body", "count"], req.count, Some(1), Some(max))?;
    let count = u32::try_from(req.count).unwrap_or(u32::MAX);
    let forks = state
        .kiln
        .instances
        .fork(&me.user.user_id, &id, count)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ForkResponse {
            instances: forks.into_iter().map(InstanceRef::from).collect(),
        }),
    ))
}
