//! GitHub's wire protocol, as Kiln uses it: the OAuth code exchange and three REST calls.
//! Every call has a deadline and a bounded answer; GitHub being slow, down or answering
//! nonsense is [`GithubError::Unavailable`], never a hang or a 500.
use std::time::Duration;

use kiln_config::GithubConfig;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::GithubError;

/// Largest answer read from GitHub (a page of 100 repositories is ≈ 600 KB).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
pub(crate) const PER_PAGE: usize = 100;
const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

pub(crate) struct GithubClient {
    http: Client,
    oauth_base: String,
    api_base: String,
}

/// GitHub's `/user`, the fields Kiln keeps.
#[derive(Debug, Deserialize)]
pub(crate) struct GithubUser {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GithubEmail {
    pub email: String,
    pub primary: bool,
    pub verified: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GithubRepoRow {
    pub full_name: String,
    pub private: bool,
    pub html_url: String,
}

/// GitHub answers the token exchange with 200 in both cases: an `access_token`, or an
/// `error` (`bad_verification_code`, `incorrect_client_credentials`, …).
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl GithubClient {
    pub(crate) fn new(config: &GithubConfig) -> Result<Self, GithubError> {
        let timeout = Duration::from_secs(config.timeout_secs);
        let http = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(USER_AGENT)
            // A redirect from GitHub's API is not expected; following one could carry the
            // token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GithubError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            oauth_base: config.oauth_base.trim_end_matches('/').to_string(),
            api_base: config.api_base.trim_end_matches('/').to_string(),
        })
    }

    /// Trades the sign-in code for the user's access token.
    pub(crate) async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &str,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<String, GithubError> {
        let mut form = vec![
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("code", code),
        ];
        if let Some(uri) = redirect_uri {
            form.push(("redirect_uri", uri));
        }
        let request = self
            .http
            .post(format!("{}/login/oauth/access_token", self.oauth_base))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let answer: TokenAnswer = read_json(send(request).await?, "token exchange").await?;
        match (answer.access_token, answer.error) {
            (Some(token), None) if !token.is_empty() => Ok(token),
            (_, Some(error)) if error == "incorrect_client_credentials" => {
                // The server's fault, not the caller's: say so to the operator.
                tracing::error!("GitHub refused this server's client_id/client_secret");
                Err(GithubError::Unavailable(
                    "GitHub refused this server's OAuth app credentials (github.client_id / client_secret)"
                        .into(),
                ))
            }
            (_, error) => Err(GithubError::InvalidCode(
                answer
                    .error_description
                    .or(error)
                    .unwrap_or_else(|| "no access token in GitHub's answer".into()),
            )),
        }
    }

    pub(crate) async fn user(&self, token: &str) -> Result<GithubUser, GithubError> {
        let response = send(self.api(token, "/user")).await?;
        read_json(check_token(response)?, "user").await
    }

    /// The user's addresses; none when the token lacks the `user:email` scope (GitHub then
    /// answers 404 or 403), which must not stop the sign-in.
    pub(crate) async fn emails(&self, token: &str) -> Result<Vec<GithubEmail>, GithubError> {
        let response = check_token(send(self.api(token, "/user/emails")).await?)?;
        if matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN
        ) {
            return Ok(Vec::new());
        }
        read_json(response, "emails").await
    }

    /// One page (1-based) of the repositories the user can see.
    pub(crate) async fn repos_page(
        &self,
        token: &str,
        page: u32,
    ) -> Result<Vec<GithubRepoRow>, GithubError> {
        let path = format!("/user/repos?per_page={PER_PAGE}&page={page}");
        let response = send(self.api(token, &path)).await?;
        read_json(check_token(response)?, "repositories").await
    }

    fn api(&self, token: &str, path: &str) -> RequestBuilder {
        self.http
            .get(format!("{}{path}", self.api_base))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    }
}

async fn send(request: RequestBuilder) -> Result<Response, GithubError> {
    request.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "did not answer in time"
        } else {
            "cannot be reached"
        };
        tracing::warn!(error = %e, "GitHub {what}");
        GithubError::Unavailable(format!("GitHub {what}"))
    })
}

/// A 401 from the API means the user revoked Kiln's access (or the token expired): only a
/// new sign-in helps.
fn check_token(response: Response) -> Result<Response, GithubError> {
    match response.status() {
        StatusCode::UNAUTHORIZED => Err(GithubError::SignInAgain(
            "GitHub no longer accepts this user's token".into(),
        )),
        _ => Ok(response),
    }
}

async fn read_json<T: DeserializeOwned>(
    mut response: Response,
    what: &str,
) -> Result<T, GithubError> {
    let status = response.status();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(GithubError::Unavailable(format!(
                        "GitHub's {what} answer is over {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading GitHub's {what} answer");
                return Err(GithubError::Unavailable(format!(
                    "GitHub's {what} answer was cut off"
                )));
            }
        }
    }
    if !status.is_success() {
        tracing::warn!(%status, body = %String::from_utf8_lossy(&body[..body.len().min(500)]), "GitHub {what} failed");
        return Err(GithubError::Unavailable(format!(
            "GitHub answered {status} to the {what} request"
        )));
    }
    serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(error = %e, "GitHub's {what} answer is not what its API documents");
        GithubError::Unavailable(format!("GitHub's {what} answer could not be read"))
    })
}
