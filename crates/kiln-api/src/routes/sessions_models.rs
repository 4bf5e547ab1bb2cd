//! The contract's shapes for sessions and interactions.
use chrono::{DateTime, Utc};
use kiln_domain::{InteractionKind, InteractionRecord, SessionRecord, SessionStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt, ErrorInfo};

/// Status of a session.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatusView {
    Creating,
    Ready,
    Error,
    Closed,
    Terminated,
}

impl From<SessionStatus> for SessionStatusView {
    fn from(s: SessionStatus) -> Self {
        match s {
            SessionStatus::Creating => Self::Creating,
            SessionStatus::Ready => Self::Ready,
            SessionStatus::Error => Self::Error,
            SessionStatus::Closed => Self::Closed,
            SessionStatus::Terminated => Self::Terminated,
        }
    }
}

/// Request to create a new session.
#[derive(Deserialize, ToSchema)]
pub struct SessionCreateRequest {
    #[schema(min_length = 1)]
    pub dataset: String,
    #[schema(min_length = 1)]
    pub sample_id: String,
    /// Time to live for the session in minutes (default: 30; at most the server's
    /// `sessions.max_ttl_minutes`).
    #[schema(default = 30, minimum = 1)]
    pub ttl_minutes: Option<i64>,
}

/// Response for creating a session.
#[derive(Serialize, ToSchema)]
pub struct SessionCreateResponse {
    pub session_id: String,
    #[schema(value_type = SessionStatusView)]
    pub status: SessionStatusView,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// Information about the sandbox behind a session.
#[derive(Serialize, ToSchema)]
pub struct ContainerInfo {
    pub container_name: String,
    pub service_url: String,
    pub sample_id: String,
    pub status: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    pub location: String,
}

/// Represents a session for multi-turn interactions.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    pub session_id: String,
    pub user_id: String,
    pub dataset: String,
    pub sample_id: String,
    pub status: SessionStatusView,
    #[serde(serialize_with = "rfc3339")]
    pub requested_at: DateTime<Utc>,
    /// When the sandbox became ready and billing started.
    #[serde(serialize_with = "rfc3339_opt")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    pub duration_seconds: Option<f64>,
    pub container_info: Option<ContainerInfo>,
    pub error: Option<ErrorInfo>,
    /// What the sandbox used, as last sampled (Kiln's addition to the contract; `null`
    /// before the first sample).
    pub resources: Option<SessionResources>,
}

/// A session's resource usage: sampled while it runs and once more before its sandbox is
/// destroyed. A field is `null` where the host does not report it.
#[derive(Serialize, ToSchema)]
pub struct SessionResources {
    /// CPU time of all its processes.
    pub cpu_seconds: Option<f64>,
    /// Highest memory charged to it at once.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes in use on its disk.
    pub disk_used_bytes: Option<u64>,
    /// Its disk limit.
    pub disk_limit_bytes: Option<u64>,
    /// Most processes and threads seen in one sample.
    pub pids_peak: Option<u64>,
    /// When it was sampled.
    #[serde(serialize_with = "rfc3339")]
    pub sampled_at: DateTime<Utc>,
}

impl From<kiln_domain::SessionUsage> for SessionResources {
    fn from(u: kiln_domain::SessionUsage) -> Self {
        Self {
            // u64 → f64 is exact up to 2^53 µs (285 years of CPU).
            #[allow(clippy::cast_precision_loss)]
            cpu_seconds: u.cpu_micros.map(|us| us as f64 / 1e6),
            memory_peak_bytes: u.memory_peak_bytes,
            disk_used_bytes: u.disk_used_bytes,
            disk_limit_bytes: u.disk_limit_bytes,
            pids_peak: u.pids_peak,
            sampled_at: u.sampled_at,
        }
    }
}

/// Seconds from ready to the end (or to now, while live).
pub fn duration_seconds(s: &SessionRecord) -> Option<f64> {
    let ready = s.ready_at?;
    let end = s.ended_at.unwrap_or_else(Utc::now);
    Some(((end - ready).num_microseconds().unwrap_or(0).max(0) as f64) / 1e6)
}

