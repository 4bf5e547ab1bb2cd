//! Port forwards: a way in to a TCP port inside an instance whose network stays isolated.
//! Every connection goes through the sandbox's agent (`Runtime::connect_port`), which only
//! ever connects to its own loopback. A `host_port` forward listens on the configured
//! address and pipes each connection it accepts; a `path` forward lets the owner reach the
//! port over HTTP under the API (the HTTP layer asks [`InstanceService::connect_path`]).
//!
//! Forwards are stored (open until closed once, with the reason) and kept in a registry
//! of what runs: a listener task, a watcher that closes the forward when the sandbox
//! stops, a semaphore bounding the connections. After a crash the sandboxes survive and
//! [`InstanceService::recover_port_forwards`] re-opens their forwards (on the same host
//! address); forwards of instances that did not survive are closed with the reason.
mod listener;
mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_config::PortsConfig;
use kiln_runtime::{PortStream, Runtime, RuntimeError, SandboxId};
use kiln_store::{NewPortForward, PortForwardMode, PortForwardRecord, SessionStatus, Store};
use tokio::net::TcpListener;

use super::InstanceService;
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;

use registry::OpenForward;
pub use registry::PortRegistry;

/// Why a forward closed, as stored and listed.
pub const CLOSED_BY_OWNER: &str = "closed by its owner";
pub const INSTANCE_ENDED: &str = "the instance ended";

impl InstanceService {
    /// Uses `config` for port forwards (the defaults until called).
    pub fn with_ports(mut self, config: PortsConfig) -> Self {
        self.ports = Arc::new(PortRegistry::new(config));
        self
    }

    /// Opens a forward to `port` inside `user_id`'s ready instance.
    pub async fn create_port_forward(
        &self,
        user_id: &str,
        instance_id: &str,
        port: u16,
        mode: PortForwardMode,
    ) -> ServiceResult<PortForwardRecord> {
        if port == 0 {
            return Err(ServiceError::invalid(
                &["port"],
                "Input should be greater than or equal to 1",
                "greater_than_equal",
            ));
        }
        let sandbox = self.sandbox(user_id, instance_id).await?;
        // One create at a time: the limits are checked and taken atomically.
        let _creating = self.ports.create_lock.lock().await;
        self.check_room(user_id, instance_id, port, mode).await?;
        let listener = match mode {
            PortForwardMode::HostPort => Some(bind_host_port(self.ports.config()).await?),
            PortForwardMode::Path => None,
        };
        let host_address = match &listener {
            Some(l) => Some(
                l.local_addr()
                    .map_err(|e| ServiceError::Internal(format!("listener address: {e}")))?
                    .to_string(),
            ),
            None => None,
        };
        let record = self
            .store
            .insert_port_forward(&NewPortForward {
                forward_id: new_id("pfw"),
                session_id: sandbox.session.session_id.clone(),
                user_id: user_id.to_string(),
                port,
                mode,
                host_address,
                created_at: Utc::now(),
            })
            .await?;
        self.start_forward(&record, sandbox.runtime, sandbox.id, listener);
        Ok(record)
    }

    /// Whether one more forward fits the instance's and the user's limits, and a `path`
    /// forward is the only one to its port.
    async fn check_room(
        &self,
        user_id: &str,
        instance_id: &str,
        port: u16,
        mode: PortForwardMode,
    ) -> ServiceResult<()> {
        let config = self.ports.config();
        let open = self
            .store
            .list_open_port_forwards(Some(instance_id))
            .await?;
        if open.len() >= config.max_per_instance {
            return Err(ServiceError::LimitExceeded(format!(
                "instance {instance_id} has {} port forwards open, the most allowed \
                 (ports.max_per_instance); close one first",
                open.len()
            )));
        }
        if let Some(same) = open.iter().find(|f| {
            f.mode == PortForwardMode::Path && mode == PortForwardMode::Path && f.port == port
        }) {
            return Err(ServiceError::Conflict(format!(
                "port {port} of instance {instance_id} is forwarded under a path already ({})",
                same.forward_id
            )));
        }
        let user_open = self.store.count_open_port_forwards(user_id).await?;
        if user_open >= config.max_per_user as u64 {
            return Err(ServiceError::LimitExceeded(format!(
                "you have {user_open} port forwards open, the most allowed (ports.max_per_user); \
                 close one first"
            )));
        }
        Ok(())
    }

