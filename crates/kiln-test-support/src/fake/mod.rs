//! [`FakeRuntime`]: a sandbox backend wholly in memory: no root, no processes, no mounts.
//!
//! Each sandbox is a [`Files`] tree; `exec` is answered by the test's script (closures
//! tried newest first, see [`FakeRuntime::on_exec`] and [`FakeRuntime::respond`]), else by
//! a few built-ins (`true`, `false`, `exit N`, `echo`, `cat`, `pwd`); anything else exits
//! 127. A test can make a sandbox die ([`FakeRuntime::die`]), cap the node
//! ([`FakeRuntime::set_capacity`]), make creates fail or slow. It implements the whole
//! [`Runtime`] trait, so services run over it exactly as over the local backend: the proof
//! that a backend is a module of its own.
mod files;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use kiln_protocol::{
    AgentError, Binary, ClientError, Command, DirListing, EditLinesRequest, ErrorCode, ExecDone,
    ExecEvent, ExecRequest, FileContent, Metadata, OutputStream, Replaced, WriteFileRequest,
};
use kiln_runtime::{
    ExecEventSink, HostReport, Limits, ReconcileReport, Resource, ResourceUsage, Result, Runtime,
    RuntimeError, SandboxExit, SandboxHandle, SandboxId, SandboxInfo, SandboxSource, SandboxSpec,
    Snapshot, SnapshotId,
};
use tokio::sync::{oneshot, watch};

pub use files::{normalize, Files};

/// The port of a fake sandbox where something listens: it echoes what it is sent.
pub const ECHO_PORT: u16 = 7;

/// What a script answers to one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// How long the command "runs" (it can be killed or time out meanwhile).
    pub delay: Duration,
    /// The exec fails in the infrastructure with this message instead of running.
    pub fail: Option<String>,
}

impl Reply {
    /// Exit 0 with this on stdout.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Reply {
            stdout: stdout.into(),
            ..Reply::default()
        }
    }

    /// This exit code, no output.
    pub fn exit(code: i32) -> Self {
        Reply {
            exit_code: code,
            ..Reply::default()
        }
    }

    /// The exec cannot run: the runtime returns an error (as when the agent is unreachable).
    pub fn infra(message: impl Into<String>) -> Self {
        Reply {
            fail: Some(message.into()),
            ..Reply::default()
        }
    }

    pub fn with_stderr(mut self, stderr: impl Into<Vec<u8>>) -> Self {
        self.stderr = stderr.into();
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One command, as a script sees it: it may read and change the sandbox's files (and a
/// bound host directory, through `spec.binds`). Scripts run under the fake's lock: they
/// must not call the runtime.
pub struct ExecCall<'a> {
    pub sandbox: &'a SandboxId,
    /// The shell line, or the argv joined by spaces.
    pub command: String,
    pub request: &'a ExecRequest,
    pub files: &'a mut Files,
    pub spec: &'a SandboxSpec,
}

type Script = Arc<dyn Fn(&mut ExecCall<'_>) -> Option<Reply> + Send + Sync>;

struct Sandbox {
    spec: SandboxSpec,
    files: Files,
    created_at: SystemTime,
    exit: watch::Sender<Option<SandboxExit>>,
    /// Why it died, once it has (it stays listed until destroyed, as a dead local one).
    died: Option<String>,
    /// Running execs: a signal sent here ends one; dropping the sender cuts it off.
    running: HashMap<u64, oneshot::Sender<i32>>,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<SandboxId, Sandbox>,
    reserved: BTreeSet<SandboxId>,
    snapshots: BTreeMap<String, (Files, SandboxSpec)>,
    /// Image references that do not exist (every other one does).
    missing_images: BTreeSet<String>,
    capacity: Option<usize>,
    seed: Files,
    create_delay: Duration,
    create_failure: Option<String>,
    /// What `health` reports (ready when empty).
    health: HostReport,
    /// Destroys still remove the sandbox but answer this error (as when a backend cannot
    /// hand a workspace back).
    destroy_failure: Option<String>,
    next_id: u64,
    creates: u64,
    execs: Vec<(SandboxId, String)>,
}

/// An in-memory [`Runtime`]; share it as `Arc<FakeRuntime>` between the test and the
/// services (`Arc<dyn Runtime>`).
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    scripts: RwLock<Vec<Script>>,
}

