use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::error::ApiResult;
use crate::models::DatasetView;
use crate::AppState;

/// List available datasets (a bare array; no authentication needed).
#[utoipa::path(get, path = "/datasets", tag = "datasets", operation_id = "list_datasets_datasets_get",
    responses((status = 200, body = Vec<DatasetView>)))]
pub async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<DatasetView>>> {
    let datasets = state.kiln.datasets.list_datasets().await?;
    Ok(Json(datasets.into_iter().map(DatasetView::from).collect()))
}
