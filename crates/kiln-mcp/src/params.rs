//! The tools' inputs. Each is a JSON Schema in `tools/list` (schemars), so a client knows
//! every field; limits are the API's own, checked by the services.
use schemars::JsonSchema;
use serde::Deserialize;

/// Most samples one `list_samples` answers with.
pub const MAX_SAMPLES_PAGE: u64 = 100;

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct NoParams {}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListSamples {
    /// Only this dataset's samples (see list_datasets).
    pub dataset: Option<String>,
    /// A case-insensitive part of the sample's id.
    pub search: Option<String>,
    /// At most this many (1 to 100; default 20).
    pub limit: Option<u64>,
    /// Skip this many first.
    pub offset: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SampleRef {
    pub dataset: String,
    /// The sample's id (its SWE-bench instance_id).
    pub sample_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSession {
    /// The dataset of the sample to work on (with sample_id).
    pub dataset: Option<String>,
    /// The sample to work on: the session starts in its repository at its base commit.
    pub sample_id: Option<String>,
    /// Instead of a sample: an image of the server's image store (e.g. "kiln-demo/python:1").
    pub image: Option<String>,
    /// Lifetime in minutes; the session is closed when it runs out (default: the server's
    /// mcp.default_ttl_minutes).
    pub ttl_minutes: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SessionRef {
    /// A session id from create_session, fork or list_sessions.
    pub session_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Exec {
    pub session_id: String,
    /// A shell command line (run with bash -c, in the sample's repository by default).
    pub command: String,
    /// Seconds before the command is killed (default and maximum: the server's exec limits).
    pub timeout_secs: Option<u32>,
    /// Working directory (default: the session's, /testbed for samples).
    pub cwd: Option<String>,
    /// Answer at once with an exec_id and leave the command running (a server, a long
    /// build) until it exits or timeout_secs; see exec_status and kill_exec. Without it,
    /// whatever the command left running is killed when it exits.
    pub background: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecRef {
    pub session_id: String,
    /// An exec_id from exec with background.
    pub exec_id: String,
}

/// How an exposed port is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortMode {
    /// HTTP under this server's API (`url`), with your bearer API key.
    #[default]
    Path,
    /// A TCP listener on the server's host (`host_address`), for any protocol; anyone who
    /// can reach that address can connect.
    HostPort,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExposePort {
    pub session_id: String,
    /// The TCP port a server in the session listens on (on its loopback).
    pub port: u32,
    /// `path` (default) or `host_port`.
    pub mode: Option<PortMode>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ClosePort {
    pub session_id: String,
    /// A forward_id from expose_port.
    pub forward_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadFile {
    pub session_id: String,
    /// Relative paths start at the session's working directory.
    pub path: String,
    /// First byte to read (default 0).
    pub offset: Option<u64>,
    /// Bytes to read (default: to the end, up to the server's files.max_read_bytes).
    pub length: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteFile {
    pub session_id: String,
    pub path: String,
    /// The whole new content (UTF-8 text).
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StrReplace {
    pub session_id: String,
    pub path: String,
    /// Text that must occur exactly once in the file.
    pub old_str: String,
    /// What replaces it.
    pub new_str: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListFiles {
    pub session_id: String,
    /// Directory to list (default: the working directory).
    pub path: Option<String>,
    /// Levels down (default 1: its own entries).
    pub depth: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Snapshot {
    pub session_id: String,
    /// A name to roll back to later (default: one is made up).
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Rollback {
    pub session_id: String,
    /// The checkpoint's name (default: the latest).
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Fork {
    pub session_id: String,
    /// How many copies (1 to the server's snapshots.max_fork_count).
    pub count: u32,
}
