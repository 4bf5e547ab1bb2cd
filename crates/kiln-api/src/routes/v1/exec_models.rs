//! Shapes of the exec routes of the instance API.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kiln_domain::{ExecStatus, InstanceExecRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt};

/// A command to run in an instance. Give exactly one of `command` and `argv`.
#[derive(Deserialize, ToSchema)]
pub struct ExecBody {
    /// A command line, run by the shell: `bash -c`, or `sh -c` where the image has no bash.
    /// At most `exec.max_command_bytes`, without NUL.
    #[schema(min_length = 1, pattern = "^[^\\u0000]+$")]
    pub command: Option<String>,
    /// A program and its arguments, run without a shell (the program is looked up in `PATH`).
    /// At most `exec.max_argv_items` items and `exec.max_command_bytes` in all, without NUL.
    #[schema(min_items = 1)]
    pub argv: Option<Vec<String>>,
    /// Seconds before the command's process group gets SIGTERM, then SIGKILL 2 s later
    /// (exit code 124). Default and maximum: `exec.default_timeout_secs`, `exec.max_timeout_secs`
    /// (never more than a day).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<i64>,
    /// Working directory; the image's (usually `/testbed`) when absent.
    #[schema(min_length = 1, max_length = 4096, pattern = "^[^\\u0000]+$")]
    pub cwd: Option<String>,
    /// Variables added to (overriding) the sandbox's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text fed to the command's stdin, which is then closed (`/dev/null` when absent).
    pub stdin: Option<String>,
    /// Bytes fed to stdin, base64-encoded; instead of `stdin`.
    pub stdin_base64: Option<String>,
    /// Answer 202 at once and run on; GET the exec (or its stream) later.
    /// (`POST …/exec` only.)
    #[serde(default)]
    pub background: bool,
    /// Kill the command (SIGKILL to its group) when the client drops the stream before the
    /// end. By default it runs on, and the stream can be resumed. (`POST …/exec/stream` only.)
    #[serde(default)]
    pub kill_on_disconnect: bool,
}

/// Where an exec stands: `running`, `exited` (see `exit_code`, `signal`), `timed_out`
/// (exit code 124) or `failed` (it could not run or was cut off; see `error`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatusView {
    Running,
    Exited,
    TimedOut,
    Failed,
}

impl From<ExecStatus> for ExecStatusView {
    fn from(s: ExecStatus) -> Self {
        match s {
            ExecStatus::Running => Self::Running,
            ExecStatus::Exited => Self::Exited,
            ExecStatus::TimedOut => Self::TimedOut,
            ExecStatus::Failed => Self::Failed,
        }
    }
}

/// An exec of an instance. Output is kept as Codeset exec keeps it: per stream up to
/// `sessions.max_output_bytes` (its head and tail, with a `[… N bytes truncated …]` line
/// between); empty while running.
#[derive(Serialize, ToSchema)]
pub struct ExecView {
    pub exec_id: String,
    pub instance_id: String,
    pub status: ExecStatusView,
    /// `sync`, `background` or `stream`.
    pub mode: String,
    /// The command line, when it was given as one.
    pub command: Option<String>,
    /// The argv, when it was given as one.
    pub argv: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Output was cut (the middle of a stream dropped).
    pub truncated: bool,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<InstanceExecRecord> for ExecView {
    fn from(r: InstanceExecRecord) -> Self {
        let command: Value = serde_json::from_str(&r.command).unwrap_or(Value::Null);
        let argv = command.get("argv").and_then(|a| {
            a.as_array().map(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default().to_string())
                    .collect()
            })
        });
        Self {
            exec_id: r.exec_id,
            instance_id: r.session_id,
            status: r.status.into(),
            mode: r.mode,
            command: command
                .get("command")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            argv,
            cwd: r.cwd,
            exit_code: r.exit_code,
            signal: r.signal,
            stdout: r.stdout,
            stderr: r.stderr,
            truncated: r.truncated,
            duration_ms: r.duration_ms,
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

/// A background exec, started.
#[derive(Serialize, ToSchema)]
pub struct ExecStartedView {
    pub exec_id: String,
    /// Always `running`.
    pub status: String,
}

/// A page of an instance's execs, newest first.
#[derive(Serialize, ToSchema)]
pub struct ExecListView {
    pub items: Vec<ExecView>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ExecListParams {
    /// Execs per page, 1–100 (default 50).
    pub limit: Option<i64>,
    /// The last exec id of the previous page.
    pub after: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct StreamParams {
    /// Resume after this event id (as the `Last-Event-ID` header does, which wins).
    pub last_event_id: Option<String>,
    /// Kill the command if this stream is dropped before the end.
    #[serde(default)]
    pub kill_on_disconnect: bool,
}

/// A signal: a name (`TERM`, `KILL`, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, with or without
/// `SIG`) or a number (1–64).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignalSpec {
    Number(i64),
    Name(String),
}

/// Signals a running exec's process group.
#[derive(Deserialize, ToSchema)]
pub struct KillBody {
    /// Default `TERM`.
    pub signal: Option<SignalSpec>,
}

/// The signal was sent.
#[derive(Serialize, ToSchema)]
pub struct KillView {
    pub exec_id: String,
    pub signal: i32,
}

impl SignalSpec {
    /// The signal's number, or `None` for an unknown name or a number out of range.
    pub fn number(&self) -> Option<i32> {
        match self {
            Self::Number(n) => i32::try_from(*n).ok().filter(|n| (1..=64).contains(n)),
            Self::Name(name) => {
                let upper = name.to_ascii_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                Some(match bare {
                    "HUP" => 1,
                    "INT" => 2,
                    "QUIT" => 3,
                    "KILL" => 9,
                    "USR1" => 10,
                    "USR2" => 12,
                    "TERM" => 15,
                    "CONT" => 18,
                    "STOP" => 19,
                    _ => return None,
                })
            }
        }
    }
}
