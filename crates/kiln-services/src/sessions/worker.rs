//! A session's worker: runs its interactions one at a time, in the order received, and
//! stores each outcome before announcing it.
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_protocol::{Binary, ExecRequest, WriteFileRequest};
use kiln_runtime::{Runtime, RuntimeError, SandboxExit, SandboxId};
use kiln_store::{InteractionOutcome, JobStatus, JobUpdate, Store, VerificationResult};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, Span};

use super::lost::{Ended, SANDBOX_LOST};
use super::{Readiness, SessionService};
use crate::changes::Changes;
use crate::verification::run::Step;
use crate::verification::{result_of, VerifyPlan};

/// The exit code the contract reserves for "the infrastructure failed" (the SDK raises
/// on it). Never used for a command's own failure.
pub const INFRA_EXIT_CODE: i64 = -1000;
/// What `timeout(1)` returns, and what a timed-out command reports.
const TIMEOUT_EXIT_CODE: i64 = 124;
/// After an infrastructure failure, how long the runtime has to report that the sandbox
/// died (an agent's broken connection and its process's end are noticed apart, ms apart).
const LIVENESS_GRACE: Duration = Duration::from_secs(1);

/// Where a caller waiting for its interaction hears how it went: its outcome, or why it
/// could not run (the session ended first, or its sandbox died under it).
pub(super) type Reply = oneshot::Sender<Result<InteractionOutcome, Ended>>;

/// What an interaction asks of the sandbox.
#[derive(Debug, Clone)]
pub enum Action {
    Exec {
        command: String,
        timeout_secs: u32,
    },
    StrReplace {
        path: String,
        old: String,
        new: String,
    },
    Upload {
        path: String,
        content: Vec<u8>,
        executable: bool,
    },
}

pub(crate) enum Work {
    Interaction {
        interaction_id: String,
        action: Action,
        reply: Option<Reply>,
        /// The span of the request that queued it: the work's span is its child, so a
        /// trace shows the command under the request, with the request's id.
        cause: Span,
    },
    Verify {
        job_id: String,
        plan: Box<VerifyPlan>,
        cause: Span,
    },
}

impl Work {
    /// The span the work runs in, named by what it is and the session it is for.
    fn span(&self, session_id: &str) -> Span {
        match self {
            Work::Interaction {
                interaction_id,
                cause,
                ..
            } => {
                tracing::info_span!(parent: cause, "interaction", session = %session_id, interaction = %interaction_id)
            }
            Work::Verify { job_id, cause, .. } => {
                tracing::info_span!(parent: cause, "verification", session = %session_id, job = %job_id)
            }
        }
    }
}

pub(super) struct WorkerContext {
    /// To end the session when its sandbox turns out dead (weak: the service owns workers).
    pub service: Weak<SessionService>,
    pub store: Arc<dyn Store>,
    pub runtime: Option<Arc<dyn Runtime>>,
    pub changes: Arc<Changes>,
    pub session_id: String,
    pub max_output_bytes: usize,
}

pub(super) async fn run(
    ctx: WorkerContext,
    mut queue: mpsc::Receiver<Work>,
    mut readiness: watch::Receiver<Readiness>,
) {
    while let Some(work) = queue.recv().await {
        // Wait for the sandbox (commands sent while `creating` run once it is ready).
        let state = loop {
            let current = readiness.borrow_and_update().clone();
            if current != Readiness::Creating {
                break current;
            }
            if readiness.changed().await.is_err() {
                break Readiness::Gone(Ended::closed("the session's worker stopped"));
            }
        };
        let span = work.span(&ctx.session_id);
        perform_work(&ctx, work, state, &readiness)
            .instrument(span)
            .await;
    }
}

/// One piece of work, once the sandbox is ready (or gone): `state` is its readiness then.
async fn perform_work(
    ctx: &WorkerContext,
    work: Work,
    state: Readiness,
    readiness: &watch::Receiver<Readiness>,
) {
    match work {
        Work::Interaction {
            interaction_id,
            action,
            reply,
            ..
        } => {
            let result = match (&state, &ctx.runtime) {
                (Readiness::Ready(sandbox), Some(runtime)) => {
                    let started = Instant::now();
                    let outcome =
                        perform(runtime.as_ref(), sandbox, &action, ctx.max_output_bytes).await;
                    if matches!(action, Action::Exec { .. }) {
                        if let Some(service) = ctx.service.upgrade() {
                            service.metrics().exec_done(started.elapsed());
                        }
                    }
                    if outcome.exit_code != INFRA_EXIT_CODE {
                        Ok(outcome)
                    } else {
                        // Failed in the infrastructure: was it the sandbox dying?
                        let ended = ended_under(ctx, runtime.as_ref(), sandbox, readiness).await;
                        ended.map_or(Ok(outcome), Err)
                    }
                }
                (Readiness::Gone(ended), _) => Err(ended.clone()),
                _ => Ok(failed("this server cannot run sandboxes".into())),
            };
            finish(ctx, &interaction_id, reply, result).await;
        }
        Work::Verify { job_id, plan, .. } => match (&state, &ctx.runtime) {
            (Readiness::Ready(sandbox), Some(runtime)) => {
                verify(ctx, runtime.as_ref(), sandbox, &job_id, &plan, readiness).await
            }
            (Readiness::Gone(ended), _) => end_job(ctx, &job_id, ended).await,
            _ => {
                let why = "this server cannot run sandboxes".to_string();
                update_job(
                    ctx,
                    &job_id,
                    JobStatus::Error,
                    None,
                    Some(("no_runtime", why)),
                )
                .await
            }
        },
    }
}

