//! Messages the agent sends back.

use serde::{Deserialize, Serialize};

use crate::agent_error::AgentError;
use crate::binary::Binary;

/// Every frame the agent sends, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answer to the client's hello. Sent even when the versions differ, so the client
    /// can name both; an `error` with code `version_mismatch` then follows.
    Hello {
        /// The version the agent speaks.
        protocol_version: u32,
        /// The agent's crate version, for diagnostics.
        agent_version: String,
    },
    /// The command was spawned.
    ExecStarted {
        /// Names this exec in [`crate::Request::Kill`]; unique for the agent's lifetime.
        exec_id: u64,
        /// Pid of the command, which is also its process group id.
        pid: u32,
    },
    /// A chunk of output, only when the exec asked to stream.
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The bytes, as read.
        data: Binary,
    },
    /// The command finished (or was killed); always the last frame of an exec.
    ExecDone(ExecDone),
    /// Content of a file.
    File(FileContent),
    /// A file was written.
    Written {
        /// Bytes written.
        size: u64,
    },
    /// A `str_replace` succeeded.
    Replaced(Replaced),
    /// A directory listing.
    Dir(DirListing),
    /// Metadata of one path.
    Metadata(Metadata),
    /// Answer to ping.
    Pong {
        /// Time since the agent started.
        uptime_ms: u64,
    },
    /// The signal was sent to the exec's process group.
    Killed {
        /// The exec signalled.
        exec_id: u64,
    },
    /// The agent reached the port of `connect_port`: raw bytes follow, both ways.
    PortConnected {
        /// The port connected to.
        port: u16,
    },
    /// The request failed; ends the exchange.
    Error(AgentError),
}

impl Response {
    /// The wire name of the variant, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "hello",
            Response::ExecStarted { .. } => "exec_started",
            Response::Output { .. } => "output",
            Response::ExecDone(_) => "exec_done",
            Response::File(_) => "file",
            Response::Written { .. } => "written",
            Response::Replaced(_) => "replaced",
            Response::Dir(_) => "dir",
            Response::Metadata(_) => "metadata",
            Response::Pong { .. } => "pong",
            Response::Killed { .. } => "killed",
            Response::PortConnected { .. } => "port_connected",
            Response::Error(_) => "error",
        }
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Result of an exec.
///
/// Output kept per stream is capped at the request's `max_output_bytes`: when a stream
/// is longer, the agent keeps its first `max_output_bytes / 2` bytes and its last
/// `max_output_bytes - max_output_bytes / 2` bytes (the start shows what ran, the end
/// shows how it ended), concatenated, and counts the bytes in between in
/// `*_truncated_bytes`. Use [`ExecDone::stdout_marked`] to render the gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecDone {
    /// The exit code; `128 + signal` when killed by a signal; 124 when timed out.
    pub exit_code: i32,
    /// The signal that ended the command, if any.
    pub signal: Option<i32>,
    /// The timeout expired and the group was killed.
    pub timed_out: bool,
    /// Wall-clock time from spawn to exit.
    pub duration_ms: u64,
    /// Kept standard output (head + tail).
    pub stdout: Binary,
    /// Kept standard error (head + tail).
    pub stderr: Binary,
    /// Standard output bytes dropped between head and tail.
    pub stdout_truncated_bytes: u64,
    /// Standard error bytes dropped between head and tail.
    pub stderr_truncated_bytes: u64,
}

impl ExecDone {
    /// Stdout as text with a `[… N bytes truncated …]` line where bytes were dropped.
    /// `max_output_bytes` must be the value of the request.
    pub fn stdout_marked(&self, max_output_bytes: u64) -> String {
        mark_gap(&self.stdout, self.stdout_truncated_bytes, max_output_bytes)
    }

    /// Stderr as text, like [`ExecDone::stdout_marked`].
    pub fn stderr_marked(&self, max_output_bytes: u64) -> String {
        mark_gap(&self.stderr, self.stderr_truncated_bytes, max_output_bytes)
    }
}

fn mark_gap(kept: &Binary, dropped: u64, max_output_bytes: u64) -> String {
    if dropped == 0 {
        return kept.to_string_lossy();
    }
    let head_len = usize::try_from(max_output_bytes / 2)
        .unwrap_or(usize::MAX)
        .min(kept.len());
    let (head, tail) = kept.as_bytes().split_at(head_len);
    format!(
        "{}\n[… {dropped} bytes truncated …]\n{}",
        String::from_utf8_lossy(head),
        String::from_utf8_lossy(tail)
    )
}

/// Content of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    /// The first `min(size, max_bytes)` bytes.
    pub content: Binary,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Full size of the file.
    pub size: u64,
    /// `content` is shorter than the file.
    pub truncated: bool,
}

/// Result of a successful `str_replace`, enough to render SWE-agent's
/// "Here's the result of running `cat -n` on a snippet" message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    /// New size of the file.
    pub size: u64,
    /// 1-based line where the replaced text started.
    pub line: u64,
    /// A few lines around the replacement, from the new content.
    pub snippet: String,
    /// 1-based line number of the snippet's first line.
    pub snippet_start_line: u64,
}

/// What kind of file a path is (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// File name (lossy UTF-8).
    pub name: String,
    /// Kind, without following symlinks.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, milliseconds since the Unix epoch (0 from agents that
    /// predate it).
    #[serde(default)]
    pub modified_ms: i64,
}

/// A directory listing, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    /// The entries (at most [`crate::MAX_DIR_ENTRIES`]).
    pub entries: Vec<DirEntry>,
    /// The directory had more entries than returned.
    pub truncated: bool,
}

/// Metadata of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Kind, without following symlinks.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn marks_the_gap_between_head_and_tail() {
        let done = ExecDone {
            exit_code: 0,
            signal: None,
            timed_out: false,
            duration_ms: 1,
            stdout: Binary::from("headtail"),
            stderr: Binary::default(),
            stdout_truncated_bytes: 42,
            stderr_truncated_bytes: 0,
        };
        assert_eq!(
            done.stdout_marked(8),
            "head\n[… 42 bytes truncated …]\ntail"
        );
        assert_eq!(done.stderr_marked(8), "");
    }

    #[test]
    fn response_wire_shape() {
        let json = serde_json::to_value(Response::Output {
            stream: OutputStream::Stderr,
            data: Binary::from("x"),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"output","stream":"stderr","data":"eA=="})
        );
    }
}
