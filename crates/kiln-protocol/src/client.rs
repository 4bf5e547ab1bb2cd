//! Blocking client: one connection per request.
//!
//! Why not multiplex: a request costs one `connect` + one hello round trip on a local
//! unix socket plus an agent thread spawn (tens of microseconds; see the latency test in
//! `kiln-agent`), which is noise next to spawning `bash` (about a millisecond). In
//! exchange there is no demultiplexing state, no head-of-line blocking behind a 1 GiB
//! stream, a broken connection loses exactly one request, and `kill` simply uses a
//! second connection while the exec's connection waits.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client_error::ClientError;
use crate::exchange::{
    accept_hello, exec_step, expect_one, hello, ExecEvent, ExecStep, CLIENT_VERSION,
};
use crate::frame::{read_frame, write_frame, FrameError};
use crate::limits::EXEC_KILL_GRACE_MS;
use crate::request::{ExecRequest, ReadFileRequest, Request, StrReplaceRequest, WriteFileRequest};
use crate::response::{DirListing, ExecDone, FileContent, Metadata, Replaced, Response};

/// Deadline for requests other than exec.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time the client waits beyond an exec's own timeout and kill grace.
pub(crate) const EXEC_DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// How long the client waits for an exec to finish on the agent's side.
pub(crate) fn exec_deadline(request: &ExecRequest) -> Duration {
    Duration::from_millis(request.timeout_ms.saturating_add(EXEC_KILL_GRACE_MS))
        + EXEC_DEADLINE_SLACK
}

/// Talks to one agent over its unix socket.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    request_timeout: Duration,
}

impl AgentClient {
    /// A client for the agent listening on `socket`. Nothing is connected yet.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        AgentClient {
            socket: socket.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the deadline for non-exec requests (execs wait for their own timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connects and completes the handshake.
    pub fn connect(&self, timeout: Duration) -> Result<AgentConnection<UnixStream>, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            target: self.socket.display().to_string(),
            source,
        })?;
        let io = |source| ClientError::Frame(FrameError::Io(source));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        AgentConnection::handshake_with_timeout(stream, timeout)
    }

    /// Liveness check; returns the agent's uptime.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        let resp = self.call(&Request::Ping)?;
        expect_one("pong", resp, |r| match r {
            Response::Pong { uptime_ms } => Ok(Duration::from_millis(uptime_ms)),
            other => Err(other),
        })
    }

    /// Runs a command and collects its (capped) output.
    pub fn exec(&self, mut request: ExecRequest) -> Result<ExecDone, ClientError> {
        request.stream = false;
        self.exec_inner(request, |_| {})
    }

    /// Runs a command, calling `on_event` with its start and each output chunk as they
    /// arrive; returns the final result, which still carries the capped output.
    pub fn exec_streaming(
        &self,
        mut request: ExecRequest,
        on_event: impl FnMut(ExecEvent),
    ) -> Result<ExecDone, ClientError> {
        request.stream = true;
        self.exec_inner(request, on_event)
    }

    fn exec_inner(
        &self,
        request: ExecRequest,
        on_event: impl FnMut(ExecEvent),
    ) -> Result<ExecDone, ClientError> {
        let deadline = exec_deadline(&request);
        self.connect(deadline)?.exec(request, on_event)
    }

    /// Reads at most `max_bytes` (capped by [`crate::MAX_FILE_BYTES`]) of a file.
    pub fn read_file(
        &self,
        path: impl Into<String>,
        max_bytes: Option<u64>,
    ) -> Result<FileContent, ClientError> {
        let resp = self.call(&Request::ReadFile(ReadFileRequest {
            path: path.into(),
            max_bytes,
            offset: 0,
        }))?;
        expect_one("file", resp, |r| match r {
            Response::File(file) => Ok(file),
            other => Err(other),
        })
    }

    /// Replaces a file atomically; returns the bytes written.
    pub fn write_file(&self, request: WriteFileRequest) -> Result<u64, ClientError> {
        let resp = self.call(&Request::WriteFile(request))?;
        expect_one("written", resp, |r| match r {
            Response::Written { size } => Ok(size),
            other => Err(other),
        })
    }

    /// Replaces the single occurrence of `old` with `new` in the file at `path`.
    pub fn str_replace(
        &self,
        path: impl Into<String>,
        old: impl Into<String>,
        new: impl Into<String>,
    ) -> Result<Replaced, ClientError> {
        let resp = self.call(&Request::StrReplace(StrReplaceRequest {
            path: path.into(),
            old: old.into(),
            new: new.into(),
        }))?;
        expect_one("replaced", resp, |r| match r {
            Response::Replaced(replaced) => Ok(replaced),
            other => Err(other),
        })
    }

    /// Lists a directory.
    pub fn list_dir(&self, path: impl Into<String>) -> Result<DirListing, ClientError> {
        let resp = self.call(&Request::ListDir { path: path.into() })?;
        expect_one("dir", resp, |r| match r {
            Response::Dir(listing) => Ok(listing),
            other => Err(other),
        })
    }

    /// Metadata of a path.
    pub fn stat(&self, path: impl Into<String>) -> Result<Metadata, ClientError> {
        let resp = self.call(&Request::Stat { path: path.into() })?;
        expect_one("metadata", resp, |r| match r {
            Response::Metadata(meta) => Ok(meta),
            other => Err(other),
        })
    }

    /// Sends `signal` (SIGKILL when `None`) to a running exec's process group.
    pub fn kill(&self, exec_id: u64, signal: Option<i32>) -> Result<(), ClientError> {
        let resp = self.call(&Request::Kill { exec_id, signal })?;
        expect_one("killed", resp, |r| match r {
            Response::Killed { .. } => Ok(()),
            other => Err(other),
        })
    }

    fn call(&self, request: &Request) -> Result<Option<Response>, ClientError> {
        let mut conn = self.connect(self.request_timeout)?;
        conn.send(request)?;
        conn.recv()
    }
}

