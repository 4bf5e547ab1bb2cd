//! The one way Kiln runs `git`. Repositories come from users and from datasets, so git
//! is treated as a tool pointed at hostile input: each command runs with
//!
//! - a cleared environment: `PATH`, `HOME` (a fresh private directory, removed after),
//!   what the caller adds explicitly, and then the fixed variables below, which win;
//! - no system or user configuration (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`),
//!   no prompts (`GIT_TERMINAL_PROMPT=0`, `GIT_ASKPASS=/bin/false`);
//! - no hooks and no fsmonitor command (`core.hooksPath=/dev/null`, `core.fsmonitor=false`),
//!   whatever the repository's own configuration says;
//! - no `file` transport (`protocol.file.allow=never`) unless the caller opts in with
//!   [`Git::allow_file_protocol`] (local imports and bundles need it);
//! - its own process group, killed as a whole on the deadline, when the caller stops it
//!   ([`Git::output_watched`], [`Git::cancel_on`]) or when stdout passes its cap, and
//!   after git exits (no helper outlives it);
//! - stdout captured up to a cap, the end of stderr kept for the error.
//!
//! [`Git::output`] blocks; [`Git::output_async`] runs it on tokio's blocking pool and
//! kills git when the future is dropped.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The program run; found on `PATH`.
const GIT: &str = "git";
/// `PATH` when the caller has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Set on every command, after the caller's own variables.
const FIXED_ENV: [(&str, &str); 4] = [
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_ASKPASS", "/bin/false"),
];
/// Bytes of stderr kept (its end).
const STDERR_KEPT: usize = 64 * 1024;
/// Characters of stderr quoted in an error.
const STDERR_QUOTED: usize = 2000;
/// Default deadline of one command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default cap of captured stdout.
pub const DEFAULT_MAX_STDOUT: usize = 16 * 1024 * 1024;