impl FakeRuntime {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section leaves the state consistent: a test's panic elsewhere
        // must not hide the next assertion behind a poison error.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a script, tried before the earlier ones; `None` passes the command on.
    pub fn on_exec(
        &self,
        script: impl Fn(&mut ExecCall<'_>) -> Option<Reply> + Send + Sync + 'static,
    ) {
        self.scripts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(script));
    }

    /// Answers every command containing `pattern` with `reply` (a table row).
    pub fn respond(&self, pattern: impl Into<String>, reply: Reply) {
        let pattern = pattern.into();
        self.on_exec(move |call| call.command.contains(&pattern).then(|| reply.clone()));
    }

    /// At most `sandboxes` sandboxes (reserved or running) at once; `None`: no limit.
    pub fn set_capacity(&self, sandboxes: Option<usize>) {
        self.lock().capacity = sandboxes;
    }

    /// Files every new sandbox starts with (besides `/`, `/tmp` and `/testbed`).
    pub fn seed(&self, change: impl FnOnce(&mut Files)) {
        change(&mut self.lock().seed);
    }

    /// How long each create takes.
    pub fn set_create_delay(&self, delay: Duration) {
        self.lock().create_delay = delay;
    }

    /// Makes every destroy remove its sandbox but fail with this reason; `None` restores
    /// them.
    pub fn fail_destroys(&self, reason: Option<&str>) {
        self.lock().destroy_failure = reason.map(str::to_string);
    }

    /// Makes `reference` an image this backend does not have (`ImageNotFound`).
    pub fn forget_image(&self, reference: &str) {
        self.lock().missing_images.insert(reference.to_string());
    }

    /// What `health` reports from now on (readiness probes); the default is ready.
    pub fn set_health(&self, report: HostReport) {
        self.lock().health = report;
    }

    /// Makes every create fail (`StartFailed`) with this reason; `None` restores them.
    pub fn fail_creates(&self, reason: Option<&str>) {
        self.lock().create_failure = reason.map(str::to_string);
    }

    /// The sandbox stops on its own, as when its init is killed from the host: waiters
    /// hear `Died`, running execs are cut off, later calls fail.
    pub fn die(&self, id: &SandboxId, reason: &str) -> bool {
        let mut state = self.lock();
        let Some(sandbox) = state.sandboxes.get_mut(id) else {
            return false;
        };
        sandbox.died = Some(reason.to_string());
        sandbox.running.clear();
        sandbox.exit.send_replace(Some(SandboxExit::Died {
            reason: reason.to_string(),
        }));
        true
    }

