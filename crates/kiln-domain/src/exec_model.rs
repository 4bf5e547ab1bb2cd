//! Commands run through the instance API (`/v1/instances/{id}/exec`): the history of an
//! instance, kept apart from the Codeset interactions (whose contract they do not fit).
use chrono::{DateTime, Utc};

/// Where an instance exec stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStatus {
    /// Spawned (or being spawned) and not finished.
    Running,
    /// The command exited by itself or by a signal; see `exit_code` and `signal`.
    Exited,
    /// Its timeout expired and its process group was killed (exit code 124).
    TimedOut,
    /// It could not run or was cut off (sandbox gone, server restart); see `error`.
    Failed,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "exited" => Self::Exited,
            "timed_out" => Self::TimedOut,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// An exec as it is stored when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstanceExec {
    pub exec_id: String,
    /// The instance (a session id).
    pub session_id: String,
    /// Who asked.
    pub user_id: String,
    /// The command as JSON: `{"command": "…"}` or `{"argv": […]}`.
    pub command: String,
    pub cwd: Option<String>,
    /// How it was asked for: `sync`, `background` or `stream`.
    pub mode: String,
    pub created_at: DateTime<Utc>,
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFinish {
    pub status: ExecStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Kept output (head and tail, as Codeset exec keeps it), marked where cut.
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub finished_at: DateTime<Utc>,
}

/// An exec of an instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceExecRecord {
    pub exec_id: String,
    pub session_id: String,
    pub user_id: String,
    pub command: String,
    pub cwd: Option<String>,
    pub mode: String,
    pub status: ExecStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Empty while running.
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a listing of execs, newest first, goes on from: after this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCursor {
    pub created_at: DateTime<Utc>,
    pub exec_id: String,
}