/// One handshaken connection over any byte stream (a unix socket, or whatever transport
/// a runtime backend provides).
#[derive(Debug)]
pub struct AgentConnection<S> {
    stream: S,
    agent_version: String,
    timeout: Option<Duration>,
}

impl<S: Read + Write> AgentConnection<S> {
    /// Sends our hello and checks the agent's.
    pub fn handshake(stream: S) -> Result<Self, ClientError> {
        Self::handshake_as(stream, CLIENT_VERSION, None)
    }

    /// Like [`AgentConnection::handshake`]; `timeout` names the deadline in errors
    /// when the stream's own read timeout fires.
    pub fn handshake_with_timeout(stream: S, timeout: Duration) -> Result<Self, ClientError> {
        Self::handshake_as(stream, CLIENT_VERSION, Some(timeout))
    }

    /// Handshake claiming another protocol version (for tests of version checks).
    #[doc(hidden)]
    pub fn handshake_as(
        stream: S,
        version: u32,
        timeout: Option<Duration>,
    ) -> Result<Self, ClientError> {
        let mut conn = AgentConnection {
            stream,
            agent_version: String::new(),
            timeout,
        };
        conn.send(&hello(version, None))?;
        let got = conn.recv()?;
        conn.agent_version = accept_hello(version, got)?;
        Ok(conn)
    }

    /// The agent's crate version from its hello.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// Sends one request frame.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        write_frame(&mut self.stream, request).map_err(|err| self.classify(err))
    }

    /// Receives one response frame; `None` when the agent closed the connection.
    pub fn recv(&mut self) -> Result<Option<Response>, ClientError> {
        read_frame(&mut self.stream).map_err(|err| self.classify(err))
    }

    /// Runs an exec on this connection (consumes it: one request per connection).
    pub fn exec(
        mut self,
        request: ExecRequest,
        mut on_event: impl FnMut(ExecEvent),
    ) -> Result<ExecDone, ClientError> {
        self.send(&Request::Exec(request))?;
        let mut started = false;
        loop {
            let got = self.recv()?;
            match exec_step(started, got)? {
                ExecStep::Event(event) => {
                    started = true;
                    on_event(event);
                }
                ExecStep::Done(done) => return Ok(done),
            }
        }
    }

    fn classify(&self, err: FrameError) -> ClientError {
        match (&err, self.timeout) {
            (FrameError::Io(io), Some(timeout))
                if matches!(
                    io.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Timeout(timeout)
            }
            _ => ClientError::Frame(err),
        }
    }
}
