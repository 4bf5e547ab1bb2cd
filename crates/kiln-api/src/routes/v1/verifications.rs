//! An instance's verification jobs (`GET /v1/instances/{id}/verifications`). Jobs are
//! started and read one by one on the Codeset routes (`/api/v1/sessions/{id}/verify`).
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::verifications_models::*;
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{check_range, CurrentUser, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

const DEFAULT_PAGE: i64 = 20;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(list))
}

/// An instance's verification jobs, newest first.
#[utoipa::path(get, path = "/instances/{id}/verifications", tag = "instances",
    operation_id = "list_instance_verifications",
    params(("id" = String, Path), VerificationListParams),
    responses((status = 200, body = VerificationListView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<VerificationListParams>,
) -> ApiResult<Json<VerificationListView>> {
    if let Some(limit) = params.limit {
        check_range(&["query", "limit"], limit, Some(1), Some(100))?;
    }
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).unsigned_abs();
    let jobs = state
        .kiln
        .instances
        .verification_list(&me.user.user_id, &id, params.after.as_deref(), limit)
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    let next_after = (jobs.len() as u64 == limit)
        .then(|| jobs.last().map(|j| j.job_id.clone()))
        .flatten();
    Ok(Json(VerificationListView {
        items: jobs.into_iter().map(VerificationSummary::from).collect(),
        next_after,
    }))
}
