//! Kiln's configuration, typed. It is read in layers, each overriding the one before:
//! built-in defaults → an optional TOML file → `KILN_*` environment variables → command
//! line flags. Nested keys are reached from the environment with a double underscore:
//! `KILN_AUTH__ACCESS_TOKEN_TTL_SECS=600`.
#![forbid(unsafe_code)]

mod secret;
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use secret::Secret;
pub use server::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Where Kiln keeps its state: the SQLite database, repositories, images, keys.
    pub data_dir: PathBuf,
    /// Where environment images are kept; by default `<data_dir>/images`. Several
    /// servers (or test runs) on one machine may share one.
    pub images_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`; by default a SQLite file in the data directory.
    pub database_url: Option<Secret>,
    /// `text` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// Load the bundled `kiln-demo` dataset when the store has no such dataset yet.
    pub load_demo_dataset: bool,
    /// At start, build the demo dataset's environment images in the background when they
    /// are missing (needs root, debootstrap and a Debian mirror; ≈ 5 minutes once).
    pub build_demo_images: bool,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub sessions: SessionsConfig,
    pub runtime: RuntimeConfig,
    pub billing: BillingConfig,
    pub agent_jobs: AgentJobsConfig,
    pub github: GithubConfig,
    pub server: ServerConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    pub default_ttl_minutes: u32,
    pub max_ttl_minutes: u32,
    /// Sessions one user may have `creating` or `ready` at once.
    pub max_live_sessions_per_user: u32,
    /// How long a GET on an unfinished session, interaction or job waits for a change.
    pub long_poll_secs: u64,
    pub default_command_timeout_secs: u32,
    pub max_command_timeout_secs: u32,
    /// Longest command accepted, in bytes.
    pub max_command_bytes: usize,
    /// Output kept per stream of each command (the rest is cut, and the reply says so).
    pub max_output_bytes: usize,
    /// Largest file `upload` accepts (decoded), in bytes.
    pub max_upload_bytes: usize,
    /// Interactions that may wait in one session's queue.
    pub max_queued_interactions: usize,
    /// Days an interaction's stdout and stderr are kept after it finished; older output is
    /// emptied by a periodic task and the interaction says `output_expired`. 0 keeps it.
    pub output_retention_days: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            default_ttl_minutes: 30,
            max_ttl_minutes: 24 * 60,
            max_live_sessions_per_user: 100,
            long_poll_secs: 20,
            default_command_timeout_secs: 300,
            max_command_timeout_secs: 3600,
            max_command_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_upload_bytes: 10 * 1024 * 1024,
            max_queued_interactions: 1000,
            output_retention_days: 7,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `local` (sandboxes on this machine) or `none` (no sessions; datasets only).
    pub backend: RuntimeBackend,
    /// The static `kiln-agent` to put in sandboxes; by default the one built into `kiln`.
    pub agent_binary: Option<PathBuf>,
    /// Per-sandbox memory limit, in MiB.
    pub memory_mib: u64,
    /// Per-sandbox process limit.
    pub pids: u64,
    /// Per-sandbox CPU limit, in thousandths of a core.
    pub cpu_millicores: u32,
    /// Per-sandbox disk limit (its writable layer, `/tmp` included), in MiB; 0: none.
    pub disk_mib: u64,
    /// Memory of all sandboxes together (their parent cgroup's limit), in MiB; by
    /// default MemTotal minus an eighth (at least 1 GiB) for the host.
    pub memory_budget_mib: Option<u64>,
    /// Admission: a create is refused (503) when the sandboxes' memory limits would sum
    /// past the budget × this, or their disk limits past the usable disk × `disk_overcommit`.
    pub memory_overcommit: f64,
    pub disk_overcommit: f64,
    /// The largest disk a sample may ask for (its record's `disk_mib`, overriding
    /// `disk_mib` for its sessions), in MiB. A sample asking for more cannot be started.
    pub max_disk_mib: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeBackend {
    Local,
    None,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            backend: RuntimeBackend::Local,
            agent_binary: None,
            memory_mib: 2048,
            pids: 512,
            cpu_millicores: 1000,
            disk_mib: 10 * 1024,
            memory_budget_mib: None,
            memory_overcommit: 10.0,
            disk_overcommit: 20.0,
            max_disk_mib: 100 * 1024,
        }
    }
}

/// Prices, the balance check and Stripe. Usage is recorded whether or not billing is
/// enabled; enabled, a session needs a balance to start and stops when it runs out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Refuse sessions without balance and stop them when it runs out. Off by default: a
    /// self-hosted server records usage without charging anyone.
    pub enabled: bool,
    pub cost_per_minute_cents: i64,
    pub agent_job_cost_cents: i64,
    /// How often running sessions are priced against their users' balances (1–3600).
    pub balance_check_secs: u64,
    /// How often ready sessions' sandboxes are checked and their heartbeat recorded (1–3600).
    pub heartbeat_secs: u64,
    /// The smallest deposit accepted, in cents.
    pub min_deposit_cents: i64,
    pub stripe: StripeConfig,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cost_per_minute_cents: 5,
            agent_job_cost_cents: 50,
            balance_check_secs: 10,
            heartbeat_secs: 30,
            min_deposit_cents: 500,
            stripe: StripeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    pub api_base: String,
    /// `sk_…`; deposits are refused (503) without it.
    pub secret_key: Option<Secret>,
    /// `whsec_…`; webhooks are refused without it.
    pub webhook_secret: Option<Secret>,
    pub success_url: String,
    pub cancel_url: String,
    /// How old a webhook's signed timestamp may be (either way), in seconds.
    pub webhook_tolerance_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            secret_key: None,
            webhook_secret: None,
            success_url: "http://127.0.0.1:8000/billing/success".into(),
            cancel_url: "http://127.0.0.1:8000/billing/cancel".into(),
            webhook_tolerance_secs: 300,
        }
    }
}

/// Agent jobs: an agent (an image and a command) run over a repository in a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentJobsConfig {
    /// The agents a job may name, by `agent_id`.
    pub agents: std::collections::BTreeMap<String, AgentConfig>,
    /// Jobs running at once on this server; the others wait as `pending`.
    pub max_concurrent: usize,
    /// Unfinished jobs one user may have at once.
    pub max_unfinished_per_user: usize,
    /// Largest repository (its clone on disk) a job may use, in bytes.
    pub max_repo_bytes: u64,
    /// How long cloning may take.
    pub clone_timeout_secs: u64,
    /// Output of the agent's command kept per stream (head and tail).
    pub max_log_bytes: u64,
    /// Largest diff a job may produce; a larger one is an error.
    pub max_diff_bytes: u64,
    /// Local repositories (paths and `file://` URLs) are allowed only under this
    /// directory; none at all when unset.
    pub local_repo_root: Option<PathBuf>,
    /// Where a repository named `owner/name` is cloned from: `<base>/owner/name.git`.
    pub git_host: String,
    /// Hosts (`host` or `host:port`, as a URL writes them) that repositories may be
    /// cloned from although they are internal (loopback, private, link-local, …): by
    /// default the server refuses every internal address a user names.
    pub allowed_internal_hosts: Vec<String>,
}

