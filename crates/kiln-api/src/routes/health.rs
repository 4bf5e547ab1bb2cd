use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Health check endpoint. `status` is `healthy` when the store answers.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "health_check_health_get",
    responses((status = 200, body = HealthCheckResponse)))]
pub async fn health(State(state): State<Arc<AppState>>) -> ApiResult<Json<HealthCheckResponse>> {
    let status = match state.kiln.ping_store().await {
        Ok(()) => "healthy",
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unreachable");
            "degraded"
        }
    };
    Ok(Json(HealthCheckResponse {
        status: status.into(),
        service: "kiln".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
    }))
}

/// Response model for health check endpoint.
#[derive(Serialize, ToSchema)]
pub struct HealthCheckResponse {
    pub status: String,
    pub service: String,
    pub version: String,
    pub timestamp: String,
}

/// What a probe answers when it passes.
#[derive(Serialize, ToSchema)]
pub struct ProbeResponse {
    /// `live`, `ready` or `started`.
    pub status: String,
    /// The checks made (readiness only), each passed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ProbeCheckResponse>,
}

/// One check a readiness probe made.
#[derive(Serialize, ToSchema)]
pub struct ProbeCheckResponse {
    /// `startup`, `store` or `runtime`.
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Cheapest possible probe: the process is up and serving HTTP. No I/O.
#[utoipa::path(get, path = "/health/live", tag = "health", operation_id = "health_live",
    responses((status = 200, body = ProbeResponse)))]
pub async fn live() -> Json<ProbeResponse> {
    Json(ProbeResponse {
        status: "live".into(),
        checks: Vec::new(),
    })
}

/// Whether this server should receive traffic: start-up finished, the store answers and
/// the sandbox backend is usable (each check bounded in time). 503 otherwise, naming the
/// failed checks.
#[utoipa::path(get, path = "/health/ready", tag = "health", operation_id = "health_ready",
    responses((status = 200, body = ProbeResponse),
        (status = 503, description = "not ready: the failed checks", body = crate::models::ErrorBody)))]
pub async fn ready(State(state): State<Arc<AppState>>) -> ApiResult<Json<ProbeResponse>> {
    let readiness = state.kiln.readiness().await;
    if !readiness.is_ready() {
        return Err(ApiError::ServiceUnavailable(format!(
            "not ready: {}",
            readiness.failures()
        )));
    }
    let checks = readiness
        .checks
        .into_iter()
        .map(|c| ProbeCheckResponse {
            name: c.name.into(),
            ok: c.ok,
            detail: c.detail,
        })
        .collect();
    Ok(Json(ProbeResponse {
        status: "ready".into(),
        checks,
    }))
}

/// Whether start-up (the store's bootstrap and the recovery of sessions, jobs and
/// sandboxes) finished; 503 until then.
#[utoipa::path(get, path = "/health/startup", tag = "health", operation_id = "health_startup",
    responses((status = 200, body = ProbeResponse),
        (status = 503, description = "start-up has not finished", body = crate::models::ErrorBody)))]
pub async fn startup(State(state): State<Arc<AppState>>) -> ApiResult<Json<ProbeResponse>> {
    if !state.kiln.started() {
        return Err(ApiError::ServiceUnavailable(
            "starting: start-up recovery has not finished".into(),
        ));
    }
    Ok(Json(ProbeResponse {
        status: "started".into(),
        checks: Vec::new(),
    }))
}
