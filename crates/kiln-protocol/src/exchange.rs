//! How responses are interpreted, shared by the sync and async clients so both follow
//! exactly the same exchange rules.

use crate::agent_error::check_versions;
use crate::binary::Binary;
use crate::client_error::ClientError;
use crate::response::{ExecDone, OutputStream, Response};
use crate::PROTOCOL_VERSION;

/// Something that happens while an exec runs, given to the caller's callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The command was spawned.
    Started {
        /// For [`crate::Request::Kill`].
        exec_id: u64,
        /// Pid (and process group id) of the command.
        pid: u32,
    },
    /// A chunk of output (streaming execs only).
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The bytes.
        data: Binary,
    },
}

/// The next step of an exec exchange.
pub(crate) enum ExecStep {
    Event(ExecEvent),
    Done(ExecDone),
}

/// Turns "no message" or a wrong message into the matching error.
pub(crate) fn unexpected(expected: &'static str, got: Option<Response>) -> ClientError {
    match got {
        None => ClientError::Closed { expected },
        Some(Response::Error(err)) => ClientError::Agent(err),
        Some(other) => ClientError::Unexpected {
            expected,
            got: other.name(),
        },
    }
}

/// Checks the agent's hello; returns the agent's version string.
pub(crate) fn accept_hello(
    client_version: u32,
    got: Option<Response>,
) -> Result<String, ClientError> {
    match got {
        Some(Response::Hello {
            protocol_version,
            agent_version,
        }) => {
            check_versions(client_version, protocol_version)?;
            Ok(agent_version)
        }
        other => Err(unexpected("hello", other)),
    }
}

/// The client's hello, with the agent's secret when it listens on TCP.
pub(crate) fn hello(client_version: u32, secret: Option<&str>) -> crate::Request {
    crate::Request::Hello {
        protocol_version: client_version,
        secret: secret.map(str::to_owned),
    }
}

/// Default version for clients; a separate item so tests can speak another.
pub(crate) const CLIENT_VERSION: u32 = PROTOCOL_VERSION;

/// Interprets one frame of an exec exchange.
pub(crate) fn exec_step(started: bool, got: Option<Response>) -> Result<ExecStep, ClientError> {
    match (started, got) {
        (false, Some(Response::ExecStarted { exec_id, pid })) => {
            Ok(ExecStep::Event(ExecEvent::Started { exec_id, pid }))
        }
        (false, other) => Err(unexpected("exec_started", other)),
        (true, Some(Response::Output { stream, data })) => {
            Ok(ExecStep::Event(ExecEvent::Output { stream, data }))
        }
        (true, Some(Response::ExecDone(done))) => Ok(ExecStep::Done(done)),
        (true, other) => Err(unexpected("output or exec_done", other)),
    }
}

/// Extracts the one response a simple request expects.
pub(crate) fn expect_one<T>(
    expected: &'static str,
    got: Option<Response>,
    pick: impl FnOnce(Response) -> Result<T, Response>,
) -> Result<T, ClientError> {
    match got {
        Some(Response::Error(err)) => Err(ClientError::Agent(err)),
        Some(resp) => pick(resp).map_err(|other| unexpected(expected, Some(other))),
        None => Err(ClientError::Closed { expected }),
    }
}
