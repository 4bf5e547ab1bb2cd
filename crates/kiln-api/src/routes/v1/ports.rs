//! Port forwards: reach a service listening inside an instance.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ports_models::*;
use super::ports_proxy;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_range, CurrentUser, ValidJson, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    let mut router = OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(close))
        // Any method, and a path of any depth (`{*path}`), which `routes!` cannot say: the
        // proxy is routed by axum and documented (as GET) by hand.
        .route(
            "/instances/{id}/ports/{port}/{*path}",
            axum::routing::any(ports_proxy::proxy),
        )
        .route(
            "/instances/{id}/ports/{port}/",
            axum::routing::any(ports_proxy::proxy_root),
        );
    ports_proxy::document(router.get_openapi_mut());
    router
}

/// Open a port forward to a TCP port inside the instance: on a host port (`host_port`)
/// or under this API (`path`, at `/v1/instances/{id}/ports/{port}/`). The instance's
/// network stays isolated: connections go through its agent to its own loopback.
#[utoipa::path(post, path = "/instances/{id}/port-forwards", tag = "ports",
    params(("id" = String, Path, description = "The instance (a session id works too)")),
    request_body = PortForwardCreateRequest,
    responses((status = 201, body = PortForwardView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidJson(req): ValidJson<PortForwardCreateRequest>,
) -> ApiResult<(StatusCode, Json<PortForwardView>)> {
    check_range(&["body", "port"], req.port, Some(1), Some(65535))?;
    let port = u16::try_from(req.port).map_err(|_| ApiError::Internal("port range".into()))?;
    let forward = state
        .kiln
        .instances
        .create_port_forward(&me.user.user_id, &id, port, req.mode.into())
        .await?;
    Ok((StatusCode::CREATED, Json(forward.into())))
}

/// The instance's open port forwards, oldest first.
#[utoipa::path(get, path = "/instances/{id}/port-forwards", tag = "ports",
    params(("id" = String, Path, description = "The instance (a session id works too)")),
    responses((status = 200, body = PortForwardList), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<PortForwardList>> {
    let forwards = state
        .kiln
        .instances
        .list_port_forwards(&me.user.user_id, &id)
        .await?;
    Ok(Json(PortForwardList {
        port_forwards: forwards.into_iter().map(Into::into).collect(),
    }))
}

/// Close a port forward: its listener stops and its connections end. Answers the
/// forward as closed.
#[utoipa::path(delete, path = "/instances/{id}/port-forwards/{forward_id}", tag = "ports",
    params(("id" = String, Path, description = "The instance (a session id works too)"),
           ("forward_id" = String, Path)),
    responses((status = 200, body = PortForwardView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn close(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, forward_id)): ValidPath<(String, String)>,
) -> ApiResult<Json<PortForwardView>> {
    let closed = state
        .kiln
        .instances
        .close_port_forward(&me.user.user_id, &id, &forward_id)
        .await?;
    Ok(Json(closed.into()))
}
