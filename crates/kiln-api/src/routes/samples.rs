use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_domain::SampleQuery;

use super::samples_models::{DownloadParams, SampleListParams, SampleListResponse, SampleView};
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_range, CurrentUser, ValidPath, ValidQuery, Viewer};
use crate::AppState;

pub const MAX_PAGE_SIZE: i64 = 100;
const MAX_FILTER_LEN: usize = 200;

/// List available samples, optionally filtered by dataset and searched by instance_id.
/// With neither `page` nor `page_size`, every match is returned; with either, the other
/// defaults to 1 and 100 respectively.
#[utoipa::path(get, path = "/samples", tag = "samples", operation_id = "list_samples_samples_get",
    params(SampleListParams),
    responses((status = 200, body = SampleListResponse), (status = 422, body = crate::models::HTTPValidationError)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Viewer(viewer): Viewer,
    ValidQuery(params): ValidQuery<SampleListParams>,
) -> ApiResult<Json<SampleListResponse>> {
    for (name, value) in [("dataset", &params.dataset), ("search", &params.search)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_LEN) {
            return Err(ApiError::invalid(
                &["query", name],
                format!("String should have at most {MAX_FILTER_LEN} characters"),
                "string_too_long",
            ));
        }
    }
    if let Some(page) = params.page {
        check_range(&["query", "page"], page, Some(1), None)?;
    }
    if let Some(size) = params.page_size {
        check_range(&["query", "page_size"], size, Some(1), Some(MAX_PAGE_SIZE))?;
    }
    let paged = params.page.is_some() || params.page_size.is_some();
    let page = params.page.unwrap_or(1) as u64;
    let page_size = params.page_size.unwrap_or(MAX_PAGE_SIZE) as u64;
    let query = SampleQuery {
        // Anonymous callers see public datasets only (no account has the empty id).
        visible_to: Some(viewer.unwrap_or_default()),
        dataset: params.dataset.filter(|d| !d.is_empty()),
        search: params.search.filter(|s| !s.is_empty()),
        limit: paged.then_some(page_size),
        offset: if paged {
            (page - 1).saturating_mul(page_size)
        } else {
            0
        },
    };
    let result = state.kiln.datasets.list_samples(&query).await?;
    let returned = result.samples.len() as u64;
    let (page, page_size, has_more) = if paged {
        (
            page,
            page_size,
            query.offset.saturating_add(returned) < result.total,
        )
    } else {
        (1, returned, false)
    };
    Ok(Json(SampleListResponse {
        samples: result.samples.into_iter().map(SampleView::from).collect(),
        total_count: result.total,
        page,
        page_size,
        has_more,
    }))
}

/// Download a sample as a gzip'd tar: `sample.json` (the record) and `repo/` (its
/// repository at base_commit, when this server has it).
#[utoipa::path(get, path = "/samples/{dataset}/{sample_id}/download", tag = "samples",
    operation_id = "download_sample_samples__dataset___sample_id__download_get",
    params(("dataset" = String, Path), ("sample_id" = String, Path), DownloadParams),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 404, body = crate::models::ErrorBody), (status = 422, body = crate::models::HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn download(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((dataset, sample_id)): ValidPath<(String, String)>,
    ValidQuery(params): ValidQuery<DownloadParams>,
) -> ApiResult<Response> {
    if let Some(version) = params.version {
        check_range(&["query", "version"], version, Some(1), None)?;
    }
    let sample = state
        .kiln
        .datasets
        .get_visible_sample(&me.user.user_id, &dataset, &sample_id, params.version)
        .await?;
    let mut json = serde_json::to_value(SampleView::from(sample.clone()))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let (Some(obj), Ok(record)) = (json.as_object_mut(), serde_json::to_value(&sample.record)) {
        obj.insert("record".into(), record);
    }
    let archive = state.kiln.datasets.archive(&sample, &json).await?;
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", archive.file_name))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = archive.gzip.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(
        "x-kiln-repository",
        HeaderValue::from_static(if archive.has_repository {
            "included"
        } else {
            "missing"
        }),
    );
    Ok(response)
}
