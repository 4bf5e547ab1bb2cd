//! Kiln's domain services. They hold the rules of the product (who may do what, how a
//! dataset is imported, how a sample is archived) and know nothing of HTTP or Linux:
//! the API crate calls them, and they call the store (and, later, the runtime).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod agent_jobs;
pub mod auth;
pub mod base_images;
pub mod billing;
mod changes;
pub mod cluster;
mod cursor;
pub mod dataset_validation;
pub mod datasets;
pub mod demo;
mod error;
pub mod eval_runs;
pub mod github;
pub mod health;
mod ids;
pub mod instances;
pub mod metrics;
pub mod network;
pub mod orgs;
pub mod outbound;
pub mod record_formats;
pub mod records;
pub mod repos;
pub mod sandboxes;
pub mod secret_box;
pub mod sessions;
pub mod verification;
pub(crate) mod verification_jobs;
pub mod webhooks;

use std::path::Path;
use std::sync::Arc;

use kiln_config::Config;
use kiln_runtime::Runtime;
use kiln_store::Store;

pub use error::{FieldError, ServiceError, ServiceResult};
pub use ids::new_id;

use crate::agent_jobs::AgentJobService;
use crate::auth::AuthService;
use crate::billing::{BillingService, LedgerJobBilling};
use crate::datasets::DatasetService;
use crate::github::GithubService;
use crate::instances::InstanceService;
use crate::sandboxes::Sandboxes;
use crate::sessions::{RecoveryReport, SessionService};
use crate::webhooks::WebhookService;

/// Everything a running Kiln needs, built once at start and shared by every request. The
/// store stays inside: callers go through the services (and [`Kiln::ping_store`]).
pub struct Kiln {
    pub config: Config,
    store: Arc<dyn Store>,
    /// The sandbox backend, shared by sessions, verification and agent jobs.
    pub sandboxes: Arc<Sandboxes>,
    pub auth: AuthService,
    /// Password accounts under `/v1/auth` and their mail sender.
    pub accounts: accounts::AccountService,
    pub datasets: DatasetService,
    pub sessions: Arc<SessionService>,
    /// The `/v1` instance API over the same sessions.
    pub instances: InstanceService,
    pub billing: BillingService,
    pub agent_jobs: Arc<AgentJobService>,
    pub github: Arc<GithubService>,
    /// Users' webhooks and the sender of their deliveries.
    pub webhooks: WebhookService,
    /// Base image families and their pipeline (`/v1/base-images`).
    pub base_images: base_images::BaseImageService,
    /// Eval runs on the server (`/v1/parallel/runs`).
    pub parallel_runs: eval_runs::parallel::ParallelRuns,
    /// Set when [`Kiln::bootstrap`] finished (`health.rs`: the start-up probe).
    started: std::sync::atomic::AtomicBool,
    /// The node registry on PostgreSQL (`/v1/admin/servers`).
    pub cluster: Arc<cluster::ClusterService>,
    /// Organizations, members, invitations, org keys, audit (`/v1/orgs`).
    pub orgs: orgs::OrgService,
}

