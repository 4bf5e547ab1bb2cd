use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use kiln_domain::Dataset;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::Viewer;
use crate::models::rfc3339_opt;
use crate::AppState;

/// List available datasets (a bare array; no authentication needed). With a credential,
/// the private datasets of the org the request acts in are listed too.
#[utoipa::path(get, path = "/datasets", tag = "datasets", operation_id = "list_datasets_datasets_get",
    responses((status = 200, body = Vec<DatasetView>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Viewer(viewer): Viewer,
) -> ApiResult<Json<Vec<DatasetView>>> {
    // No account owns a dataset under the empty id: anonymous callers see public ones.
    let datasets = state
        .kiln
        .datasets
        .visible_datasets(viewer.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(datasets.into_iter().map(DatasetView::from).collect()))
}

/// Information about a dataset.
#[derive(Serialize, ToSchema)]
#[schema(as = Dataset)]
pub struct DatasetView {
    pub name: String,
    pub description: Option<String>,
    pub sample_count: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub created_at: Option<DateTime<Utc>>,
}

impl From<Dataset> for DatasetView {
    fn from(d: Dataset) -> Self {
        Self {
            name: d.name,
            description: d.description,
            sample_count: d.sample_count,
            created_at: Some(d.created_at),
        }
    }
}
