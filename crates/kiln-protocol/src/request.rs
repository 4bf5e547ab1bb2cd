//! Messages the server sends to the agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::binary::Binary;
use crate::limits::{DEFAULT_EXEC_TIMEOUT_MS, DEFAULT_MAX_OUTPUT_BYTES};

/// One request per connection, after the [`Request::Hello`] handshake.
///
/// Serialized with a `type` tag, e.g. `{"type":"list_dir","path":"/testbed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First frame on every connection.
    Hello {
        /// The version the client speaks ([`crate::PROTOCOL_VERSION`]).
        protocol_version: u32,
        /// The per-sandbox secret an agent listening on TCP requires (it refuses a hello
        /// without the right one); absent on a unix socket, which the file system guards.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// Run a command; answered by `exec_started`, `output`* (when streaming), `exec_done`.
    Exec(ExecRequest),
    /// Read (the head of) a file; answered by `file`.
    ReadFile(ReadFileRequest),
    /// Replace a file atomically; answered by `written`.
    WriteFile(WriteFileRequest),
    /// Replace the one occurrence of `old` by `new`; answered by `replaced`.
    StrReplace(StrReplaceRequest),
    /// Replace a range of whole lines (or insert lines); answered by `replaced`.
    EditLines(EditLinesRequest),
    /// List a directory; answered by `dir`.
    ListDir {
        /// Absolute path, or relative to the agent's working directory.
        path: String,
    },
    /// Metadata of one path (symlinks not followed); answered by `metadata`.
    Stat {
        /// The path to inspect.
        path: String,
    },
    /// Liveness check; answered by `pong`.
    Ping,
    /// Signal the process group of a running exec; answered by `killed`.
    Kill {
        /// From `exec_started`.
        exec_id: u64,
        /// Signal number; SIGKILL when absent.
        #[serde(default)]
        signal: Option<i32>,
    },
    /// Connect to `127.0.0.1:port` (else `[::1]:port`) inside the sandbox's network
    /// namespace; answered by `port_connected`, after which the connection carries the raw
    /// bytes of that TCP connection both ways until either side closes. Only loopback is
    /// ever reached: the request names a port, never a host.
    ConnectPort {
        /// The TCP port, 1 to 65535.
        port: u16,
    },
}

impl Request {
    /// The wire name of the variant, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Exec(_) => "exec",
            Request::ReadFile(_) => "read_file",
            Request::WriteFile(_) => "write_file",
            Request::StrReplace(_) => "str_replace",
            Request::EditLines(_) => "edit_lines",
            Request::ListDir { .. } => "list_dir",
            Request::Stat { .. } => "stat",
            Request::Ping => "ping",
            Request::Kill { .. } => "kill",
            Request::ConnectPort { .. } => "connect_port",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A shell command line, run as `bash -c …` (`sh -c …` when bash is absent).
    Shell(String),
    /// A program and its arguments, run directly (looked up in `PATH`).
    Argv(Vec<String>),
}

/// Parameters of [`Request::Exec`]. Processes the command leaves behind (background jobs,
/// daemons) are killed when it returns or times out, unless another exec still running
/// owns them (its process group, or below its first process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command.
    pub command: Command,
    /// Working directory; `/testbed` if it exists, else `/`.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Added to (and overriding) the agent's default environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bytes fed to stdin, which is then closed; `/dev/null` when absent.
    #[serde(default)]
    pub stdin: Option<Binary>,
    /// Wall-clock limit; then SIGTERM to the group, a grace period, SIGKILL.
    pub timeout_ms: u64,
    /// Output kept per stream (head and tail); at most [`crate::MAX_OUTPUT_BYTES`].
    pub max_output_bytes: u64,
    /// Send `output` frames as output arrives.
    #[serde(default)]
    pub stream: bool,
}

impl ExecRequest {
    /// `bash -c command` with the default timeout and output cap.
    pub fn shell(command: impl Into<String>) -> Self {
        Self::new(Command::Shell(command.into()))
    }

