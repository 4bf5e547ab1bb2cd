//! GitHub sign-in and the user's repositories. A sign-in checks the `state` (before GitHub
//! is called), trades the code for the user's token, reads who they are, creates or finds
//! the Kiln user by GitHub id, keeps the token sealed ([`crate::secret_box`]) and hands out
//! the same JWT pair as every other sign-in ([`AuthService::issue_tokens`]).
mod client;
mod state;

use std::sync::Arc;

use chrono::{Duration, Utc};
use kiln_config::GithubConfig;
use kiln_store::{Store, StoreError, User};

use crate::auth::{AuthService, TokenPair};
pub use crate::error::GithubError;
use crate::error::{ServiceError, ServiceResult};
use crate::secret_box::{OpenError, SecretBox};
use client::{GithubClient, PER_PAGE};
use state::{StateError, StateSigner, MAX_STATE_LEN};

const TOKEN_PURPOSE: &str = "kiln github access token v1";
const MAX_CODE_LEN: usize = 512;
const MAX_REDIRECT_URI_LEN: usize = 2048;

/// A GitHub sign-in: the Kiln user, whether this sign-in created it, and its tokens.
#[derive(Debug, Clone)]
pub struct GithubSignIn {
    pub user: User,
    pub is_new_user: bool,
    pub tokens: TokenPair,
}

