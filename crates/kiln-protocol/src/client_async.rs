//! Async twin of [`crate::AgentClient`], over tokio. Same one-connection-per-request
//! design and the same exchange rules (see `exchange.rs`).
//!
//! The client is written once; how a connection is made is a [`Connect`]or each sandbox
//! backend supplies: a unix socket for the local backend ([`UnixConnector`]), TCP for an
//! agent in a container or a Pod ([`TcpConnector`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::client::{exec_deadline, DEFAULT_REQUEST_TIMEOUT};
use crate::client_error::ClientError;
use crate::exchange::{
    accept_hello, exec_step, expect_one, hello, ExecEvent, ExecStep, CLIENT_VERSION,
};
use crate::frame_async::{read_frame_async, write_frame_async};
use crate::request::{
    EditLinesRequest, ExecRequest, ReadFileRequest, Request, StrReplaceRequest, WriteFileRequest,
};
use crate::response::{DirListing, ExecDone, FileContent, Metadata, Replaced, Response};

/// A byte stream to an agent: whatever a [`Connect`]or opens.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Opens a fresh connection to one agent (the client makes one per request).
#[async_trait]
pub trait Connect: Send + Sync + fmt::Debug {
    /// A new connection, not yet handshaken.
    async fn connect(&self) -> io::Result<Box<dyn AsyncStream>>;

    /// Where it connects, for error messages (a socket path, an address).
    fn target(&self) -> String;

    /// The secret the agent behind it requires in the hello (an agent on TCP); `None`
    /// (the default) for one the file system guards (a unix socket).
    fn secret(&self) -> Option<&str> {
        None
    }
}

/// Connects to an agent's unix socket (the local backend).
#[derive(Debug, Clone)]
pub struct UnixConnector {
    /// The socket path.
    pub path: PathBuf,
}

#[async_trait]
impl Connect for UnixConnector {
    async fn connect(&self) -> io::Result<Box<dyn AsyncStream>> {
        Ok(Box::new(UnixStream::connect(&self.path).await?))
    }

    fn target(&self) -> String {
        self.path.display().to_string()
    }
}

/// Connects to an agent listening on TCP (an agent in a container or a Pod), which
/// answers only a hello carrying its per-sandbox secret.
#[derive(Clone)]
pub struct TcpConnector {
    /// The agent's address.
    pub addr: SocketAddr,
    /// The agent's secret (`kiln-agent --listen-tcp`, `KILN_AGENT_SECRET`).
    pub secret: Option<String>,
}

impl fmt::Debug for TcpConnector {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConnector")
            .field("addr", &self.addr)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[async_trait]
impl Connect for TcpConnector {
    async fn connect(&self) -> io::Result<Box<dyn AsyncStream>> {
        let stream = TcpStream::connect(self.addr).await?;
        // Requests are single small frames, answered at once: no Nagle delay.
        stream.set_nodelay(true)?;
        Ok(Box::new(stream))
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }

    fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }
}

/// Talks to one agent, asynchronously, over connections its [`Connect`]or opens.
#[derive(Debug, Clone)]
pub struct AsyncAgentClient {
    connector: Arc<dyn Connect>,
    request_timeout: Duration,
}

