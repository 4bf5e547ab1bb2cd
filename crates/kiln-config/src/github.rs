//! `[github]`: sign-in with GitHub and repository listing.
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

/// GitHub sign-in (`POST /auth/github`) and repository listing (`GET /repos`). Off until
/// both `client_id` and `client_secret` are set; API keys work either way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    /// The OAuth app's client id.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Where GitHub's OAuth endpoints are (`/login/oauth/authorize`, `/login/oauth/access_token`).
    pub oauth_base: String,
    /// GitHub's REST API (`/user`, `/user/emails`, `/user/repos`).
    pub api_base: String,
    /// The callback URL registered with the app; a request's own `redirect_uri` wins.
    pub redirect_uri: Option<String>,
    /// Scopes asked for at sign-in; `repo` lets `/repos` list (and agent jobs clone)
    /// private repositories.
    pub scope: String,
    /// Deadline of each call to GitHub, in seconds.
    pub timeout_secs: u64,
    /// How long a sign-in `state` stays valid, in seconds.
    pub state_ttl_secs: u64,
    /// Most pages (of 100 repositories) `GET /repos` reads from GitHub.
    pub max_repo_pages: u32,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            oauth_base: "https://github.com".into(),
            api_base: "https://api.github.com".into(),
            redirect_uri: None,
            scope: "read:user user:email repo".into(),
            timeout_secs: 10,
            state_ttl_secs: 600,
            max_repo_pages: 10,
        }
    }
}

impl GithubConfig {
    /// Whether sign-in can work: both halves of the app's credentials are set.
    pub fn is_configured(&self) -> bool {
        self.client_id.as_ref().is_some_and(|id| !id.is_empty())
            && self
                .client_secret
                .as_ref()
                .is_some_and(|s| !s.expose().is_empty())
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        for (name, url) in [
            ("oauth_base", &self.oauth_base),
            ("api_base", &self.api_base),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::Rule(format!(
                    "github.{name} must be an http(s) URL, not {url:?}"
                )));
            }
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return Err(ConfigError::Rule(
                "github.timeout_secs must be between 1 and 300".into(),
            ));
        }
        if !(1..=86_400).contains(&self.state_ttl_secs) {
            return Err(ConfigError::Rule(
                "github.state_ttl_secs must be between 1 and 86400".into(),
            ));
        }
        if !(1..=100).contains(&self.max_repo_pages) {
            return Err(ConfigError::Rule(
                "github.max_repo_pages must be between 1 and 100".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use crate::{Config, Overrides};

    #[test]
    fn github_is_off_until_both_credentials_are_set_and_bounds_are_checked() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.github.is_configured());
            assert_eq!(config.github.api_base, "https://api.github.com");
            jail.set_env("KILN_GITHUB__CLIENT_ID", "Iv1.abc");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.github.is_configured(), "no secret yet");
            jail.set_env("KILN_GITHUB__CLIENT_SECRET", "s3cret");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(config.github.is_configured());
            jail.set_env("KILN_GITHUB__TIMEOUT_SECS", "0");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("github.timeout_secs"), "{err}");
            jail.set_env("KILN_GITHUB__TIMEOUT_SECS", "5");
            jail.set_env("KILN_GITHUB__API_BASE", "ftp://x");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("github.api_base"), "{err}");
            Ok(())
        });
    }
}