/// Where to send the user to start a sign-in.
#[derive(Debug, Clone)]
pub struct GithubAuthorize {
    pub authorize_url: String,
    pub state: String,
    pub expires_in: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubRepo {
    pub full_name: String,
    pub private: bool,
    pub html_url: String,
}

pub struct GithubService {
    store: Arc<dyn Store>,
    config: GithubConfig,
    states: StateSigner,
    tokens: SecretBox,
    client: Option<GithubClient>,
}

impl GithubService {
    /// `server_secret` is the JWT signing key: the state's HMAC key and the token-sealing
    /// key are derived from it, each for its own purpose.
    pub fn new(store: Arc<dyn Store>, config: GithubConfig, server_secret: &[u8]) -> Self {
        let client = match GithubClient::new(&config) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "GitHub sign-in disabled");
                None
            }
        };
        Self {
            store,
            states: StateSigner::new(server_secret),
            tokens: SecretBox::new(server_secret, TOKEN_PURPOSE),
            config,
            client,
        }
    }

    /// The app's credentials and a client, or `NotConfigured`.
    fn configured(&self) -> Result<(&str, &str, &GithubClient), GithubError> {
        match (
            self.config.is_configured(),
            &self.config.client_id,
            &self.config.client_secret,
            &self.client,
        ) {
            (true, Some(id), Some(secret), Some(client)) => Ok((id, secret.expose(), client)),
            _ => Err(GithubError::NotConfigured),
        }
    }

    /// The GitHub page that starts a sign-in, with a fresh `state` bound to `redirect_uri`
    /// (the request's, else the configured one).
    pub fn authorize(&self, redirect_uri: Option<&str>) -> ServiceResult<GithubAuthorize> {
        let (client_id, _, _) = self.configured()?;
        let redirect_uri = self.redirect_uri(redirect_uri)?;
        let ttl = self.config.state_ttl_secs;
        let state = self.states.issue(
            redirect_uri.unwrap_or_default(),
            Utc::now() + Duration::seconds(i64::try_from(ttl).unwrap_or(600)),
        );
        let mut query = form_query(&[
            ("client_id", client_id),
            ("scope", &self.config.scope),
            ("state", &state),
        ]);
        if let Some(uri) = redirect_uri {
            query.push('&');
            query.push_str(&form_query(&[("redirect_uri", uri)]));
        }
        Ok(GithubAuthorize {
            authorize_url: format!(
                "{}/login/oauth/authorize?{query}",
                self.config.oauth_base.trim_end_matches('/')
            ),
            state,
            expires_in: ttl,
        })
    }

    /// Signs a user in with the code GitHub gave their browser.
    pub async fn sign_in(
        &self,
        auth: &AuthService,
        code: &str,
        state: Option<&str>,
        redirect_uri: Option<&str>,
    ) -> ServiceResult<GithubSignIn> {
        let (client_id, client_secret, client) = self.configured()?;
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(ServiceError::invalid(
                &["code"],
                format!("the code must have between 1 and {MAX_CODE_LEN} characters"),
                "string_length",
            ));
        }
        let redirect_uri = self.redirect_uri(redirect_uri)?;
        self.check_state(state, redirect_uri.unwrap_or_default())?;

        let token = client
            .exchange_code(client_id, client_secret, code, redirect_uri)
            .await?;
        let profile = client.user(&token).await?;
        let email = match profile.email.clone().filter(|e| !e.is_empty()) {
            Some(email) => email,
            None => primary_email(client, &token, profile.id, &profile.login).await?,
        };
        let github_id = profile.id.to_string();
        let name = profile
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| profile.login.clone());

        let (user, is_new_user) = match self.store.get_user_by_github_id(&github_id).await? {
            Some(user) => (self.returning(&user, &profile.login, &name).await?, false),
            None => {
                match auth
                    .create_github_user(&name, &email, &github_id, &profile.login)
                    .await
                {
                    Ok(user) => (user, true),
                    // Two first sign-ins of one GitHub user raced, and the other won.
                    Err(ServiceError::Store(StoreError::Conflict("github_id"))) => {
                        let user = self
                            .store
                            .get_user_by_github_id(&github_id)
                            .await?
                            .ok_or_else(|| {
                                ServiceError::Internal("github_id taken by nobody".into())
                            })?;
                        (self.returning(&user, &profile.login, &name).await?, false)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if !user.is_active {
            return Err(ServiceError::Forbidden(
                "this account is deactivated".into(),
            ));
        }
        let sealed = self.tokens.seal(&token, user.user_id.as_bytes());
        self.store
            .put_github_token(&user.user_id, &sealed, Utc::now())
            .await?;
        let tokens = auth.issue_tokens(&user).await?;
        Ok(GithubSignIn {
            user,
            is_new_user,
            tokens,
        })
    }

    /// The user's GitHub token, opened: for cloning their private repositories. `None` if
    /// they never signed in with GitHub; `SignInAgain` if it was sealed under another server
    /// secret. A value stored before tokens were sealed is used as it is.
    pub async fn github_token_for(&self, user_id: &str) -> ServiceResult<Option<String>> {
        let Some(stored) = self.store.get_github_token(user_id).await? else {
            return Ok(None);
        };
        match self.tokens.open(&stored, user_id.as_bytes()) {
            Ok(token) => Ok(Some(token)),
            Err(OpenError::NotSealed) => Ok(Some(stored)),
            Err(OpenError::Undecryptable) => Err(GithubError::SignInAgain(
                "the stored GitHub token cannot be opened with this server's secret".into(),
            )
            .into()),
        }
    }

    /// The repositories the user can see on GitHub, in GitHub's order, reading at most
    /// `github.max_repo_pages` pages of 100.
    pub async fn list_repos(&self, user_id: &str) -> ServiceResult<Vec<GithubRepo>> {
        let client = self.client.as_ref().ok_or(GithubError::NotConfigured)?;
        let token = self
            .github_token_for(user_id)
            .await?
            .ok_or(GithubError::NotLinked)?;
        let mut repos = Vec::new();
        for page in 1..=self.config.max_repo_pages {
            let rows = client.repos_page(&token, page).await?;
            let last = rows.len() < PER_PAGE;
            repos.extend(rows.into_iter().map(|r| GithubRepo {
                full_name: r.full_name,
                private: r.private,
                html_url: r.html_url,
            }));
            if last {
                return Ok(repos);
            }
        }
        tracing::warn!(
            user_id,
            pages = self.config.max_repo_pages,
            "repository list cut at github.max_repo_pages"
        );
        Ok(repos)
    }

    async fn returning(&self, user: &User, login: &str, name: &str) -> ServiceResult<User> {
        self.store
            .update_github_profile(&user.user_id, login, name)
            .await?
            .ok_or_else(|| ServiceError::Unauthorized("the user no longer exists".into()))
    }

    fn redirect_uri<'a>(&'a self, given: Option<&'a str>) -> ServiceResult<Option<&'a str>> {
        let uri = given
            .filter(|u| !u.is_empty())
            .or(self.config.redirect_uri.as_deref());
        if uri.is_some_and(|u| u.len() > MAX_REDIRECT_URI_LEN) {
            return Err(ServiceError::invalid(
                &["redirect_uri"],
                format!("String should have at most {MAX_REDIRECT_URI_LEN} characters"),
                "string_too_long",
            ));
        }
        Ok(uri)
    }

    fn check_state(&self, state: Option<&str>, redirect_uri: &str) -> Result<(), GithubError> {
        let Some(state) = state.filter(|s| !s.is_empty()) else {
            return Err(GithubError::InvalidState(
                "the sign-in has no state; start it again from GET /auth/github/authorize".into(),
            ));
        };
        if state.len() > MAX_STATE_LEN {
            return Err(GithubError::InvalidState(
                "the state is not one this server issued".into(),
            ));
        }
        self.states
            .verify(state, redirect_uri, Utc::now())
            .map_err(|e| {
                GithubError::InvalidState(
                    match e {
                        StateError::Expired => "the sign-in's state has expired; start again",
                        StateError::Malformed | StateError::Forged => {
                            "the state is not one this server issued for this redirect_uri"
                        }
                    }
                    .into(),
                )
            })
    }
}

/// The user's primary verified address, as GitHub's `/user` hides private ones; else
/// GitHub's no-reply address, which always exists.
async fn primary_email(
    client: &GithubClient,
    token: &str,
    id: u64,
    login: &str,
) -> ServiceResult<String> {
    let emails = client.emails(token).await?;
    Ok(emails
        .into_iter()
        .find(|e| e.primary && e.verified)
        .map(|e| e.email)
        .unwrap_or_else(|| format!("{id}+{login}@users.noreply.github.com")))
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `application/x-www-form-urlencoded` value encoding (unreserved characters kept).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Agent jobs clone a user's private repositories with the token of their GitHub sign-in.
#[async_trait::async_trait]
impl crate::agent_jobs::CloneCredentials for GithubService {
    async fn token_for(&self, user_id: &str) -> Option<String> {
        match self.github_token_for(user_id).await {
            Ok(token) => token,
            Err(e) => {
                // The clone then fails and its error says a sign-in is needed.
                tracing::warn!(user_id, error = %e, "no usable GitHub token for a clone");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            form_query(&[
                ("scope", "read:user repo"),
                ("redirect_uri", "https://a/b?c=d&e")
            ]),
            "scope=read%3Auser%20repo&redirect_uri=https%3A%2F%2Fa%2Fb%3Fc%3Dd%26e"
        );
    }
}
