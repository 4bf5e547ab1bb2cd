//! Commands in an instance (`/v1/instances/{id}/exec`): synchronous, in the background, or
//! streamed; a history per instance (`instance_execs`); kill with a signal.
//!
//! Every exec runs in a task of its own, so a client that goes away changes nothing: the
//! command runs to its end (or timeout) and its outcome is stored. Background and streamed
//! execs spool their stream on the server ([`spool`]), which is what (re)connecting
//! clients read; the spool is removed `exec.stream_retention_secs` after the exec ended, or
//! once its instance has ended. What runs is remembered in memory ([`ExecHub`]): the agent's
//! exec id (for kill) and the spool's progress. A restart fails execs still `running`.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_config::ExecConfig;
use kiln_protocol::{Binary, ExecDone, ExecEvent, ExecRequest};
use kiln_runtime::{Runtime, RuntimeError, SandboxId};
use kiln_store::{
    ExecCursor, ExecFinish, ExecStatus, InstanceExecRecord, NewInstanceExec, SessionRecord, Store,
};
use serde_json::json;
use tokio::sync::watch;

use super::InstanceService;
use crate::error::{ServiceError, ServiceResult};

pub mod spool;

use spool::{spool_path, Progress, SpoolReader, SpoolWriter};
pub use spool::{Frame, FrameKind};

/// Most execs one listing returns.
pub const MAX_LIST_LIMIT: u64 = 100;
const MAX_CWD_BYTES: usize = 4096;

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

/// The running execs of this server, and the spools kept for reconnects.
pub struct ExecHub {
    config: ExecConfig,
    max_output_bytes: usize,
    spool_dir: PathBuf,
    live: Mutex<HashMap<String, Arc<LiveExec>>>,
    /// Spools on disk this server wrote: exec id → (instance, when the exec ended).
    spools: Mutex<HashMap<String, (String, Option<Instant>)>>,
    sweeping: AtomicBool,
}

struct LiveExec {
    session_id: String,
    runtime: Arc<dyn Runtime>,
    sandbox: SandboxId,
    /// The agent's id of the exec, once it started: what `kill` names.
    agent_exec: Mutex<Option<u64>>,
    progress: Option<watch::Receiver<Progress>>,
}