    /// The open forwards of `user_id`'s instance (any status: an ended one has none).
    pub async fn list_port_forwards(
        &self,
        user_id: &str,
        instance_id: &str,
    ) -> ServiceResult<Vec<PortForwardRecord>> {
        self.owned_instance(user_id, instance_id).await?;
        Ok(self
            .store
            .list_open_port_forwards(Some(instance_id))
            .await?)
    }

    /// Closes an open forward: its listener stops, its connections end.
    pub async fn close_port_forward(
        &self,
        user_id: &str,
        instance_id: &str,
        forward_id: &str,
    ) -> ServiceResult<PortForwardRecord> {
        self.owned_instance(user_id, instance_id).await?;
        let not_found = || ServiceError::not_found(format!("port forward {forward_id}"));
        match self.store.get_port_forward(forward_id).await? {
            Some(f) if f.session_id == instance_id && f.closed_at.is_none() => {}
            _ => return Err(not_found()),
        }
        let closed = close_forward(
            self.store.as_ref(),
            &self.ports,
            forward_id,
            CLOSED_BY_OWNER,
        )
        .await?;
        closed.ok_or_else(not_found)
    }

    /// A connection to `port` inside `user_id`'s instance through its open `path` forward,
    /// for the HTTP path proxy. No such forward is "not found"; nothing listening inside
    /// (or no answer in `ports.connect_timeout_secs`) is a bad gateway.
    pub async fn connect_path(
        &self,
        user_id: &str,
        instance_id: &str,
        port: u16,
    ) -> ServiceResult<PortStream> {
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let forward = self.ports.find_path(instance_id, port).ok_or_else(|| {
            ServiceError::not_found(format!(
                "path forward to port {port} of instance {instance_id}"
            ))
        })?;
        let permit = forward
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ServiceError::LimitExceeded(format!(
                    "the forward to port {port} carries {} connections already \
                 (ports.max_connections_per_forward)",
                    self.ports.config().max_connections_per_forward
                ))
            })?;
        let timeout = self.ports.connect_timeout();
        let stream = connect_port(sandbox.runtime.as_ref(), &sandbox.id, port, timeout).await?;
        Ok(Box::new(listener::Permitted::new(stream, permit)))
    }

    /// Carries a connection a `path` forward upgraded (a WebSocket, say) once both ends
    /// have switched protocols: bytes both ways until either side ends, nothing moves for
    /// `ports.idle_timeout_secs`, or the forward closes. It keeps the connection's place
    /// under `ports.max_connections_per_forward` for as long as it lasts (the permit
    /// travels inside the stream `connect_path` answered).
    pub fn carry_upgraded<A, B>(
        &self,
        instance_id: &str,
        port: u16,
        outside: A,
        inside: B,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
        B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let forward = self.ports.find_path(instance_id, port);
        let idle = Duration::from_secs(self.ports.config().idle_timeout_secs);
        async move {
            // Closed between the answer and now: the connection ends with it.
            let Some(forward) = forward else { return };
            let mut stopped = forward.stopped();
            tokio::select! {
                _ = registry::until_stopped(&mut stopped) => {}
                result = listener::pipe(outside, inside, idle) => {
                    if let Err(e) = result {
                        tracing::debug!(forward = %forward.forward_id, error = %e, "upgraded connection ended");
                    }
                }
            }
        }
    }

    /// Start-up, after the sessions' recovery: re-opens the forwards of this node's
    /// instances whose sandbox survived (a crash), closes those of ended ones with the
    /// reason, and leaves another live node's alone.
    pub async fn recover_port_forwards(&self) -> ServiceResult<usize> {
        let open = self.store.list_open_port_forwards(None).await?;
        // Another live node's sessions keep their forwards: that node serves them.
        let others = self
            .sandboxes
            .others_live_sessions(self.store.as_ref())
            .await?;
        let mut reopened = 0;
        for forward in open {
            if others.contains(&forward.session_id) {
                continue;
            }
            match self.reopen(&forward).await {
                Ok(()) => reopened += 1,
                Err(reason) => {
                    tracing::info!(forward = %forward.forward_id, %reason, "port forward closed at start");
                    close_forward(
                        self.store.as_ref(),
                        &self.ports,
                        &forward.forward_id,
                        &reason,
                    )
                    .await?;
                }
            }
        }
        Ok(reopened)
    }

    /// Re-opens one recovered forward, or says why it cannot be.
    async fn reopen(&self, forward: &PortForwardRecord) -> Result<(), String> {
        let session = self
            .store
            .get_session(&forward.session_id)
            .await
            .map_err(|e| e.to_string())?;
        let sandbox_id = match session {
            Some(s) if s.status == SessionStatus::Ready => s.sandbox_id,
            _ => None,
        }
        .ok_or_else(|| INSTANCE_ENDED.to_string())?;
        let runtime = self
            .sandboxes
            .available()
            .map_err(|why| format!("no sandbox runtime after the restart: {why}"))?
            .runtime
            .clone();
        let id = SandboxId::new(sandbox_id).map_err(|e| e.to_string())?;
        let listener = match (&forward.mode, &forward.host_address) {
            (PortForwardMode::HostPort, Some(address)) => {
                let address: SocketAddr = address
                    .parse()
                    .map_err(|e| format!("stored host address {address:?}: {e}"))?;
                let listener = TcpListener::bind(address).await.map_err(|e| {
                    format!("cannot listen on {address} again after a restart: {e}")
                })?;
                Some(listener)
            }
            (PortForwardMode::HostPort, None) => return Err("no host address stored".into()),
            (PortForwardMode::Path, _) => None,
        };
        self.start_forward(forward, runtime, id, listener);
        Ok(())
    }

    /// Registers a stored forward and starts what runs it: the listener (host port) and the
    /// watcher that closes it when the sandbox stops.
    fn start_forward(
        &self,
        record: &PortForwardRecord,
        runtime: Arc<dyn Runtime>,
        sandbox: SandboxId,
        listener: Option<TcpListener>,
    ) {
        let forward = Arc::new(OpenForward::new(record, self.ports.config()));
        self.ports.insert(Arc::clone(&forward));
        if let Some(listener) = listener {
            tokio::spawn(listener::serve(
                listener,
                Arc::clone(&forward),
                Arc::clone(&runtime),
                sandbox.clone(),
                self.ports.config().clone(),
            ));
        }
        let (store, ports) = (Arc::clone(&self.store), Arc::clone(&self.ports));
        tokio::spawn(async move {
            let mut stopped = forward.stopped();
            tokio::select! {
                // Closed (by its owner): the registry entry is gone already.
                _ = registry::until_stopped(&mut stopped) => {}
                _ = runtime.wait_exit(&sandbox) => {
                    if let Err(e) =
                        close_forward(store.as_ref(), &ports, &forward.forward_id, INSTANCE_ENDED).await
                    {
                        tracing::warn!(forward = %forward.forward_id, error = %e, "cannot record a port forward's end");
                    }
                }
            }
        });
    }
}

