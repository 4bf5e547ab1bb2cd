//! Instances: create (from a base image or a dataset sample), list, get, change, delete.
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_domain::SessionStatus;
use kiln_services::instances::{
    check_labels, InstanceQuery, InstanceSource, InstanceUpdate, NewInstance, ResourceRequest,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::instances_models::*;
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{check_range, CurrentUser, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(metrics))
}

fn resources(r: ResourcesRequest) -> ResourceRequest {
    ResourceRequest {
        cpu: r.cpu,
        memory_mib: r.memory_mib,
        disk_mib: r.disk_mib,
    }
}

/// The source the body names: an image, or a dataset's sample, never both.
fn source(req: &InstanceCreateRequest) -> ApiResult<InstanceSource> {
    let non_empty = |field: &str, value: &Option<String>| -> ApiResult<Option<String>> {
        match value {
            Some(v) if v.is_empty() => Err(ApiError::invalid(
                &["body", field],
                "String should have at least 1 character",
                "string_too_short",
            )),
            other => Ok(other.clone()),
        }
    };
    let image = non_empty("image", &req.image)?;
    let dataset = non_empty("dataset", &req.dataset)?;
    let sample_id = non_empty("sample_id", &req.sample_id)?;
    match (image, dataset, sample_id) {
        (Some(image), None, None) => Ok(InstanceSource::Image(image)),
        (None, Some(dataset), Some(sample_id)) => Ok(InstanceSource::Sample { dataset, sample_id }),
        (None, Some(_), None) => Err(ApiError::invalid(
            &["body", "sample_id"],
            "Field required with dataset",
            "missing",
        )),
        (None, None, Some(_)) => Err(ApiError::invalid(
            &["body", "dataset"],
            "Field required with sample_id",
            "missing",
        )),
        (None, None, None) => Err(ApiError::invalid(
            &["body", "image"],
            "Give an image, or a dataset and a sample_id",
            "missing",
        )),
        (Some(_), ..) => Err(ApiError::invalid(
            &["body", "image"],
            "Give an image or a dataset's sample, not both",
            "value_error",
        )),
    }
}

/// Create an instance from an image in the server's image store or from a dataset's
/// sample. Answers at once with `creating`; `GET …?wait=true` waits until it is ready.
#[utoipa::path(post, path = "/instances", tag = "instances", operation_id = "create_instance",
    request_body = InstanceCreateRequest,
    responses((status = 201, body = InstanceView), (status = 402, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidJson(mut req): ValidJson<InstanceCreateRequest>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    if let Some(family) = req.base_image.take() {
        if req.image.is_some() {
            return Err(ApiError::invalid(
                &["body", "base_image"],
                "Give an image or a base_image, not both",
                "value_error",
            ));
        }
        req.image = Some(state.kiln.base_images.current_reference(&family).await?);
    }
    let source = source(&req)?;
    let instance = state
        .kiln
        .instances
        .create(
            &me.user.user_id,
            NewInstance {
                source,
                name: req.name,
                labels: req.labels,
                ttl_minutes: req.ttl_minutes,
                resources: req.resources.map(resources),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(instance.into())))
}

/// The listing's query: `limit`, `offset` or `cursor`, `status` and `label` (both
/// repeatable), `q`.
fn list_query(raw: Option<&str>, state: &AppState) -> ApiResult<InstanceQuery> {
    let mut query = InstanceQuery {
        limit: DEFAULT_PAGE as u64,
        ..InstanceQuery::default()
    };
    let mut labels = kiln_domain::Labels::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = |name: &str, min: i64, max: Option<i64>| -> ApiResult<u64> {
            let n: i64 = value.parse().map_err(|_| {
                ApiError::invalid(
                    &["query", name],
                    "Input should be a valid integer, unable to parse string as an integer",
                    "int_parsing",
                )
            })?;
            check_range(&["query", name], n, Some(min), max)?;
            Ok(n.unsigned_abs())
        };
        match key.as_ref() {
            "limit" => query.limit = number("limit", 1, Some(MAX_PAGE))?,
            "offset" => query.offset = number("offset", 0, None)?,
            "status" => {
                for status in value.split(',') {
                    let parsed = SessionStatus::parse(status).ok_or_else(|| {
                        ApiError::invalid(
                            &["query", "status"],
                            "Input should be 'creating', 'ready', 'error', 'closed' or 'terminated'",
                            "enum",
                        )
                    })?;
                    if !query.statuses.contains(&parsed) {
                        query.statuses.push(parsed);
                    }
                }
            }
            "label" => {
                let (k, v) = value.split_once(':').ok_or_else(|| {
                    ApiError::invalid(
                        &["query", "label"],
                        "Input should be key:value",
                        "value_error",
                    )
                })?;
                // One value per key (two could never both match), so the filter's size
                // is bounded by `instances.max_labels` like an instance's labels.
                if labels.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(ApiError::invalid(
                        &["query", "label", k],
                        "each label key may be given once",
                        "value_error",
                    ));
                }
                query.labels.push((k.to_string(), v.to_string()));
            }
            "q" => query.search = Some(value.into_owned()),
            "cursor" => query.cursor = Some(value.into_owned()),
            _ => {}
        }
    }
    let errors = check_labels(state.kiln.instances.config(), &labels, &["label"]);
    if !errors.is_empty() {
        return Err(ApiError::from_service(Input::Query)(
            kiln_services::ServiceError::Validation(errors),
        ));
    }
    Ok(query)
}

