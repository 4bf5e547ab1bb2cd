//! Sessions whose sandbox died under them (its agent killed from the host, out of memory,
//! crashed): the runtime says so, and the session is terminated at once with
//! [`SANDBOX_LOST`], billed up to that moment, its queued work failed. It is never left
//! `ready` with nothing behind it.
use std::sync::Arc;

use kiln_runtime::{SandboxExit, SandboxId};
use kiln_store::{SessionRecord, SessionStatus};

use super::SessionService;
use crate::error::ServiceError;

/// The error code of a session whose sandbox stopped on its own, and of the 409 that
/// every later call on it answers.
pub const SANDBOX_LOST: &str = "sandbox_lost";

/// Why a session can no longer run anything, as its worker and callers learn it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// The sandbox died (rather than the session being closed, expired or stopped).
    pub lost: bool,
    pub message: String,
}

impl Ended {
    pub fn closed(message: impl Into<String>) -> Self {
        Ended {
            lost: false,
            message: message.into(),
        }
    }

    pub fn lost(reason: &str) -> Self {
        Ended {
            lost: true,
            message: lost_message(reason),
        }
    }

    /// The error a caller whose work could not run gets.
    pub fn error(&self, session_id: &str) -> ServiceError {
        if self.lost {
            ServiceError::SandboxLost(format!("session {session_id}: {}", self.message))
        } else {
            ServiceError::Conflict(format!(
                "session {session_id} ended before this could run: {}",
                self.message
            ))
        }
    }
}

fn lost_message(reason: &str) -> String {
    format!(
        "the session's sandbox stopped unexpectedly ({reason}); the session was terminated and \
         its files are gone: start a new session"
    )
}

/// The error for a call on a session that is no longer live; `what` says what needed it.
pub(crate) fn not_live(session: &SessionRecord, what: &str) -> ServiceError {
    let id = &session.session_id;
    if session.error_code.as_deref() == Some(SANDBOX_LOST) {
        let message = session
            .error_message
            .as_deref()
            .unwrap_or("its sandbox died");
        ServiceError::SandboxLost(format!("session {id} was terminated: {message}"))
    } else {
        ServiceError::Conflict(format!(
            "session {id} is {}; {what}",
            session.status.as_str()
        ))
    }
}

impl SessionService {
    /// Reacts when the session's sandbox stops on its own. A sandbox destroyed on purpose
    /// (close, expiry, shutdown) ends quietly: its session was ended first.
    pub(super) fn watch_sandbox(self: &Arc<Self>, session_id: &str, sandbox: SandboxId) {
        let Ok((runtime, ..)) = self.runtime() else {
            return;
        };
        let runtime = Arc::clone(runtime);
        let weak = Arc::downgrade(self);
        let session_id = session_id.to_string();
        tokio::spawn(async move {
            match runtime.wait_exit(&sandbox).await {
                Ok(SandboxExit::Died { reason }) => {
                    if let Some(this) = weak.upgrade() {
                        this.sandbox_lost(&session_id, &reason).await;
                    }
                }
                Ok(SandboxExit::Destroyed) => {}
                Err(e) => tracing::debug!(session = %session_id, error = %e, "sandbox not watched"),
            }
        });
    }

    /// Terminates the session because its sandbox died; a no-op if it already ended. The
    /// end goes through the usual path, so it is billed (to now) exactly once.
    pub(super) async fn sandbox_lost(&self, session_id: &str, reason: &str) {
        let message = lost_message(reason);
        let reason_pair = Some((SANDBOX_LOST, message));
        match self
            .end(session_id, SessionStatus::Terminated, reason_pair)
            .await
        {
            Ok(Some(_)) => {
                tracing::warn!(
                    session = session_id,
                    reason,
                    "sandbox lost: session terminated"
                )
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(session = session_id, error = %e, "cannot end a session whose sandbox died")
            }
        }
    }
}