/// Stores the outcome (an infrastructure failure, -1000, for work the session's end cut
/// off), announces it, then answers a waiting caller.
async fn finish(
    ctx: &WorkerContext,
    interaction_id: &str,
    reply: Option<Reply>,
    result: Result<InteractionOutcome, Ended>,
) {
    let cut_off;
    let outcome = match &result {
        Ok(outcome) => outcome,
        Err(ended) => {
            cut_off = failed(ended.message.clone());
            &cut_off
        }
    };
    if let Err(e) = ctx
        .store
        .complete_interaction(interaction_id, outcome)
        .await
    {
        tracing::error!(interaction = %interaction_id, error = %e, "cannot store an interaction's outcome");
    }
    ctx.changes.notify(&ctx.session_id);
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// After an infrastructure failure: whether the session ended meanwhile, or its sandbox
/// died (then the session is ended here, as the runtime's own notice would). `None`: the
/// sandbox runs, and the failure was just that.
async fn ended_under(
    ctx: &WorkerContext,
    runtime: &dyn Runtime,
    sandbox: &SandboxId,
    readiness: &watch::Receiver<Readiness>,
) -> Option<Ended> {
    let gone = || match &*readiness.borrow() {
        Readiness::Gone(ended) => Some(ended.clone()),
        _ => None,
    };
    if let Some(ended) = gone() {
        return Some(ended);
    }
    match tokio::time::timeout(LIVENESS_GRACE, runtime.wait_exit(sandbox)).await {
        Ok(Ok(SandboxExit::Died { reason })) => {
            if let Some(service) = ctx.service.upgrade() {
                service.sandbox_lost(&ctx.session_id, &reason).await;
            }
            Some(gone().unwrap_or_else(|| Ended::lost(&reason)))
        }
        // Destroyed or unknown: the session was ended (it is, before its sandbox goes).
        Ok(_) => Some(gone().unwrap_or_else(|| Ended::closed("the session's sandbox was removed"))),
        Err(_) => None,
    }
}

/// A verification job that cannot run (or finish) because the session ended.
async fn end_job(ctx: &WorkerContext, job_id: &str, ended: &Ended) {
    let (status, code) = if ended.lost {
        (JobStatus::Error, SANDBOX_LOST)
    } else {
        (JobStatus::Cancelled, "session_ended")
    };
    update_job(
        ctx,
        job_id,
        status,
        None,
        Some((code, ended.message.clone())),
    )
    .await
}

async fn verify(
    ctx: &WorkerContext,
    runtime: &dyn Runtime,
    sandbox: &SandboxId,
    job_id: &str,
    plan: &VerifyPlan,
    readiness: &watch::Receiver<Readiness>,
) {
    update_job(ctx, job_id, JobStatus::Starting, None, None).await;
    // Steps are reported from inside the run; the store is updated beside it, in order.
    let (steps, mut step_rx) = mpsc::unbounded_channel::<Step>();
    let result = {
        let run = crate::verification::run::verify(runtime, sandbox, job_id, plan, |step| {
            let _ = steps.send(step);
        });
        tokio::pin!(run);
        loop {
            tokio::select! {
                biased;
                Some(step) = step_rx.recv() => {
                    if step == Step::Testing {
                        update_job(ctx, job_id, JobStatus::Running, None, None).await;
                    }
                }
                result = &mut run => break result,
            }
        }
    };
    match result {
        Ok(verified) => {
            update_job(
                ctx,
                job_id,
                JobStatus::Completed,
                Some(result_of(&verified)),
                None,
            )
            .await
        }
        Err(e) => {
            if let Some(ended) = ended_under(ctx, runtime, sandbox, readiness).await {
                return end_job(ctx, job_id, &ended).await;
            }
            tracing::warn!(job = job_id, error = %e, "verification could not run");
            let why = format!("the verifier could not run: {e}");
            update_job(
                ctx,
                job_id,
                JobStatus::Error,
                None,
                Some(("verifier_failed", why)),
            )
            .await
        }
    }
}

async fn update_job(
    ctx: &WorkerContext,
    job_id: &str,
    status: JobStatus,
    result: Option<VerificationResult>,
    error: Option<(&str, String)>,
) {
    let update = JobUpdate {
        status,
        at: Utc::now(),
        result,
        error_code: error.as_ref().map(|(c, _)| c.to_string()),
        error_message: error.map(|(_, m)| m),
    };
    let service = ctx.service.upgrade();
    let announce = service.as_ref().and_then(|s| s.job_event());
    match ctx
        .store
        .update_verification_job(job_id, &update, announce.as_deref())
        .await
    {
        // Counted once: only the update that ended the job returns it.
        Ok(Some(_)) if status.is_finished() => {
            if let Some(service) = &service {
                let outcome = match (status, &update.result) {
                    (JobStatus::Completed, Some(result)) if result.is_success => "resolved",
                    (JobStatus::Completed, _) => "unresolved",
                    (JobStatus::Cancelled, _) => "cancelled",
                    _ => "error",
                };
                service.metrics().verification_ended(outcome);
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(job = job_id, error = %e, "cannot store a verification job's state")
        }
    }
    ctx.changes.notify(&ctx.session_id);
}

fn failed(message: String) -> InteractionOutcome {
    InteractionOutcome {
        exit_code: INFRA_EXIT_CODE,
        success: false,
        message: Some(message),
        finished_at: Utc::now(),
        ..InteractionOutcome::default()
    }
}

async fn perform(
    runtime: &dyn Runtime,
    sandbox: &SandboxId,
    action: &Action,
    max_output: usize,
) -> InteractionOutcome {
    let started = Instant::now();
    let mut outcome = match action {
        Action::Exec {
            command,
            timeout_secs,
        } => {
            let mut request = ExecRequest::shell(command.clone());
            request.timeout_ms = u64::from(*timeout_secs) * 1000;
            request.max_output_bytes = max_output as u64;
            match runtime.exec(sandbox, request).await {
                Ok(done) => {
                    let mut notes = Vec::new();
                    if done.timed_out {
                        notes.push(format!(
                            "command timed out after {timeout_secs} s and was killed"
                        ));
                    }
                    for (stream, cut) in [
                        ("stdout", done.stdout_truncated_bytes),
                        ("stderr", done.stderr_truncated_bytes),
                    ] {
                        if cut > 0 {
                            notes.push(format!(
                                "{stream} truncated: {cut} bytes in the middle were dropped"
                            ));
                        }
                    }
                    let exit_code = if done.timed_out {
                        TIMEOUT_EXIT_CODE
                    } else {
                        i64::from(done.exit_code)
                    };
                    InteractionOutcome {
                        exit_code,
                        stdout: done.stdout_marked(max_output as u64),
                        stderr: done.stderr_marked(max_output as u64),
                        execution_time_seconds: done.duration_ms as f64 / 1000.0,
                        success: exit_code == 0,
                        message: (!notes.is_empty()).then(|| notes.join("; ")),
                        finished_at: Utc::now(),
                    }
                }
                Err(e) => infra(e),
            }
        }
        Action::StrReplace { path, old, new } => {
            match runtime.str_replace(sandbox, path, old, new).await {
                Ok(replaced) => InteractionOutcome {
                    exit_code: 0,
                    stdout: replaced.snippet,
                    success: true,
                    message: Some(format!(
                        "The file {path} has been edited (line {}).",
                        replaced.line
                    )),
                    finished_at: Utc::now(),
                    ..InteractionOutcome::default()
                },
                Err(e) => user_or_infra(e),
            }
        }
        Action::Upload {
            path,
            content,
            executable,
        } => {
            let request = WriteFileRequest {
                path: path.clone(),
                content: Binary(content.clone()),
                mode: Some(if *executable { 0o755 } else { 0o644 }),
                create_parents: true,
            };
            match runtime.write_file(sandbox, request).await {
                Ok(size) => InteractionOutcome {
                    exit_code: 0,
                    success: true,
                    message: Some(format!("wrote {size} bytes to {path}")),
                    finished_at: Utc::now(),
                    ..InteractionOutcome::default()
                },
                Err(e) => user_or_infra(e),
            }
        }
    };
    if outcome.execution_time_seconds == 0.0 {
        outcome.execution_time_seconds = started.elapsed().as_secs_f64();
    }
    outcome
}

/// An error the agent reports about the request (no such file, no match, …) is the
/// caller's: exit code 1 with the agent's message. Anything else is infrastructure.
fn user_or_infra(e: RuntimeError) -> InteractionOutcome {
    match e.agent_error() {
        Some(agent) => InteractionOutcome {
            exit_code: 1,
            stderr: agent.message.clone(),
            success: false,
            message: Some(agent.message.clone()),
            finished_at: Utc::now(),
            ..InteractionOutcome::default()
        },
        None => infra(e),
    }
}

fn infra(e: RuntimeError) -> InteractionOutcome {
    tracing::warn!(error = %e, "interaction failed in the infrastructure");
    failed(format!("infrastructure failure: {e}"))
}
