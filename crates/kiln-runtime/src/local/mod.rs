//! The `local` backend: overlayfs roots, bubblewrap sandboxes, cgroup limits, the agent
//! as PID 1, all on this host, as root.

mod bwrap;
pub mod cgroup;
pub mod host_check;
mod layout;
mod mount_namespace;
mod overlay;
mod proc_seal;
mod reconcile;
mod runtime_impl;
mod sandbox;
pub mod seccomp;
mod snapshot;
mod start;
mod teardown;

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Result, RuntimeError};
use crate::spec::SandboxId;

pub use bwrap::{AGENT_PATH, RUN_DIR, SOCKET_PATH};
pub use cgroup::CgroupVersion;

use cgroup::CgroupBackend;
use sandbox::Sandbox;

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Everything the backend writes lives here: `sandboxes/`, `layers/`, `bin/`, `seccomp/`.
    pub root: PathBuf,
    /// The static `kiln-agent` binary (copied under `root/bin` at start-up).
    pub agent_binary: PathBuf,
    /// The bubblewrap executable.
    pub bwrap: PathBuf,
    /// cgroup path (relative to each hierarchy's root) for sandbox cgroups; default
    /// `<the server's own cgroup>/kiln`.
    pub cgroup_parent: Option<String>,
    /// How long a sandbox may take to become ready.
    pub start_timeout: Duration,
}

impl LocalConfig {
    /// Defaults for everything but the root and the agent binary.
    pub fn new(root: impl Into<PathBuf>, agent_binary: impl Into<PathBuf>) -> Self {
        LocalConfig {
            root: root.into(),
            agent_binary: agent_binary.into(),
            bwrap: find_in_path("bwrap").unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap")),
            cgroup_parent: None,
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// The agent binary to use when none is configured: `$KILN_AGENT_BIN`, else `kiln-agent`
/// next to the running executable (or its parent directory, for test binaries in `deps/`).
pub fn default_agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_AGENT_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("kiln-agent"), dir.parent()?.join("kiln-agent")]
        .into_iter()
        .find(|p| p.is_file())
}

/// Looks a program up in `PATH`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A slot in the table of sandboxes.
#[derive(Debug)]
enum Slot {
    /// `create` is in progress (the id is taken).
    Starting,
    /// Ready.
    Running(Arc<Sandbox>),
}

/// The local backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LocalRuntime {
    config: LocalConfig,
    cgroups: Arc<dyn CgroupBackend>,
    agent_binary: PathBuf,
    seccomp_files: Vec<PathBuf>,
    sandboxes: Mutex<HashMap<SandboxId, Slot>>,
    /// A short symlink to `<root>/sandboxes`, for agent socket paths.
    socket_root: PathBuf,
}