/// The caller's instances, newest first.
#[utoipa::path(get, path = "/instances", tag = "instances", operation_id = "list_instances",
    params(InstanceListParams),
    responses((status = 200, body = InstanceListResponse), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<InstanceListResponse>> {
    let query = list_query(raw.as_deref(), &state)?;
    let page = state
        .kiln
        .instances
        .list(&me.user.user_id, &query)
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    Ok(Json(InstanceListResponse {
        instances: page.instances.into_iter().map(InstanceView::from).collect(),
        total: page.total,
        limit: query.limit,
        offset: query.offset,
        has_more: page.has_more,
        next_cursor: page.next_cursor,
    }))
}

/// An instance of the caller's. With `wait=true`, while it is `creating` this waits (up
/// to the long-poll limit) and answers the moment it is `ready` or `error`.
#[utoipa::path(get, path = "/instances/{id}", tag = "instances", operation_id = "get_instance",
    params(("id" = String, Path), InstanceGetParams),
    responses((status = 200, body = InstanceView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidQuery(params): ValidQuery<InstanceGetParams>,
) -> ApiResult<Json<InstanceView>> {
    let wait = params.wait.unwrap_or(false);
    let instance = state
        .kiln
        .instances
        .get(&me.user.user_id, &id, wait)
        .await?;
    Ok(Json(instance.into()))
}

/// Change an instance's name, labels or lifetime. Resources cannot change on this backend
/// (409 `resources_fixed`); the lifetime of an ended instance neither (409).
#[utoipa::path(patch, path = "/instances/{id}", tag = "instances", operation_id = "update_instance",
    params(("id" = String, Path)), request_body = InstanceUpdateRequest,
    responses((status = 200, body = InstanceView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
    ValidJson(req): ValidJson<InstanceUpdateRequest>,
) -> ApiResult<Json<InstanceView>> {
    let instance = state
        .kiln
        .instances
        .update(
            &me.user.user_id,
            &id,
            InstanceUpdate {
                name: req.name,
                labels: req.labels,
                ttl_minutes: req.ttl_minutes,
                resources: req.resources.map(resources),
            },
        )
        .await?;
    Ok(Json(instance.into()))
}

/// Delete (close) an instance: its sandbox is destroyed and its time stops counting. An
/// instance already ended is a 409, as a Codeset close.
#[utoipa::path(delete, path = "/instances/{id}", tag = "instances", operation_id = "delete_instance",
    params(("id" = String, Path)),
    responses((status = 200, body = InstanceView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<InstanceView>> {
    let ended = state.kiln.instances.delete(&me.user.user_id, &id).await?;
    Ok(Json(ended.into()))
}

/// An instance's CPU time, memory, disk and processes over time (its recent samples).
#[utoipa::path(get, path = "/instances/{id}/metrics", tag = "instances",
    operation_id = "instance_metrics", params(("id" = String, Path)),
    responses((status = 200, body = InstanceMetricsView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<InstanceMetricsView>> {
    let (samples, live, interval_seconds) =
        state.kiln.instances.metrics(&me.user.user_id, &id).await?;
    Ok(Json(InstanceMetricsView {
        instance_id: id,
        live,
        interval_seconds,
        samples: samples.into_iter().map(Into::into).collect(),
    }))
}
