//! Records of the agent loop: sessions, their interactions, and verification jobs.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The contract's `SessionStatus`. Allowed moves: `Creating → Ready | Error`,
/// `Creating | Ready → Closed | Terminated`. Nothing leaves `Error`, `Closed` or
/// `Terminated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Creating,
    Ready,
    Error,
    Closed,
    Terminated,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Error => "error",
            Self::Closed => "closed",
            Self::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "ready" => Self::Ready,
            "error" => Self::Error,
            "closed" => Self::Closed,
            "terminated" => Self::Terminated,
            _ => return None,
        })
    }

    /// `Creating` or `Ready`: the session holds (or is getting) a sandbox.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Creating | Self::Ready)
    }
}

/// What a session's (an instance's) sandbox is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSource {
    /// One exact version of a dataset's sample (every Codeset session).
    Sample {
        dataset: String,
        sample_id: String,
        version: i64,
    },
    /// An image in Kiln's image store, by its reference (an instance made from a base image).
    Image { reference: String },
}

impl SessionSource {
    /// `(dataset, sample_id, version)` of a sample session; `None` for an image.
    pub fn sample(&self) -> Option<(&str, &str, i64)> {
        match self {
            Self::Sample {
                dataset,
                sample_id,
                version,
            } => Some((dataset, sample_id, *version)),
            Self::Image { .. } => None,
        }
    }
}

/// The limits a session's sandbox was given; `None` where it has none (or, for sessions
/// made before they were recorded, where they are not known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionLimits {
    /// Thousandths of a core.
    pub cpu_millicores: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
}

/// An instance's labels: string keys to string values, ordered by key.
pub type Labels = std::collections::BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub session_id: String,
    pub user_id: String,
    pub source: SessionSource,
    pub name: Option<String>,
    pub labels: Labels,
    pub limits: SessionLimits,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A change to an instance (`PATCH`): each `Some` replaces the stored value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionChange {
    /// `Some(None)` removes the name.
    pub name: Option<Option<String>>,
    pub labels: Option<Labels>,
    /// Only while the session is live (`Creating` or `Ready`).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which of a user's sessions to list (`GET /v1/instances`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionFilter {
    /// Any of these statuses; all when empty.
    pub statuses: Vec<SessionStatus>,
    /// Every one of these labels (key, value) must be present.
    pub labels: Vec<(String, String)>,
    /// Only sessions made from a sample (the Codeset listing).
    pub samples_only: bool,
    /// Text found, case-insensitively and literally (no wildcards), in the id, name,
    /// dataset, sample id, image or a label's value.
    pub search: Option<String>,
    /// Keyset paging: only the sessions listed after this one (newest `requested_at`
    /// first, ties by `session_id`). The total still counts every match.
    pub after: Option<SessionCursor>,
}

/// The last session of a page of a listing: where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub requested_at: DateTime<Utc>,
    pub session_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub user_id: String,
    pub source: SessionSource,
    pub name: Option<String>,
    pub labels: Labels,
    pub limits: SessionLimits,
    pub status: SessionStatus,
    pub requested_at: DateTime<Utc>,
    /// When the sandbox became ready (billing starts here).
    pub ready_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// When it became `Closed`, `Terminated` or `Error`.
    pub ended_at: Option<DateTime<Utc>>,
    /// The runtime's name for the sandbox, once one exists.
    pub sandbox_id: Option<String>,
    /// Where the sandbox runs, e.g. `local:<hostname>`.
    pub location: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// What its sandbox used, as last sampled; `None` before the first sample.
    pub usage: Option<SessionUsage>,
}

/// What a session's sandbox used, sampled while it runs and once more before it is
/// destroyed. A field is `None` where the host does not report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionUsage {
    /// CPU time of all its processes, in microseconds.
    pub cpu_micros: Option<u64>,
    /// Highest memory charged to it at once.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes in use on its disk (with a disk limit).
    pub disk_used_bytes: Option<u64>,
    /// Its disk limit.
    pub disk_limit_bytes: Option<u64>,
    /// Most processes and threads seen in one sample.
    pub pids_peak: Option<u64>,
    /// When it was sampled.
    pub sampled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    ExecCommand,
    StringReplace,
    FileUpload,
}

impl InteractionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExecCommand => "exec_command",
            Self::StringReplace => "string_replace",
            Self::FileUpload => "file_upload",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exec_command" => Self::ExecCommand,
            "string_replace" => Self::StringReplace,
            "file_upload" => Self::FileUpload,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewInteraction {
    pub interaction_id: String,
    pub session_id: String,
    pub kind: InteractionKind,
    pub created_at: DateTime<Utc>,
    /// What was asked, as the contract names it: `{command, command_timeout}`,
    /// `{file_path, str_to_replace, str_to_insert}` or `{file_path, size_bytes,
    /// make_executable}`. Uploaded content itself is not kept.
    pub request: serde_json::Value,
}

/// How an interaction ended. Output is already bounded by the caller.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InteractionOutcome {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub execution_time_seconds: f64,
    pub success: bool,
    pub message: Option<String>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InteractionRecord {
    pub interaction_id: String,
    pub session_id: String,
    /// 1, 2, 3… within the session, in the order received.
    pub seq: i64,
    pub kind: InteractionKind,
    pub created_at: DateTime<Utc>,
    pub request: serde_json::Value,
    /// `None` while pending or running.
    pub outcome: Option<InteractionOutcome>,
    /// When retention emptied the outcome's stdout and stderr (`None`: kept).
    pub output_expired_at: Option<DateTime<Utc>>,
}

/// The contract's `JobStatus`. Moves forward only: `Pending → Starting → Running →
/// Completed | Error`, and `Cancelled` from any unfinished state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Starting,
    Running,
    Completed,
    Error,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "starting" => Self::Starting,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "error" => Self::Error,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Error | Self::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVerificationJob {
    pub job_id: String,
    pub session_id: String,
    pub user_id: String,
    pub sample_id: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerificationJobRecord {
    pub job_id: String,
    pub session_id: String,
    pub user_id: String,
    pub sample_id: String,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The `TestSuiteResult` (and Kiln's grading details), when completed.
    pub result: Option<kiln_verify::VerificationResult>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Where a listing of a session's verification jobs, newest first, goes on from: after
/// this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationCursor {
    pub created_at: DateTime<Utc>,
    pub job_id: String,
}

/// A change of a job's state; fields left `None` keep their value.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub status: JobStatus,
    pub at: DateTime<Utc>,
    pub result: Option<kiln_verify::VerificationResult>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}
