//! A sandbox's egress socket: bound by the server in the sandbox's run directory (seen
//! inside at [`EGRESS_SOCKET_PATH`](super::bwrap::EGRESS_SOCKET_PATH), where the agent
//! relays [`EGRESS_PROXY_ADDR`](crate::EGRESS_PROXY_ADDR) to it); each connection goes to
//! the caller's [`EgressHandler`](crate::EgressHandler). The accept loop ends with the
//! sandbox (its [`EgressTask`] is aborted on destroy, or dropped with a failed start).
use std::path::Path;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::error::{Result, RuntimeError};
use crate::spec::Egress;

/// The accept loop of one sandbox's egress socket; aborted when dropped.
#[derive(Debug)]
pub struct EgressTask(AbortHandle);

impl EgressTask {
    pub fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for EgressTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listens on `path` (in the run directory, before the sandbox starts) and hands every
/// connection to `egress`'s handler.
pub fn listen(path: &Path, egress: Egress) -> Result<EgressTask> {
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| RuntimeError::io("cannot listen on", path, e))?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(egress.0.serve(Box::new(stream)));
                }
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::warn!(error = %e, "egress accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(EgressTask(task.abort_handle()))
}
