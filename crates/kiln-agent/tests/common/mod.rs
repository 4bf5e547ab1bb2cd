//! Starts the real agent binary on a socket in a temporary directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_protocol::AgentClient;

/// The agent under test: `KILN_AGENT_BIN` (e.g. the static build from
/// `scripts/build-agent.sh`) or the binary cargo built for this test run.
pub fn agent_binary() -> PathBuf {
    std::env::var_os("KILN_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln-agent")))
}

/// A running agent, killed when dropped.
pub struct AgentProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl AgentProcess {
    /// Starts an agent with an empty environment (the socket given by env var).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new(agent_binary())
            .env_clear()
            .env("KILN_AGENT_SOCKET", &socket)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let agent = AgentProcess { child, dir, socket };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.client().ping().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("agent did not come up on {}", self.socket.display());
    }

    pub fn client(&self) -> AgentClient {
        AgentClient::new(&self.socket)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A path inside the agent's temporary directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// A field of /proc/<agent pid>/status, in kB.
    pub fn status_kb(&self, field: &str) -> u64 {
        proc_status_field(self.pid(), field)
            .and_then(|v| v.split_whitespace().next().map(str::to_string))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of /proc/<pid>/status, without its key; `None` when the process is gone.
pub fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// Waits until no process `pid` exists (not even a zombie); false on timeout.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
