//! Where a sandbox lives on the host, and the little state kept there so a restarted
//! server can find (and adopt or remove) what it left running.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::local::bwrap::SOCKET_NAME;
use crate::local::spec::{LocalSpec, RootLayers};
use crate::spec::{Limits, SandboxId};

/// The directories of one sandbox under `<root>/sandboxes/<id>/`.
#[derive(Debug, Clone)]
pub struct SandboxDirs {
    /// `<root>/sandboxes/<id>`.
    pub base: PathBuf,
    /// The sandbox's disk image (an ext4 filesystem of the disk limit), when limited.
    pub image: PathBuf,
    /// Where that image is mounted (a plain directory without a limit); holds `upper`
    /// and `work`.
    pub disk: PathBuf,
    /// overlayfs upper directory: everything the sandbox changed.
    pub upper: PathBuf,
    /// overlayfs work directory.
    pub work: PathBuf,
    /// The merged root.
    pub merged: PathBuf,
    /// Bound at `/.kiln/run` inside; holds the agent's socket.
    pub run: PathBuf,
    /// The agent's socket as the host connects to it: through the short link to the
    /// sandboxes directory (see `short_socket_root`), because a unix socket's path may
    /// not exceed 107 bytes and data directories can be deep.
    socket: PathBuf,
}

impl SandboxDirs {
    /// The layout for `id` under the sandboxes directory; `socket_root` is a short path
    /// to the same directory.
    pub fn new(sandboxes: &Path, socket_root: &Path, id: &str) -> Self {
        let base = sandboxes.join(id);
        let disk = base.join("disk");
        SandboxDirs {
            socket: socket_root.join(id).join("run").join(SOCKET_NAME),
            image: base.join("disk.img"),
            upper: disk.join("upper"),
            work: disk.join("work"),
            disk,
            merged: base.join("merged"),
            run: base.join("run"),
            base,
        }
    }

    /// Creates the directories, private to root (`upper` and `work` come later, on the
    /// sandbox's disk: `disk::prepare_layer`).
    pub fn create(&self) -> Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        builder
            .create(&self.base)
            .map_err(|e| RuntimeError::io("cannot create", &self.base, e))?;
        for dir in [&self.disk, &self.merged, &self.run] {
            builder
                .create(dir)
                .map_err(|e| RuntimeError::io("cannot create", dir, e))?;
        }
        Ok(())
    }

    /// The root of a sandbox started before its root was known (`late_root.rs`).
    pub fn skeleton(&self) -> PathBuf {
        self.base.join("skeleton")
    }

    /// The agent's socket as seen from the host.
    pub fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    fn state_file(&self) -> PathBuf {
        self.base.join("state.json")
    }

    /// Records what a restarted server needs to adopt this sandbox.
    pub fn write_state(&self, state: &SandboxState) -> Result<()> {
        let path = self.state_file();
        let tmp = self.base.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| RuntimeError::io("cannot encode", &path, std::io::Error::other(e)))?;
        fs::write(&tmp, json).map_err(|e| RuntimeError::io("cannot write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| RuntimeError::io("cannot rename", &path, e))
    }

    /// Reads the recorded state, if any.
    pub fn read_state(&self) -> Option<SandboxState> {
        serde_json::from_slice(&fs::read(self.state_file()).ok()?).ok()
    }
}

/// Persisted next to a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxState {
    /// Host pid of the agent.
    pub init_pid: u32,
    /// Milliseconds since the epoch.
    pub created_at_ms: u64,
    /// Layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// The agent's environment.
    pub env: BTreeMap<String, String>,
    /// Default working directory.
    pub workdir: Option<String>,
    /// Hostname.
    pub hostname: String,
    /// Memory limit.
    pub memory_bytes: Option<u64>,
    /// Disk limit (absent in the state of a sandbox from before disk limits).
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Pids limit.
    pub pids: Option<u64>,
    /// CPU limit.
    pub cpu_millicores: Option<u32>,
    /// The cgroup's name when it is not the sandbox's id: a sandbox started warm and
    /// claimed later keeps the cgroup it was started in (`warm.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The image it stands on (`LocalSpec::image`), so that an adopted sandbox's forks
    /// still take its image's warm sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl SandboxState {
    /// The state of a sandbox started from `spec`.
    pub fn new(spec: &LocalSpec, init_pid: u32, created_at: SystemTime) -> Self {
        SandboxState {
            init_pid,
            created_at_ms: created_at
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            layers: spec.layers.dirs().to_vec(),
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            hostname: spec.hostname.clone(),
            memory_bytes: spec.limits.memory_bytes,
            disk_bytes: spec.limits.disk_bytes,
            pids: spec.limits.pids,
            cpu_millicores: spec.limits.cpu_millicores,
            cgroup: None,
            image: spec.image.clone(),
        }
    }

    /// The name of the cgroup of the sandbox whose directory is named `id`.
    pub fn cgroup_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.cgroup.as_deref().unwrap_or(id)
    }

    /// When the sandbox was created.
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_at_ms)
    }

    /// The spec the sandbox was started from.
    pub fn spec(&self, id: SandboxId) -> LocalSpec {
        let mut spec = LocalSpec::new(id, RootLayers::new(self.layers.clone()));
        spec.env = self.env.clone();
        spec.workdir = self.workdir.clone();
        spec.hostname = self.hostname.clone();
        spec.limits = Limits {
            memory_bytes: self.memory_bytes,
            disk_bytes: self.disk_bytes,
            pids: self.pids,
            cpu_millicores: self.cpu_millicores,
        };
        spec.image = self.image.clone();
        spec
    }
}
