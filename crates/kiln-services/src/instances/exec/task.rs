//! One exec, run to its end whatever its clients do: the outcome stored, then the
//! stream's final frame written, then the exec forgotten.
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use kiln_protocol::{ExecDone, ExecEvent, ExecRequest};
use kiln_runtime::RuntimeError;
use kiln_store::{ExecFinish, ExecStatus, InstanceExecRecord, Store};
use serde_json::json;

use super::hub::{ExecHub, LiveExec};
use super::spool::{FrameKind, SpoolWriter};
use crate::error::{ServiceError, ServiceResult};
use crate::sessions::SessionService;

/// One exec, run to its end in a task of its own.
pub(super) struct ExecTask {
    pub(super) store: Arc<dyn Store>,
    /// Whose metrics count the command's time.
    pub(super) sessions: Arc<SessionService>,
    pub(super) hub: Arc<ExecHub>,
    pub(super) live: Arc<LiveExec>,
    pub(super) exec_id: String,
    pub(super) request: ExecRequest,
}

impl ExecTask {
    /// Through the streaming call, output frames ignored (the result carries the capped
    /// output): the agent's exec id it announces is what lets another request kill a
    /// synchronous exec found in the history.
    pub(super) async fn run_sync(self) -> ServiceResult<InstanceExecRecord> {
        let live = &self.live;
        let mut sink = |event: ExecEvent| {
            if let ExecEvent::Started { exec_id: id, .. } = event {
                *live.agent_exec.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
            }
        };
        let started = Instant::now();
        let result = live
            .runtime
            .exec_streaming(&live.sandbox, self.request.clone(), &mut sink)
            .await;
        self.sessions.metrics().exec_done(started.elapsed());
        let finish = finish_of(result, self.hub.max_output_bytes);
        let stored = self.store_finish(&finish).await;
        self.hub.ended(&self.exec_id);
        stored
    }

    pub(super) async fn run_streamed(self, mut writer: SpoolWriter) {
        let started = Instant::now();
        let result = {
            let live = &self.live;
            let exec_id = &self.exec_id;
            let writer = &mut writer;
            let mut sink = |event: ExecEvent| match event {
                ExecEvent::Started { exec_id: id, .. } => {
                    *live.agent_exec.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
                    writer.start(exec_id);
                }
                ExecEvent::Output { stream, data } => writer.output(stream, data.as_bytes()),
            };
            live.runtime
                .exec_streaming(&live.sandbox, self.request.clone(), &mut sink)
                .await
        };
        self.sessions.metrics().exec_done(started.elapsed());
        let finish = finish_of(result, self.hub.max_output_bytes);
        let _ = self.store_finish(&finish).await;
        match &finish.error {
            Some(message) => writer.finish(FrameKind::Error, json!({ "message": message })),
            None => writer.finish(
                FrameKind::Exit,
                json!({
                    "status": finish.status.as_str(),
                    "exit_code": finish.exit_code,
                    "signal": finish.signal,
                    "timed_out": finish.status == ExecStatus::TimedOut,
                    "duration_ms": finish.duration_ms,
                }),
            ),
        }
        // Only now: a reader that finds the exec gone reads a complete spool.
        self.hub.ended(&self.exec_id);
    }

    /// Stores the outcome (before the stream's last frame, so a client that saw it finds
    /// the exec ended).
    async fn store_finish(&self, finish: &ExecFinish) -> ServiceResult<InstanceExecRecord> {
        let stored = self.store.finish_instance_exec(&self.exec_id, finish).await;
        match stored {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(ServiceError::Internal(format!(
                "exec {} was finished twice",
                self.exec_id
            ))),
            Err(e) => {
                tracing::warn!(exec_id = %self.exec_id, error = %e, "cannot store an exec's outcome");
                Err(e.into())
            }
        }
    }
}

fn finish_of(result: Result<ExecDone, RuntimeError>, max_output: usize) -> ExecFinish {
    let now = Utc::now();
    match result {
        Ok(done) => ExecFinish {
            status: if done.timed_out {
                ExecStatus::TimedOut
            } else {
                ExecStatus::Exited
            },
            exit_code: Some(if done.timed_out { 124 } else { done.exit_code }),
            signal: done.signal,
            stdout: done.stdout_marked(max_output as u64),
            stderr: done.stderr_marked(max_output as u64),
            truncated: done.stdout_truncated_bytes > 0 || done.stderr_truncated_bytes > 0,
            duration_ms: Some(done.duration_ms),
            error: None,
            finished_at: now,
        },
        Err(e) => {
            let error = match e.agent_error() {
                Some(agent) => agent.message.clone(),
                None => {
                    tracing::warn!(error = %e, "an instance exec failed in the infrastructure");
                    format!("infrastructure failure: {e}")
                }
            };
            ExecFinish {
                status: ExecStatus::Failed,
                exit_code: None,
                signal: None,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                duration_ms: None,
                error: Some(error),
                finished_at: now,
            }
        }
    }
}
