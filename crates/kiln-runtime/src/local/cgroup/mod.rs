//! Per-sandbox cgroups behind one small trait, with a v1 (one directory per controller
//! hierarchy) and a v2 (one unified directory) implementation.
//!
//! Sandbox cgroups are created under `<the server's own cgroup>/kiln/<id>` in each
//! hierarchy, so whatever limits the server itself runs under also bound its sandboxes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

pub mod favor_dynmods;
mod mounts;
mod v1;
mod v2;

pub(crate) use mounts::own_cgroup;
pub use mounts::{home_cgroup, own_home_cgroup, v2_controller_problem, CgroupMounts, DELEGATE_FIX};
use v1::CgroupV1;
use v2::CgroupV2;

/// CFS period used for CPU quotas.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// How long teardown waits for killed processes to leave the cgroup. A killed process
/// is gone only once the kernel has torn down what it held (its mount namespaces, their
/// mounts): when hundreds of sandboxes are destroyed at once (a server's shutdown, the
/// 500-session bench), that work queues up in the kernel and one exit took over 10 s on
/// a 2-core CI machine. Giving up early would leave a half-torn sandbox behind.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a freeze may take to stop every task before it is undone.
pub(crate) const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `rmdir` of an emptied cgroup is retried while the kernel still calls it busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The controllers sandboxes are limited with.
pub(crate) const NEEDED: [&str; 3] = ["memory", "pids", "cpu"];

/// On v2, the leaf below its home cgroup that the server moves itself into: a cgroup
/// with processes cannot enable controllers for children ("no internal processes").
pub const SERVER_LEAF: &str = "kiln-server";

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// One sandbox's cgroup: its directories (one per v1 hierarchy, one on v2).
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    /// Directories; the first one is the one listing the member processes.
    pub dirs: Vec<PathBuf>,
}

