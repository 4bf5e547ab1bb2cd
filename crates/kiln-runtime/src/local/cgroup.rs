//! Per-sandbox cgroups behind one small trait, with a v1 (one directory per controller
//! hierarchy) and a v2 (one unified directory) implementation.
//!
//! Sandbox cgroups are created under `<the server's own cgroup>/kiln/<id>` in each
//! hierarchy, so whatever limits the server itself runs under also bound its sandboxes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

/// CFS period used for CPU quotas.
const CPU_PERIOD_US: u64 = 100_000;

/// How long teardown waits for killed processes to leave the cgroup.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Removes the (empty) directories; missing ones are fine.
    pub fn remove(&self) -> Result<()> {
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::io("cannot remove cgroup", dir, e)),
            }
        }
        Ok(())
    }

    fn wait_empty(&self) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > EMPTY_TIMEOUT {
                return Err(cgroup_error(
                    self.dirs
                        .first()
                        .map(PathBuf::as_path)
                        .unwrap_or(Path::new("?")),
                    format!("processes {pids:?} still alive after SIGKILL"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn kill_listed(&self) {
        for pid in self.pids() {
            // A pid that already exited is fine; the cgroup is frozen (v1 with freezer)
            // or its members are being killed, so it cannot be reused meanwhile.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn cgroup_error(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Cgroup {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| cgroup_error(path, format!("cannot open: {e}")))?;
    f.write_all(value.as_bytes())
        .map_err(|e| cgroup_error(path, format!("cannot write {value:?}: {e}")))
}

fn make_dir(path: &Path) -> Result<()> {
    match fs::create_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) => Err(cgroup_error(path, format!("cannot create: {e}"))),
    }
}

/// Detects the host's layout and builds the matching backend. Sandbox cgroups go under
/// `parent` (relative to each hierarchy's root), by default
/// `<the server's own cgroup>/kiln/<hash of the runtime root>`: two runtimes with
/// different roots (tests, two servers) never see each other's cgroups.
pub fn detect(parent: Option<&str>, runtime_root: &Path) -> Result<Box<dyn CgroupBackend>> {
    let mounts = CgroupMounts::read();
    let scope = format!(
        "kiln/{:016x}",
        fnv1a(runtime_root.as_os_str().as_encoded_bytes())
    );
    if mounts.v1("memory").is_some() {
        let mut hierarchies = Vec::new();
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let Some(root) = mounts.v1(controller) else {
                if controller == "freezer" {
                    continue;
                }
                return Err(RuntimeError::HostNotReady(format!(
                    "cgroup v1 controller {controller} is not mounted"
                )));
            };
            let own = parent
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}/{scope}", own_cgroup(Some(controller))));
            hierarchies.push((controller, root.join(own.trim_start_matches('/'))));
        }
        return Ok(Box::new(CgroupV1 { hierarchies }));
    }
    if let Some(root) = mounts.v2.clone() {
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        for needed in ["memory", "pids", "cpu"] {
            if !controllers.split_whitespace().any(|c| c == needed) {
                return Err(RuntimeError::HostNotReady(format!(
                    "cgroup v2 controller {needed} is not available in {}",
                    root.display()
                )));
            }
        }
        let own = parent
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/{scope}", own_cgroup(None)));
        let parent = root.join(own.trim_start_matches('/'));
        return Ok(Box::new(CgroupV2 { root, parent }));
    }
    Err(RuntimeError::HostNotReady(
        "no cgroup controllers mounted (need v1 memory/pids/cpu or v2 with those controllers)"
            .into(),
    ))
}

/// A hash that stays the same across builds and Rust versions (unlike `DefaultHasher`),
/// so a restarted server finds the cgroups of its predecessor.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Default)]
pub struct CgroupMounts {
    v1: Vec<(Vec<String>, PathBuf)>,
    /// The unified (v2) mount.
    pub v2: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> Self {
        let mut mounts = CgroupMounts::default();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split_whitespace().nth(4).unwrap_or_default();
            let mut right = right.split_whitespace();
            let fstype = right.next().unwrap_or_default();
            let super_opts = right.nth(1).unwrap_or_default();
            match fstype {
                "cgroup" => mounts.v1.push((
                    super_opts.split(',').map(str::to_string).collect(),
                    PathBuf::from(mount_point),
                )),
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(PathBuf::from(mount_point)),
                _ => {}
            }
        }
        mounts
    }

    /// The mount point of the v1 hierarchy holding `controller`.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(opts, _)| opts.iter().any(|o| o == controller))
            .map(|(_, p)| p.as_path())
    }

    /// Controllers usable: the v1 ones mounted, or those the v2 root offers.
    pub fn controllers(&self) -> (Option<CgroupVersion>, Vec<String>) {
        let wanted = ["memory", "pids", "cpu", "freezer"];
        let v1: Vec<String> = wanted
            .iter()
            .filter(|c| self.v1(c).is_some())
            .map(|c| c.to_string())
            .collect();
        if !v1.is_empty() {
            return (Some(CgroupVersion::V1), v1);
        }
        if let Some(root) = &self.v2 {
            let have = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let v2: Vec<String> = have.split_whitespace().map(str::to_string).collect();
            if !v2.is_empty() {
                return (Some(CgroupVersion::V2), v2);
            }
        }
        (None, Vec::new())
    }
}

