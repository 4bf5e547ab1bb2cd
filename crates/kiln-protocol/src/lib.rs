//! The wire protocol between the Kiln server and `kiln-agent`, the PID 1 of every
//! sandbox, and the clients that speak it.
//!
//! A connection carries exactly one exchange:
//!
//! 1. client → [`Request::Hello`] `{protocol_version}`; agent → [`Response::Hello`]
//!    `{protocol_version, agent_version}` (then an `error` and close on mismatch);
//! 2. client → one request; agent → its answer: one frame, or for exec
//!    `exec_started`, `output`* (when streaming), `exec_done`; or an `error`. After
//!    `port_connected` (the answer to `connect_port`) there are no more frames: the
//!    connection carries the raw bytes of a TCP connection to the sandbox's loopback.
//!
//! Frames are a `u32` big-endian length and a JSON body ([`frame`]); binary payloads are
//! base64 strings ([`Binary`]). Blocking use: [`AgentClient`]; async (feature `tokio`):
//! `AsyncAgentClient`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent_error;
mod binary;
mod client;
#[cfg(feature = "tokio")]
mod client_async;
mod client_error;
mod egress_preamble;
mod exchange;
pub mod frame;
#[cfg(feature = "tokio")]
pub mod frame_async;
mod limits;
pub mod line_edit;
mod request;
mod response;
pub mod str_replace;

pub use agent_error::{check_versions, AgentError, ErrorCode, VersionMismatch};
pub use binary::Binary;
pub use client::{AgentClient, AgentConnection, DEFAULT_REQUEST_TIMEOUT};
#[cfg(feature = "tokio")]
pub use client_async::{
    AsyncAgentClient, AsyncAgentConnection, AsyncStream, Connect, TcpConnector, UnixConnector,
};
pub use client_error::ClientError;
pub use egress_preamble::{
    egress_preamble, parse_egress_preamble, EGRESS_PREAMBLE_TAG, MAX_EGRESS_PREAMBLE,
};
pub use exchange::ExecEvent;
pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME_BYTES};
pub use limits::{
    DEFAULT_EXEC_TIMEOUT_MS, DEFAULT_MAX_OUTPUT_BYTES, EXEC_KILL_GRACE_MS, MAX_DIR_ENTRIES,
    MAX_EXEC_TIMEOUT_MS, MAX_FILE_BYTES, MAX_OUTPUT_BYTES,
};
pub use request::{
    Command, EditLinesRequest, ExecRequest, ReadFileRequest, Request, StrReplaceRequest,
    WriteFileRequest,
};
pub use response::{
    DirEntry, DirListing, ExecDone, FileContent, FileKind, Metadata, OutputStream, Replaced,
    Response,
};

/// The protocol version this crate speaks. Bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
