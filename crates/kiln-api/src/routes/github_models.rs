//! The contract's JSON shapes of GitHub sign-in and repositories, and Kiln's authorize step.
use kiln_services::github::{GithubAuthorize, GithubRepo, GithubSignIn};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Request for GitHub OAuth authentication.
#[derive(Deserialize, ToSchema)]
pub struct GitHubOAuthRequest {
    /// Authorization code from GitHub OAuth.
    pub code: String,
    /// State parameter for CSRF protection: the one `GET /auth/github/authorize` issued.
    pub state: Option<String>,
    /// Callback URL used in the authorize step; must match app settings.
    pub redirect_uri: Option<String>,
}

/// Response for GitHub OAuth authentication.
#[derive(Serialize, ToSchema)]
pub struct GitHubOAuthResponse {
    pub user_id: String,
    /// JWT access token for the user.
    pub access_token: String,
    /// JWT refresh token for the user.
    pub refresh_token: String,
    pub token_type: String,
    /// Access token expiration time in seconds.
    pub expires_in: u64,
    /// Whether this is a new user or existing user.
    pub is_new_user: bool,
}

impl From<GithubSignIn> for GitHubOAuthResponse {
    fn from(s: GithubSignIn) -> Self {
        Self {
            user_id: s.user.user_id,
            access_token: s.tokens.access_token,
            refresh_token: s.tokens.refresh_token,
            token_type: "Bearer".into(),
            expires_in: s.tokens.expires_in,
            is_new_user: s.is_new_user,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GitHubRepoItem {
    /// Repository full name (owner/repo).
    pub full_name: String,
    /// Whether the repository is private.
    pub private: bool,
    /// Repository URL.
    pub html_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct GitHubReposResponse {
    /// List of repositories.
    pub repos: Vec<GitHubRepoItem>,
}

impl From<Vec<GithubRepo>> for GitHubReposResponse {
    fn from(repos: Vec<GithubRepo>) -> Self {
        Self {
            repos: repos
                .into_iter()
                .map(|r| GitHubRepoItem {
                    full_name: r.full_name,
                    private: r.private,
                    html_url: r.html_url,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GitHubAuthorizeParams {
    /// The callback URL GitHub will send the browser back to; by default the server's
    /// `github.redirect_uri`. `POST /auth/github` must then be given the same one.
    pub redirect_uri: Option<String>,
}

/// Kiln addition: where to send the browser to sign in with GitHub.
#[derive(Serialize, ToSchema)]
pub struct GitHubAuthorizeResponse {
    /// GitHub's authorize page, with this server's client id, scopes and `state`.
    pub authorize_url: String,
    /// The `state` to hand back to `POST /auth/github` (it is also in `authorize_url`).
    pub state: String,
    /// Seconds the state stays valid.
    pub expires_in: u64,
}

impl From<GithubAuthorize> for GitHubAuthorizeResponse {
    fn from(a: GithubAuthorize) -> Self {
        Self {
            authorize_url: a.authorize_url,
            state: a.state,
            expires_in: a.expires_in,
        }
    }
}