/// This process's cgroup path in the v1 hierarchy of `controller`, or the v2 one.
fn own_cgroup(controller: Option<&str>) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next(), parts.next(), parts.next());
        let (Some(names), Some(path)) = (names, path) else {
            continue;
        };
        let matches = match controller {
            Some(c) => names.split(',').any(|n| n == c),
            None => names.is_empty(),
        };
        if matches {
            return path.trim_end_matches('/').to_string();
        }
    }
    String::new()
}

/// cgroup v1: one directory per controller hierarchy.
#[derive(Debug)]
struct CgroupV1 {
    /// (controller, parent directory of the sandbox cgroups); memory first.
    hierarchies: Vec<(&'static str, PathBuf)>,
}

impl CgroupV1 {
    fn dir(&self, controller: &str, cgroup: &SandboxCgroup) -> Option<PathBuf> {
        let i = self
            .hierarchies
            .iter()
            .position(|(c, _)| *c == controller)?;
        cgroup.dirs.get(i).cloned()
    }
}

impl CgroupBackend for CgroupV1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn parents(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|(_, p)| p.clone()).collect()
    }

    fn cgroup_of(&self, name: &str) -> SandboxCgroup {
        SandboxCgroup {
            dirs: self.hierarchies.iter().map(|(_, p)| p.join(name)).collect(),
        }
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<SandboxCgroup> {
        let cgroup = self.cgroup_of(name);
        for dir in &cgroup.dirs {
            make_dir(dir)?;
        }
        if let (Some(bytes), Some(dir)) = (limits.memory_bytes, self.dir("memory", &cgroup)) {
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // memsw = memory + swap: equal to the memory limit means no swap at all.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &bytes.to_string())?;
            } else {
                write_file(&dir.join("memory.swappiness"), "0")?;
            }
        }
        if let (Some(pids), Some(dir)) = (limits.pids, self.dir("pids", &cgroup)) {
            write_file(&dir.join("pids.max"), &pids.to_string())?;
        }
        if let (Some(milli), Some(dir)) = (limits.cpu_millicores, self.dir("cpu", &cgroup)) {
            let quota = (u64::from(milli) * CPU_PERIOD_US / 1000).max(1000);
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(cgroup)
    }

    fn existing(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (_, parent) in &self.hierarchies {
            for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        names
    }

    fn set_frozen(&self, cgroup: &SandboxCgroup, frozen: bool) -> Result<()> {
        let Some(dir) = self.dir("freezer", cgroup) else {
            return Err(RuntimeError::HostNotReady(
                "the cgroup v1 freezer controller is not mounted".into(),
            ));
        };
        let state = dir.join("freezer.state");
        write_file(&state, if frozen { "FROZEN" } else { "THAWED" })?;
        if frozen {
            // Freezing is asynchronous on v1: FREEZING until every task stopped.
            let start = Instant::now();
            while fs::read_to_string(&state).unwrap_or_default().trim() != "FROZEN" {
                if start.elapsed() > Duration::from_secs(5) {
                    return Err(cgroup_error(&state, "did not freeze within 5 s"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    fn kill_all(&self, cgroup: &SandboxCgroup) -> Result<()> {
        // Frozen, nothing can fork or exit between listing and killing; SIGKILL is
        // delivered on thaw.
        let frozen = self.set_frozen(cgroup, true).is_ok();
        for dir in &cgroup.dirs {
            if dir.exists() {
                SandboxCgroup {
                    dirs: vec![dir.clone()],
                }
                .kill_listed();
            }
        }
        if frozen {
            self.set_frozen(cgroup, false)?;
        }
        for dir in &cgroup.dirs {
            if dir.exists() {
                SandboxCgroup {
                    dirs: vec![dir.clone()],
                }
                .wait_empty()?;
            }
        }
        Ok(())
    }

    fn memory_usage(&self, cgroup: &SandboxCgroup) -> Option<u64> {
        let dir = self.dir("memory", cgroup)?;
        fs::read_to_string(dir.join("memory.usage_in_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn oom_killed(&self, cgroup: &SandboxCgroup) -> bool {
        let Some(dir) = self.dir("memory", cgroup) else {
            return false;
        };
        fs::read_to_string(dir.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
    }
}

/// cgroup v2: one directory in the unified hierarchy.
#[derive(Debug)]
struct CgroupV2 {
    root: PathBuf,
    parent: PathBuf,
}

impl CgroupV2 {
    /// Enables the controllers for children along the path from the root to `parent`.
    fn delegate(&self) -> Result<()> {
        make_dir(&self.parent)?;
        let rel = self
            .parent
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(""));
        let mut dir = self.root.clone();
        let mut steps = vec![dir.clone()];
        for part in rel.components() {
            dir.push(part);
            steps.push(dir.clone());
        }
        for dir in steps {
            let control = dir.join("cgroup.subtree_control");
            let current = fs::read_to_string(&control).unwrap_or_default();
            for c in ["memory", "pids", "cpu"] {
                if !current.split_whitespace().any(|x| x == c) {
                    write_file(&control, &format!("+{c}")).map_err(|e| {
                        cgroup_error(
                            &control,
                            format!(
                                "{e}; give Kiln a delegated cgroup (e.g. systemd Delegate=yes)"
                            ),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
}

impl CgroupBackend for CgroupV2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn parents(&self) -> Vec<PathBuf> {
        vec![self.parent.clone()]
    }

    fn cgroup_of(&self, name: &str) -> SandboxCgroup {
        SandboxCgroup {
            dirs: vec![self.parent.join(name)],
        }
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<SandboxCgroup> {
        if !self.parent.join("cgroup.subtree_control").exists()
            || !fs::read_to_string(self.parent.join("cgroup.subtree_control"))
                .unwrap_or_default()
                .contains("pids")
        {
            self.delegate()?;
        }
        let cgroup = self.cgroup_of(name);
        let dir = &cgroup.dirs[0];
        make_dir(dir)?;
        if let Some(bytes) = limits.memory_bytes {
            write_file(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(pids) = limits.pids {
            write_file(&dir.join("pids.max"), &pids.to_string())?;
        }
        if let Some(milli) = limits.cpu_millicores {
            let quota = (u64::from(milli) * CPU_PERIOD_US / 1000).max(1000);
            write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        Ok(cgroup)
    }

    fn existing(&self) -> Vec<String> {
        fs::read_dir(&self.parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn set_frozen(&self, cgroup: &SandboxCgroup, frozen: bool) -> Result<()> {
        let dir = &cgroup.dirs[0];
        write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        if frozen {
            let start = Instant::now();
            while !fs::read_to_string(dir.join("cgroup.events"))
                .unwrap_or_default()
                .contains("frozen 1")
            {
                if start.elapsed() > Duration::from_secs(5) {
                    return Err(cgroup_error(dir, "did not freeze within 5 s"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    fn kill_all(&self, cgroup: &SandboxCgroup) -> Result<()> {
        let dir = &cgroup.dirs[0];
        if !dir.exists() {
            return Ok(());
        }
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() {
            write_file(&kill_file, "1")?;
        } else {
            let frozen = self.set_frozen(cgroup, true).is_ok();
            cgroup.kill_listed();
            if frozen {
                self.set_frozen(cgroup, false)?;
            }
        }
        cgroup.wait_empty()
    }

    fn memory_usage(&self, cgroup: &SandboxCgroup) -> Option<u64> {
        fs::read_to_string(cgroup.dirs[0].join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn oom_killed(&self, cgroup: &SandboxCgroup) -> bool {
        fs::read_to_string(cgroup.dirs[0].join("memory.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"))
    }
}

/// The v2 backend over a fake unified hierarchy (plain files standing in for the ones the
/// kernel creates): this host has only v1 controllers, so this is where v2's logic runs.
#[cfg(test)]
mod v2_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fake_dir(dir: &Path, files: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for f in files {
            fs::write(dir.join(f), "").unwrap();
        }
    }

    #[test]
    fn delegates_controllers_writes_limits_reads_usage_and_kills() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let parent = root.join("kiln").join("0123456789abcdef");
        for dir in [root.clone(), root.join("kiln"), parent.clone()] {
            fake_dir(&dir, &["cgroup.subtree_control"]);
        }
        let sandbox = parent.join("s1");
        fake_dir(
            &sandbox,
            &[
                "memory.max",
                "memory.swap.max",
                "pids.max",
                "cpu.max",
                "cgroup.procs",
                "cgroup.kill",
                "memory.current",
                "memory.events",
            ],
        );
        let v2 = CgroupV2 {
            root: root.clone(),
            parent: parent.clone(),
        };
        assert_eq!(v2.version(), CgroupVersion::V2);
        let limits = Limits {
            memory_bytes: Some(1 << 30),
            pids: Some(64),
            cpu_millicores: Some(500),
        };
        let cgroup = v2.create("s1", &limits).unwrap();
        assert_eq!(cgroup.dirs, vec![sandbox.clone()]);
        let read = |name: &str| fs::read_to_string(sandbox.join(name)).unwrap();
        assert_eq!(read("memory.max"), "1073741824");
        assert_eq!(read("memory.swap.max"), "0", "no swap");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("cpu.max"), "50000 100000", "half a core");
        for dir in [&root, &root.join("kiln"), &parent] {
            let control = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert!(
                control.starts_with('+'),
                "controllers enabled at {}: {control:?}",
                dir.display()
            );
        }
        assert_eq!(v2.existing(), vec!["s1".to_string()]);

        fs::write(sandbox.join("memory.current"), "4096\n").unwrap();
        assert_eq!(v2.memory_usage(&cgroup), Some(4096));
        assert!(!v2.oom_killed(&cgroup));
        fs::write(sandbox.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(v2.oom_killed(&cgroup));

        v2.kill_all(&cgroup).unwrap();
        assert_eq!(read("cgroup.kill"), "1", "v2 kills with cgroup.kill");
    }

    #[test]
    fn a_hierarchy_without_delegation_says_how_to_fix_it() {
        let tmp = tempfile::tempdir().unwrap();
        // No cgroup.subtree_control anywhere: the kernel would refuse.
        let v2 = CgroupV2 {
            root: tmp.path().to_path_buf(),
            parent: tmp.path().join("kiln"),
        };
        let err = v2.create("s1", &Limits::default()).unwrap_err().to_string();
        assert!(err.contains("Delegate=yes"), "{err}");
    }
}