    /// Sandboxes running now (not dead, not destroyed).
    pub fn running(&self) -> Vec<SandboxId> {
        self.lock()
            .sandboxes
            .iter()
            .filter(|(_, s)| s.died.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Reservations not yet taken over by a create.
    pub fn reservations(&self) -> usize {
        self.lock().reserved.len()
    }

    /// How many sandboxes were created so far.
    pub fn creates(&self) -> u64 {
        self.lock().creates
    }

    /// Every command run so far, in order, with its sandbox.
    pub fn exec_log(&self) -> Vec<(SandboxId, String)> {
        self.lock().execs.clone()
    }

    /// A running sandbox's end as its spec gave it and `set_expiry` moved it.
    pub fn expiry(&self, id: &SandboxId) -> Option<SystemTime> {
        self.lock().sandboxes.get(id)?.spec.expires_at
    }

    /// Reads or changes a sandbox's files from the test; `None` when there is no such sandbox.
    pub fn with_files<T>(&self, id: &SandboxId, f: impl FnOnce(&mut Files) -> T) -> Option<T> {
        self.lock().sandboxes.get_mut(id).map(|s| f(&mut s.files))
    }

    fn admit(state: &State, id: &SandboxId) -> Result<()> {
        let Some(capacity) = state.capacity else {
            return Ok(());
        };
        let held = state.sandboxes.len() + state.reserved.iter().filter(|r| *r != id).count();
        if held >= capacity {
            return Err(RuntimeError::Capacity {
                resource: Resource::Memory,
                message: format!("{held} sandboxes of at most {capacity}"),
                retry_after: Duration::from_secs(5),
            });
        }
        Ok(())
    }

    /// The sandbox's files, or the error a call on it gets.
    fn on_files<T>(
        &self,
        id: &SandboxId,
        op: impl FnOnce(&mut Files) -> std::result::Result<T, AgentError>,
    ) -> Result<T> {
        let mut state = self.lock();
        let sandbox = live(&mut state, id)?;
        op(&mut sandbox.files).map_err(|e| RuntimeError::Agent {
            id: id.to_string(),
            source: ClientError::Agent(e),
        })
    }

    async fn run_exec(
        &self,
        id: &SandboxId,
        request: ExecRequest,
        mut on_event: Option<ExecEventSink<'_>>,
    ) -> Result<ExecDone> {
        let scripts = self
            .scripts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (exec_id, reply, killed) = {
            let mut state = self.lock();
            state.next_id += 1;
            let exec_id = state.next_id;
            let command = match &request.command {
                Command::Shell(line) => line.clone(),
                Command::Argv(argv) => argv.join(" "),
            };
            state.execs.push((id.clone(), command.clone()));
            let sandbox = live(&mut state, id)?;
            let mut call = ExecCall {
                sandbox: id,
                command,
                request: &request,
                files: &mut sandbox.files,
                spec: &sandbox.spec,
            };
            let reply = scripts
                .iter()
                .rev()
                .find_map(|script| script(&mut call))
                .unwrap_or_else(|| builtin(&mut call));
            let (kill, killed) = oneshot::channel();
            sandbox.running.insert(exec_id, kill);
            (exec_id, reply, killed)
        };
        let result = self
            .finish_exec(id, exec_id, &request, reply, killed, &mut on_event)
            .await;
        if let Some(sandbox) = self.lock().sandboxes.get_mut(id) {
            sandbox.running.remove(&exec_id);
        }
        result
    }

    async fn finish_exec(
        &self,
        id: &SandboxId,
        exec_id: u64,
        request: &ExecRequest,
        reply: Reply,
        killed: oneshot::Receiver<i32>,
        on_event: &mut Option<ExecEventSink<'_>>,
    ) -> Result<ExecDone> {
        if let Some(message) = reply.fail {
            return Err(RuntimeError::Io {
                what: "fake exec",
                path: PathBuf::from(id.as_str()),
                source: std::io::Error::other(message),
            });
        }
        let started = Instant::now();
        if let Some(sink) = on_event.as_mut() {
            let pid = u32::try_from(exec_id).unwrap_or(u32::MAX);
            sink(ExecEvent::Started { exec_id, pid });
            if request.stream {
                for (stream, data) in [
                    (OutputStream::Stdout, &reply.stdout),
                    (OutputStream::Stderr, &reply.stderr),
                ] {
                    if !data.is_empty() {
                        sink(ExecEvent::Output {
                            stream,
                            data: Binary(data.clone()),
                        });
                    }
                }
            }
        }
        let timeout = Duration::from_millis(request.timeout_ms);
        let (exit_code, signal, timed_out) = tokio::select! {
            () = tokio::time::sleep(reply.delay.min(timeout)) => {
                if reply.delay > timeout {
                    (124, None, true)
                } else {
                    (reply.exit_code, None, false)
                }
            }
            signal = killed => match signal {
                Ok(signal) => (128 + signal, Some(signal), false),
                // The sandbox died or was destroyed under the command.
                Err(_) => return Err(agent_gone(id)),
            },
        };
        let (stdout, stdout_truncated_bytes) = cap(&reply.stdout, request.max_output_bytes);
        let (stderr, stderr_truncated_bytes) = cap(&reply.stderr, request.max_output_bytes);
        Ok(ExecDone {
            exit_code,
            signal,
            timed_out,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            stdout: Binary(stdout),
            stderr: Binary(stderr),
            stdout_truncated_bytes,
            stderr_truncated_bytes,
        })
    }
}

/// The sandbox, if it runs; the error a call on it gets otherwise.
fn live<'a>(state: &'a mut State, id: &SandboxId) -> Result<&'a mut Sandbox> {
    match state.sandboxes.get_mut(id) {
        None => Err(RuntimeError::NotFound(id.to_string())),
        Some(sandbox) if sandbox.died.is_some() => Err(agent_gone(id)),
        Some(sandbox) => Ok(sandbox),
    }
}

