//! Commands in an instance (`/v1/instances/{id}/exec`): synchronous, in the background, or
//! streamed; a history per instance (`instance_execs`); kill with a signal.
//!
//! Every exec runs in a task of its own, so a client that goes away changes nothing: the
//! command runs to its end (or timeout) and its outcome is stored. Background and streamed
//! execs spool their stream on the server ([`spool`]), which is what (re)connecting
//! clients read; the spool is removed `exec.stream_retention_secs` after the exec ended, or
//! once its instance has ended. What runs is remembered in memory ([`ExecHub`]): the agent's
//! exec id (for kill) and the spool's progress. A restart fails execs still `running`.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kiln_config::ExecConfig;
use kiln_store::{ExecCursor, ExecStatus, InstanceExecRecord, NewInstanceExec, SessionRecord};
use serde_json::json;
use tracing::Instrument;

use super::InstanceService;
use crate::error::{ServiceError, ServiceResult};

mod hub;
mod limits;
pub mod spool;
mod task;

pub use hub::ExecHub;
use hub::{LiveExec, SpoolEntry};
use spool::{spool_path, SpoolReader, SpoolWriter};
pub use spool::{Frame, FrameKind};
use task::ExecTask;

/// Most execs one listing returns.
pub const MAX_LIST_LIMIT: u64 = 100;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecCommand {
    /// A command line, run by the shell (`bash -c`, `sh -c` where bash is absent).
    Shell(String),
    /// A program and its arguments, looked up in `PATH`.
    Argv(Vec<String>),
}

/// How the caller waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// The answer is the finished exec.
    Sync,
    /// The answer is at once; GET the exec (or its stream) later.
    Background,
    /// The answer is at once and a stream is opened on it.
    Stream,
}

impl ExecMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Background => "background",
            Self::Stream => "stream",
        }
    }
}

/// An exec as asked for. Limits are checked by [`InstanceService::exec`].
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub command: ExecCommand,
    /// `None`: `exec.default_timeout_secs`.
    pub timeout_secs: Option<u32>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: Option<Vec<u8>>,
    pub mode: ExecMode,
}

/// A stream of an exec's frames, from where the client asked. Dropped before its final
/// frame with `kill_on_drop`, it kills the command (SIGKILL to its process group).
pub struct ExecStream {
    reader: SpoolReader,
    done: bool,
    kill_on_drop: Option<(Arc<ExecHub>, String)>,
}

impl ExecStream {
    /// The next frame; `None` after the final one (or where an abandoned spool ends).
    pub async fn next(&mut self) -> Option<Frame> {
        if self.done {
            return None;
        }
        match self.reader.next().await {
            Ok(Some(frame)) => {
                self.done = frame.is_final();
                Some(frame)
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read an exec's spool");
                self.done = true;
                None
            }
        }
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some((hub, exec_id)) = self.kill_on_drop.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = hub.signal(&exec_id, SIGKILL).await;
                });
            }
        }
    }
}

const SIGKILL: i32 = 9;

impl InstanceService {
    /// The limits of exec requests.
    pub fn exec_config(&self) -> &ExecConfig {
        &self.exec.config
    }

    /// Runs a command in `user_id`'s instance. `Sync` answers the finished exec; the other
    /// modes answer the `running` exec at once.
    pub async fn exec(
        &self,
        user_id: &str,
        instance_id: &str,
        spec: ExecSpec,
    ) -> ServiceResult<InstanceExecRecord> {
        let request = limits::exec_request(&self.exec.config, self.exec.max_output_bytes, &spec)?;
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let exec_id = crate::new_id("exec");
        let command = match &spec.command {
            ExecCommand::Shell(c) => json!({ "command": c }),
            ExecCommand::Argv(a) => json!({ "argv": a }),
        };
        let writer = match spec.mode {
            ExecMode::Sync => None,
            _ => Some(self.create_spool(&exec_id, &sandbox.session)?),
        };
        let live = Arc::new(LiveExec {
            session_id: sandbox.session.session_id.clone(),
            runtime: sandbox.runtime.clone(),
            sandbox: sandbox.id.clone(),
            agent_exec: Mutex::new(None),
            progress: writer.as_ref().map(SpoolWriter::subscribe),
        });
        if let Err(e) = self.exec.admit(&exec_id, live.clone()) {
            self.forget_spool(&exec_id);
            return Err(e);
        }
        let inserted = self
            .store
            .insert_instance_exec(&NewInstanceExec {
                exec_id: exec_id.clone(),
                session_id: sandbox.session.session_id.clone(),
                user_id: user_id.to_string(),
                command: command.to_string(),
                cwd: spec.cwd.clone(),
                mode: spec.mode.as_str().to_string(),
                created_at: Utc::now(),
            })
            .await;
        let record = match inserted {
            Ok(record) => record,
            Err(e) => {
                self.exec.ended(&exec_id);
                self.forget_spool(&exec_id);
                return Err(e.into());
            }
        };
        // A child of the request's span, which it may outlive (a streamed exec).
        let span = tracing::info_span!("exec", session = %live.session_id, exec = %exec_id);
        let task = ExecTask {
            store: self.store.clone(),
            sessions: self.sessions.clone(),
            hub: self.exec.clone(),
            live,
            exec_id,
            request,
        };
        match writer {
            None => tokio::spawn(task.run_sync().instrument(span))
                .await
                .map_err(|e| ServiceError::Internal(format!("exec task failed: {e}")))?,
            Some(writer) => {
                tokio::spawn(task.run_streamed(writer).instrument(span));
                Ok(record)
            }
        }
    }

