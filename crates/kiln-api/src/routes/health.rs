use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
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