impl AsyncAgentClient {
    /// A client for the agent `connector` reaches. Nothing is connected yet.
    pub fn new(connector: impl Connect + 'static) -> Self {
        AsyncAgentClient {
            connector: Arc::new(connector),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// A client for the agent listening on the unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(UnixConnector { path: path.into() })
    }

    /// A client for the agent listening on TCP at `addr`, which requires `secret`.
    pub fn tcp(addr: SocketAddr, secret: Option<String>) -> Self {
        Self::new(TcpConnector { addr, secret })
    }

    /// Sets the deadline for non-exec requests (execs wait for their own timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Where the client connects (a socket path, an address).
    pub fn target(&self) -> String {
        self.connector.target()
    }

    /// Connects and completes the handshake.
    pub async fn connect(&self) -> Result<AsyncAgentConnection<Box<dyn AsyncStream>>, ClientError> {
        let stream = self
            .connector
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                target: self.connector.target(),
                source,
            })?;
        AsyncAgentConnection::handshake_with(stream, CLIENT_VERSION, self.connector.secret()).await
    }

    /// Liveness check; returns the agent's uptime.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let resp = self.call(Request::Ping).await?;
        expect_one("pong", resp, |r| match r {
            Response::Pong { uptime_ms } => Ok(Duration::from_millis(uptime_ms)),
            other => Err(other),
        })
    }

    /// Runs a command and collects its (capped) output.
    pub async fn exec(&self, mut request: ExecRequest) -> Result<ExecDone, ClientError> {
        request.stream = false;
        self.exec_inner(request, |_| {}).await
    }

    /// Runs a command, calling `on_event` with its start and each output chunk as they
    /// arrive; returns the final result, which still carries the capped output.
    pub async fn exec_streaming(
        &self,
        mut request: ExecRequest,
        on_event: impl FnMut(ExecEvent) + Send,
    ) -> Result<ExecDone, ClientError> {
        request.stream = true;
        self.exec_inner(request, on_event).await
    }

    async fn exec_inner(
        &self,
        request: ExecRequest,
        on_event: impl FnMut(ExecEvent) + Send,
    ) -> Result<ExecDone, ClientError> {
        let deadline = exec_deadline(&request);
        with_deadline(deadline, async {
            self.connect().await?.exec(request, on_event).await
        })
        .await
    }

    /// Reads at most `max_bytes` (capped by [`crate::MAX_FILE_BYTES`]) of a file.
    pub async fn read_file(
        &self,
        path: impl Into<String>,
        max_bytes: Option<u64>,
    ) -> Result<FileContent, ClientError> {
        self.read_file_at(path, 0, max_bytes).await
    }

    /// Reads at most `max_bytes` (capped by [`crate::MAX_FILE_BYTES`]) of a file,
    /// starting `offset` bytes in.
    pub async fn read_file_at(
        &self,
        path: impl Into<String>,
        offset: u64,
        max_bytes: Option<u64>,
    ) -> Result<FileContent, ClientError> {
        let resp = self
            .call(Request::ReadFile(ReadFileRequest {
                path: path.into(),
                max_bytes,
                offset,
            }))
            .await?;
        expect_one("file", resp, |r| match r {
            Response::File(file) => Ok(file),
            other => Err(other),
        })
    }

    /// Replaces a file atomically; returns the bytes written.
    pub async fn write_file(&self, request: WriteFileRequest) -> Result<u64, ClientError> {
        let resp = self.call(Request::WriteFile(request)).await?;
        expect_one("written", resp, |r| match r {
            Response::Written { size } => Ok(size),
            other => Err(other),
        })
    }

    /// Replaces the single occurrence of `old` with `new` in the file at `path`.
    pub async fn str_replace(
        &self,
        path: impl Into<String>,
        old: impl Into<String>,
        new: impl Into<String>,
    ) -> Result<Replaced, ClientError> {
        let resp = self
            .call(Request::StrReplace(StrReplaceRequest {
                path: path.into(),
                old: old.into(),
                new: new.into(),
            }))
            .await?;
        expect_one("replaced", resp, |r| match r {
            Response::Replaced(replaced) => Ok(replaced),
            other => Err(other),
        })
    }

    /// Replaces (or inserts) whole lines of a file, atomically.
    pub async fn edit_lines(&self, request: EditLinesRequest) -> Result<Replaced, ClientError> {
        let resp = self.call(Request::EditLines(request)).await?;
        expect_one("replaced", resp, |r| match r {
            Response::Replaced(replaced) => Ok(replaced),
            other => Err(other),
        })
    }

    /// Lists a directory.
    pub async fn list_dir(&self, path: impl Into<String>) -> Result<DirListing, ClientError> {
        let resp = self.call(Request::ListDir { path: path.into() }).await?;
        expect_one("dir", resp, |r| match r {
            Response::Dir(listing) => Ok(listing),
            other => Err(other),
        })
    }

    /// Metadata of a path.
    pub async fn stat(&self, path: impl Into<String>) -> Result<Metadata, ClientError> {
        let resp = self.call(Request::Stat { path: path.into() }).await?;
        expect_one("metadata", resp, |r| match r {
            Response::Metadata(meta) => Ok(meta),
            other => Err(other),
        })
    }

    /// Sends `signal` (SIGKILL when `None`) to a running exec's process group.
    pub async fn kill(&self, exec_id: u64, signal: Option<i32>) -> Result<(), ClientError> {
        let resp = self.call(Request::Kill { exec_id, signal }).await?;
        expect_one("killed", resp, |r| match r {
            Response::Killed { .. } => Ok(()),
            other => Err(other),
        })
    }

    /// Connects to `port` on the loopback interface inside the sandbox and returns the
    /// connection as a raw byte stream to it. Nothing listening there is the agent's
    /// [`crate::ErrorCode::ConnectionRefused`]. Only the set-up has a deadline: the stream
    /// lives as long as both ends keep it.
    pub async fn connect_port(&self, port: u16) -> Result<Box<dyn AsyncStream>, ClientError> {
        with_deadline(self.request_timeout, async {
            let mut conn = self.connect().await?;
            conn.send(&Request::ConnectPort { port }).await?;
            let resp = conn.recv().await?;
            expect_one("port_connected", resp, |r| match r {
                Response::PortConnected { .. } => Ok(()),
                other => Err(other),
            })?;
            Ok(conn.into_stream())
        })
        .await
    }

    async fn call(&self, request: Request) -> Result<Option<Response>, ClientError> {
        with_deadline(self.request_timeout, async {
            let mut conn = self.connect().await?;
            conn.send(&request).await?;
            conn.recv().await
        })
        .await
    }
}