impl ExecHub {
    /// Execs keeping `max_output_bytes` per stream, spooling streams under `spool_dir`.
    pub fn new(config: ExecConfig, max_output_bytes: usize, spool_dir: PathBuf) -> Self {
        Self {
            config,
            max_output_bytes,
            spool_dir,
            live: Mutex::new(HashMap::new()),
            spools: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveExec>>> {
        // Every critical section is one map operation: a poisoned map is consistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spools(&self) -> MutexGuard<'_, HashMap<String, (String, Option<Instant>)>> {
        self.spools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new exec, within `max_running_per_instance` for its instance.
    fn admit(&self, exec_id: &str, live: Arc<LiveExec>) -> ServiceResult<()> {
        let mut map = self.live();
        let running = map
            .values()
            .filter(|l| l.session_id == live.session_id)
            .count();
        if running >= self.config.max_running_per_instance {
            return Err(ServiceError::LimitExceeded(format!(
                "instance {} already runs {running} execs (the limit is {}): wait for one to end",
                live.session_id, self.config.max_running_per_instance
            )));
        }
        map.insert(exec_id.to_string(), live);
        Ok(())
    }

    fn ended(&self, exec_id: &str) {
        self.live().remove(exec_id);
        if let Some(entry) = self.spools().get_mut(exec_id) {
            entry.1 = Some(Instant::now());
        }
    }

    async fn signal(&self, exec_id: &str, signal: i32) -> ServiceResult<()> {
        let live = self.live().get(exec_id).cloned();
        let Some(live) = live else {
            return Err(ServiceError::Conflict(format!(
                "exec {exec_id} is not running"
            )));
        };
        let agent_exec = *live.agent_exec.lock().unwrap_or_else(|p| p.into_inner());
        let Some(agent_exec) = agent_exec else {
            return Err(ServiceError::Conflict(format!(
                "exec {exec_id} cannot be signalled: it is synchronous, or not started yet"
            )));
        };
        match live
            .runtime
            .kill_exec(&live.sandbox, agent_exec, Some(signal))
            .await
        {
            Ok(()) => Ok(()),
            // It ended between our look-up and the agent's.
            Err(e) if e.agent_error().is_some() => Err(ServiceError::Conflict(format!(
                "exec {exec_id} is not running"
            ))),
            Err(e) => Err(ServiceError::Internal(format!("cannot signal exec: {e}"))),
        }
    }

    /// Removes the spools whose exec ended more than the retention ago, or whose
    /// instance ended; spools left by an earlier run go by their age.
    async fn sweep(&self, store: &dyn Store) {
        let retention = Duration::from_secs(self.config.stream_retention_secs);
        let Ok(entries) = std::fs::read_dir(&self.spool_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(exec_id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            if self.live().contains_key(&exec_id) {
                continue;
            }
            let known = self.spools().get(&exec_id).cloned();
            let expired = match known {
                Some((session_id, ended)) => {
                    ended.is_some_and(|at| at.elapsed() >= retention)
                        || !matches!(store.get_session(&session_id).await,
                                     Ok(Some(s)) if s.status.is_live())
                }
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_none_or(|age| age >= retention),
            };
            if expired {
                let _ = std::fs::remove_file(&path);
                self.spools().remove(&exec_id);
            }
        }
    }

    fn start_sweeper(self: &Arc<Self>, store: Arc<dyn Store>) {
        if self.sweeping.swap(true, Ordering::SeqCst) {
            return;
        }
        let hub: Weak<Self> = Arc::downgrade(self);
        let period = Duration::from_secs(self.config.stream_retention_secs.clamp(1, 60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(hub) = hub.upgrade() else { return };
                hub.sweep(store.as_ref()).await;
            }
        });
    }
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
        let request = self.exec_request(&spec)?;
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
        let task = ExecTask {
            store: self.store.clone(),
            hub: self.exec.clone(),
            live,
            exec_id,
            request,
        };
        match writer {
            None => tokio::spawn(task.run_sync())
                .await
                .map_err(|e| ServiceError::Internal(format!("exec task failed: {e}")))?,
            Some(writer) => {
                tokio::spawn(task.run_streamed(writer));
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
            .fail_running_instance_execs("cut off by a server restart", Utc::now())
            .await?;
        self.exec.sweep(self.store.as_ref()).await;
        Ok(failed)
    }

    async fn owned_instance(&self, user_id: &str, instance_id: &str) -> ServiceResult<()> {
        self.sessions
            .owned(user_id, instance_id)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                ServiceError::NotFound { .. } => {
                    ServiceError::not_found(format!("instance {instance_id}"))
                }
                other => other,
            })
    }

    fn create_spool(&self, exec_id: &str, session: &SessionRecord) -> ServiceResult<SpoolWriter> {
        let dir = &self.exec.spool_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| ServiceError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let path = spool_path(dir, exec_id);
        let writer =
            SpoolWriter::create(&path, self.exec.config.max_stream_bytes).map_err(|e| {
                ServiceError::Internal(format!("cannot create {}: {e}", path.display()))
            })?;
        self.exec
            .spools()
            .insert(exec_id.to_string(), (session.session_id.clone(), None));
        self.exec.start_sweeper(self.store.clone());
        Ok(writer)
    }

    fn forget_spool(&self, exec_id: &str) {
        if self.exec.spools().remove(exec_id).is_some() {
            let _ = std::fs::remove_file(spool_path(&self.exec.spool_dir, exec_id));
        }
    }

    fn exec_request(&self, spec: &ExecSpec) -> ServiceResult<ExecRequest> {
        let limits = &self.exec.config;
        let mut request = match &spec.command {
            ExecCommand::Shell(command) => {
                check_text(&["command"], command, limits.max_command_bytes)?;
                ExecRequest::shell(command.clone())
            }
            ExecCommand::Argv(argv) => {
                if argv.is_empty() || argv.len() > limits.max_argv_items {
                    return Err(ServiceError::invalid(
                        &["argv"],
                        format!("argv must have 1 to {} items", limits.max_argv_items),
                        "value_error",
                    ));
                }
                let total: usize = argv.iter().map(|a| a.len() + 1).sum();
                if total > limits.max_command_bytes || argv.iter().any(|a| a.contains('\0')) {
                    return Err(ServiceError::invalid(
                        &["argv"],
                        format!(
                            "argv must be at most {} bytes in all, without NUL",
                            limits.max_command_bytes
                        ),
                        "value_error",
                    ));
                }
                if argv[0].is_empty() {
                    return Err(ServiceError::invalid(
                        &["argv", "0"],
                        "the program must not be empty",
                        "value_error",
                    ));
                }
                ExecRequest::argv(argv.clone())
            }
        };
        let timeout = spec.timeout_secs.unwrap_or(limits.default_timeout_secs);
        if timeout == 0 || timeout > limits.max_timeout_secs {
            return Err(ServiceError::invalid(
                &["timeout_secs"],
                format!(
                    "Input should be between 1 and {} (seconds)",
                    limits.max_timeout_secs
                ),
                "less_than_equal",
            ));
        }
        request.timeout_ms = u64::from(timeout) * 1000;
        request.max_output_bytes = self.exec.max_output_bytes as u64;
        if let Some(cwd) = &spec.cwd {
            check_text(&["cwd"], cwd, MAX_CWD_BYTES)?;
            request.cwd = Some(cwd.clone());
        }
        check_env(&spec.env, limits)?;
        request.env = spec.env.clone();
        if let Some(stdin) = &spec.stdin {
            if stdin.len() > limits.max_stdin_bytes {
                return Err(ServiceError::invalid(
                    &["stdin"],
                    format!("stdin must be at most {} bytes", limits.max_stdin_bytes),
                    "value_error",
                ));
            }
            request.stdin = Some(Binary(stdin.clone()));
        }
        Ok(request)
    }
}

fn check_text(field: &[&str], text: &str, max: usize) -> ServiceResult<()> {
    if text.is_empty() || text.len() > max || text.contains('\0') {
        return Err(ServiceError::invalid(
            field,
            format!("must be 1 to {max} bytes, without NUL"),
            "value_error",
        ));
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>, limits: &ExecConfig) -> ServiceResult<()> {
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if env.len() > limits.max_env_vars || total > limits.max_env_bytes {
        return Err(ServiceError::invalid(
            &["env"],
            format!(
                "at most {} variables and {} bytes in all",
                limits.max_env_vars, limits.max_env_bytes
            ),
            "value_error",
        ));
    }
    for (name, value) in env {
        let bad_name = name.is_empty() || name.contains(['=', '\0']);
        if bad_name || value.contains('\0') {
            return Err(ServiceError::invalid(
                &["env", name.as_str()],
                "a name is non-empty without '=' or NUL; a value has no NUL",
                "value_error",
            ));
        }
    }
    Ok(())
}

/// One exec, run to its end in a task of its own.
struct ExecTask {
    store: Arc<dyn Store>,
    hub: Arc<ExecHub>,
    live: Arc<LiveExec>,
    exec_id: String,
    request: ExecRequest,
}

impl ExecTask {
    async fn run_sync(self) -> ServiceResult<InstanceExecRecord> {
        let result = self
            .live
            .runtime
            .exec(&self.live.sandbox, self.request.clone())
            .await;
        let finish = finish_of(result, self.hub.max_output_bytes);
        let stored = self.store_finish(&finish).await;
        self.hub.ended(&self.exec_id);
        stored
    }

    async fn run_streamed(self, mut writer: SpoolWriter) {
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
