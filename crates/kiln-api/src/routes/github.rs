//! GitHub sign-in and the signed-in user's GitHub repositories.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::github_models::{
    GitHubAuthorizeParams, GitHubAuthorizeResponse, GitHubOAuthRequest, GitHubOAuthResponse,
    GitHubReposResponse,
};
use crate::error::{ApiError, ApiResult, Input};
use crate::extract::{SignedIn, ValidJson, ValidQuery};
use crate::AppState;

/// Authenticate user with GitHub OAuth: exchanges the code, creates the user on a first
/// sign-in (or finds them by GitHub id), and returns a JWT pair. `state` must be one that
/// `GET /auth/github/authorize` issued, for the same `redirect_uri`.
#[utoipa::path(post, path = "/auth/github", tag = "auth", operation_id = "github_oauth_auth_github_post",
    request_body = GitHubOAuthRequest,
    responses((status = 200, body = GitHubOAuthResponse),
              (status = 400, description = "invalid_state", body = crate::models::ErrorBody),
              (status = 401, description = "invalid_code", body = crate::models::ErrorBody),
              (status = 403, description = "the account is deactivated", body = crate::models::ErrorBody),
              (status = 422, body = crate::models::HTTPValidationError),
              (status = 502, description = "github_unavailable", body = crate::models::ErrorBody),
              (status = 503, description = "github_not_configured", body = crate::models::ErrorBody)))]
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    ValidJson(req): ValidJson<GitHubOAuthRequest>,
) -> ApiResult<Json<GitHubOAuthResponse>> {
    let kiln = &state.kiln;
    let signed_in = kiln
        .github
        .sign_in(
            &kiln.auth,
            &req.code,
            req.state.as_deref(),
            req.redirect_uri.as_deref(),
        )
        .await?;
    Ok(Json(signed_in.into()))
}

/// Kiln addition: the GitHub page that starts a sign-in, and its `state`.
#[utoipa::path(get, path = "/auth/github/authorize", tag = "auth", operation_id = "github_authorize_auth_github_authorize_get",
    params(GitHubAuthorizeParams),
    responses((status = 200, body = GitHubAuthorizeResponse),
              (status = 422, body = crate::models::HTTPValidationError),
              (status = 503, description = "github_not_configured", body = crate::models::ErrorBody)))]
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    ValidQuery(params): ValidQuery<GitHubAuthorizeParams>,
) -> ApiResult<Json<GitHubAuthorizeResponse>> {
    let authorize = state
        .kiln
        .github
        .authorize(params.redirect_uri.as_deref())
        .map_err(ApiError::from_service(Input::Query))?;
    Ok(Json(authorize.into()))
}

/// List the current user's GitHub repositories (those their GitHub token can see).
#[utoipa::path(get, path = "/repos", tag = "repos", operation_id = "list_repos_repos_get",
    responses((status = 200, body = GitHubReposResponse),
              (status = 401, body = crate::models::ErrorBody),
              (status = 409, description = "github_not_linked or github_sign_in_again", body = crate::models::ErrorBody),
              (status = 502, description = "github_unavailable", body = crate::models::ErrorBody),
              (status = 503, description = "github_not_configured", body = crate::models::ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn list_repos(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<GitHubReposResponse>> {
    let repos = state.kiln.github.list_repos(&me.user.user_id).await?;
    Ok(Json(repos.into()))
}