async fn with_deadline<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| ClientError::Timeout(deadline))?
}

/// One handshaken connection over any async byte stream.
#[derive(Debug)]
pub struct AsyncAgentConnection<S> {
    stream: S,
    agent_version: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncAgentConnection<S> {
    /// Sends our hello and checks the agent's.
    pub async fn handshake(stream: S) -> Result<Self, ClientError> {
        Self::handshake_as(stream, CLIENT_VERSION).await
    }

    /// Handshake claiming another protocol version (for tests of version checks).
    #[doc(hidden)]
    pub async fn handshake_as(stream: S, version: u32) -> Result<Self, ClientError> {
        Self::handshake_with(stream, version, None).await
    }

    /// Sends our hello (with the secret an agent on TCP requires) and checks the agent's.
    pub async fn handshake_with(
        stream: S,
        version: u32,
        secret: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut conn = AsyncAgentConnection {
            stream,
            agent_version: String::new(),
        };
        conn.send(&hello(version, secret)).await?;
        let got = conn.recv().await?;
        conn.agent_version = accept_hello(version, got)?;
        Ok(conn)
    }

    /// The agent's crate version from its hello.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// The byte stream underneath, for an exchange that leaves framing (`connect_port`).
    /// Frames are read exactly, so nothing the agent sent after the last frame is lost.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Sends one request frame.
    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        Ok(write_frame_async(&mut self.stream, request).await?)
    }

    /// Receives one response frame; `None` when the agent closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Response>, ClientError> {
        Ok(read_frame_async(&mut self.stream).await?)
    }

    /// Runs an exec on this connection (consumes it: one request per connection).
    pub async fn exec(
        mut self,
        request: ExecRequest,
        mut on_event: impl FnMut(ExecEvent),
    ) -> Result<ExecDone, ClientError> {
        self.send(&Request::Exec(request)).await?;
        let mut started = false;
        loop {
            let got = self.recv().await?;
            match exec_step(started, got)? {
                ExecStep::Event(event) => {
                    started = true;
                    on_event(event);
                }
                ExecStep::Done(done) => return Ok(done),
            }
        }
    }
}
