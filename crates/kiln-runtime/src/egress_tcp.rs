//! A sandbox's egress over TCP, for backends whose sandboxes cannot share a socket with
//! the server (Kubernetes): one listener per runtime, reachable from the sandboxes; the
//! agent's relay (`--egress ADDR=tcp:HOST:PORT`) opens each connection with the line of
//! [`kiln_protocol::egress_preamble`], and only a line naming a registered sandbox with
//! its secret (compared in constant time) hands the rest of the stream to that sandbox's
//! [`EgressHandler`](crate::EgressHandler). Anything else is closed unanswered: the
//! listener is reachable by every Pod the cluster lets through, not only sandboxes.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::error::{Result, RuntimeError};
use crate::spec::{Egress, SandboxId};

/// How long a connection may take to send its preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections still owing their preamble at once; more are closed at once.
const MAX_PENDING: usize = 128;

/// Who may use the listener: the secret a sandbox's connections must show, and where
/// they go.
struct Route {
    secret: String,
    egress: Egress,
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

/// The listener and its sandboxes; the accept loop ends when it is dropped.
pub struct EgressListener {
    local: SocketAddr,
    routes: Routes,
    task: AbortHandle,
}

impl std::fmt::Debug for EgressListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for EgressListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressListener {
    /// Listens on `addr` and serves registered sandboxes from now on, on the tokio
    /// runtime of the caller (synchronous: `Runtime::attach_egress` is).
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let failed = |e: std::io::Error| {
            RuntimeError::HostNotReady(format!("cannot listen on {addr} for sandbox egress: {e}"))
        };
        let tokio = tokio::runtime::Handle::try_current()
            .map_err(|e| RuntimeError::HostNotReady(format!("egress listener: {e}")))?;
        let std_listener = std::net::TcpListener::bind(addr).map_err(failed)?;
        std_listener.set_nonblocking(true).map_err(failed)?;
        let local = std_listener.local_addr().map_err(failed)?;
        let listener = {
            let _entered = tokio.enter();
            TcpListener::from_std(std_listener).map_err(failed)?
        };
        let routes = Routes::default();
        let task = tokio.spawn(accept_loop(listener, Arc::clone(&routes)));
        Ok(EgressListener {
            local,
            routes,
            task: task.abort_handle(),
        })
    }

    /// The address bound (the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections proving `id` with `secret` go to `egress` from now on (in place of
    /// any handler before: adoption after a restart).
    pub fn register(&self, id: &SandboxId, secret: String, egress: Egress) {
        self.lock()
            .insert(id.as_str().to_string(), Route { secret, egress });
    }

    /// `id`'s connections are refused from now on.
    pub fn remove(&self, id: &SandboxId) {
        self.lock().remove(id.as_str());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, routes: Routes) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
                    continue;
                };
                let routes = Arc::clone(&routes);
                tokio::spawn(async move {
                    let found = tokio::time::timeout(PREAMBLE_TIMEOUT, route(stream, &routes))
                        .await
                        .ok()
                        .flatten();
                    drop(permit);
                    if let Some((stream, egress)) = found {
                        egress.0.serve(Box::new(stream)).await;
                    }
                });
            }
            Err(e) => {
                // EMFILE and the like: wait rather than spin.
                tracing::warn!(error = %e, "egress accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the preamble (byte by byte: what follows it is the handler's) and finds the
/// sandbox it proves; `None` closes the connection.
async fn route(mut stream: TcpStream, routes: &Routes) -> Option<(TcpStream, Egress)> {
    let mut line = Vec::with_capacity(128);
    loop {
        let byte = stream.read_u8().await.ok()?;
        if byte == b'\n' {
            break;
        }
        if line.len() + 1 >= kiln_protocol::MAX_EGRESS_PREAMBLE {
            return None;
        }
        line.push(byte);
    }
    let (id, secret) = kiln_protocol::parse_egress_preamble(&line)?;
    let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
    let route = routes.get(id)?;
    if !constant_time_eq(route.secret.as_bytes(), secret.as_bytes()) {
        tracing::warn!(
            sandbox = id,
            "egress connection with a wrong secret refused"
        );
        return None;
    }
    let egress = route.egress.clone();
    drop(routes);
    let _ = stream.set_nodelay(true);
    Some((stream, egress))
}

/// Equal without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abcdef", b"abcde"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
