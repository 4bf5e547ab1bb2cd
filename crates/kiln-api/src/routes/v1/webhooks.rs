//! Webhooks: signed, retried deliveries of session and verification events (and of what
//! other areas add), with the dead-letter list and retry.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_services::webhooks::WebhookInput;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::webhooks_models::*;
use crate::error::ApiResult;
use crate::extract::{check_range, CurrentUser, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

const MAX_PAGE: i64 = 100;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(deliveries))
        .routes(routes!(retry))
        .routes(routes!(test))
}

/// Create a webhook. The response carries its signing secret, shown only this once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = WebhookCreateRequest,
    responses((status = 201, body = WebhookView), (status = 422, body = HTTPValidationError),
              (status = 429, description = "too many webhooks", body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidJson(req): ValidJson<WebhookCreateRequest>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    let input = WebhookInput {
        url: Some(req.url),
        events: Some(req.events),
        description: req.description,
        active: req.active,
    };
    let (hook, secret) = state.kiln.webhooks.create(&me.user.user_id, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookView::new(hook, Some(secret))),
    ))
}

/// The caller's webhooks, oldest first.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookListResponse)),
    security(("HTTPBearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
) -> ApiResult<Json<WebhookListResponse>> {
    let hooks = state.kiln.webhooks.list(&me.user.user_id).await?;
    Ok(Json(WebhookListResponse {
        webhooks: hooks
            .into_iter()
            .map(|h| WebhookView::new(h, None))
            .collect(),
    }))
}

/// A webhook (without its secret).
#[utoipa::path(get, path = "/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(webhook_id): ValidPath<String>,
) -> ApiResult<Json<WebhookView>> {
    let hook = state
        .kiln
        .webhooks
        .get(&me.user.user_id, &webhook_id)
        .await?;
    Ok(Json(WebhookView::new(hook, None)))
}

/// Change a webhook's URL, events, description or state, or rotate its secret (the new
/// one is in this response only).
#[utoipa::path(patch, path = "/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body = WebhookUpdateRequest,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(webhook_id): ValidPath<String>,
    ValidJson(req): ValidJson<WebhookUpdateRequest>,
) -> ApiResult<Json<WebhookView>> {
    let input = WebhookInput {
        url: req.url,
        events: req.events,
        description: req.description,
        active: req.active,
    };
    let (hook, secret) = state
        .kiln
        .webhooks
        .update(&me.user.user_id, &webhook_id, input, req.rotate_secret)
        .await?;
    Ok(Json(WebhookView::new(hook, secret)))
}

/// Delete a webhook and its deliveries (pending ones are not sent).
#[utoipa::path(delete, path = "/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookDeleteResponse), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(webhook_id): ValidPath<String>,
) -> ApiResult<Json<WebhookDeleteResponse>> {
    state
        .kiln
        .webhooks
        .delete(&me.user.user_id, &webhook_id)
        .await?;
    Ok(Json(WebhookDeleteResponse {
        message: format!("webhook {webhook_id} deleted"),
    }))
}

/// The webhook's deliveries, newest first; `status=dead` lists the dead letters.
#[utoipa::path(get, path = "/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("webhook_id" = String, Path), DeliveryListParams),
    responses((status = 200, body = DeliveryListResponse), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(webhook_id): ValidPath<String>,
    ValidQuery(params): ValidQuery<DeliveryListParams>,
) -> ApiResult<Json<DeliveryListResponse>> {
    let limit = params.limit.unwrap_or(50);
    check_range(&["query", "limit"], limit, Some(1), Some(MAX_PAGE))?;
    let offset = params.offset.unwrap_or(0);
    check_range(&["query", "offset"], offset, Some(0), None)?;
    // One more than asked tells whether there is a next page.
    let mut found = state
        .kiln
        .webhooks
        .deliveries(
            &me.user.user_id,
            &webhook_id,
            params.status.map(Into::into),
            limit as u64 + 1,
            offset as u64,
        )
        .await?;
    let has_more = found.len() as u64 > limit as u64;
    found.truncate(limit as usize);
    Ok(Json(DeliveryListResponse {
        deliveries: found.into_iter().map(DeliveryView::from).collect(),
        has_more,
    }))
}

/// Send a dead delivery again (same event id and body), with a fresh count of attempts.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("webhook_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody),
              (status = 409, description = "not dead", body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((webhook_id, delivery_id)): ValidPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let retried = state
        .kiln
        .webhooks
        .retry(&me.user.user_id, &webhook_id, &delivery_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(retried.into())))
}

/// Queue a `webhook.test` event to this webhook (whatever its events, active or not).
#[utoipa::path(post, path = "/webhooks/{webhook_id}/test", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn test(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath(webhook_id): ValidPath<String>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let delivery = state
        .kiln
        .webhooks
        .test(&me.user.user_id, &webhook_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}
