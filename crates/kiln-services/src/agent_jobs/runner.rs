//! One job's run: clone on the host, check the ref out, run the agent's command in a
//! sandbox that sees the checkout at `/workspace`, destroy the sandbox, collect the diff
//! and the logs into the result archive, and finish the job.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_config::AgentConfig;
use kiln_protocol::{ExecDone, ExecRequest};
use kiln_runtime::{RuntimeError, SandboxId, SandboxSpec, Workspace};
use kiln_store::{AgentJobRecord, AgentJobUpdate, JobStatus};
use serde_json::json;

use super::repo_source::{self, FetchLimits, RepoSource};
use super::{remove_dir, result_archive, AgentJobService, Outcome, SECRET_ENV};
use crate::outbound::Vetted;

/// Where the checkout appears inside the sandbox.
pub const WORKSPACE: &str = "/workspace";
/// Time given to the agent's own timeout (TERM, grace, KILL) before Kiln gives up on it.
const BACKSTOP: Duration = Duration::from_secs(60);
/// The end of stderr quoted in a failed job's message.
const ERROR_TAIL_CHARS: usize = 1000;

pub(super) async fn run(
    service: &Arc<AgentJobService>,
    job: AgentJobRecord,
    source: RepoSource,
    pin: Option<Vetted>,
    secret: String,
) {
    progress(
        service,
        &job.job_id,
        JobStatus::Pending,
        "waiting for a free slot",
    )
    .await;
    // The semaphore is never closed; `Err` would only mean the server is going away.
    let Ok(_slot) = service.slots.clone().acquire_owned().await else {
        return;
    };
    let work = service.work_dir(&job.job_id);
    let outcome = execute(service, &job, (&source, pin.as_ref()), &secret, &work)
        .await
        .unwrap_or_else(Outcome::Error);
    let progress = match outcome {
        Outcome::Completed => "finished",
        Outcome::Error(_) => "failed",
    };
    if let Err(e) = service.finish(&job.job_id, outcome, progress).await {
        tracing::error!(job = %job.job_id, error = %e, "cannot record the end of an agent job");
    }
    remove_dir(&work).await;
}

async fn progress(service: &AgentJobService, job_id: &str, status: JobStatus, what: &str) {
    let update = AgentJobUpdate {
        status,
        at: Utc::now(),
        progress: Some(what.to_string()),
        error_message: None,
    };
    // `None` means the agent already reported its outcome: the run still collects a result.
    if let Err(e) = service.store.update_agent_job(job_id, &update).await {
        tracing::warn!(job = %job_id, error = %e, "cannot record an agent job's progress");
    }
}

async fn execute(
    service: &Arc<AgentJobService>,
    job: &AgentJobRecord,
    (source, pin): (&RepoSource, Option<&Vetted>),
    secret: &str,
    work: &Path,
) -> Result<Outcome, String> {
    let config = &service.config;
    let agent = config.agents.get(&job.agent_id).ok_or_else(|| {
        format!(
            "agent {} is no longer configured on this server",
            job.agent_id
        )
    })?;
    tokio::fs::create_dir_all(work)
        .await
        .map_err(|e| format!("cannot create the job's work directory: {e}"))?;
    let checkout = fetch_and_check_out(service, job, (source, pin), work).await?;
    let tree = checkout.tree.clone();

    progress(
        service,
        &job.job_id,
        JobStatus::Running,
        "running the agent",
    )
    .await;
    let done = run_in_sandbox(service, job, agent, &tree, secret).await?;

    progress(
        service,
        &job.job_id,
        JobStatus::Running,
        "collecting the result",
    )
    .await;
    let stderr = store_result(service, job, &checkout, &done).await?;
    Ok(outcome_of(&done, &stderr, agent))
}

/// The repository on the host: a bare clone kept outside the tree the agent sees, and
/// that tree checked out at the job's commit.
struct Checkout {
    git_dir: PathBuf,
    tree: PathBuf,
    commit: String,
    /// The environment of the git commands that do not reach the remote (no token).
    local_env: Vec<(String, String)>,
    git_timeout: Duration,
}

/// Clones the job's repository into `work`, resolves its ref and checks it out.
async fn fetch_and_check_out(
    service: &Arc<AgentJobService>,
    job: &AgentJobRecord,
    (source, pin): (&RepoSource, Option<&Vetted>),
    work: &Path,
) -> Result<Checkout, String> {
    let config = &service.config;
    progress(
        service,
        &job.job_id,
        JobStatus::Starting,
        "cloning the repository",
    )
    .await;
    // A user's token goes only to the git host it was issued for, never to a URL the
    // user typed for some other host.
    let on_host = source.is_on_host(&config.git_host);
    let token = if on_host {
        service.credentials().token_for(&job.user_id).await
    } else {
        None
    };
    let clone_env = repo_source::git_env(source, token.as_deref(), pin);
    let local_env = repo_source::git_env(source, None, None);
    let git_timeout = Duration::from_secs(config.clone_timeout_secs);
    let (git_dir, tree) = (work.join("repo.git"), work.join("workspace"));
    let limits = FetchLimits {
        timeout: git_timeout,
        max_bytes: config.max_repo_bytes,
    };
    repo_source::clone_bare(source, &clone_env, &git_dir, &limits)
        .await
        .map_err(|e| {
            // Most often a private repository: the user must be told what would let Kiln in.
            if on_host && token.is_none() {
                format!("{e} (no GitHub token for this user: sign in with GitHub to clone private repositories)")
            } else {
                e
            }
        })?;
    let commit =
        repo_source::resolve_ref(&local_env, &git_dir, job.git_ref.as_deref(), git_timeout).await?;
    progress(
        service,
        &job.job_id,
        JobStatus::Starting,
        "checking the ref out",
    )
    .await;
    tokio::fs::create_dir_all(&tree)
        .await
        .map_err(|e| format!("cannot create the workspace: {e}"))?;
    repo_source::checkout(&local_env, &git_dir, &tree, &commit, git_timeout).await?;
    if repo_source::dir_size(tree.clone()).await > config.max_repo_bytes {
        return Err(format!(
            "the checked-out repository is larger than the limit of {} bytes",
            config.max_repo_bytes
        ));
    }
    Ok(Checkout {
        git_dir,
        tree,
        commit,
        local_env,
        git_timeout,
    })
}

