//! What a sandbox is made of: the spec a caller asks for and what it gets back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::{Result, RuntimeError};

/// Names a sandbox; also its directory and cgroup name, hence the restricted alphabet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

impl SandboxId {
    /// Accepts 1 to 64 characters from `[A-Za-z0-9_-]`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(SandboxId(id))
        } else {
            Err(RuntimeError::InvalidId(id))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SandboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resource limits enforced by the sandbox's cgroup and its disk. `None` leaves a
/// resource unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes; swap is not allowed on top of it.
    pub memory_bytes: Option<u64>,
    /// Size of the writable layer (everything the sandbox writes, `/tmp` included), in
    /// bytes: a filesystem of its own, so writing past it fails inside with `ENOSPC`.
    pub disk_bytes: Option<u64>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// CPU time per wall-clock time, in thousandths of a core (1000 = one core).
    pub cpu_millicores: Option<u32>,
}

impl Default for Limits {
    /// 2 GiB, 10 GiB of disk, 512 tasks, one core: enough for a test suite, small
    /// enough to pack many.
    fn default() -> Self {
        Limits {
            memory_bytes: Some(2 << 30),
            disk_bytes: Some(10 << 30),
            pids: Some(512),
            cpu_millicores: Some(1000),
        }
    }
}

/// Which network a sandbox sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Network {
    /// A fresh network namespace whose only interface is `lo` (up): no route anywhere
    /// else. (bubblewrap always brings `lo` up, so "none" and "loopback" are the same.)
    #[default]
    Loopback,
}

/// The address, inside a sandbox with [`SandboxSpec::egress`], of its egress proxy: the
/// one way out of its network namespace (HTTP and HTTPS proxies point here).
pub const EGRESS_PROXY_ADDR: &str = "127.0.0.1:3128";

/// A connection a sandbox's process opened to [`EGRESS_PROXY_ADDR`].
pub type EgressStream = Box<dyn kiln_protocol::AsyncStream>;

/// What serves a sandbox's egress connections: the policy (which hosts, how) is the
/// caller's; the backend only carries the bytes.
pub trait EgressHandler: Send + Sync + 'static {
    /// Serves one connection to its end.
    fn serve(
        &self,
        stream: EgressStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// A sandbox's egress: its connections to [`EGRESS_PROXY_ADDR`] go to the handler.
#[derive(Clone)]
pub struct Egress(pub std::sync::Arc<dyn EgressHandler>);

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Egress(..)")
    }
}

/// What a sandbox's root is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxSource {
    /// An image, by reference as the image store names it (e.g. `kiln/python:3.12`).
    Image(String),
    /// A fork: a snapshot taken by this runtime (see [`Runtime::snapshot`]).
    ///
    /// [`Runtime::snapshot`]: crate::Runtime::snapshot
    Snapshot(SnapshotId),
}

/// A directory on the server whose contents the sandbox sees at `target`, and whose
/// changes are in `dir` once the sandbox is destroyed (e.g. an agent job's checkout).
/// How is the backend's business: the local one binds it, a remote one would copy it in
/// and out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The directory on the server (absolute).
    pub dir: PathBuf,
    /// Where it appears inside (absolute), created if missing.
    pub target: String,
}

