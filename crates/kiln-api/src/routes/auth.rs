use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::{SignedIn, ValidJson};
use crate::AppState;

/// Refresh an access token using a refresh token. Refresh tokens rotate: the response
/// carries the next one, and presenting a spent one revokes the whole sign-in.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", operation_id = "refresh_token_auth_refresh_post",
    request_body = TokenRefreshRequest,
    responses((status = 200, body = TokenRefreshResponse), (status = 401, body = crate::models::ErrorBody),
              (status = 403, description = "the account is deactivated", body = crate::models::ErrorBody),
              (status = 422, body = crate::models::HTTPValidationError)))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ValidJson(req): ValidJson<TokenRefreshRequest>,
) -> ApiResult<Json<TokenRefreshResponse>> {
    let pair = state.kiln.auth.refresh(&req.refresh_token).await?;
    Ok(Json(TokenRefreshResponse {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        token_type: "Bearer".into(),
        expires_in: pair.expires_in,
    }))
}

/// Kiln addition: exchange the API key in `Authorization` for a JWT pair, so that
/// self-hosted users without GitHub sign-in can use token-based clients.
#[utoipa::path(post, path = "/auth/token", tag = "auth", operation_id = "issue_token_auth_token_post",
    responses((status = 200, body = TokenRefreshResponse), (status = 401, body = crate::models::ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn token(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<TokenRefreshResponse>> {
    let pair = state.kiln.auth.issue_tokens(&me.user).await?;
    Ok(Json(TokenRefreshResponse {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        token_type: "Bearer".into(),
        expires_in: pair.expires_in,
    }))
}

/// Request to refresh an access token.
#[derive(Deserialize, ToSchema)]
pub struct TokenRefreshRequest {
    pub refresh_token: String,
}

/// Response for token refresh. `refresh_token` is a Kiln addition: refresh tokens
/// rotate, so every refresh hands out the next one.
#[derive(Serialize, ToSchema)]
pub struct TokenRefreshResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}
