//! Kiln's configuration, typed. It is read in layers, each overriding the one before:
//! built-in defaults → an optional TOML file → `KILN_*` environment variables → command
//! line flags. Nested keys are reached from the environment with a double underscore:
//! `KILN_AUTH__ACCESS_TOKEN_TTL_SECS=600`.
#![forbid(unsafe_code)]

mod accounts;
mod agent_jobs;
mod auth;
mod base_images;
mod billing;
mod cluster;
mod docker;
mod exec;
mod files;
mod github;
mod instances;
mod limits;
mod load;
mod mail;
mod mcp;
mod network;
mod ports;
mod quota;
mod runtime;
mod secret;
mod server;
mod sessions;
mod snapshots;
mod webhooks;
// `[eval]`: eval runs (`/v1/parallel/runs`).
mod eval;
pub use eval::EvalConfig;
// `[runtime.kubernetes]`: the Kubernetes backend.
mod kubernetes;
pub use kubernetes::{KubernetesConfig, KubernetesMode};
// `[orgs]`: organizations (`/v1/orgs`).
mod orgs;
pub use orgs::OrgsConfig;
// `[telemetry]`: log format and OTLP trace export.
mod telemetry;
pub use telemetry::TelemetryConfig;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use accounts::AccountsConfig;
pub use agent_jobs::{AgentConfig, AgentJobsConfig};
pub use auth::AuthConfig;
pub use base_images::BaseImagesConfig;
pub use billing::{BillingConfig, StripeConfig};
pub use cluster::ClusterConfig;
pub use docker::{AgentConnection, DockerConfig};
pub use exec::ExecConfig;
pub use files::{FilesConfig, MAX_FILE_WRITE_BYTES};
pub use github::GithubConfig;
pub use instances::InstancesConfig;
pub use limits::LimitsConfig;
pub use load::Overrides;
pub use mail::{MailConfig, SmtpTls};
pub use mcp::McpConfig;
pub use network::NetworkConfig;
pub use ports::PortsConfig;
pub use quota::DiskLimitMode;
pub use runtime::{RuntimeBackend, RuntimeConfig};
pub use secret::Secret;
pub use server::ServerConfig;
pub use sessions::SessionsConfig;
pub use snapshots::SnapshotsConfig;
pub use webhooks::WebhooksConfig;

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
    /// `text` for people, `json` for log collectors (`telemetry.log_format`, when set,
    /// wins).
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
    pub files: FilesConfig,
    pub instances: InstancesConfig,
    pub webhooks: WebhooksConfig,
    pub ports: PortsConfig,
    pub snapshots: SnapshotsConfig,
    /// `[exec]`: commands of the instance API.
    pub exec: ExecConfig,
    /// `[base_images]`: base image families and their pipeline.
    pub base_images: BaseImagesConfig,
    /// `[eval]`: limits of eval runs on the server.
    pub eval: EvalConfig,
    /// `[mcp]`: the MCP server (`/mcp`, `kiln mcp`).
    pub mcp: McpConfig,
    /// `[accounts]`: password accounts under `/v1/auth`.
    pub accounts: AccountsConfig,
    /// `[mail]`: SMTP for account mails.
    pub mail: MailConfig,
    /// `[cluster]`: the node registry on PostgreSQL (issue 12).
    pub cluster: ClusterConfig,
    /// `[orgs]`: organizations, invitations, org keys.
    pub orgs: OrgsConfig,
    /// `[telemetry]`: log format, OTLP trace export.
    pub telemetry: TelemetryConfig,
    /// `[network]`: what sessions may reach outside (nothing by default).
    pub network: NetworkConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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
            files: FilesConfig::default(),
            instances: InstancesConfig::default(),
            webhooks: WebhooksConfig::default(),
            ports: PortsConfig::default(),
            snapshots: SnapshotsConfig::default(),
            exec: ExecConfig::default(),
            base_images: BaseImagesConfig::default(),
            eval: EvalConfig::default(),
            mcp: McpConfig::default(),
            accounts: AccountsConfig::default(),
            mail: MailConfig::default(),
            cluster: ClusterConfig::default(),
            orgs: OrgsConfig::default(),
            telemetry: TelemetryConfig::default(),
            network: NetworkConfig::default(),
        }
    }
}

impl Config {
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
mod tests {
    use super::*;

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
    fn default_database_is_sqlite_in_data_dir() {
        let config = Config {
            data_dir: "/d".into(),
            ..Config::default()
        };
        assert_eq!(config.database_url(), "sqlite:///d/kiln.db");
    }
}
