//! Agent jobs: an agent (an image and a command, configured under `agent_jobs.agents`)
//! run in a sandbox over a repository checked out at a ref, producing a diff and logs.
//!
//! `pending → starting` (cloning) `→ running` (the agent's command) `→ completed | error`.
//! The runner ([`runner`]) finishes a job itself when the command ends; an agent may also
//! report its outcome through [`AgentJobService::complete`] with the job's secret. Both
//! go through [`AgentJobService::finish`], whose store update has exactly one winner, so
//! a job is refunded at most once.
mod billing;
mod repo_source;
mod result_archive;
mod runner;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kiln_config::AgentJobsConfig;
use kiln_runtime::{RuntimeError, SandboxId};
use kiln_store::{AgentJobCursor, AgentJobRecord, AgentJobUpdate, JobStatus, NewAgentJob, Store};
use tokio::sync::Semaphore;

use crate::error::{ServiceError, ServiceResult};
use crate::ids::{new_id, random_token, sha256_hex};
use crate::outbound::{OutboundPolicy, Vetted};
use crate::sandboxes::{Sandboxes, WorkOwner};

pub use billing::{CloneCredentials, JobBilling, JobCharge, NoBilling, NoCredentials};
use repo_source::{check_ref, RepoSource};

/// The message of jobs a restart cut off.
pub const INTERRUPTED: &str = "interrupted by a server restart";
/// The configuration key that lets repository URLs reach internal hosts.
const ALLOW_KEY: &str = "agent_jobs.allowed_internal_hosts";
/// The environment variable holding the job's completion secret in the agent's process.
pub const SECRET_ENV: &str = "KILN_JOB_SECRET";
/// The most jobs one page lists.
pub const MAX_PAGE_SIZE: u64 = 100;
pub const MAX_AGENT_ID_CHARS: usize = 64;
/// Longer completion secrets cannot be ours: refused as an unknown job, before any lookup.
pub const MAX_SECRET_CHARS: usize = 256;
pub const MAX_ERROR_MESSAGE_CHARS: usize = 10_000;

/// A new job request, validated by the caller's shape but not its meaning.
pub struct CreateAgentJob<'a> {
    pub user_id: &'a str,
    pub repo: &'a str,
    pub git_ref: Option<&'a str>,
    pub agent_id: &'a str,
}

/// How an agent says it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Error(String),
}

/// A page of a user's jobs.
pub struct AgentJobPage {
    pub jobs: Vec<AgentJobRecord>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
}

