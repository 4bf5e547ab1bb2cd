//! The `local` backend: overlayfs roots, bubblewrap sandboxes, cgroup limits, the agent
//! as PID 1, all on this host, as root.

pub(crate) mod admission;
mod bwrap;
pub mod cgroup;
mod disk;
mod disk_template;
mod exit_watch;
pub mod host_check;
mod late_root;
mod launch_ns;
mod layout;
mod loopdev;
pub(crate) mod mount_namespace;
mod overlay;
pub(crate) mod proc_seal;
pub mod quota;
mod reconcile;
mod resolve;
mod runtime_impl;
mod sandbox;
pub mod seccomp;
mod snapshot;
pub mod spec;
mod staging;
mod start;
mod teardown;
mod usage;
mod warm;
mod workspace;

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, RuntimeError};
use crate::spec::{Limits, SandboxId};

pub use bwrap::{AGENT_PATH, RUN_DIR, SOCKET_PATH};
pub use cgroup::CgroupVersion;
pub use disk::disk_limit_problem;
pub use quota::DiskLimitMode;
pub use spec::{BindMount, LocalSpec, RootLayers};

use admission::{Admission, Budget};
use cgroup::CgroupBackend;
use disk::DiskPool;
use sandbox::Sandbox;

use crate::slots::Slots;

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Everything the backend writes lives here: `sandboxes/`, `layers/`, `seccomp/` (the
    /// agent binary is staged in `/run/kiln`, see `staging.rs`).
    pub root: PathBuf,
    /// The static `kiln-agent` binary (copied to `/run/kiln` at start-up).
    pub agent_binary: PathBuf,
    /// The bubblewrap executable.
    pub bwrap: PathBuf,
    /// cgroup path (relative to each hierarchy's root) for sandbox cgroups; default
    /// `<the server's own cgroup>/kiln`.
    pub cgroup_parent: Option<String>,
    /// How long a sandbox may take to become ready.
    pub start_timeout: Duration,
    /// Memory limit of the parent cgroup of all sandboxes: the host's budget for them.
    /// `None`: MemTotal minus a reserve for the host (an eighth, at least 1 GiB).
    pub memory_budget: Option<u64>,
    /// Admission: the sum of the sandboxes' memory limits may reach the budget × this.
    pub memory_overcommit: f64,
    /// Admission: the sum of their disk limits may reach the disk space they can use
    /// (free space of the runtime root's filesystem plus what they hold) × this.
    pub disk_overcommit: f64,
    /// The disk limit most sandboxes get: images of this size are formatted ahead of
    /// time. `None`: sandboxes are usually unlimited (no image tools needed on the host).
    pub default_disk_bytes: Option<u64>,
    /// How many images are kept formatted ahead (0: each create formats its own).
    pub disk_pool: usize,
    /// How disk limits are enforced (`quota.rs`).
    pub disk_limit_mode: DiskLimitMode,
    /// Sandboxes kept started ahead per image reference (`warm.rs`): filled after the
    /// first create of the image, taken by creates that ask for what they were started
    /// with.
    pub warm_pools: BTreeMap<String, usize>,
    /// Set the kernel's `favordynmods` on the cgroup2 mount before the first sandbox
    /// starts (`cgroup/favor_dynmods.rs`): ≈ 6 ms less per start, a host-wide setting.
    pub favor_dynmods: bool,
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
            memory_budget: None,
            memory_overcommit: 10.0,
            disk_overcommit: 20.0,
            default_disk_bytes: Limits::default().disk_bytes,
            disk_pool: 4,
            disk_limit_mode: DiskLimitMode::Auto,
            warm_pools: BTreeMap::new(),
            favor_dynmods: true,
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

/// The local backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LocalRuntime {
    config: LocalConfig,
    cgroups: Arc<dyn CgroupBackend>,
    /// The agent binary and neutral files every sandbox gets.
    staged: staging::Staged,
    seccomp_files: Vec<PathBuf>,
    /// The sandboxes this runtime runs or is starting.
    slots: Slots<Sandbox>,
    /// A short symlink to `<root>/sandboxes`, for agent socket paths.
    socket_root: PathBuf,
    /// Formatted disk images, ready for the next creates.
    disks: Arc<DiskPool>,
    /// How disk limits are enforced here: never `Auto` (resolved at start).
    disk_mode: DiskLimitMode,
    /// The limits held against the node's budget.
    admission: Admission,
    /// Where image references are resolved (`with_images`).
    images: Option<resolve::Images>,
    /// Sandboxes started ahead (`warm.rs`).
    warm: Arc<warm::WarmPools>,
    /// Host settings are made once, before the first start (`start.rs`); shared with
    /// the warm pools' workers.
    host_tuned: Arc<std::sync::Once>,
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
        for dir in [
            "sandboxes",
            "layers",
            "seccomp",
            "disks",
            "launch/root",
            "launch/run",
            "launch/workspaces",
        ] {
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
        let staged = staging::stage(&config.agent_binary)?;
        let filters = seccomp::compile()?;
        let mut seccomp_files = Vec::new();
        for (name, bytes) in [
            ("deny.bpf", &filters.deny),
            ("nosys.bpf", &filters.nosys),
            ("families.bpf", &filters.families),
        ] {
            let path = config.root.join("seccomp").join(name);
            replace_file(&path, bytes, 0o600)?;
            seccomp_files.push(path);
        }
        let socket_root = short_socket_root(&config.root.join("sandboxes"))?;
        let memory_budget = match config.memory_budget {
            Some(bytes) => bytes,
            None => default_memory_budget()?,
        };
        let cgroups: Arc<dyn CgroupBackend> = Arc::from(cgroup::detect(
            config.cgroup_parent.as_deref(),
            &config.root,
            Some(memory_budget),
        )?);
        // Before the pool's first mkfs: on v2 no child may sit in the home cgroup when
        // the server delegates its controllers.
        cgroups.prepare()?;
        // Probed in the root, not in `sandboxes/` (same filesystem), whose entries a
        // concurrent reconcile would take for leftover sandboxes.
        let disk_mode = resolve_disk_mode(config.disk_limit_mode, &config.root)?;
        let disks = DiskPool::new(
            config.root.join("disks"),
            config.default_disk_bytes.unwrap_or(0),
            if config.default_disk_bytes.is_some() && disk_mode == DiskLimitMode::LoopDisk {
                config.disk_pool
            } else {
                0
            },
        )?;
        // No disk is made yet: a command that opens the runtime without running sandboxes
        // (`kiln users create`, …) must not leave a pool mounted. The server's start-up
        // (`reconcile`) and every create fill it.
        let admission = Admission::new(Budget {
            memory_bytes: memory_budget,
            memory_overcommit: config.memory_overcommit,
            disk_overcommit: config.disk_overcommit,
        });
        Ok(LocalRuntime {
            config,
            cgroups,
            staged,
            seccomp_files,
            slots: Slots::default(),
            socket_root,
            disks,
            disk_mode,
            admission,
            images: None,
            warm: Arc::default(),
            host_tuned: Arc::new(std::sync::Once::new()),
        })
    }

    /// The memory all sandboxes together may use (their parent cgroup's limit).
    pub fn memory_budget(&self) -> u64 {
        self.admission.budget().memory_bytes
    }

    /// Sums of the memory and disk limits of the sandboxes held now (running, starting
    /// or reserved).
    pub fn limits_held(&self) -> (u64, u64) {
        self.admission.held()
    }

    /// Disk space sandboxes can use: free space where their images live, plus what
    /// their images already hold.
    fn disk_space(&self) -> u64 {
        let available = disk::space(&self.config.root).map_or(0, |(available, _)| available);
        let held: u64 = fs::read_dir(self.sandboxes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let path = e.path();
                disk::allocated_bytes(&path.join("disk.img"))
                    + quota::used_bytes(&path.join("disk")).unwrap_or(0)
            })
            .sum();
        available.saturating_add(held)
    }

    /// How disk limits are enforced on this runtime (`Auto` resolved).
    pub fn disk_limit_mode(&self) -> DiskLimitMode {
        self.disk_mode
    }

    /// The settings.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// The agent binary sandboxes run (a copy of the configured one).
    pub fn agent_path(&self) -> &Path {
        &self.staged.agent
    }

    /// Which cgroup layout is in use.
    pub fn cgroup_version(&self) -> CgroupVersion {
        self.cgroups.version()
    }

    /// The cgroup directories holding the sandboxes' cgroups (one per v1 hierarchy, one
    /// on v2); the memory one carries the memory budget.
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        self.cgroups.parents()
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

    /// Host pid of the sandbox's init (the agent).
    pub fn init_pid(&self, id: &SandboxId) -> Result<u32> {
        Ok(self.get(id)?.init_pid)
    }

    /// Host pids of every process in the sandbox (bwrap's monitor included).
    pub fn pids(&self, id: &SandboxId) -> Result<Vec<i32>> {
        Ok(self.get(id)?.cgroup.pids())
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.config.root.join("sandboxes")
    }

    /// Where a starting sandbox's root and socket directory are bound in its launch
    /// namespace (empty directories on the host; see `launch_ns.rs`).
    fn launch_dirs(&self) -> (PathBuf, PathBuf) {
        let launch = self.config.root.join("launch");
        (launch.join("root"), launch.join("run"))
    }

    /// Where a starting sandbox's workspace copies are bound in its launch namespace.
    fn launch_workspaces(&self) -> PathBuf {
        self.config.root.join("launch").join("workspaces")
    }

    fn layers_dir(&self) -> PathBuf {
        self.config.root.join("layers")
    }

    fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        // Unlike `Slots::get`, a sandbox still starting is simply not found here.
        self.slots
            .running(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }
}

