//! An instance's network: its allowlist and what its egress let through or refused.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::network_models::{BlockedView, NetworkView};
use crate::error::ApiResult;
use crate::extract::{CurrentUser, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(network))
}

/// What the instance may reach outside its sandbox (its sample's or dataset's
/// `network_allowlist`; nothing without one) and, on the server that runs it, the
/// connections its egress proxy let through and the newest it refused, with why.
#[utoipa::path(get, path = "/instances/{id}/network", tag = "instances",
    operation_id = "instance_network", params(("id" = String, Path)),
    responses((status = 200, body = NetworkView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
async fn network(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<NetworkView>> {
    let found = state.kiln.instances.network(&me.user.user_id, &id).await?;
    Ok(Json(NetworkView {
        instance_id: found.instance.session_id,
        policy: if found.allow.is_some() {
            "allowlist"
        } else {
            "none"
        }
        .into(),
        allow: found.allow.unwrap_or_default(),
        proxy: found.proxy,
        connections: found.egress.connections,
        blocked_total: found.egress.blocked_total,
        blocked: found
            .egress
            .blocked
            .into_iter()
            .rev()
            .map(|b| BlockedView {
                host: b.host,
                port: b.port,
                reason: b.reason,
                at: b.at,
            })
            .collect(),
    }))
}
