//! One running sandbox as the local backend tracks it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use kiln_protocol::AsyncAgentClient;
use tokio::process::Child;

use crate::local::cgroup::{CgroupBackend, SandboxCgroup};
use crate::local::exit_watch::ExitWatch;
use crate::local::layout::SandboxDirs;
use crate::local::spec::LocalSpec;

/// A sandbox that is running (or was, until destroyed).
#[derive(Debug)]
pub struct Sandbox {
    /// What it was started from (layers, env, limits), for snapshots and forks.
    pub spec: LocalSpec,
    /// Its directories.
    pub dirs: SandboxDirs,
    /// Its cgroup.
    pub cgroup: SandboxCgroup,
    /// Talks to its agent.
    pub client: AsyncAgentClient,
    /// Host pid of the agent.
    pub init_pid: u32,
    /// When it became ready.
    pub created_at: SystemTime,
    /// From the agent's hello.
    pub agent_version: String,
    /// bubblewrap's monitor process; `None` for a sandbox adopted after a restart.
    pub monitor: tokio::sync::Mutex<Option<Child>>,
    /// The tail of bwrap's and the agent's stderr.
    pub stderr_tail: Option<Arc<Mutex<Vec<u8>>>>,
    /// Tells when the init ends, and whether a destroy ended it.
    pub exit: ExitWatch,
    /// Its egress socket's accept loop, if it has one (`egress_socket.rs`).
    pub egress: crate::egress_socket::EgressSlot,
}

impl Sandbox {
    /// A sandbox record; the client is pointed at its socket, and the init (a process of
    /// `cgroup`) is watched from now on.
    pub fn new(
        spec: LocalSpec,
        dirs: SandboxDirs,
        (cgroups, cgroup): (Arc<dyn CgroupBackend>, SandboxCgroup),
        init_pid: u32,
        created_at: SystemTime,
    ) -> Self {
        Sandbox {
            exit: ExitWatch::start(init_pid, cgroups, cgroup.clone()),
            client: AsyncAgentClient::unix(dirs.socket()),
            spec,
            dirs,
            cgroup,
            init_pid,
            created_at,
            agent_version: String::new(),
            monitor: tokio::sync::Mutex::new(None),
            stderr_tail: None,
            egress: crate::egress_socket::EgressSlot::default(),
        }
    }
}