/// Writes the diff, the logs and a summary into the job's result archive and records it;
/// returns the (marked) stderr, which the job's error quotes.
async fn store_result(
    service: &AgentJobService,
    job: &AgentJobRecord,
    checkout: &Checkout,
    done: &ExecDone,
) -> Result<String, String> {
    let config = &service.config;
    let Checkout {
        git_dir,
        tree,
        commit,
        local_env,
        git_timeout,
    } = checkout;
    let diff = repo_source::diff_against(
        local_env,
        git_dir,
        tree,
        commit,
        *git_timeout,
        config.max_diff_bytes,
    )
    .await?;
    if diff.len() as u64 > config.max_diff_bytes {
        return Err(format!(
            "the agent's diff is larger than the limit of {} bytes",
            config.max_diff_bytes
        ));
    }
    let stdout = done.stdout_marked(config.max_log_bytes);
    let stderr = done.stderr_marked(config.max_log_bytes);
    let summary = json!({
        "job_id": job.job_id, "repo": job.repo, "ref": job.git_ref, "commit": commit,
        "agent_id": job.agent_id, "exit_code": done.exit_code, "timed_out": done.timed_out,
        "duration_ms": done.duration_ms,
    });
    let archive = service.job_dir(&job.job_id).join("result.tar.gz");
    result_archive::write(
        archive.clone(),
        vec![
            ("diff.patch".into(), diff),
            ("logs/stdout.log".into(), stdout.into_bytes()),
            ("logs/stderr.log".into(), stderr.clone().into_bytes()),
            ("job.json".into(), summary.to_string().into_bytes()),
        ],
    )
    .await?;
    let archive = archive.to_string_lossy().into_owned();
    service
        .store
        .set_agent_job_result(&job.job_id, &archive)
        .await
        .map_err(|e| format!("cannot record the result: {e}"))?;
    Ok(stderr)
}

/// How the agent's command ended, as the job's outcome.
fn outcome_of(done: &ExecDone, stderr: &str, agent: &AgentConfig) -> Outcome {
    if done.timed_out {
        Outcome::Error(format!(
            "the agent's command timed out after {} s",
            agent.timeout_secs
        ))
    } else if done.exit_code != 0 {
        let tail: String = {
            let trimmed = stderr.trim_end();
            let skip = trimmed.chars().count().saturating_sub(ERROR_TAIL_CHARS);
            trimmed.chars().skip(skip).collect()
        };
        Outcome::Error(format!(
            "the agent's command exited with status {}: {tail}",
            done.exit_code
        ))
    } else {
        Outcome::Completed
    }
}

/// Runs the agent's command in a fresh sandbox, which is destroyed whatever happens.
async fn run_in_sandbox(
    service: &AgentJobService,
    job: &AgentJobRecord,
    agent: &AgentConfig,
    tree: &Path,
    secret: &str,
) -> Result<ExecDone, String> {
    let sandboxes = service
        .sandboxes
        .available()
        .map_err(|why| format!("agent jobs are not available on this server: {why}"))?;
    let runtime = &sandboxes.runtime;
    let id = SandboxId::new(job.job_id.clone()).map_err(|e| e.to_string())?;
    let mut spec = SandboxSpec::image(id.clone(), agent.image.clone());
    spec.limits = sandboxes.limits;
    spec.workdir = Some(WORKSPACE.into());
    spec.workspace = Some(Workspace {
        dir: tree.to_path_buf(),
        target: WORKSPACE.into(),
    });
    runtime.create(spec).await.map_err(|e| match e {
        RuntimeError::ImageNotFound { reason, .. } => {
            format!("the agent's image {}: {reason}", agent.image)
        }
        e => format!("the sandbox failed to start: {e}"),
    })?;

    let mut request = ExecRequest::shell(agent.command.clone());
    request.cwd = Some(WORKSPACE.into());
    request.env = agent.env.clone();
    request.env.insert("KILN_JOB_ID".into(), job.job_id.clone());
    request.env.insert(SECRET_ENV.into(), secret.to_string());
    request.timeout_ms = agent.timeout_secs.saturating_mul(1000);
    request.max_output_bytes = service.config.max_log_bytes;
    let backstop = Duration::from_secs(agent.timeout_secs).saturating_add(BACKSTOP);
    let done = tokio::time::timeout(backstop, runtime.exec(&id, request)).await;
    // Destroying also hands the workspace's changes back: if that fails, the diff would
    // be the untouched checkout, so the job fails rather than report nothing changed.
    let destroyed = runtime.destroy(&id).await;
    if let Err(e) = &destroyed {
        tracing::error!(job = %job.job_id, error = %e, "cannot destroy an agent job's sandbox");
    }
    match done {
        Err(_) => Err(format!(
            "the agent's command did not end within {} s",
            backstop.as_secs()
        )),
        Ok(Err(e)) => Err(format!("the agent's command could not run: {e}")),
        Ok(Ok(_)) if destroyed.is_err() => Err(format!(
            "the agent's changes could not be collected from its sandbox: {}",
            destroyed.err().map(|e| e.to_string()).unwrap_or_default()
        )),
        Ok(Ok(done)) => Ok(done),
    }
}
