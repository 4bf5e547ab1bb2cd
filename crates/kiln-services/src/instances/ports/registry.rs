//! What runs for each open forward, by id: found by the path proxy, stopped on close.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_config::PortsConfig;
use kiln_store::{PortForwardMode, PortForwardRecord};
use tokio::sync::{watch, Semaphore};

/// The open forwards of this server, and the `[ports]` configuration.
pub struct PortRegistry {
    config: PortsConfig,
    open: Mutex<HashMap<String, Arc<OpenForward>>>,
    /// Held while a forward is created, so limits are checked and taken at once.
    pub(super) create_lock: tokio::sync::Mutex<()>,
}

impl Default for PortRegistry {
    fn default() -> Self {
        Self::new(PortsConfig::default())
    }
}

impl PortRegistry {
    pub fn new(config: PortsConfig) -> Self {
        Self {
            config,
            open: Mutex::default(),
            create_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &PortsConfig {
        &self.config
    }

    pub(super) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.config.connect_timeout_secs)
    }

    pub(super) fn insert(&self, forward: Arc<OpenForward>) {
        self.lock().insert(forward.forward_id.clone(), forward);
    }

    /// The open `path` forward to `port` of instance `session_id`.
    pub(super) fn find_path(&self, session_id: &str, port: u16) -> Option<Arc<OpenForward>> {
        self.lock()
            .values()
            .find(|f| {
                f.mode == PortForwardMode::Path && f.session_id == session_id && f.port == port
            })
            .cloned()
    }

    /// Forgets a forward and tells what runs it to stop (its listener, its connections).
    pub(super) fn stop(&self, forward_id: &str) {
        if let Some(forward) = self.lock().remove(forward_id) {
            forward.stop.send_replace(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OpenForward>>> {
        // Every critical section is a single map operation: a poisoned map is consistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open forward.
pub(super) struct OpenForward {
    pub forward_id: String,
    pub session_id: String,
    pub port: u16,
    pub mode: PortForwardMode,
    /// One permit per connection carried (`ports.max_connections_per_forward`).
    pub connections: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

impl OpenForward {
    pub fn new(record: &PortForwardRecord, config: &PortsConfig) -> Self {
        Self {
            forward_id: record.forward_id.clone(),
            session_id: record.session_id.clone(),
            port: record.port,
            mode: record.mode,
            connections: Arc::new(Semaphore::new(config.max_connections_per_forward)),
            stop: watch::Sender::new(false),
        }
    }

    /// Becomes `true` when the forward closes.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// Resolves once the forward closes (or its registry entry is gone).
pub(super) async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, not held by callers.
    let _ = stopped.wait_for(|stop| *stop).await;
}