    /// One exec of `user_id`'s instance (running or finished).
    pub async fn exec_get(
        &self,
        user_id: &str,
        instance_id: &str,
        exec_id: &str,
    ) -> ServiceResult<InstanceExecRecord> {
        self.owned_instance(user_id, instance_id).await?;
        self.store
            .get_instance_exec(instance_id, exec_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("exec {exec_id}")))
    }

    /// An instance's execs, newest first, after the exec `after` (its id).
    pub async fn exec_list(
        &self,
        user_id: &str,
        instance_id: &str,
        after: Option<&str>,
        limit: u64,
    ) -> ServiceResult<Vec<InstanceExecRecord>> {
        self.owned_instance(user_id, instance_id).await?;
        let cursor = match after {
            None => None,
            Some(exec_id) => {
                let Some(found) = self.store.get_instance_exec(instance_id, exec_id).await? else {
                    return Err(ServiceError::invalid(
                        &["after"],
                        "no exec of this instance has this id",
                        "value_error",
                    ));
                };
                Some(ExecCursor {
                    created_at: found.created_at,
                    exec_id: found.exec_id,
                })
            }
        };
        Ok(self
            .store
            .list_instance_execs(instance_id, cursor.as_ref(), limit.min(MAX_LIST_LIMIT))
            .await?)
    }

    /// Sends `signal` to a running exec's process group.
    pub async fn exec_kill(
        &self,
        user_id: &str,
        instance_id: &str,
        exec_id: &str,
        signal: i32,
    ) -> ServiceResult<InstanceExecRecord> {
        if !(1..=64).contains(&signal) {
            return Err(ServiceError::invalid(
                &["signal"],
                "a signal is a name (TERM, KILL, INT, HUP, QUIT, USR1, USR2) or a number from 1 to 64",
                "value_error",
            ));
        }
        let record = self.exec_get(user_id, instance_id, exec_id).await?;
        if record.status != ExecStatus::Running {
            return Err(ServiceError::Conflict(format!(
                "exec {exec_id} is not running"
            )));
        }
        self.exec.signal(exec_id, signal).await?;
        Ok(record)
    }

    /// The stream of a background or streamed exec, from spool offset `from` (an event id;
    /// 0 for the start). With `kill_on_drop`, dropping it before the end kills the command.
    pub async fn exec_stream(
        &self,
        user_id: &str,
        instance_id: &str,
        exec_id: &str,
        from: u64,
        kill_on_drop: bool,
    ) -> ServiceResult<ExecStream> {
        let record = self.exec_get(user_id, instance_id, exec_id).await?;
        if record.mode == ExecMode::Sync.as_str() {
            return Err(ServiceError::Conflict(format!(
                "exec {exec_id} was synchronous: it has no stream"
            )));
        }
        let progress = self
            .exec
            .live()
            .get(exec_id)
            .and_then(|l| l.progress.clone());
        let path = spool_path(&self.exec.spool_dir, exec_id);
        let reader = SpoolReader::open(&path, from, progress).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => ServiceError::invalid(
                &["last_event_id"],
                "not an event id of this stream",
                "value_error",
            ),
            _ => ServiceError::Conflict(format!(
                "the stream of exec {exec_id} is no longer kept: GET the exec for its result"
            )),
        })?;
        Ok(ExecStream {
            reader,
            done: false,
            kill_on_drop: kill_on_drop.then(|| (self.exec.clone(), exec_id.to_string())),
        })
    }

    /// Start-up: execs cut off by a restart fail, and old spools go.
    pub async fn recover_execs(&self) -> ServiceResult<u64> {
        let failed = self
            .store
            .fail_running_instance_execs(
                "cut off by a server restart",
                Utc::now(),
                self.sandboxes.node_id(),
                self.sandboxes.owns(None),
            )
            .await?;
        self.exec.sweep(self.store.as_ref()).await;
        Ok(failed)
    }

    fn create_spool(&self, exec_id: &str, session: &SessionRecord) -> ServiceResult<SpoolWriter> {
        let dir = &self.exec.spool_dir;
        let cap = self.exec.config.max_stream_disk_bytes;
        if self.exec.spool_disk_used() >= cap {
            return Err(ServiceError::Unavailable(format!(
                "the streams of running and recent execs fill their {cap} bytes on this server: \
                 retry later, or run the command synchronously"
            )));
        }
        let mine = self.exec.config.max_stream_disk_bytes_per_user;
        if self.exec.user_spool_bytes(&session.user_id) >= mine {
            return Err(ServiceError::LimitExceeded(format!(
                "the streams of your running and recent execs fill their {mine} bytes \
                 (exec.max_stream_disk_bytes_per_user): wait for them to expire or end \
                 instances you are done with, or run the command synchronously"
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| ServiceError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let path = spool_path(dir, exec_id);
        let writer =
            SpoolWriter::create(&path, self.exec.config.max_stream_bytes).map_err(|e| {
                ServiceError::Internal(format!("cannot create {}: {e}", path.display()))
            })?;
        self.exec.spools().insert(
            exec_id.to_string(),
            SpoolEntry {
                session_id: session.session_id.clone(),
                user_id: session.user_id.clone(),
                ended: None,
                instance_gone: false,
            },
        );
        self.exec.start_sweeper(self.store.clone());
        Ok(writer)
    }

    fn forget_spool(&self, exec_id: &str) {
        if self.exec.spools().remove(exec_id).is_some() {
            let _ = std::fs::remove_file(spool_path(&self.exec.spool_dir, exec_id));
        }
    }
}
