//! Base images: families of numbered versions, and the pipeline that prepares, promotes,
//! aborts and rolls them back. Everyone signed in reads; only admins change (403).
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::base_images_models::*;
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{check_range, CurrentUser, SignedIn, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(default_image))
        .routes(routes!(get, delete))
        .routes(routes!(family))
        .routes(routes!(versions))
        .routes(routes!(rollback))
        .routes(routes!(prepare))
        .routes(routes!(promote))
        .routes(routes!(abort))
}

/// Versions per page when the caller does not say, and at most.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 100;

fn list_of(records: Vec<kiln_domain::BaseImageRecord>) -> Json<BaseImageList> {
    Json(BaseImageList {
        base_images: records.into_iter().map(Into::into).collect(),
        next_cursor: None,
    })
}

/// Every version of every base image family, by family, newest version first, a page at
/// a time (`limit`, then `cursor` = the previous page's `next_cursor`).
#[utoipa::path(get, path = "/base-images", tag = "base_images",
    params(BaseImageListParams),
    responses((status = 200, body = BaseImageList), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(_me): CurrentUser,
    ValidQuery(params): ValidQuery<BaseImageListParams>,
) -> ApiResult<Json<BaseImageList>> {
    if let Some(limit) = params.limit {
        check_range(&["query", "limit"], limit, Some(1), Some(MAX_PAGE))?;
    }
    let limit = params.limit.unwrap_or(DEFAULT_PAGE).unsigned_abs();
    let page = state
        .kiln
        .base_images
        .list(limit, params.cursor.as_deref())
        .await
        .map_err(ApiError::from_service(Input::Query))?;
    Ok(Json(BaseImageList {
        base_images: page.base_images.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// The current version of the server's default family (`base_images.default_family`).
#[utoipa::path(get, path = "/base-images/default", tag = "base_images",
    responses((status = 200, body = BaseImageView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn default_image(
    State(state): State<Arc<AppState>>,
    CurrentUser(_me): CurrentUser,
) -> ApiResult<Json<BaseImageView>> {
    Ok(Json(state.kiln.base_images.default_image().await?.into()))
}

/// One version, with its progress while it is being prepared.
#[utoipa::path(get, path = "/base-images/{id}", tag = "base_images",
    params(("id" = String, Path)),
    responses((status = 200, body = BaseImageView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(_me): CurrentUser,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<BaseImageView>> {
    Ok(Json(state.kiln.base_images.get(&id).await?.into()))
}

/// Delete a version and its image (admins). Not the current version of its family, not
/// one being prepared, not one live instances run on (409).
#[utoipa::path(delete, path = "/base-images/{id}", tag = "base_images",
    params(("id" = String, Path)),
    responses((status = 200, body = BaseImageDeleteResponse), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<Json<BaseImageDeleteResponse>> {
    state.kiln.base_images.delete(&me.user, &id).await?;
    Ok(Json(BaseImageDeleteResponse { id, deleted: true }))
}

/// The family's current version.
#[utoipa::path(get, path = "/base-images/family/{family}", tag = "base_images",
    params(("family" = String, Path)),
    responses((status = 200, body = BaseImageView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn family(
    State(state): State<Arc<AppState>>,
    CurrentUser(_me): CurrentUser,
    ValidPath(family): ValidPath<String>,
) -> ApiResult<Json<BaseImageView>> {
    Ok(Json(state.kiln.base_images.current(&family).await?.into()))
}

/// The family's versions, newest first.
#[utoipa::path(get, path = "/base-images/family/{family}/versions", tag = "base_images",
    params(("family" = String, Path)),
    responses((status = 200, body = BaseImageList), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    CurrentUser(_me): CurrentUser,
    ValidPath(family): ValidPath<String>,
) -> ApiResult<Json<BaseImageList>> {
    Ok(list_of(state.kiln.base_images.versions(&family).await?))
}

/// Make the promoted version before the current one current again (admins); 409 when
/// there is none.
#[utoipa::path(post, path = "/base-images/family/{family}/rollback", tag = "base_images",
    params(("family" = String, Path)),
    responses((status = 200, body = BaseImageView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(family): ValidPath<String>,
) -> ApiResult<Json<BaseImageView>> {
    Ok(Json(
        state
            .kiln
            .base_images
            .rollback(&me.user, &family)
            .await?
            .into(),
    ))
}

/// Prepare a new version of a family (admins): answered at once with the version in
/// `preparing`; it ends `prepared` or `failed` (with the reason) in the background.
#[utoipa::path(post, path = "/images/prepare", tag = "base_images",
    request_body = PrepareRequest,
    responses((status = 202, body = BaseImageView), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn prepare(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidJson(req): ValidJson<PrepareRequest>,
) -> ApiResult<(StatusCode, Json<BaseImageView>)> {
    let record = state
        .kiln
        .base_images
        .prepare(&me.user, &req.family, req.source.into())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(record.into())))
}

/// Make a prepared version its family's current one (admins).
#[utoipa::path(post, path = "/images/promote", tag = "base_images",
    request_body = BaseImageIdRequest,
    responses((status = 200, body = BaseImageView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn promote(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidJson(req): ValidJson<BaseImageIdRequest>,
) -> ApiResult<Json<BaseImageView>> {
    Ok(Json(
        state
            .kiln
            .base_images
            .promote(&me.user, &req.id)
            .await?
            .into(),
    ))
}

/// Stop a version being prepared, or discard a prepared one (admins); its image is removed.
#[utoipa::path(post, path = "/images/abort", tag = "base_images",
    request_body = BaseImageIdRequest,
    responses((status = 200, body = BaseImageView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn abort(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidJson(req): ValidJson<BaseImageIdRequest>,
) -> ApiResult<Json<BaseImageView>> {
    Ok(Json(
        state
            .kiln
            .base_images
            .abort(&me.user, &req.id)
            .await?
            .into(),
    ))
}
