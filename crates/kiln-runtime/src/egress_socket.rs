//! A sandbox's egress socket, for the backends whose sandboxes share a directory with the
//! server (local, and Docker over a socket): the server binds [`SOCKET_NAME`] in the
//! sandbox's run directory (seen inside at [`SOCKET_PATH`], where the agent relays
//! [`EGRESS_PROXY_ADDR`](crate::EGRESS_PROXY_ADDR) to it); each connection goes to the
//! caller's [`EgressHandler`](crate::EgressHandler). The accept loop ends with the sandbox
//! (its [`EgressSlot`] is stopped on destroy, or dropped with a failed start), and a
//! sandbox adopted after a restart gets a new one from `Runtime::attach_egress`: its
//! agent still relays to the same path.
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::error::{Result, RuntimeError};
use crate::spec::Egress;

/// The socket's name in the sandbox's run directory.
pub const SOCKET_NAME: &str = "egress.sock";
/// The socket inside the sandbox.
pub const SOCKET_PATH: &str = "/.kiln/run/egress.sock";

/// The agent's arguments that relay the proxy address to the socket.
pub fn agent_args() -> [String; 2] {
    [
        "--egress".to_string(),
        format!("{}={SOCKET_PATH}", crate::EGRESS_PROXY_ADDR),
    ]
}

/// The accept loop of one sandbox's egress socket; aborted when dropped.
#[derive(Debug)]
pub struct EgressTask(AbortHandle);

impl Drop for EgressTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A sandbox's egress loop, if it has one: set at start, replaced on adoption.
#[derive(Debug, Default)]
pub struct EgressSlot(Mutex<Option<EgressTask>>);

impl EgressSlot {
    pub fn new(task: Option<EgressTask>) -> Self {
        EgressSlot(Mutex::new(task))
    }

    /// Serves the socket in `run_dir` with `egress` from now on, in place of any loop
    /// before (a stale socket file of an earlier server is replaced).
    pub fn attach(&self, run_dir: &Path, egress: Egress) -> Result<()> {
        let path = run_dir.join(SOCKET_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io("cannot replace", &path, e)),
        }
        let task = listen(&path, egress)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    pub fn stop(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
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
