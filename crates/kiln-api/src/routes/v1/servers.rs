//! The node registry for admins (`/v1/admin/servers`): the `kiln serve` processes sharing
//! this PostgreSQL, draining one, setting its status, its figures. Non-admins get 403;
//! a server on SQLite answers 409 `single_node`.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::servers_models::*;
use crate::error::ApiResult;
use crate::extract::{SignedIn, ValidJson, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(drain))
        .routes(routes!(set_status))
        .routes(routes!(metrics))
}

/// Every server (node) registered on this database.
#[utoipa::path(get, path = "/admin/servers", tag = "compute_servers",
    responses((status = 200, body = ServerList), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<ServerList>> {
    let nodes = state.kiln.cluster.list(&me.user).await?;
    Ok(Json(ServerList {
        servers: nodes.into_iter().map(Into::into).collect(),
    }))
}

/// One server.
#[utoipa::path(get, path = "/admin/servers/{id}", tag = "compute_servers",
    params(("id" = String, Path)),
    responses((status = 200, body = ServerView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<ServerView>> {
    Ok(Json(state.kiln.cluster.get(&me.user, &id).await?.into()))
}

/// Drain a server: no new sessions are placed on it; its live sessions run on until
/// they end or reach their TTL. 409 for a server that is down.
#[utoipa::path(post, path = "/admin/servers/{id}/drain", tag = "compute_servers",
    params(("id" = String, Path)),
    responses((status = 200, body = ServerView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn drain(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<ServerView>> {
    Ok(Json(state.kiln.cluster.drain(&me.user, &id).await?.into()))
}

/// Set a server's status. `down` ends its live sessions at once (`terminated`, error
/// `node_lost`); a server that is in fact running drops them and registers again.
#[utoipa::path(patch, path = "/admin/servers/{id}/status", tag = "compute_servers",
    params(("id" = String, Path)),
    request_body = ServerStatusRequest,
    responses((status = 200, body = ServerView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn set_status(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(id): ValidPath<String>,
    ValidJson(req): ValidJson<ServerStatusRequest>,
) -> ApiResult<Json<ServerView>> {
    let node = state
        .kiln
        .cluster
        .set_status(&me.user, &id, req.status.into())
        .await?;
    Ok(Json(node.into()))
}

/// A server's figures as of its last heartbeat.
#[utoipa::path(get, path = "/admin/servers/{id}/metrics", tag = "compute_servers",
    params(("id" = String, Path)),
    responses((status = 200, body = ServerMetricsView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<ServerMetricsView>> {
    Ok(Json(
        state.kiln.cluster.metrics(&me.user, &id).await?.into(),
    ))
}