/// Creates, limits, kills and removes sandbox cgroups.
pub trait CgroupBackend: Send + Sync + std::fmt::Debug {
    /// v1 or v2.
    fn version(&self) -> CgroupVersion;
    /// Readies the hierarchy before this process starts any child (v2: moves the server
    /// into its leaf and delegates the controllers, which a child left in the home cgroup
    /// would make impossible).
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
    /// Creates `name`'s cgroup (reusing a leftover one) with these limits.
    fn create(&self, name: &str, limits: &Limits) -> Result<SandboxCgroup>;
    /// The cgroup `name` would have, whether or not it exists.
    fn cgroup_of(&self, name: &str) -> SandboxCgroup;
    /// Names of the sandbox cgroups that exist.
    fn existing(&self) -> Vec<String>;
    /// Freezes or thaws every process of the cgroup.
    fn set_frozen(&self, cgroup: &SandboxCgroup, frozen: bool) -> Result<()>;
    /// Kills every process of the cgroup and waits until it is empty.
    fn kill_all(&self, cgroup: &SandboxCgroup) -> Result<()>;
    /// Memory charged to the cgroup.
    fn memory_usage(&self, cgroup: &SandboxCgroup) -> Option<u64>;
    /// Whether the cgroup's memory limit was hit and the OOM killer ran.
    fn oom_killed(&self, cgroup: &SandboxCgroup) -> bool;
    /// The directories holding this runtime's sandbox cgroups.
    fn parents(&self) -> Vec<PathBuf>;
    /// Removes the (empty) parent directories; a non-empty one is left alone.
    fn remove_parents(&self) {
        for dir in self.parents() {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl SandboxCgroup {
    /// Opens every `cgroup.procs` for writing: writing `0` to them moves the writer,
    /// which is how a freshly forked child joins before it execs.
    pub fn open_procs(&self) -> Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| RuntimeError::io("cannot open", path, e))
            })
            .collect()
    }

    /// Pids of the member processes.
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Removes the (empty) directories; missing ones are fine. The kernel may still call
    /// a cgroup busy for a moment after its last process left, so EBUSY is retried.
    pub fn remove(&self) -> Result<()> {
        for dir in &self.dirs {
            let start = Instant::now();
            let mut pause = Duration::from_micros(200);
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && start.elapsed() < BUSY_TIMEOUT =>
                    {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                    Err(e) => return Err(RuntimeError::io("cannot remove cgroup", dir, e)),
                }
            }
        }
        Ok(())
    }

    /// Whether no process (dying ones included) is left in `dir`. On v2 the kernel
    /// says so in `cgroup.events`: `cgroup.procs` empties before exiting processes are
    /// gone, and `rmdir` fails with EBUSY until `populated 0`. v1 has only the list.
    fn is_empty(dir: &Path) -> bool {
        match fs::read_to_string(dir.join("cgroup.events")) {
            Ok(events) => events.lines().any(|l| l.trim() == "populated 0"),
            Err(_) => fs::read_to_string(dir.join("cgroup.procs"))
                .map(|procs| procs.trim().is_empty())
                .unwrap_or(true),
        }
    }

    fn wait_empty(&self) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        for dir in &self.dirs {
            while !Self::is_empty(dir) {
                if start.elapsed() > EMPTY_TIMEOUT {
                    let pids = SandboxCgroup {
                        dirs: vec![dir.clone()],
                    }
                    .pids();
                    return Err(cgroup_error(
                        dir,
                        format!("processes {pids:?} still alive after SIGKILL"),
                    ));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn kill_listed(&self) {
        for pid in self.pids() {
            // A pid that already exited is fine; the cgroup is frozen (v1 with freezer)
            // or its members are being killed, so it cannot be reused meanwhile.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Waits until a requested freeze has taken effect (`is_frozen`). When it has not within
/// `timeout` (a task in uninterruptible sleep cannot stop), the freeze is undone with
/// `thaw` before the error is returned: a freeze left pending would complete later and
/// hold the cgroup frozen for ever, with nobody to thaw it (a kill's SIGKILL would never
/// be delivered, a snapshot's sandbox would hang).
pub(crate) fn await_frozen(
    is_frozen: impl Fn() -> bool,
    thaw: impl FnOnce() -> Result<()>,
    path: &Path,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    while !is_frozen() {
        if start.elapsed() > timeout {
            let thawed = thaw();
            let message = format!("did not freeze within {} s", timeout.as_secs());
            return Err(match thawed {
                Ok(()) => cgroup_error(path, format!("{message}; thawed again")),
                Err(e) => cgroup_error(path, format!("{message}, and cannot thaw: {e}")),
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

pub(crate) fn cgroup_error(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Cgroup {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| cgroup_error(path, format!("cannot open: {e}")))?;
    f.write_all(value.as_bytes())
        .map_err(|e| cgroup_error(path, format!("cannot write {value:?}: {e}")))
}

pub(crate) fn make_dir(path: &Path) -> Result<()> {
    match fs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) => Err(cgroup_error(path, format!("cannot create: {e}"))),
    }
}

/// Detects the host's layout and builds the matching backend. Sandbox cgroups go under
/// `parent` (relative to each hierarchy's root), by default
/// `<the server's own cgroup>/kiln/<hash of the runtime root>`: two runtimes with
/// different roots (tests, two servers) never see each other's cgroups. That parent's
/// memory limit is `memory_budget`: all sandboxes together cannot take more, so the
/// kernel kills inside a sandbox before the host runs out.
pub fn detect(
    parent: Option<&str>,
    runtime_root: &Path,
    memory_budget: Option<u64>,
) -> Result<Box<dyn CgroupBackend>> {
    let mounts = CgroupMounts::read();
    let scope = format!(
        "kiln/{:016x}",
        fnv1a(runtime_root.as_os_str().as_encoded_bytes())
    );
    if mounts.v1("memory").is_some() {
        let mut hierarchies = Vec::new();
        // cpuacct only for the usage's CPU time, where it is a hierarchy of its own
        // (co-mounted as `cpu,cpuacct`, the cpu directory has its files already).
        for controller in ["memory", "pids", "cpu", "freezer", "cpuacct"] {
            let Some(root) = mounts.v1(controller) else {
                if controller == "freezer" || controller == "cpuacct" {
                    continue;
                }
                return Err(RuntimeError::HostNotReady(format!(
                    "cgroup v1 controller {controller} is not mounted"
                )));
            };
            if controller == "cpuacct" && mounts.v1("cpu") == Some(root) {
                continue;
            }
            let own = parent
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}/{scope}", own_cgroup(Some(controller))));
            hierarchies.push((controller, root.join(own.trim_start_matches('/'))));
        }
        return Ok(Box::new(CgroupV1 {
            hierarchies,
            budget: ParentBudget::new(memory_budget),
        }));
    }
    if let Some(root) = mounts.v2.clone() {
        // A configured parent is the administrator's: controllers are enabled all the way
        // down from the root. By default the server stays inside the cgroup it was given,
        // which must have them delegated.
        let (checked, home) = match parent {
            Some(_) => (String::new(), None),
            None => {
                let home = home_cgroup(&own_cgroup(None)).to_string();
                (home.clone(), Some(home))
            }
        };
        if let Some(problem) = v2_controller_problem(&root, &checked) {
            return Err(RuntimeError::HostNotReady(format!(
                "{problem}; {DELEGATE_FIX}"
            )));
        }
        let parent_path = match parent {
            Some(p) => p.to_string(),
            None => format!("{checked}/{scope}"),
        };
        return Ok(Box::new(
            CgroupV2::new(
                root,
                parent_path.trim_start_matches('/'),
                home.as_deref().map(|h| h.trim_start_matches('/')),
            )
            .with_memory_budget(memory_budget),
        ));
    }
    Err(RuntimeError::HostNotReady(
        "no cgroup controllers mounted (need v1 memory/pids/cpu or v2 with those controllers)"
            .into(),
    ))
}

/// The memory limit of the parent of all sandbox cgroups, written once, before the
/// first sandbox cgroup is made.
#[derive(Debug)]
pub(crate) struct ParentBudget {
    bytes: Option<u64>,
    written: AtomicBool,
}

impl ParentBudget {
    pub(crate) fn new(bytes: Option<u64>) -> Self {
        ParentBudget {
            bytes,
            written: AtomicBool::new(false),
        }
    }

    /// Calls `write` with the budget unless it was written already.
    pub(crate) fn ensure(&self, write: impl FnOnce(u64) -> Result<()>) -> Result<()> {
        let Some(bytes) = self.bytes else {
            return Ok(());
        };
        if self.written.load(Ordering::Acquire) {
            return Ok(());
        }
        write(bytes)?;
        self.written.store(true, Ordering::Release);
        Ok(())
    }
}

/// A hash that stays the same across builds and Rust versions (unlike `DefaultHasher`),
/// so a restarted server finds the cgroups of its predecessor.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