impl LocalRuntime {
    /// Prepares the root directory (agent copy, seccomp filters) and detects cgroups.
    /// Does not touch existing sandboxes: call `reconcile` for that.
    pub fn new(mut config: LocalConfig) -> Result<Self> {
        fs::create_dir_all(&config.root)
            .map_err(|e| RuntimeError::io("cannot create", &config.root, e))?;
        // Absolute and symlink-free: it names the cgroup scope and goes into mount options.
        config.root = fs::canonicalize(&config.root)
            .map_err(|e| RuntimeError::io("cannot resolve", &config.root, e))?;
        for dir in ["sandboxes", "layers", "bin", "seccomp"] {
            let path = config.root.join(dir);
            fs::create_dir_all(&path).map_err(|e| RuntimeError::io("cannot create", &path, e))?;
        }
        fs::set_permissions(&config.root, fs::Permissions::from_mode(0o711))
            .map_err(|e| RuntimeError::io("cannot chmod", &config.root, e))?;
        if !config.bwrap.is_file() {
            return Err(RuntimeError::HostNotReady(format!(
                "bubblewrap not found at {} (apt-get install bubblewrap)",
                config.bwrap.display()
            )));
        }
        let agent_binary = install_agent(&config.agent_binary, &config.root.join("bin"))?;
        let filters = seccomp::compile()?;
        let mut seccomp_files = Vec::new();
        for (name, bytes) in [("deny.bpf", &filters.deny), ("nosys.bpf", &filters.nosys)] {
            let path = config.root.join("seccomp").join(name);
            replace_file(&path, bytes, 0o600)?;
            seccomp_files.push(path);
        }
        let socket_root = short_socket_root(&config.root.join("sandboxes"))?;
        let cgroups: Arc<dyn CgroupBackend> = Arc::from(cgroup::detect(
            config.cgroup_parent.as_deref(),
            &config.root,
        )?);
        Ok(LocalRuntime {
            config,
            cgroups,
            agent_binary,
            seccomp_files,
            sandboxes: Mutex::new(HashMap::new()),
            socket_root,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// Which cgroup layout is in use.
    pub fn cgroup_version(&self) -> CgroupVersion {
        self.cgroups.version()
    }

    /// The host directory a sandbox lives in (upper dir, merged root, socket).
    pub fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir().join(id.as_str())
    }

    /// Memory currently charged to a sandbox's cgroup.
    pub fn memory_usage(&self, id: &SandboxId) -> Result<Option<u64>> {
        let sandbox = self.get(id)?;
        Ok(self.cgroups.memory_usage(&sandbox.cgroup))
    }

    /// Whether the sandbox's memory limit made the kernel's OOM killer act.
    pub fn oom_killed(&self, id: &SandboxId) -> Result<bool> {
        let sandbox = self.get(id)?;
        Ok(self.cgroups.oom_killed(&sandbox.cgroup))
    }

    /// Host pids of every process in the sandbox (bwrap's monitor included).
    pub fn pids(&self, id: &SandboxId) -> Result<Vec<i32>> {
        Ok(self.get(id)?.cgroup.pids())
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.config.root.join("sandboxes")
    }

    fn layers_dir(&self) -> PathBuf {
        self.config.root.join("layers")
    }

    fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        let table = self.table();
        match table.get(id) {
            Some(Slot::Running(sandbox)) => Ok(Arc::clone(sandbox)),
            _ => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Slot>> {
        // A panic while holding the lock leaves a consistent map (every update is a
        // single insert or remove), so a poisoned lock is still usable.
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Copies the agent into the runtime's own directory (atomically, only when it changed),
/// so rebuilding the agent never changes the binary under running sandboxes.
fn install_agent(source: &Path, bin_dir: &Path) -> Result<PathBuf> {
    let target = bin_dir.join("kiln-agent");
    let new = fs::read(source).map_err(|e| match e.kind() {
        ErrorKind::NotFound => RuntimeError::HostNotReady(format!(
            "agent binary {} not found (build it with scripts/build-agent.sh)",
            source.display()
        )),
        _ => RuntimeError::io("cannot read", source, e),
    })?;
    if fs::read(&target).ok().as_deref() != Some(new.as_slice()) {
        replace_file(&target, &new, 0o755)?;
    }
    Ok(target)
}

fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| RuntimeError::io("cannot write", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| RuntimeError::io("cannot chmod", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RuntimeError::io("cannot rename", path, e))
}

/// A short path to `sandboxes`: `/run/kiln/<hash of the path>` (or under /tmp when there
/// is no /run), a symlink. Unix socket paths are limited to 107 bytes; through this link
/// an agent's socket path stays near 70 bytes however deep the data directory is.
fn short_socket_root(sandboxes: &Path) -> Result<PathBuf> {
    let parent = if Path::new("/run").is_dir() {
        Path::new("/run/kiln")
    } else {
        Path::new("/tmp/kiln-run")
    };
    fs::create_dir_all(parent).map_err(|e| RuntimeError::io("cannot create", parent, e))?;
    fs::set_permissions(parent, fs::Permissions::from_mode(0o700))
        .map_err(|e| RuntimeError::io("cannot chmod", parent, e))?;
    let key = sandboxes.as_os_str().as_encoded_bytes();
    let link = parent.join(format!("{:016x}", cgroup::fnv1a(key)));
    match fs::read_link(&link) {
        Ok(target) if target == sandboxes => return Ok(link),
        Ok(_) => {
            fs::remove_file(&link).map_err(|e| RuntimeError::io("cannot replace", &link, e))?
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(sandboxes, &link)
        .map_err(|e| RuntimeError::io("cannot link", &link, e))?;
    Ok(link)
}