impl From<SessionRecord> for SessionView {
    /// An instance made from an image (`/v1/instances`) has no dataset or sample: it shows
    /// empty strings there, which keeps the contract's required fields.
    fn from(s: SessionRecord) -> Self {
        let duration = duration_seconds(&s);
        let (dataset, sample_id) = match s.source.sample() {
            Some((dataset, sample_id, _)) => (dataset.to_string(), sample_id.to_string()),
            None => (String::new(), String::new()),
        };
        let container_info = match (&s.sandbox_id, s.ready_at) {
            (Some(sandbox), Some(ready)) => Some(ContainerInfo {
                container_name: sandbox.clone(),
                service_url: format!(
                    "kiln://{}/sandboxes/{sandbox}",
                    s.location.as_deref().unwrap_or("local")
                ),
                sample_id: sample_id.clone(),
                status: if s.status == SessionStatus::Ready {
                    "running"
                } else {
                    "stopped"
                }
                .into(),
                created_at: ready,
                expires_at: s.expires_at,
                location: s.location.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        let error = match (&s.error_code, &s.error_message) {
            (Some(code), message) => Some(ErrorInfo {
                code: code.clone(),
                message: message.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        Self {
            session_id: s.session_id,
            user_id: s.user_id,
            dataset,
            sample_id,
            status: s.status.into(),
            requested_at: s.requested_at,
            created_at: s.ready_at,
            expires_at: s.expires_at,
            duration_seconds: duration,
            container_info,
            error,
            resources: s.usage.map(SessionResources::from),
        }
    }
}

/// Response for listing sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionListResponse {
    pub sessions: Vec<SessionView>,
    pub total_count: u64,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionListParams {
    /// Page number (1-based; Kiln addition).
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Sessions per page (default and max 100; Kiln addition).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<i64>,
}

/// Response model for session deletion.
#[derive(Serialize, ToSchema)]
pub struct SessionDeleteResponse {
    pub message: String,
    pub duration_seconds: f64,
}

/// Request to execute a bash command in a session.
#[derive(Deserialize, ToSchema)]
pub struct ExecRequest {
    /// Not blank; at most the server's `sessions.max_command_bytes`.
    #[schema(min_length = 1, pattern = "\\S")]
    pub command: String,
    /// Timeout for command execution in seconds (default: 300; at most the server's
    /// `sessions.max_command_timeout_secs`).
    #[schema(default = 300, minimum = 1)]
    pub command_timeout: Option<i64>,
}

/// Response for starting command execution (async).
#[derive(Serialize, ToSchema)]
pub struct ExecStartResponse {
    pub interaction_id: String,
    pub status: String,
}

/// Request to perform string replacement in a file.
#[derive(Deserialize, ToSchema)]
pub struct StringReplaceRequest {
    /// 1 to 4096 bytes, no NUL.
    #[schema(min_length = 1, max_length = 4096, pattern = "^[^\\x00]*$")]
    pub file_path: String,
    #[schema(min_length = 1)]
    pub str_to_replace: String,
    pub str_to_insert: String,
}

/// Response for string replacement operation.
#[derive(Serialize, ToSchema)]
pub struct StringReplaceResponse {
    pub success: bool,
    pub message: String,
}

/// Request to upload a file to the session environment.
#[derive(Deserialize, ToSchema)]
pub struct FileUploadRequest {
    /// 1 to 4096 bytes, no NUL.
    #[schema(min_length = 1, max_length = 4096, pattern = "^[^\\x00]*$")]
    pub file_path: String,
    /// Standard base64 with padding (surrounding whitespace is ignored).
    #[schema(
        pattern = "^\\s*(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?\\s*$"
    )]
    pub content_base64: String,
    #[serde(default)]
    pub make_executable: bool,
}

/// Response for file upload operation.
#[derive(Serialize, ToSchema)]
pub struct FileUploadResponse {
    pub success: bool,
    pub message: String,
    pub file_path: String,
    pub size_bytes: u64,
}

/// One interaction of a session: `exec_command`, `string_replace` or `file_upload`,
/// with the request's fields and, once finished, the outcome (`exit_code` is null
/// until then).
#[derive(ToSchema)]
#[schema(as = ExecCommandInteraction)]
pub struct ExecCommandInteraction {
    pub interaction_id: String,
    pub session_id: String,
    pub interaction_type: String,
    pub created_at: String,
    pub exit_code: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub execution_time_seconds: Option<f64>,
    pub success: Option<bool>,
    pub message: Option<String>,
    /// Kiln addition: true once retention removed `stdout` and `stderr` (then null).
    pub output_expired: Option<bool>,
    pub command: String,
    pub command_timeout: i64,
}

#[derive(ToSchema)]
pub struct StringReplaceInteraction {
    pub interaction_id: String,
    pub session_id: String,
    pub interaction_type: String,
    pub created_at: String,
    pub exit_code: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub execution_time_seconds: Option<f64>,
    pub success: Option<bool>,
    pub message: Option<String>,
    /// Kiln addition: true once retention removed `stdout` and `stderr` (then null).
    pub output_expired: Option<bool>,
    pub file_path: String,
    pub str_to_replace: String,
    pub str_to_insert: String,
}

#[derive(ToSchema)]
pub struct FileUploadInteraction {
    pub interaction_id: String,
    pub session_id: String,
    pub interaction_type: String,
    pub created_at: String,
    pub exit_code: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub execution_time_seconds: Option<f64>,
    pub success: Option<bool>,
    pub message: Option<String>,
    /// Kiln addition: true once retention removed `stdout` and `stderr` (then null).
    pub output_expired: Option<bool>,
    pub file_path: String,
    pub size_bytes: Option<i64>,
    pub make_executable: bool,
}

/// The interaction as the contract's JSON: the common fields, the outcome, and the
/// request's own fields (stored as the contract names them).
pub fn interaction_json(r: &InteractionRecord) -> Value {
    let mut out = json!({
        "interaction_id": r.interaction_id,
        "session_id": r.session_id,
        "interaction_type": match r.kind {
            InteractionKind::ExecCommand => "exec_command",
            InteractionKind::StringReplace => "string_replace",
            InteractionKind::FileUpload => "file_upload",
        },
        "created_at": r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "exit_code": null, "stdout": null, "stderr": null,
        "execution_time_seconds": null, "success": null, "message": null,
    });
    if let Some(o) = &r.outcome {
        out["exit_code"] = json!(o.exit_code);
        out["stdout"] = json!(o.stdout);
        out["stderr"] = json!(o.stderr);
        out["execution_time_seconds"] = json!(o.execution_time_seconds);
        out["success"] = json!(o.success);
        out["message"] = json!(o.message);
    }
    // Retention emptied the output: say it is gone rather than serve it as empty.
    out["output_expired"] = json!(r.output_expired_at.is_some());
    if r.output_expired_at.is_some() {
        out["stdout"] = Value::Null;
        out["stderr"] = Value::Null;
    }
    if let (Some(obj), Some(request)) = (out.as_object_mut(), r.request.as_object()) {
        for (k, v) in request {
            obj.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Status of a verification job.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum JobStatusView {
    Pending,
    Starting,
    Running,
    Completed,
    Error,
    Cancelled,
}

impl From<kiln_domain::JobStatus> for JobStatusView {
    fn from(s: kiln_domain::JobStatus) -> Self {
        use kiln_domain::JobStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Starting => Self::Starting,
            S::Running => Self::Running,
            S::Completed => Self::Completed,
            S::Error => Self::Error,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// Response for starting verification (async).
#[derive(Serialize, ToSchema)]
pub struct VerifyStartResponse {
    pub job_id: String,
    pub status: JobStatusView,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
}

/// Result from a test suite verifier (Kiln adds `grading`: rules, SWE-bench
/// `tests_status`, the status map, scores and resolution).
#[derive(Serialize, ToSchema)]
pub struct TestSuiteResult {
    pub tool: String,
    pub is_success: bool,
    pub execution_duration_seconds: f64,
    pub total: i64,
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub passes: Vec<Value>,
    pub failures: Vec<Value>,
    pub skips: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

/// A verification job, including the result once it is completed.
#[derive(Serialize, ToSchema)]
#[schema(as = VerificationJob)]
pub struct VerificationJobView {
    pub job_id: String,
    pub sample_id: String,
    pub session_id: String,
    pub status: JobStatusView,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub completed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<TestSuiteResult>)]
    pub result: Option<kiln_domain::VerificationResult>,
    pub error: Option<ErrorInfo>,
    pub container_info: Option<ContainerInfo>,
}

impl From<kiln_domain::VerificationJobRecord> for VerificationJobView {
    fn from(j: kiln_domain::VerificationJobRecord) -> Self {
        let error = j.error_code.map(|code| ErrorInfo {
            code,
            message: j.error_message.unwrap_or_default(),
        });
        Self {
            job_id: j.job_id,
            sample_id: j.sample_id,
            session_id: j.session_id,
            status: j.status.into(),
            created_at: j.created_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
            result: j.result,
            error,
            container_info: None,
        }
    }
}
