use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::Utc;

use super::users_models::{
    ApiKey, ApiKeyCreateRequest, ApiKeyCreateResponse, ApiKeyRevokeRequest, ApiKeyRevokeResponse,
    UserView,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::{OptionalJson, SignedIn, ValidJson};
use crate::AppState;

async fn view(state: &AppState, user_id: &str) -> ApiResult<UserView> {
    let auth = &state.kiln.auth;
    let user = auth
        .get_user(user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("user not found".into()))?;
    let keys = auth.list_api_keys(user_id).await?;
    Ok(UserView::new(user, &keys))
}

/// Get current user information (API keys masked).
#[utoipa::path(get, path = "/users/me", tag = "users", operation_id = "get_current_user_users_me_get",
    responses((status = 200, body = UserView), (status = 401, body = crate::models::ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn me(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<UserView>> {
    Ok(Json(view(&state, &me.user.user_id).await?))
}

/// Record that the current user accepted the terms of service.
#[utoipa::path(post, path = "/users/me/accept-terms", tag = "users", operation_id = "accept_terms_users_me_accept_terms_post",
    responses((status = 200, body = UserView), (status = 401, body = crate::models::ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn accept_terms(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<UserView>> {
    state
        .kiln
        .auth
        .accept_terms(&me.user.user_id, Utc::now())
        .await?;
    Ok(Json(view(&state, &me.user.user_id).await?))
}

/// Create a new API key for the current user. The key is shown in full only here.
#[utoipa::path(post, path = "/users/me/api-keys", tag = "users", operation_id = "create_api_key_users_me_api_keys_post",
    request_body = ApiKeyCreateRequest,
    responses((status = 200, body = ApiKeyCreateResponse), (status = 401, body = crate::models::ErrorBody),
              (status = 422, body = crate::models::HTTPValidationError), (status = 429, body = crate::models::ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    OptionalJson(req): OptionalJson<ApiKeyCreateRequest>,
) -> ApiResult<Json<ApiKeyCreateResponse>> {
    let created = state
        .kiln
        .auth
        .create_api_key(&me.user.user_id, req.name)
        .await?;
    Ok(Json(ApiKeyCreateResponse {
        api_key: ApiKey::from_record(&created.record, created.secret),
    }))
}

/// Revoke an API key of the current user. Another user's key is "not found". A key may
/// revoke itself; revoking another key of an account with a password needs sudo
/// (`POST /v1/auth/sudo`; 403 `sudo_required` otherwise).
#[utoipa::path(delete, path = "/users/me/api-keys", tag = "users", operation_id = "revoke_api_key_users_me_api_keys_delete",
    request_body = ApiKeyRevokeRequest,
    responses((status = 200, body = ApiKeyRevokeResponse), (status = 403, body = crate::models::ErrorBody),
              (status = 404, body = crate::models::ErrorBody),
              (status = 422, body = crate::models::HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidJson(req): ValidJson<ApiKeyRevokeRequest>,
) -> ApiResult<Json<ApiKeyRevokeResponse>> {
    state.kiln.auth.revoke_own_api_key(&me, &req.key_id).await?;
    Ok(Json(ApiKeyRevokeResponse {
        message: "API key revoked".into(),
        revoked_key_id: req.key_id,
    }))
}