/// Records the end of a forward (once) and stops what runs it.
async fn close_forward(
    store: &dyn Store,
    ports: &PortRegistry,
    forward_id: &str,
    reason: &str,
) -> ServiceResult<Option<PortForwardRecord>> {
    let closed = store
        .close_port_forward(forward_id, reason, Utc::now())
        .await?;
    ports.stop(forward_id);
    Ok(closed)
}

/// A listener on the configured address: a port of `ports.host_port_range`, the first
/// free one, or an ephemeral port when no range is configured.
async fn bind_host_port(config: &PortsConfig) -> ServiceResult<TcpListener> {
    let [first, last] = config.host_port_range;
    let address = |port| SocketAddr::new(config.bind_address, port);
    if first == 0 {
        return TcpListener::bind(address(0)).await.map_err(|e| {
            ServiceError::Unavailable(format!("cannot listen on {}: {e}", config.bind_address))
        });
    }
    for port in first..=last {
        if let Ok(listener) = TcpListener::bind(address(port)).await {
            return Ok(listener);
        }
    }
    Err(ServiceError::Unavailable(format!(
        "no free host port in {first}-{last} on {} (ports.host_port_range)",
        config.bind_address
    )))
}

/// [`Runtime::connect_port`] within `timeout`, its failures said for the caller.
pub(super) async fn connect_port(
    runtime: &dyn Runtime,
    sandbox: &SandboxId,
    port: u16,
    timeout: Duration,
) -> ServiceResult<PortStream> {
    match tokio::time::timeout(timeout, runtime.connect_port(sandbox, port)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(RuntimeError::Unsupported { what })) => Err(ServiceError::Unavailable(format!(
            "this server's sandbox backend does not support {what}"
        ))),
        Ok(Err(e)) => match e.agent_error() {
            Some(agent) => Err(ServiceError::BadGateway(agent.message.clone())),
            None => Err(ServiceError::BadGateway(format!(
                "cannot reach port {port} inside the instance: {e}"
            ))),
        },
        Err(_) => Err(ServiceError::BadGateway(format!(
            "port {port} inside the instance did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}
