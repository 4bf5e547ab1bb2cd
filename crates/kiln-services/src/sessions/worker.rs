//! A session's worker: runs its interactions one at a time, in the order received, and
//! stores each outcome before announcing it.
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use kiln_protocol::{Binary, ExecRequest, WriteFileRequest};
use kiln_runtime::{Runtime, RuntimeError, SandboxId};
use kiln_store::{InteractionOutcome, Store};
use tokio::sync::{mpsc, oneshot, watch};

use super::Readiness;
use crate::changes::Changes;

/// The exit code the contract reserves for "the infrastructure failed" (the SDK raises
/// on it). Never used for a command's own failure.
pub const INFRA_EXIT_CODE: i64 = -1000;
/// What `timeout(1)` returns, and what a timed-out command reports.
const TIMEOUT_EXIT_CODE: i64 = 124;

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

pub(super) struct Work {
    pub interaction_id: String,
    pub action: Action,
    pub reply: Option<oneshot::Sender<InteractionOutcome>>,
}

pub(super) struct WorkerContext {
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
                break Readiness::Gone("the session's worker stopped".into());
            }
        };
        let outcome = match (&state, &ctx.runtime) {
            (Readiness::Ready(sandbox), Some(runtime)) => {
                // Closed while this command ran: the runtime error is then not an
                // infrastructure failure worth reporting as one.
                perform(
                    runtime.as_ref(),
                    sandbox,
                    &work.action,
                    ctx.max_output_bytes,
                )
                .await
            }
            (Readiness::Gone(why), _) => failed(why.clone()),
            _ => failed("this server cannot run sandboxes".into()),
        };
        finish(&ctx, work, outcome).await;
    }
}

async fn finish(ctx: &WorkerContext, work: Work, outcome: InteractionOutcome) {
    match ctx
        .store
        .complete_interaction(&work.interaction_id, &outcome)
        .await
    {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(interaction = %work.interaction_id, error = %e, "cannot store an interaction's outcome")
        }
    }
    ctx.changes.notify(&ctx.session_id);
    if let Some(reply) = work.reply {
        let _ = reply.send(outcome);
    }
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