/// The image layers each sandbox under the runtime root `root` uses, from its state file
/// (live sandboxes, and those a crash left for the next start to adopt): what an image
/// store must not delete (`kiln_image::ImageStore::with_layer_users`).
pub fn layer_users(root: &Path) -> Vec<kiln_image::LayerUser> {
    let sandboxes = root.join("sandboxes");
    fs::read_dir(&sandboxes)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let state = layout::SandboxDirs::new(&sandboxes, &sandboxes, &name).read_state()?;
            Some(kiln_image::LayerUser {
                name: format!("sandbox {name}"),
                layers: state.layers,
            })
        })
        .collect()
}

/// `Auto` becomes project quotas where the filesystem of the runtime root has them, else
/// loop disks; an explicit `ProjectQuota` where they are not on is an error.
fn resolve_disk_mode(mode: DiskLimitMode, root: &Path) -> Result<DiskLimitMode> {
    match mode {
        DiskLimitMode::Auto => Ok(match quota::problem(root) {
            None => DiskLimitMode::ProjectQuota,
            Some(why) => {
                tracing::debug!(reason = %why, "disk limits by loop disks");
                DiskLimitMode::LoopDisk
            }
        }),
        DiskLimitMode::ProjectQuota => match quota::problem(root) {
            None => Ok(DiskLimitMode::ProjectQuota),
            Some(why) => Err(RuntimeError::HostNotReady(format!(
                "runtime.disk_limit_mode = \"project_quota\": {why}"
            ))),
        },
        other => Ok(other),
    }
}