/// Why a git command did not give its output.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot wait for git: {0}")]
    Wait(#[source] std::io::Error),
    #[error("git {command} timed out after {} s", .after.as_secs())]
    TimedOut { command: String, after: Duration },
    #[error("git {command} printed more than {limit} bytes")]
    OutputTooLarge { command: String, limit: usize },
    #[error("git {command} was stopped: {reason}")]
    Stopped { command: String, reason: String },
    #[error("git {command} was cancelled")]
    Cancelled { command: String },
    #[error("git {command} failed ({status}){}", tail_suffix(.stderr_tail))]
    Failed {
        command: String,
        status: ExitStatus,
        /// The end of git's stderr, trimmed (at most a couple of thousand characters).
        stderr_tail: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

impl GitError {
    /// The end of git's stderr when it ran and failed; empty otherwise.
    pub fn stderr_tail(&self) -> &str {
        match self {
            GitError::Failed { stderr_tail, .. } => stderr_tail,
            _ => "",
        }
    }
}

/// What a successful command printed.
#[derive(Debug, Default)]
pub struct GitOutput {
    pub stdout: Vec<u8>,
    /// The end of stderr (git's warnings, progress).
    pub stderr: Vec<u8>,
}

/// One git command, built like [`std::process::Command`] and run with [`Git::output`].
#[derive(Debug)]
pub struct Git {
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
    max_stdout: usize,
    allow_file_protocol: bool,
    cancel: Vec<Arc<AtomicBool>>,
}

impl Default for Git {
    fn default() -> Self {
        Self::new()
    }
}

impl Git {
    pub fn new() -> Self {
        Git {
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_stdout: DEFAULT_MAX_STDOUT,
            allow_file_protocol: false,
            cancel: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// A variable for this command (credentials configuration, `GIT_ALLOW_PROTOCOL`,
    /// an author); the fixed ones listed in the crate's documentation cannot be replaced.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Most stdout bytes kept; more is [`GitError::OutputTooLarge`] and git is killed.
    pub fn max_stdout(mut self, bytes: usize) -> Self {
        self.max_stdout = bytes;
        self
    }

    /// Lets git read local repositories and bundles as remotes (`clone`, `fetch` of a
    /// path): off by default, so a URL that reaches git cannot name a host file.
    pub fn allow_file_protocol(mut self) -> Self {
        self.allow_file_protocol = true;
        self
    }

    /// Kills git (and returns [`GitError::Cancelled`]) once `flag` is set: an async
    /// caller sets it when its future is dropped.
    pub fn cancel_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel.push(flag);
        self
    }

    /// Runs git to its end and returns what it printed; a non-zero exit is an error.
    pub fn output(self) -> Result<GitOutput, GitError> {
        self.output_watched(Duration::MAX, || Ok(()))
    }

    /// Like [`Git::output`], calling `watch` about every `every` while git runs: an `Err`
    /// kills git and is returned as [`GitError::Stopped`] (a clone past a size limit).
    pub fn output_watched(
        self,
        every: Duration,
        mut watch: impl FnMut() -> Result<(), String>,
    ) -> Result<GitOutput, GitError> {
        let command = self.subcommand();
        // Private and empty: nothing of the caller's HOME (~/.gitconfig, credential
        // stores, ~/.ssh) is seen. Removed when this function returns.
        let home = tempfile::Builder::new()
            .prefix("kiln-git-home-")
            .tempdir()
            .map_err(GitError::Spawn)?;
        let mut child = self
            .command(home.path().as_os_str())
            .spawn()
            .map_err(GitError::Spawn)?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let overflow = Arc::new(AtomicBool::new(false));
        let stdout = child
            .stdout
            .take()
            .map(|s| read_capped(s, self.max_stdout, overflow.clone()));
        let stderr = child.stderr.take().map(read_tail);

        let kill = |child: &mut Child| {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
        };
        let start = Instant::now();
        let mut next_watch = start.checked_add(every);
        let mut pause = Duration::from_millis(1);
        loop {
            // Exited but not reaped: the group's id cannot be reused yet, so killing the
            // group reaches only git's own leftovers.
            match waitid(
                Id::Pid(pid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            ) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => break,
                Err(e) => {
                    kill(&mut child);
                    return Err(GitError::Wait(e.into()));
                }
            }
            let mut stop = self.stop_reason(&command, start, &overflow);
            if stop.is_none() && next_watch.is_some_and(|at| Instant::now() >= at) {
                next_watch = Instant::now().checked_add(every);
                stop = watch().err().map(|reason| GitError::Stopped {
                    command: command.clone(),
                    reason,
                });
            }
            if let Some(error) = stop {
                // The readers are not joined: a process that left the group could keep
                // a pipe open for ever.
                kill(&mut child);
                return Err(error);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        let _ = killpg(pid, Signal::SIGKILL);
        let status = child.wait().map_err(GitError::Wait)?;
        let stdout = stdout.map(join).unwrap_or_default();
        let stderr = stderr.map(join).unwrap_or_default();
        if overflow.load(Ordering::Acquire) {
            return Err(GitError::OutputTooLarge {
                command,
                limit: self.max_stdout,
            });
        }
        if !status.success() {
            return Err(GitError::Failed {
                command,
                status,
                stderr_tail: quoted_tail(&stderr),
            });
        }
        Ok(GitOutput { stdout, stderr })
    }

    /// Why git must be killed now, if it must: its deadline passed, its stdout overflowed,
    /// or its caller cancelled it.
    fn stop_reason(
        &self,
        command: &str,
        start: Instant,
        overflow: &AtomicBool,
    ) -> Option<GitError> {
        if start.elapsed() >= self.timeout {
            Some(GitError::TimedOut {
                command: command.to_string(),
                after: self.timeout,
            })
        } else if overflow.load(Ordering::Acquire) {
            Some(GitError::OutputTooLarge {
                command: command.to_string(),
                limit: self.max_stdout,
            })
        } else if self.cancel.iter().any(|c| c.load(Ordering::Acquire)) {
            Some(GitError::Cancelled {
                command: command.to_string(),
            })
        } else {
            None
        }
    }

    fn command(&self, home: &OsStr) -> Command {
        let mut command = Command::new(GIT);
        command.env_clear();
        command.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        );
        command.env("HOME", home);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(FIXED_ENV);
        command.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ]);
        if !self.allow_file_protocol {
            command.args(["-c", "protocol.file.allow=never"]);
        }
        command.args(&self.args);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The subcommand, for messages: the first argument that is not an option (or the
    /// value of `-c`/`-C`).
    fn subcommand(&self) -> String {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            if text == "-c" || text == "-C" {
                args.next();
            } else if !text.starts_with('-') {
                return text.into_owned();
            }
        }
        String::new()
    }
}

impl Git {
    /// [`Git::output`] on tokio's blocking pool; dropping the future kills git.
    pub async fn output_async(self) -> Result<GitOutput, GitError> {
        self.output_watched_async(Duration::MAX, || Ok(())).await
    }

    /// [`Git::output_watched`] on tokio's blocking pool (`watch` runs there too);
    /// dropping the future kills git.
    pub async fn output_watched_async(
        self,
        every: Duration,
        watch: impl FnMut() -> Result<(), String> + Send + 'static,
    ) -> Result<GitOutput, GitError> {
        struct CancelOnDrop(Arc<AtomicBool>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let flag = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(flag.clone());
        let git = self.cancel_on(flag);
        tokio::task::spawn_blocking(move || git.output_watched(every, watch))
            .await
            .map_err(|e| GitError::Wait(std::io::Error::other(e)))?
    }
}

fn join(reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
    reader.join().unwrap_or_default()
}

/// Reads up to `max + 1` bytes; past `max` it flags the overflow and stops reading.
fn read_capped(
    mut stream: impl Read + Send + 'static,
    max: usize,
    overflow: Arc<AtomicBool>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        let _ = (&mut stream).take(limit).read_to_end(&mut buf);
        if buf.len() > max {
            overflow.store(true, Ordering::Release);
            buf.truncate(max);
        }
        buf
    })
}

/// Reads to the end, keeping the last [`STDERR_KEPT`] bytes.
fn read_tail(mut stream: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > 2 * STDERR_KEPT {
                        kept.drain(..kept.len() - STDERR_KEPT);
                    }
                }
            }
        }
        if kept.len() > STDERR_KEPT {
            kept.drain(..kept.len() - STDERR_KEPT);
        }
        kept
    })
}

fn quoted_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(STDERR_QUOTED);
    text.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests;