/// Tells waiters the sandbox was destroyed; a dead one keeps saying how it died.
fn destroyed(sandbox: &Sandbox) {
    sandbox.exit.send_if_modified(|exit| {
        let first = exit.is_none();
        if first {
            *exit = Some(SandboxExit::Destroyed);
        }
        first
    });
}

/// What a call gets from a sandbox whose agent is gone.
fn agent_gone(id: &SandboxId) -> RuntimeError {
    RuntimeError::Agent {
        id: id.to_string(),
        source: ClientError::Closed {
            expected: "exec_done",
        },
    }
}

/// The agent's cap: the first `max / 2` bytes and the last `max - max / 2`.
fn cap(data: &[u8], max: u64) -> (Vec<u8>, u64) {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if data.len() <= max {
        return (data.to_vec(), 0);
    }
    let head = max / 2;
    let tail = max - head;
    let mut kept = data[..head].to_vec();
    kept.extend_from_slice(&data[data.len() - tail..]);
    (kept, (data.len() - max) as u64)
}

/// The few commands a test need not script.
fn builtin(call: &mut ExecCall<'_>) -> Reply {
    let line = call.command.trim();
    let (program, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let unquote = |s: &str| s.trim_matches(|c| c == '\'' || c == '"').to_string();
    let cwd = call
        .request
        .cwd
        .clone()
        .or_else(|| call.spec.workdir.clone())
        .unwrap_or_else(|| "/testbed".into());
    match program {
        "true" | ":" => Reply::exit(0),
        "false" => Reply::exit(1),
        "exit" => Reply::exit(rest.parse().unwrap_or(0)),
        "pwd" => Reply::ok(format!("{cwd}\n")),
        "echo" => Reply::ok(format!("{}\n", unquote(rest))),
        "cat" => {
            let name = unquote(rest);
            let path = if name.starts_with('/') {
                name.clone()
            } else {
                format!("{cwd}/{name}")
            };
            match call.files.get(&path) {
                Some(bytes) => Reply::ok(bytes.to_vec()),
                None => {
                    Reply::exit(1).with_stderr(format!("cat: {name}: No such file or directory\n"))
                }
            }
        }
        _ => Reply::exit(127).with_stderr(format!("fake runtime: no script answers `{line}`\n")),
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn reserve(&self, id: &SandboxId, _limits: &Limits) -> Result<()> {
        let mut state = self.lock();
        if state.reserved.contains(id) || state.sandboxes.contains_key(id) {
            return Ok(());
        }
        Self::admit(&state, id)?;
        state.reserved.insert(id.clone());
        Ok(())
    }

    fn release(&self, id: &SandboxId) {
        self.lock().reserved.remove(id);
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        let delay = {
            let mut state = self.lock();
            if state.sandboxes.contains_key(&spec.id) {
                return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
            }
            if !state.reserved.remove(&spec.id) {
                Self::admit(&state, &spec.id)?;
            }
            // Held like a reservation while it starts.
            state.reserved.insert(spec.id.clone());
            state.create_delay
        };
        tokio::time::sleep(delay).await;
        let mut state = self.lock();
        state.reserved.remove(&spec.id);
        if let Some(reason) = state.create_failure.clone() {
            return Err(RuntimeError::StartFailed {
                id: spec.id.to_string(),
                reason,
            });
        }
        let files = match &spec.source {
            SandboxSource::Snapshot(snapshot) => match state.snapshots.get(snapshot.as_str()) {
                Some((files, _)) => files.clone(),
                None => return Err(RuntimeError::NotFound(format!("snapshot {snapshot}"))),
            },
            SandboxSource::Image(reference) if state.missing_images.contains(reference) => {
                return Err(image_not_found(reference))
            }
            SandboxSource::Image(_) => state.seed.clone(),
        };
        let created_at = SystemTime::now();
        let (exit, _) = watch::channel(None);
        state.creates += 1;
        let id = spec.id.clone();
        state.sandboxes.insert(
            id.clone(),
            Sandbox {
                spec,
                files,
                created_at,
                exit,
                died: None,
                running: HashMap::new(),
            },
        );
        Ok(SandboxHandle {
            id,
            agent_version: "fake".into(),
            created_at,
        })
    }

    async fn check_image(&self, reference: &str) -> Result<()> {
        if self.lock().missing_images.contains(reference) {
            return Err(image_not_found(reference));
        }
        Ok(())
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecDone> {
        self.run_exec(id, request, None).await
    }

    async fn exec_streaming(
        &self,
        id: &SandboxId,
        mut request: ExecRequest,
        on_event: ExecEventSink<'_>,
    ) -> Result<ExecDone> {
        request.stream = true;
        self.run_exec(id, request, Some(on_event)).await
    }

    async fn kill_exec(&self, id: &SandboxId, exec_id: u64, signal: Option<i32>) -> Result<()> {
        let mut state = self.lock();
        let sandbox = live(&mut state, id)?;
        match sandbox.running.remove(&exec_id) {
            Some(kill) => {
                let _ = kill.send(signal.unwrap_or(9));
                Ok(())
            }
            None => Err(RuntimeError::Agent {
                id: id.to_string(),
                source: ClientError::Agent(AgentError::new(
                    ErrorCode::UnknownExec,
                    format!("no running exec {exec_id}"),
                )),
            }),
        }
    }

    async fn read_file(
        &self,
        id: &SandboxId,
        path: &str,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        self.on_files(id, |files| files.read(path, max_bytes))
    }

    async fn read_file_at(
        &self,
        id: &SandboxId,
        path: &str,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FileContent> {
        self.on_files(id, |files| files.read_at(path, offset, max_bytes))
    }

    async fn edit_lines(&self, id: &SandboxId, request: EditLinesRequest) -> Result<Replaced> {
        self.on_files(id, |files| files.edit_lines(&request))
    }

    async fn write_file(&self, id: &SandboxId, request: WriteFileRequest) -> Result<u64> {
        self.on_files(id, |files| files.write(request))
    }

    async fn str_replace(
        &self,
        id: &SandboxId,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<Replaced> {
        self.on_files(id, |files| files.str_replace(path, old, new))
    }

    async fn list_dir(&self, id: &SandboxId, path: &str) -> Result<DirListing> {
        self.on_files(id, |files| files.list(path))
    }

    async fn stat(&self, id: &SandboxId, path: &str) -> Result<Metadata> {
        self.on_files(id, |files| files.stat(path))
    }

    async fn snapshot(&self, id: &SandboxId) -> Result<Snapshot> {
        let mut state = self.lock();
        state.next_id += 1;
        let snapshot_id = format!("snap-{}", state.next_id);
        let sandbox = live(&mut state, id)?;
        let (files, spec) = (sandbox.files.clone(), sandbox.spec.clone());
        let snapshot = Snapshot {
            id: SnapshotId::new(snapshot_id.clone())?,
            sandbox: id.clone(),
            size_bytes: files.size_bytes(),
        };
        state.snapshots.insert(snapshot_id, (files, spec));
        Ok(snapshot)
    }

    async fn remove_snapshot(&self, snapshot_id: &SnapshotId) -> Result<()> {
        match self.lock().snapshots.remove(snapshot_id.as_str()) {
            Some(_) => Ok(()),
            None => Err(RuntimeError::NotFound(format!("snapshot {snapshot_id}"))),
        }
    }

    /// Port [`ECHO_PORT`] of a fake sandbox is an echo service; every other port is one
    /// nothing listens on (`connection_refused`, as the agent says it).
    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<kiln_runtime::PortStream> {
        live(&mut self.lock(), id)?;
        if port != ECHO_PORT {
            let message = format!("nothing accepts connections on port {port} inside the sandbox");
            return Err(RuntimeError::Agent {
                id: id.to_string(),
                source: ClientError::Agent(AgentError::new(ErrorCode::ConnectionRefused, message)),
            });
        }
        let (near, far) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(far);
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
        Ok(Box::new(near))
    }

    async fn set_expiry(&self, id: &SandboxId, at: SystemTime) -> Result<()> {
        let mut state = self.lock();
        let sandbox = state
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        sandbox.spec.expires_at = Some(at);
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let mut state = self.lock();
        let reserved = state.reserved.remove(id);
        match state.sandboxes.remove(id) {
            Some(sandbox) => {
                destroyed(&sandbox);
                match state.destroy_failure.clone() {
                    Some(reason) => Err(RuntimeError::Io {
                        what: "cannot hand the workspace back",
                        path: PathBuf::from("/fake"),
                        source: std::io::Error::other(reason),
                    }),
                    None => Ok(()),
                }
            }
            None if reserved => Ok(()),
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    async fn wait_exit(&self, id: &SandboxId) -> Result<SandboxExit> {
        let mut exit = match self.lock().sandboxes.get(id) {
            Some(sandbox) => sandbox.exit.subscribe(),
            None => return Err(RuntimeError::NotFound(id.to_string())),
        };
        let ended = match exit.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(SandboxExit::Destroyed),
            // The sender went with the sandbox: it was destroyed.
            Err(_) => SandboxExit::Destroyed,
        };
        Ok(ended)
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(self
            .lock()
            .sandboxes
            .iter()
            .filter(|(_, s)| s.died.is_none())
            .map(|(id, s)| SandboxInfo {
                id: id.clone(),
                created_at: s.created_at,
                memory_bytes: None,
            })
            .collect())
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage> {
        let mut state = self.lock();
        let sandbox = live(&mut state, id)?;
        Ok(ResourceUsage {
            pids: Some(1 + sandbox.running.len() as u64),
            ..ResourceUsage::default()
        })
    }

    async fn health(&self) -> HostReport {
        self.lock().health.clone()
    }

    async fn reconcile(&self, known: &[SandboxId]) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let mut state = self.lock();
        let ids: Vec<SandboxId> = state.sandboxes.keys().cloned().collect();
        for id in ids {
            let dead = state.sandboxes.get(&id).is_some_and(|s| s.died.is_some());
            if !known.contains(&id) {
                report.removed.push(id.to_string());
            } else if dead {
                report.lost.push(id.clone());
            } else {
                report.adopted.push(id);
                continue;
            }
            if let Some(sandbox) = state.sandboxes.remove(&id) {
                destroyed(&sandbox);
            }
        }
        for id in known {
            if !state.sandboxes.contains_key(id) && !report.lost.contains(id) {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn shutdown(&self) -> Result<()> {
        let mut state = self.lock();
        state.reserved.clear();
        for sandbox in std::mem::take(&mut state.sandboxes).values() {
            destroyed(sandbox);
        }
        Ok(())
    }
}

fn image_not_found(reference: &str) -> RuntimeError {
    RuntimeError::ImageNotFound {
        reference: reference.to_string(),
        reason: "the fake backend was told to forget it".into(),
    }
}
