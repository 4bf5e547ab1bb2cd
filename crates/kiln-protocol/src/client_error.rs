//! What can go wrong talking to the agent, from the client's side.

use std::io;
use std::time::Duration;

use crate::agent_error::{AgentError, VersionMismatch};
use crate::frame::FrameError;

/// A failed exchange with the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be connected (not started, or gone).
    #[error("cannot connect to the agent at {target}: {source}")]
    Connect {
        /// Where: the socket path or the address.
        target: String,
        /// The OS error.
        source: io::Error,
    },
    /// Framing or transport failure.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The handshake found different protocol versions.
    #[error(transparent)]
    VersionMismatch(#[from] VersionMismatch),
    /// The agent answered with an error.
    #[error("agent error: {0}")]
    Agent(#[from] AgentError),
    /// The agent sent a message that does not fit the exchange.
    #[error("unexpected message from the agent: expected {expected}, got {got}")]
    Unexpected {
        /// What the client was waiting for.
        expected: &'static str,
        /// The `type` of what arrived.
        got: &'static str,
    },
    /// The agent closed the connection before answering.
    #[error("the agent closed the connection while the client expected {expected}")]
    Closed {
        /// What the client was waiting for.
        expected: &'static str,
    },
    /// No answer within the client's deadline.
    #[error("no answer from the agent within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The agent's error, if that is what this is.
    pub fn agent_error(&self) -> Option<&AgentError> {
        match self {
            ClientError::Agent(err) => Some(err),
            _ => None,
        }
    }
}
