//! Records of agent jobs: an agent run over a repository in a sandbox.
use chrono::{DateTime, Utc};

use crate::JobStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgentJob {
    pub job_id: String,
    pub user_id: String,
    pub repo: String,
    /// Branch, tag or commit; `None` for the repository's HEAD.
    pub git_ref: Option<String>,
    pub agent_id: String,
    /// SHA-256 (hex) of the completion secret.
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    /// The node whose process runs the job (`None` without a node of its own).
    pub node_id: Option<String>,
}

/// An agent job. Its status moves `Pending → Starting → Running → Completed | Error`
/// (the contract's `JobStatus`); nothing leaves a finished status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentJobRecord {
    pub job_id: String,
    pub user_id: String,
    pub repo: String,
    pub git_ref: Option<String>,
    pub agent_id: String,
    pub status: JobStatus,
    /// What the job is doing now, in words ("cloning the repository", …).
    pub progress: Option<String>,
    pub secret_hash: String,
    pub error_message: Option<String>,
    /// The result archive on the server's disk, once it exists.
    pub result_path: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The node whose process runs the job: only that node's restart, or its loss, ends
    /// the job early. `None`: stored before nodes were recorded, or without a node.
    pub node_id: Option<String>,
}

/// A change of an agent job's state; fields left `None` keep their value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentJobUpdate {
    pub status: JobStatus,
    pub at: DateTime<Utc>,
    pub progress: Option<String>,
    pub error_message: Option<String>,
}

/// Where a page of a user's jobs starts: strictly after this job in newest-first order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentJobCursor {
    pub created_at: DateTime<Utc>,
    pub job_id: String,
}
