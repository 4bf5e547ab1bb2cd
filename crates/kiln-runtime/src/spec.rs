//! What a sandbox is made of: the spec a caller asks for and what it gets back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// The read-only layers a sandbox's root is stacked from, **topmost first** (overlayfs
/// order: the first directory wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootLayers {
    top_first: Vec<PathBuf>,
}

impl RootLayers {
    /// Layers given topmost first.
    pub fn new(top_first: Vec<PathBuf>) -> Self {
        RootLayers { top_first }
    }

    /// A single directory used as the whole (read-only) root, e.g. a test rootfs.
    pub fn single(dir: impl Into<PathBuf>) -> Self {
        RootLayers {
            top_first: vec![dir.into()],
        }
    }

    /// The unpacked layers of an image.
    pub fn from_image(image: &kiln_image::Image) -> Self {
        let mut dirs = image.layer_dirs();
        dirs.reverse();
        RootLayers { top_first: dirs }
    }

    /// These layers with `layer` on top (how a fork stacks a snapshot on its image).
    pub fn with_top(&self, layer: &Path) -> Self {
        let mut top_first = Vec::with_capacity(self.top_first.len() + 1);
        top_first.push(layer.to_path_buf());
        top_first.extend(self.top_first.iter().cloned());
        RootLayers { top_first }
    }

    /// The directories, topmost first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.top_first
    }

    /// The overlayfs `lowerdir=` value.
    pub(crate) fn lowerdir_option(&self) -> Result<String> {
        if self.top_first.is_empty() {
            return Err(RuntimeError::InvalidSpec("no root layers".into()));
        }
        let mut parts = Vec::with_capacity(self.top_first.len());
        for dir in &self.top_first {
            let s = dir
                .to_str()
                .filter(|s| s.starts_with('/') && !s.contains([':', ',', '\\']))
                .ok_or_else(|| {
                    RuntimeError::InvalidSpec(format!(
                        "layer {} must be an absolute UTF-8 path without ':', ',' or '\\'",
                        dir.display()
                    ))
                })?;
            parts.push(s);
        }
        Ok(parts.join(":"))
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

/// Everything needed to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Its id.
    pub id: SandboxId,
    /// The read-only layers of its root (image layers, snapshot layers on top).
    pub layers: RootLayers,
    /// Resource limits.
    pub limits: Limits,
    /// Network access.
    pub network: Network,
    /// Environment of every command (the image's `ENV`, then the caller's).
    pub env: BTreeMap<String, String>,
    /// Working directory of commands that name none (the image's `WorkingDir`);
    /// when `None` the agent uses `/testbed` if it exists, else `/`.
    pub workdir: Option<String>,
    /// Hostname inside.
    pub hostname: String,
    /// Host directories bound read-write inside, e.g. an agent job's checkout.
    pub binds: Vec<BindMount>,
}

/// A host directory seen read-write at `target` inside the sandbox. The sandbox's
/// writes land in the host directory itself, not in its overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The directory on the host (absolute).
    pub source: PathBuf,
    /// Where it appears inside (absolute), created if missing.
    pub target: String,
}

impl SandboxSpec {
    /// A spec with default limits, loopback network, no extra environment, hostname `kiln`.
    pub fn new(id: SandboxId, layers: RootLayers) -> Self {
        SandboxSpec {
            id,
            layers,
            limits: Limits::default(),
            network: Network::default(),
            env: BTreeMap::new(),
            workdir: None,
            hostname: "kiln".into(),
            binds: Vec::new(),
        }
    }

    /// A spec for an image: its layers, `ENV` and `WorkingDir`.
    pub fn from_image(id: SandboxId, image: &kiln_image::Image) -> Self {
        let mut spec = SandboxSpec::new(id, RootLayers::from_image(image));
        for kv in &image.config().env {
            if let Some((k, v)) = kv.split_once('=') {
                spec.env.insert(k.to_string(), v.to_string());
            }
        }
        spec.workdir = image.config().working_dir.clone();
        spec
    }

    /// A spec for a fork of a snapshot: the snapshot's layers and its sandbox's settings.
    pub fn from_snapshot(id: SandboxId, snapshot: &Snapshot) -> Self {
        let mut spec = snapshot.spec_template.clone();
        spec.id = id;
        spec.layers = snapshot.layers.clone();
        spec
    }
}

/// A running sandbox, as returned by `create`.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    /// Its id.
    pub id: SandboxId,
    /// Version reported by the agent in its hello.
    pub agent_version: String,
    /// Pid of the sandbox's init (the agent) on the host.
    pub init_pid: u32,
    /// When it became ready.
    pub created_at: SystemTime,
}

/// What `list` reports about one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// Its id.
    pub id: SandboxId,
    /// Pid of the sandbox's init (the agent) on the host.
    pub init_pid: u32,
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

/// A frozen copy of a sandbox's changes: a read-only directory usable as an overlay layer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Names the layer directory.
    pub id: String,
    /// The layer directory itself (the sandbox's changes only).
    pub layer: PathBuf,
    /// The full stack for a fork: `layer` on top of the sandbox's own layers.
    pub layers: RootLayers,
    /// The settings of the sandbox it was taken from, for [`SandboxSpec::from_snapshot`].
    pub spec_template: SandboxSpec,
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
    }

    #[test]
    fn lowerdir_is_topmost_first_and_rejects_separators() {
        let base = RootLayers::new(vec!["/l/b".into(), "/l/a".into()]);
        let forked = base.with_top(Path::new("/snap/1"));
        assert_eq!(forked.lowerdir_option().unwrap(), "/snap/1:/l/b:/l/a");
        assert!(RootLayers::single("/x:y").lowerdir_option().is_err());
        assert!(RootLayers::single("relative").lowerdir_option().is_err());
        assert!(RootLayers::default().lowerdir_option().is_err());
    }
}