pub struct AgentJobService {
    store: Arc<dyn Store>,
    sandboxes: Arc<Sandboxes>,
    config: AgentJobsConfig,
    /// `<data_dir>/agent-jobs`: one directory per job (work files, then the result).
    jobs_dir: PathBuf,
    billing: std::sync::RwLock<Arc<dyn JobBilling>>,
    credentials: std::sync::RwLock<Arc<dyn CloneCredentials>>,
    slots: Arc<Semaphore>,
    /// Which internal hosts users' repository URLs may reach.
    outbound: OutboundPolicy,
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl AgentJobService {
    pub fn new(
        store: Arc<dyn Store>,
        sandboxes: Arc<Sandboxes>,
        config: AgentJobsConfig,
        data_dir: &Path,
        billing: Arc<dyn JobBilling>,
        credentials: Arc<dyn CloneCredentials>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            sandboxes,
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            outbound: OutboundPolicy::new(&config.allowed_internal_hosts, ALLOW_KEY),
            config,
            jobs_dir: data_dir.join("agent-jobs"),
            billing: std::sync::RwLock::new(billing),
            credentials: std::sync::RwLock::new(credentials),
            running: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &AgentJobsConfig {
        &self.config
    }

    /// Plugs the ledger in: jobs accepted from now on are charged through it.
    pub fn set_billing(&self, billing: Arc<dyn JobBilling>) {
        *self.billing.write().unwrap_or_else(|e| e.into_inner()) = billing;
    }

    /// Plugs a token source in for cloning private repositories.
    pub fn set_credentials(&self, credentials: Arc<dyn CloneCredentials>) {
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = credentials;
    }

    fn billing(&self) -> Arc<dyn JobBilling> {
        self.billing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn credentials(&self) -> Arc<dyn CloneCredentials> {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Accepts a job: validates it, charges it, stores it as `pending` and starts its
    /// runner. The secret is handed only to the agent's process.
    pub async fn create(
        self: &Arc<Self>,
        request: CreateAgentJob<'_>,
    ) -> ServiceResult<AgentJobRecord> {
        let agent_id = request.agent_id;
        if agent_id.is_empty() || agent_id.chars().count() > MAX_AGENT_ID_CHARS {
            return Err(ServiceError::invalid(
                &["agent_id"],
                format!("String should have 1 to {MAX_AGENT_ID_CHARS} characters"),
                "string_too_long",
            ));
        }
        let agent = self.config.agents.get(request.agent_id).ok_or_else(|| {
            let known: Vec<&str> = self.config.agents.keys().map(String::as_str).collect();
            ServiceError::invalid(
                &["agent_id"],
                format!(
                    "unknown agent {:?}; this server has: {}",
                    request.agent_id,
                    known.join(", ")
                ),
                "value_error",
            )
        })?;
        let source = RepoSource::parse(
            request.repo,
            &self.config.git_host,
            self.config.local_repo_root.as_deref(),
        )?;
        if let Some(git_ref) = request.git_ref {
            check_ref(git_ref)?;
        }
        // Before anything connects: a user must not make the server reach its own
        // loopback, private networks or metadata service (and read git's answer back).
        let pin = match source.url() {
            Some(url) => Some(
                self.outbound
                    .vet(&url)
                    .await
                    .map_err(|e| ServiceError::invalid(&["repo"], e.to_string(), "value_error"))?,
            ),
            None => None,
        };
        let sandboxes = self.sandboxes.available().map_err(|why| {
            ServiceError::Unavailable(format!(
                "agent jobs are not available on this server: {why}"
            ))
        })?;
        let (runtime, limits) = (&sandboxes.runtime, &sandboxes.limits);
        match runtime.check_image(&agent.image).await {
            Ok(()) => {}
            Err(RuntimeError::ImageNotFound { .. }) => {
                return Err(ServiceError::Conflict(format!(
                    "the image {} of agent {} is not on this server; import or build it first",
                    agent.image, request.agent_id
                )))
            }
            Err(e) => {
                return Err(ServiceError::Internal(format!(
                    "cannot look the image {} up: {e}",
                    agent.image
                )))
            }
        }
        let unfinished = self
            .store
            .list_unfinished_agent_jobs()
            .await?
            .iter()
            .filter(|j| j.user_id == request.user_id)
            .count();
        if unfinished >= self.config.max_unfinished_per_user {
            return Err(ServiceError::LimitExceeded(format!(
                "you have {unfinished} unfinished agent jobs (the limit is {}); wait for one to end",
                self.config.max_unfinished_per_user
            )));
        }

        let secret = random_token(48);
        let charge = JobCharge {
            job_id: new_id("ajob"),
            user_id: request.user_id.to_string(),
            agent_id: request.agent_id.to_string(),
        };
        // A job's sandbox is admitted like a session's: a full node refuses now (503). The
        // runner's create takes the reservation over (or it lapses after the runner).
        let sandbox_id = SandboxId::new(charge.job_id.clone())
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        runtime
            .reserve(&sandbox_id, limits)
            .map_err(ServiceError::admission)?;
        // Charged before it exists, so a refused charge leaves no job behind.
        self.billing()
            .charge(&charge)
            .await
            .inspect_err(|_| runtime.release(&sandbox_id))?;
        let inserted = self
            .store
            .insert_agent_job(&NewAgentJob {
                job_id: charge.job_id.clone(),
                user_id: charge.user_id.clone(),
                repo: request.repo.to_string(),
                git_ref: request.git_ref.map(str::to_string),
                agent_id: charge.agent_id.clone(),
                secret_hash: sha256_hex(&secret),
                created_at: Utc::now(),
                // A one-off node's jobs stay the data directory's server's to recover.
                node_id: (!self.sandboxes.is_ephemeral())
                    .then(|| self.sandboxes.node_id().map(str::to_string))
                    .flatten(),
            })
            .await;
        let job = match inserted {
            Ok(job) => job,
            Err(e) => {
                runtime.release(&sandbox_id);
                if let Err(refund) = self.billing().refund(&charge).await {
                    tracing::error!(job = %charge.job_id, error = %refund, "cannot refund a job that was not stored");
                }
                return Err(e.into());
            }
        };
        self.spawn_runner(job.clone(), source, pin, secret);
        Ok(job)
    }

    fn spawn_runner(
        self: &Arc<Self>,
        job: AgentJobRecord,
        source: RepoSource,
        pin: Option<Vetted>,
        secret: String,
    ) {
        let this = self.clone();
        let job_id = job.job_id.clone();
        let mut running = self.lock_running();
        let task = tokio::spawn(async move {
            let job_id = job.job_id.clone();
            runner::run(&this, job, source, pin, secret).await;
            // A job that ended before its sandbox was created gives its room back.
            if let (Ok(sandboxes), Ok(id)) =
                (this.sandboxes.available(), SandboxId::new(job_id.clone()))
            {
                sandboxes.runtime.release(&id);
            }
            this.lock_running().remove(&job_id);
        });
        running.insert(job_id, task.abort_handle());
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller's job; another user's is not found, like one that does not exist.
    pub async fn get(&self, user_id: &str, job_id: &str) -> ServiceResult<AgentJobRecord> {
        match self.store.get_agent_job(job_id).await? {
            Some(job) if job.user_id == user_id => Ok(job),
            _ => Err(ServiceError::not_found(format!("agent job {job_id}"))),
        }
    }

    /// A page of the caller's jobs, newest first. `cursor` is the `next_cursor` of the
    /// page before; anything else is a validation error.
    pub async fn list(
        &self,
        user_id: &str,
        limit: u64,
        cursor: Option<&str>,
    ) -> ServiceResult<AgentJobPage> {
        if limit == 0 {
            return Err(ServiceError::invalid(
                &["limit"],
                "Input should be greater than or equal to 1",
                "greater_than_equal",
            ));
        }
        if limit > MAX_PAGE_SIZE {
            return Err(ServiceError::invalid(
                &["limit"],
                format!("Input should be less than or equal to {MAX_PAGE_SIZE}"),
                "less_than_equal",
            ));
        }
        let after = cursor.map(decode_cursor).transpose()?;
        let mut jobs = self
            .store
            .list_agent_jobs(user_id, after.as_ref(), limit.saturating_add(1))
            .await?;
        let has_more = jobs.len() as u64 > limit;
        jobs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = match jobs.last() {
            Some(last) if has_more => Some(encode_cursor(last.created_at, &last.job_id)),
            _ => None,
        };
        Ok(AgentJobPage { jobs, next_cursor })
    }

    /// An agent's report, authenticated by the job's secret alone. A wrong secret and an
    /// unknown job give the same answer. On a finished job it changes nothing and
    /// returns the job as it is.
    pub async fn complete(
        &self,
        job_id: &str,
        secret: &str,
        outcome: Outcome,
    ) -> ServiceResult<AgentJobRecord> {
        let refused = || ServiceError::not_found(format!("agent job {job_id}"));
        if secret.chars().count() > MAX_SECRET_CHARS {
            return Err(refused());
        }
        if let Outcome::Error(message) = &outcome {
            if message.chars().count() > MAX_ERROR_MESSAGE_CHARS {
                return Err(ServiceError::invalid(
                    &["error_message"],
                    format!("String should have at most {MAX_ERROR_MESSAGE_CHARS} characters"),
                    "string_too_long",
                ));
            }
        }
        let job = self
            .store
            .get_agent_job(job_id)
            .await?
            .ok_or_else(refused)?;
        if !constant_time_eq(sha256_hex(secret).as_bytes(), job.secret_hash.as_bytes()) {
            return Err(refused());
        }
        match self
            .finish(job_id, outcome, "reported by the agent")
            .await?
        {
            Some(finished) => Ok(finished),
            None => Ok(self
                .store
                .get_agent_job(job_id)
                .await?
                .ok_or_else(refused)?),
        }
    }

    /// Finishes an unfinished job (`None` if it already was), refunding it when it ended
    /// in error. The one path by which every job ends.
    pub(crate) async fn finish(
        &self,
        job_id: &str,
        outcome: Outcome,
        progress: &str,
    ) -> ServiceResult<Option<AgentJobRecord>> {
        let (status, error_message) = match outcome {
            Outcome::Completed => (JobStatus::Completed, None),
            Outcome::Error(message) => (JobStatus::Error, Some(message)),
        };
        let finished = self
            .store
            .update_agent_job(
                job_id,
                &AgentJobUpdate {
                    status,
                    at: Utc::now(),
                    progress: Some(progress.to_string()),
                    error_message,
                },
            )
            .await?;
        if let Some(job) = &finished {
            if job.status == JobStatus::Error {
                let charge = JobCharge {
                    job_id: job.job_id.clone(),
                    user_id: job.user_id.clone(),
                    agent_id: job.agent_id.clone(),
                };
                if let Err(e) = self.billing().refund(&charge).await {
                    tracing::error!(job = %job_id, error = %e, "cannot refund a failed agent job");
                }
            }
        }
        Ok(finished)
    }

    /// The result archive of the caller's job: `Conflict` until there is one.
    pub async fn result(
        &self,
        user_id: &str,
        job_id: &str,
    ) -> ServiceResult<(AgentJobRecord, PathBuf)> {
        let job = self.get(user_id, job_id).await?;
        match &job.result_path {
            // Another node's disk holds it: that node answers (the API relays there),
            // unless it cannot be reached.
            Some(_) if !self.sandboxes.owns(job.node_id.as_deref()) => {
                Err(ServiceError::Unavailable(format!(
                    "the result of agent job {job_id} is kept by the node that ran it ({}), \
                     which cannot be reached now",
                    job.node_id.as_deref().unwrap_or_default()
                )))
            }
            Some(path) => {
                let path = PathBuf::from(path);
                Ok((job, path))
            }
            None => Err(ServiceError::Conflict(format!(
                "agent job {job_id} has no result yet (it is {})",
                job.status.as_str()
            ))),
        }
    }

    /// Start-up: jobs the previous process left unfinished cannot be resumed (their
    /// sandboxes are gone), so they end in error and their work files are removed. Must
    /// run after the sessions' reconciliation, which removes the sandboxes.
    pub async fn recover(&self) -> ServiceResult<u64> {
        let mut ended = 0;
        for job in self.store.list_unfinished_agent_jobs().await? {
            let owner = self
                .sandboxes
                .owner_of_work(self.store.as_ref(), job.node_id.as_deref())
                .await?;
            let message = match owner {
                WorkOwner::Mine => INTERRUPTED.to_string(),
                WorkOwner::Lost(node) => lost_message(&node),
                // Another node's job, and that node is alive: its runner is running.
                WorkOwner::Live => continue,
            };
            if self
                .finish(&job.job_id, Outcome::Error(message), "interrupted")
                .await?
                .is_some()
            {
                ended += 1;
            }
            remove_dir(&self.work_dir(&job.job_id)).await;
        }
        Ok(ended)
    }

    /// Ends the unfinished jobs of a node marked down in `error` (refunded), as its
    /// sessions end `node_lost`. Its work files are on its own machine: it removes them
    /// when it comes back. Returns how many this call ended.
    pub async fn reclaim_lost_node(&self, node_id: &str) -> ServiceResult<u64> {
        let mut ended = 0;
        for job in self.store.list_unfinished_agent_jobs().await? {
            if job.node_id.as_deref() != Some(node_id) {
                continue;
            }
            let outcome = Outcome::Error(lost_message(node_id));
            if self
                .finish(&job.job_id, outcome, "node lost")
                .await?
                .is_some()
            {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Stops the runners of jobs another node ended as lost (this node was marked down
    /// while it ran), destroys their sandboxes and removes their work files. A job its
    /// agent reported finished keeps its runner, which still collects the result.
    pub async fn drop_jobs_no_longer_running(&self) -> ServiceResult<usize> {
        let Some(node_id) = self.sandboxes.node_id() else {
            return Ok(0);
        };
        let lost = lost_message(node_id);
        let running: Vec<String> = self.lock_running().keys().cloned().collect();
        let mut dropped = 0;
        for job_id in running {
            let ended = self
                .store
                .get_agent_job(&job_id)
                .await?
                .is_none_or(|j| j.error_message.as_deref() == Some(lost.as_str()));
            if !ended {
                continue;
            }
            if let Some(task) = self.lock_running().remove(&job_id) {
                task.abort();
                dropped += 1;
            }
            // The aborted runner destroys nothing: its sandbox goes here.
            if let (Ok(available), Ok(id)) =
                (self.sandboxes.available(), SandboxId::new(job_id.clone()))
            {
                if let Err(e) = available.runtime.destroy(&id).await {
                    tracing::debug!(job = %job_id, error = %e, "no sandbox of an ended job to destroy");
                }
            }
            remove_dir(&self.work_dir(&job_id)).await;
        }
        Ok(dropped)
    }

    /// Stops every runner where it is; the store keeps the jobs for the next start.
    pub fn shutdown(&self) {
        for (_, task) in self.lock_running().drain() {
            task.abort();
        }
    }

    fn job_dir(&self, job_id: &str) -> PathBuf {
        self.jobs_dir.join(job_id)
    }

    fn work_dir(&self, job_id: &str) -> PathBuf {
        self.job_dir(job_id).join("work")
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an agent job's work files");
        }
    }
}

/// Why a lost node's jobs ended.
fn lost_message(node_id: &str) -> String {
    format!("the node that ran this job ({node_id}) was lost")
}

/// A page's cursor: the last job's `created_at` and id (see [`crate::cursor`]).
fn encode_cursor(created_at: DateTime<Utc>, job_id: &str) -> String {
    crate::cursor::encode_at(created_at, job_id)
}

fn decode_cursor(cursor: &str) -> ServiceResult<AgentJobCursor> {
    let (created_at, job_id) = crate::cursor::decode_at(cursor)?;
    Ok(AgentJobCursor { created_at, job_id })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let cursor = encode_cursor(at, "ajob_1");
        let back = decode_cursor(&cursor).expect("decodes");
        assert_eq!((back.created_at, back.job_id.as_str()), (at, "ajob_1"));
        for bad in ["", "!!", "bm90LWEtY3Vyc29y", &"A".repeat(300)] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