/// One agent: the image its sandbox is made from and the command run there, with the
/// repository checked out in `/workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// An image reference in the image store, e.g. `kiln-demo/python:1`.
    pub image: String,
    /// A shell command, run in `/workspace`.
    pub command: String,
    /// Wall-clock limit of the command; the sandbox is destroyed after it.
    pub timeout_secs: u64,
    /// Extra environment of the command.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

impl Default for AgentJobsConfig {
    fn default() -> Self {
        // `script` runs the script the repository itself carries: it needs no model.
        let script = AgentConfig {
            image: "kiln-demo/python:1".into(),
            command: "sh /workspace/.kiln/agent.sh".into(),
            timeout_secs: 600,
            env: Default::default(),
        };
        Self {
            agents: [("script".to_string(), script)].into_iter().collect(),
            max_concurrent: 2,
            max_unfinished_per_user: 20,
            max_repo_bytes: 1024 * 1024 * 1024,
            clone_timeout_secs: 300,
            max_log_bytes: 1024 * 1024,
            max_diff_bytes: 64 * 1024 * 1024,
            local_repo_root: None,
            git_host: "https://github.com".into(),
            allowed_internal_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key that signs JWTs (HS256). When unset, one is generated on first start and kept
    /// in `<data_dir>/jwt.secret`, so tokens survive restarts.
    pub jwt_secret: Option<Secret>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// How many active API keys one user may hold.
    pub max_api_keys_per_user: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest dataset file `kiln datasets import` reads, in bytes.
    pub max_import_bytes: u64,
    /// Most samples one import may hold.
    pub max_import_samples: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: PathBuf::from(".kiln"),
            images_dir: None,
            database_url: None,
            log_format: LogFormat::Text,
            load_demo_dataset: true,
            build_demo_images: true,
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            sessions: SessionsConfig::default(),
            runtime: RuntimeConfig::default(),
            billing: BillingConfig::default(),
            agent_jobs: AgentJobsConfig::default(),
            github: GithubConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            max_api_keys_per_user: 100,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_import_bytes: 2 * 1024 * 1024 * 1024,
            max_import_samples: 100_000,
        }
    }
}

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

    fn check(&self) -> Result<(), ConfigError> {
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

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// The top-level settings, as named in the file and (upper-cased) in the environment:
/// read off the type itself, so a new setting cannot be forgotten here.
fn setting_names() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Reads the layers. `file` is the `--config` / `KILN_CONFIG` path, if any: a named
    /// file that does not exist is an error, not a silent default.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment, Env::prefixed("KILN_").split("__"), overrides)
    }

    fn from_figment(
        figment: Figment,
        env: Env,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        // Only variables that name a setting are read: others share the prefix
        // (KILN_CONFIG names the file; tests and scripts have their own KILN_* variables)
        // and must not trip `deny_unknown_fields`.
        let settings = setting_names();
        let env = env.filter(move |key| {
            let key = key.as_str();
            settings.iter().any(|name| {
                key.eq_ignore_ascii_case(name)
                    || (key.len() > name.len()
                        && key[..name.len()].eq_ignore_ascii_case(name)
                        && (key[name.len()..].starts_with("__")
                            || key[name.len()..].starts_with('.')))
            })
        });
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.auth.access_token_ttl_secs == 0 || self.auth.refresh_token_ttl_secs == 0 {
            return Err(ConfigError::Rule(
                "token lifetimes must be at least one second".into(),
            ));
        }
        let s = &self.sessions;
        if s.default_ttl_minutes == 0 || s.default_ttl_minutes > s.max_ttl_minutes {
            return Err(ConfigError::Rule(
                "sessions.default_ttl_minutes must be between 1 and max_ttl_minutes".into(),
            ));
        }
        if s.default_command_timeout_secs == 0
            || s.default_command_timeout_secs > s.max_command_timeout_secs
        {
            return Err(ConfigError::Rule(
                "sessions.default_command_timeout_secs must be between 1 and max_command_timeout_secs".into(),
            ));
        }
        let r = &self.runtime;
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !positive(r.memory_overcommit) || !positive(r.disk_overcommit) {
            return Err(ConfigError::Rule(
                "runtime.memory_overcommit and disk_overcommit must be positive numbers".into(),
            ));
        }
        let b = &self.billing;
        for (name, secs) in [
            ("billing.balance_check_secs", b.balance_check_secs),
            ("billing.heartbeat_secs", b.heartbeat_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(ConfigError::Rule(format!(
                    "{name} must be between 1 and 3600"
                )));
            }
        }
        if b.cost_per_minute_cents < 0 || b.agent_job_cost_cents < 0 || b.min_deposit_cents < 1 {
            return Err(ConfigError::Rule(
                "billing prices must not be negative, and min_deposit_cents at least 1".into(),
            ));
        }
        let a = &self.agent_jobs;
        if a.max_concurrent == 0 || a.max_unfinished_per_user == 0 || a.clone_timeout_secs == 0 {
            return Err(ConfigError::Rule(
                "agent_jobs.max_concurrent, max_unfinished_per_user and clone_timeout_secs must be at least 1".into(),
            ));
        }
        if a.max_log_bytes > 2 * 1024 * 1024 {
            return Err(ConfigError::Rule(
                "agent_jobs.max_log_bytes must be at most 2 MiB (the agent protocol's limit)"
                    .into(),
            ));
        }
        for (id, agent) in &a.agents {
            let id_ok = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok || agent.timeout_secs == 0 || agent.command.trim().is_empty() {
                return Err(ConfigError::Rule(format!(
                    "agent_jobs.agents.{id}: the id must be 1-64 of [A-Za-z0-9_-], the command non-empty and timeout_secs at least 1"
                )));
            }
        }
        self.github.check()?;
        self.server.check(self.sessions.long_poll_secs)?;
        if self.limits.max_body_bytes < 1024 {
            return Err(ConfigError::Rule(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// The database URL in force: the configured one or the default SQLite file.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_string(),
            None => format!("sqlite://{}", self.data_dir.join("kiln.db").display()),
        }
    }

    /// The image store's directory in force.
    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("images"))
    }

    /// The effective configuration as TOML, secrets masked, for `kiln config`.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kiln.toml",
                "listen = \"127.0.0.1:9000\"\n[auth]\naccess_token_ttl_secs = 60\n",
            )?;
            jail.set_env("KILN_AUTH__ACCESS_TOKEN_TTL_SECS", "120");
            jail.set_env("KILN_DATA_DIR", "/var/lib/kiln");
            jail.set_env("KILN_TEST_SOMETHING_ELSE", "ignored");
            jail.set_env("KILN_IMAGES_DIR", "/srv/images");
            jail.set_env("KILN_SESSIONS__LONG_POLL_SECS", "3");
            let config =
                Config::load(Some(Path::new("kiln.toml")), &Overrides::default()).expect("loads");
            assert_eq!(config.listen, "127.0.0.1:9000".parse().expect("addr"));
            assert_eq!(config.auth.access_token_ttl_secs, 120, "env beats file");
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/kiln"));
            assert_eq!(config.images_dir(), PathBuf::from("/srv/images"));
            assert_eq!(config.sessions.long_poll_secs, 3);

            let overrides = Overrides {
                data_dir: Some("/tmp/x".into()),
                listen: None,
            };
            let config = Config::load(Some(Path::new("kiln.toml")), &overrides).expect("loads");
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"), "flags beat env");
            Ok(())
        });
    }

    #[test]
    fn missing_file_and_unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            let err =
                Config::load(Some(Path::new("nope.toml")), &Overrides::default()).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)));
            jail.create_file("bad.toml", "lisen = \"127.0.0.1:1\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let config = Config {
            database_url: Some(Secret::new("postgres://kiln:hunter2@db/kiln")),
            auth: AuthConfig {
                jwt_secret: Some(Secret::new("topsecret")),
                ..AuthConfig::default()
            },
            github: GithubConfig {
                client_secret: Some(Secret::new("ghsecret")),
                ..GithubConfig::default()
            },
            ..Config::default()
        };
        let printed = config.to_masked_toml();
        assert!(
            !printed.contains("hunter2")
                && !printed.contains("topsecret")
                && !printed.contains("ghsecret"),
            "{printed}"
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.database_url(), "postgres://kiln:hunter2@db/kiln");
    }

    #[test]
    fn billing_defaults_and_bounds() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.billing.enabled);
            assert_eq!(config.billing.cost_per_minute_cents, 5);
            assert_eq!(config.billing.balance_check_secs, 10);
            assert_eq!(config.billing.stripe.api_base, "https://api.stripe.com");
            assert_eq!(config.billing.stripe.webhook_tolerance_secs, 300);
            assert_eq!(config.billing.min_deposit_cents, 500);
            jail.set_env("KILN_BILLING__BALANCE_CHECK_SECS", "0");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("balance_check_secs"), "{err}");
            jail.set_env("KILN_BILLING__BALANCE_CHECK_SECS", "3601");
            assert!(Config::load(None, &Overrides::default()).is_err());
            jail.set_env("KILN_BILLING__BALANCE_CHECK_SECS", "3600");
            jail.set_env("KILN_BILLING__STRIPE__SECRET_KEY", "sk_test_hidden");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.to_masked_toml().contains("sk_test_hidden"));
            Ok(())
        });
    }

    #[test]
    fn agents_are_configured_in_the_file_beside_the_built_in_script() {
        figment::Jail::expect_with(|jail| {
            let printed = Config::default().to_masked_toml();
            assert!(printed.contains("[agent_jobs.agents.script]"), "{printed}");
            jail.create_file(
                "kiln.toml",
                "[agent_jobs]\nmax_concurrent = 3\nlocal_repo_root = \"/srv/repos\"\n\
                 [agent_jobs.agents.lint]\nimage = \"x/lint:1\"\ncommand = \"make lint\"\n\
                 timeout_secs = 60\nenv = { MODE = \"strict\" }\n",
            )?;
            let config =
                Config::load(Some(Path::new("kiln.toml")), &Overrides::default()).expect("loads");
            let jobs = &config.agent_jobs;
            assert_eq!(jobs.max_concurrent, 3);
            assert_eq!(jobs.local_repo_root, Some(PathBuf::from("/srv/repos")));
            assert_eq!(jobs.agents["lint"].env["MODE"], "strict");
            assert!(
                jobs.agents.contains_key("script"),
                "the built-in agent stays"
            );

            jail.create_file(
                "bad.toml",
                "[agent_jobs.agents.\"no spaces\"]\nimage = \"x:1\"\ncommand = \"true\"\ntimeout_secs = 1\n",
            )?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("no spaces"), "{err}");
            Ok(())
        });
    }

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

    #[test]
    fn default_database_is_sqlite_in_data_dir() {
        let config = Config {
            data_dir: "/d".into(),
            ..Config::default()
        };
        assert_eq!(config.database_url(), "sqlite:///d/kiln.db");
    }
}