/// Everything needed to start a sandbox, in terms any backend understands.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Its id.
    pub id: SandboxId,
    /// What its root is made from.
    pub source: SandboxSource,
    /// Resource limits.
    pub limits: Limits,
    /// Network access.
    pub network: Network,
    /// Environment of every command: the backend puts the image's `ENV` (or the
    /// snapshot's sandbox's environment) under it.
    pub env: BTreeMap<String, String>,
    /// Working directory of commands that name none; `None`: the image's `WorkingDir`
    /// (for a fork, its sandbox's), and when that is unset `/testbed` if it exists, else `/`.
    pub workdir: Option<String>,
    /// Hostname inside.
    pub hostname: String,
    /// A server directory the sandbox works in, if any.
    pub workspace: Option<Workspace>,
    /// A way out through the server ([`EGRESS_PROXY_ADDR`] inside), if any; backends
    /// without one refuse the create ([`crate::RuntimeError::Unsupported`]).
    pub egress: Option<Egress>,
    /// When its owner means to end it (a session's TTL), if known: a backend whose
    /// cluster can end sandboxes on its own (Kubernetes agent-sandbox's `shutdownTime`)
    /// uses it instead of its configured backstop, so a sandbox its server forgot (a
    /// crash) does not outlive its session. Ignored by the local and Docker backends
    /// (their server ends them, and reconciles them at its start).
    pub expires_at: Option<SystemTime>,
}

impl SandboxSpec {
    /// A spec with default limits, loopback network, no extra environment, hostname
    /// `kiln`, no workspace.
    pub fn new(id: SandboxId, source: SandboxSource) -> Self {
        SandboxSpec {
            id,
            source,
            limits: Limits::default(),
            network: Network::default(),
            env: BTreeMap::new(),
            workdir: None,
            hostname: "kiln".into(),
            workspace: None,
            egress: None,
            expires_at: None,
        }
    }

    /// A spec for an image, by reference.
    pub fn image(id: SandboxId, reference: impl Into<String>) -> Self {
        SandboxSpec::new(id, SandboxSource::Image(reference.into()))
    }

    /// A spec for a fork of `snapshot`.
    pub fn fork(id: SandboxId, snapshot: &Snapshot) -> Self {
        SandboxSpec::new(id, SandboxSource::Snapshot(snapshot.id.clone()))
    }
}

/// A running sandbox, as returned by `create`.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    /// Its id.
    pub id: SandboxId,
    /// Version reported by the agent in its hello.
    pub agent_version: String,
    /// When it became ready.
    pub created_at: SystemTime,
}

/// What `list` reports about one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// Its id.
    pub id: SandboxId,
    /// When it became ready.
    pub created_at: SystemTime,
    /// Memory charged to its cgroup, when the cgroup reports it.
    pub memory_bytes: Option<u64>,
}

/// What a sandbox has used, as its cgroup and its disk report it; `None` where this host
/// does not report it (e.g. CPU time on cgroup v1 without `cpuacct` beside `cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceUsage {
    /// CPU time of all its processes so far.
    pub cpu_time: Option<std::time::Duration>,
    /// Highest memory charged to it at once.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes in use on its disk (only with a disk limit: its own filesystem).
    pub disk_used_bytes: Option<u64>,
    /// Processes and threads now.
    pub pids: Option<u64>,
    /// Its disk limit (`Limits::disk_bytes`), to read `disk_used_bytes` against.
    pub disk_limit_bytes: Option<u64>,
}

/// Names a snapshot: the same alphabet as sandbox ids, up to 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// Accepts 1 to 128 characters from `[A-Za-z0-9_-]`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let ok = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(SnapshotId(id))
        } else {
            Err(RuntimeError::InvalidId(id))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A frozen copy of a sandbox's files, which forks start from. Where it is kept is the
/// backend's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Names it for forks ([`SandboxSource::Snapshot`]) and `remove_snapshot`.
    pub id: SnapshotId,
    /// The sandbox it was taken from.
    pub sandbox: SandboxId,
    /// What it holds of its own (the sandbox's changes, not the image below), in bytes:
    /// what a quota on snapshots counts.
    pub size_bytes: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_path_and_cgroup_safe() {
        assert!(SandboxId::new("sess_01-AB").is_ok());
        for bad in ["", "../x", "a/b", "a b", ".", &"x".repeat(65)] {
            assert!(SandboxId::new(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["", "../x", "a/b", "a b", ".", &"x".repeat(129)] {
            assert!(SnapshotId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SnapshotId::new("x".repeat(128)).is_ok());
    }
}