    /// A program and its arguments with the default timeout and output cap.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Command::Argv(argv.into_iter().map(Into::into).collect()))
    }

    fn new(command: Command) -> Self {
        ExecRequest {
            command,
            cwd: None,
            env: BTreeMap::new(),
            stdin: None,
            timeout_ms: DEFAULT_EXEC_TIMEOUT_MS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            stream: false,
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Feeds these bytes to stdin.
    pub fn stdin(mut self, bytes: impl Into<Binary>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Sets the timeout in milliseconds.
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Sets the output kept per stream.
    pub fn max_output_bytes(mut self, bytes: u64) -> Self {
        self.max_output_bytes = bytes;
        self
    }
}

/// Parameters of [`Request::ReadFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileRequest {
    /// The file.
    pub path: String,
    /// Bytes returned at most; [`crate::MAX_FILE_BYTES`] when absent or larger.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Where to start reading, in bytes from the start of the file. Left out of the
    /// frame when 0, so a plain read still reaches an agent that predates it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Parameters of [`Request::WriteFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileRequest {
    /// The file; replaced if it exists (through a symlink, the target is replaced).
    pub path: String,
    /// The new content.
    pub content: Binary,
    /// Permission bits; the existing file's, or 0o644 for a new file, when absent.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Create missing parent directories (mode 0o755).
    #[serde(default)]
    pub create_parents: bool,
}

/// Parameters of [`Request::StrReplace`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrReplaceRequest {
    /// The file.
    pub path: String,
    /// Must occur exactly once, verbatim.
    pub old: String,
    /// Its replacement.
    pub new: String,
}

/// Parameters of [`Request::EditLines`]: lines `start_line..=end_line` (1-based) are
/// replaced by `new_text`; `end_line = start_line - 1` inserts before `start_line`
/// (`start_line` = line count + 1 appends). Semantics in [`crate::line_edit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditLinesRequest {
    /// The file.
    pub path: String,
    /// First line replaced, from 1.
    pub start_line: u64,
    /// Last line replaced (inclusive); `start_line - 1` for an insertion.
    pub end_line: u64,
    /// The new lines; a final newline is added when missing (unless the range ends a
    /// file that has none).
    pub new_text: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exec_wire_shape() {
        let req = Request::Exec(ExecRequest::shell("echo hi").stdin("x"));
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["type"], "exec");
        assert_eq!(json["command"]["shell"], "echo hi");
        assert_eq!(json["stdin"], "eA==");
        let back: Request = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        let err =
            serde_json::from_str::<Request>(r#"{"type":"list_dir","path":"/","recursive":true}"#)
                .unwrap_err();
        assert!(err.to_string().contains("recursive"), "{err}");
        let err = serde_json::from_str::<Request>(r#"{"type":"reboot"}"#).unwrap_err();
        assert!(err.to_string().contains("reboot"), "{err}");
    }

    #[test]
    fn a_read_from_the_start_leaves_the_offset_out() {
        let plain = Request::ReadFile(ReadFileRequest {
            path: "/f".into(),
            max_bytes: None,
            offset: 0,
        });
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("offset").is_none(), "{json}");
        let ranged: Request =
            serde_json::from_str(r#"{"type":"read_file","path":"/f","offset":7}"#).unwrap();
        let Request::ReadFile(read) = ranged else {
            panic!("not read_file")
        };
        assert_eq!(read.offset, 7);
    }

    #[test]
    fn optional_fields_default() {
        let req: Request = serde_json::from_str(
            r#"{"type":"exec","command":{"argv":["true"]},"timeout_ms":5,"max_output_bytes":10}"#,
        )
        .unwrap();
        let Request::Exec(exec) = req else {
            panic!("not exec")
        };
        assert_eq!(exec.cwd, None);
        assert!(exec.env.is_empty());
        assert!(!exec.stream);
    }
}