/// What happened at start that the operator must be told.
#[derive(Debug, Default)]
pub struct StartReport {
    /// The admin's API key, when this start created the admin (first start on an empty
    /// store). It is shown once and written to `<data-dir>/admin.key`.
    pub admin_key: Option<String>,
    pub demo_samples_loaded: u64,
    /// Why this server cannot run sessions, when it cannot.
    pub sessions_unavailable: Option<String>,
    pub recovery: RecoveryReport,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl Kiln {
    /// Opens (creating if needed) the data directory and the store, and prepares the
    /// services with the sandbox backend the configuration names. It does not
    /// bootstrap: see [`Kiln::bootstrap`].
    pub async fn open(config: Config) -> Result<Self, StartError> {
        Self::open_with(config, Sandboxes::open).await
    }

    /// Like [`Kiln::open`], as a node of its own beside the data directory's server (a
    /// one-off process: `kiln datasets validate`): its sessions and sandboxes are apart
    /// from the server's, which it never recovers or stops, and the other way round.
    /// [`Kiln::shutdown`] removes the node; one whose process died is reclaimed by the
    /// next process to start on the data directory.
    pub async fn open_ephemeral(config: Config, label: &str) -> Result<Self, StartError> {
        let label = label.to_string();
        Self::open_with(config, move |config| {
            Sandboxes::open_ephemeral(config, &label)
        })
        .await
    }

    /// Like [`Kiln::open`], with a sandbox backend the caller supplies (a test's fake,
    /// a backend in its own crate) instead of the configured one; sandboxes get the
    /// configuration's default limits, and `location` names where they run.
    pub async fn open_with_runtime(
        config: Config,
        runtime: Arc<dyn Runtime>,
        location: impl Into<String>,
    ) -> Result<Self, StartError> {
        let location = location.into();
        Self::open_with(config, move |config| {
            Sandboxes::with_runtime(config, runtime, location)
        })
        .await
    }

    /// [`Kiln::open_with_runtime`] as the data directory's own node: a supplied backend
    /// that is one node of several on PostgreSQL (registered, heartbeating, recovering
    /// only its own sessions and jobs).
    pub async fn open_with_runtime_as_node(
        config: Config,
        runtime: Arc<dyn Runtime>,
        location: impl Into<String>,
    ) -> Result<Self, StartError> {
        let location = location.into();
        Self::open_with(config, move |config| {
            Sandboxes::with_runtime_as_node(config, runtime, location)
        })
        .await
    }

    async fn open_with(
        mut config: Config,
        sandboxes: impl FnOnce(&Config) -> Sandboxes,
    ) -> Result<Self, StartError> {
        // Absolute once, here: sandboxes and agent jobs bind paths under it into mount
        // namespaces, where a path relative to the server's working directory means nothing.
        config.data_dir =
            std::path::absolute(&config.data_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
        let data_dir = config.data_dir.clone();
        create_private_dir(&data_dir)?;
        let store = kiln_store::connect(&config.database_url()).await?;
        let jwt_secret = match &config.auth.jwt_secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => load_or_create_secret(&data_dir.join("jwt.secret"))?,
        };
        let auth = AuthService::new(store.clone(), config.auth.clone(), &jwt_secret);
        let accounts = accounts::AccountService::new(
            store.clone(),
            config.accounts.clone(),
            config.mail.clone(),
            config.auth.clone(),
            &jwt_secret,
        )?;
        let datasets = DatasetService::new(store.clone(), data_dir.join("repos"));
        let sandboxes = Arc::new(sandboxes(&config));
        let sessions = SessionService::new(
            store.clone(),
            sandboxes.clone(),
            config.sessions.clone(),
            config.billing.clone(),
        );
        let webhooks = WebhookService::new(store.clone(), config.webhooks.clone(), &jwt_secret);
        sessions.set_events(webhooks.events());
        sessions.set_network(&config.network);
        let instances = InstanceService::new(store.clone(), sessions.clone(), sandboxes.clone())
            .with_config(config.instances.clone())
            .with_ports(config.ports.clone())
            .with_snapshot_config(config.snapshots.clone())
            .with_exec(config.exec.clone(), data_dir.join("exec-streams"));
        let billing = BillingService::new(store.clone(), config.billing.clone());
        let github = Arc::new(GithubService::new(
            store.clone(),
            config.github.clone(),
            &jwt_secret,
        ));
        let agent_jobs = AgentJobService::new(
            store.clone(),
            sandboxes.clone(),
            config.agent_jobs.clone(),
            &data_dir,
            Arc::new(LedgerJobBilling::new(billing.clone())),
            github.clone(),
        );
        let base_images = base_images::BaseImageService::new(
            store.clone(),
            config.base_images.clone(),
            kiln_runtime::open_images(&data_dir, &config.images_dir()).map_err(|e| e.to_string()),
            sandboxes.clone(),
        );
        let parallel_runs = eval_runs::parallel::ParallelRuns::new(
            sessions.clone(),
            eval_runs::parallel::runs_root(&data_dir),
            config.eval.clone(),
        );
        let cluster = Arc::new(cluster::ClusterService::new(
            store.clone(),
            sessions.clone(),
            agent_jobs.clone(),
            &config,
            sandboxes.node_id().filter(|_| !sandboxes.is_ephemeral()),
            kiln_runtime::open_images(&data_dir, &config.images_dir()).ok(),
        ));
        let orgs = orgs::OrgService::new(store.clone(), config.orgs.clone(), config.mail.clone());
        Ok(Self {
            cluster,
            orgs,
            parallel_runs,
            base_images,
            config,
            store,
            sandboxes,
            auth,
            accounts,
            datasets,
            sessions,
            instances,
            billing,
            agent_jobs,
            github,
            webhooks,
            started: Default::default(),
        })
    }

    /// First-start duties: an admin user with a key when the store has no user, and the
    /// demo dataset when configured and absent. Safe to run on every start.
    pub async fn bootstrap(&self) -> Result<StartReport, StartError> {
        let mut report = StartReport::default();
        // Before anything stores a change other processes' long-polls wait on.
        self.sessions.start_change_feed();
        if self.store.count_users().await? == 0 {
            let admin = self
                .auth
                .create_user("admin", "admin@localhost", true)
                .await?;
            let key = self
                .auth
                .create_api_key(
                    &admin.user_id,
                    Some("admin (created at first start)".into()),
                )
                .await?;
            let path = self.config.data_dir.join("admin.key");
            write_private_file(&path, format!("{}\n", key.secret).as_bytes())?;
            report.admin_key = Some(key.secret);
        }
        if self.config.load_demo_dataset {
            report.demo_samples_loaded = demo::load_demo_dataset(&self.datasets).await?;
        }
        report.sessions_unavailable = self.sessions.unavailable_reason();
        report.recovery = self.sessions.recover().await?;
        if self.sandboxes.is_ephemeral() {
            // A one-off node beside the server: the rest is the server's to recover and run.
            self.sessions.spawn_reaper();
            self.sessions.spawn_metering();
            self.mark_started();
            return Ok(report);
        }
        self.instances.recover_execs().await?;
        let failed = self.base_images.recover().await?;
        if failed > 0 {
            tracing::warn!(
                failed,
                "base images left preparing by a stop of the server failed"
            );
        }
        // After the sessions' recovery, which removes sandboxes nobody knows (theirs too).
        let interrupted = self.agent_jobs.recover().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "agent jobs cut off by the restart ended in error"
            );
        }
        // After the sessions' recovery: forwards of instances that survived are re-opened.
        self.instances.recover_port_forwards().await?;
        let stray = self.instances.remove_unrecorded_snapshots().await?;
        if stray > 0 {
            tracing::warn!(
                stray,
                "snapshot copies never recorded (a stop between the copy and its row) removed"
            );
        }
        self.sessions.spawn_reaper();
        self.sessions.spawn_metering();
        self.sessions.spawn_output_retention();
        self.webhooks.spawn_sender();
        self.accounts.spawn_sender();
        self.instances.snapshot_gc().spawn();
        // After recovery: a node registers once it has made its sandboxes and the store
        // agree.
        self.cluster.start().await?;
        self.mark_started();
        Ok(report)
    }

    /// Whether the store answers, for health checks.
    pub async fn ping_store(&self) -> ServiceResult<()> {
        Ok(self.store.ping().await?)
    }

    /// Which backend stores ("sqlite" or "postgres"), for logs.
    pub fn store_backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Stops every sandbox; the store keeps the sessions for the next start to resolve.
    pub async fn shutdown(&self) {
        self.cluster.shutdown();
        self.agent_jobs.shutdown();
        self.webhooks.shutdown();
        self.accounts.shutdown();
        self.sessions.shutdown().await;
        self.sandboxes.retire_node();
    }
}

fn create_private_dir(path: &Path) -> Result<(), StartError> {
    let err = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Writes `contents` to a file only its owner can read, replacing it atomically.
fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The JWT signing key: read from `path`, or made and kept there on first start. A file
/// too short to be a real key (e.g. truncated by a crash) is replaced.
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, StartError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(StartError::DataDir {
            path: path.display().to_string(),
            source,
        }),
        _ => {
            let secret = ids::random_token(64).into_bytes();
            write_private_file(path, &secret)?;
            Ok(secret)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[tokio::test]
    async fn a_relative_data_dir_is_made_absolute() {
        let dir = tempfile::tempdir_in(".").expect("tempdir in the working directory");
        let relative = PathBuf::from(dir.path().file_name().expect("a name")).join("data");
        let config = Config {
            data_dir: relative.clone(),
            load_demo_dataset: false,
            build_demo_images: false,
            ..Config::default()
        };
        let kiln = Kiln::open(config).await.expect("opens");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(kiln.config.data_dir, cwd.join(&relative));
        assert!(kiln.config.data_dir.join("kiln.db").exists());
        // The runtime (when this host has one) keeps ready disks mounted under the data
        // dir: a stop releases them, or the temp dir could not be removed.
        kiln.shutdown().await;
    }
}