/// MemTotal minus what the host keeps for itself: an eighth of it, at least 1 GiB.
fn default_memory_budget() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo")
        .map_err(|e| RuntimeError::io("cannot read", "/proc/meminfo", e))?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
        .ok_or_else(|| RuntimeError::HostNotReady("no MemTotal in /proc/meminfo".into()))?;
    let reserve = (total / 8).max(1 << 30);
    Ok(total.saturating_sub(reserve).max(256 << 20))
}

pub(crate) fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
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
    short_socket_root_in(&staging::short_dir()?, sandboxes)
}

fn short_socket_root_in(parent: &Path, sandboxes: &Path) -> Result<PathBuf> {
    fs::create_dir_all(parent).map_err(|e| RuntimeError::io("cannot create", parent, e))?;
    fs::set_permissions(parent, fs::Permissions::from_mode(0o700))
        .map_err(|e| RuntimeError::io("cannot chmod", parent, e))?;
    sweep_dangling_links(parent);
    let link = parent.join(socket_link_name(sandboxes));
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

fn socket_link_name(sandboxes: &Path) -> String {
    format!(
        "{:016x}",
        cgroup::fnv1a(sandboxes.as_os_str().as_encoded_bytes())
    )
}

/// Removes the links (of this shape) whose data directory is gone: a server stopped by
/// `kill -9`, or a deleted data directory, leaves them behind.
fn sweep_dangling_links(parent: &Path) {
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let ours = name.len() == 16
            && name
                .as_encoded_bytes()
                .iter()
                .all(|b| b.is_ascii_hexdigit());
        let path = entry.path();
        let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let dangling = matches!(fs::metadata(&path), Err(e) if e.kind() == ErrorKind::NotFound);
        if ours && is_link && dangling {
            if let Err(e) = fs::remove_file(&path) {
                tracing::debug!(link = %path.display(), error = %e, "cannot remove a dangling socket link");
            }
        }
    }
}

/// Removes `link` if it still leads to `sandboxes` (another server may have replaced it).
fn remove_socket_link(link: &Path, sandboxes: &Path) {
    if fs::read_link(link).is_ok_and(|target| target == sandboxes) {
        if let Err(e) = fs::remove_file(link) {
            tracing::warn!(link = %link.display(), error = %e, "cannot remove the socket link");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangling_socket_links_are_swept_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let live = data.path().join("live");
        let gone = data.path().join("gone");
        fs::create_dir(&live).unwrap();
        fs::create_dir(&gone).unwrap();
        let live_link = short_socket_root_in(parent.path(), &live).unwrap();
        let gone_link = short_socket_root_in(parent.path(), &gone).unwrap();
        let foreign = parent.path().join("not-ours");
        std::os::unix::fs::symlink("/nonexistent", &foreign).unwrap();
        fs::remove_dir(&gone).unwrap();

        let again = short_socket_root_in(parent.path(), &live).unwrap();
        assert_eq!(again, live_link);
        assert!(fs::read_link(&live_link).is_ok(), "a live link is kept");
        assert!(
            fs::symlink_metadata(&gone_link).is_err(),
            "a dangling link is swept"
        );
        assert!(
            fs::symlink_metadata(&foreign).is_ok(),
            "others' files are left alone"
        );

        remove_socket_link(&live_link, &gone);
        assert!(
            fs::read_link(&live_link).is_ok(),
            "only a link to this root is removed"
        );
        remove_socket_link(&live_link, &live);
        assert!(fs::symlink_metadata(&live_link).is_err());
    }
}
