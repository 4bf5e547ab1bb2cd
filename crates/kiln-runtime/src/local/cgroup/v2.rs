//! cgroup v2: one directory per sandbox in the unified hierarchy, below a home cgroup
//! whose controllers were delegated to the server.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    await_frozen, cgroup_error, make_dir, write_file, CgroupBackend, CgroupVersion, ParentBudget,
    SandboxCgroup, CPU_PERIOD_US, DELEGATE_FIX, FREEZE_TIMEOUT, NEEDED, SERVER_LEAF,
};
use crate::error::Result;
use crate::spec::Limits;

/// cgroup v2: one directory in the unified hierarchy.
#[derive(Debug)]
pub(super) struct CgroupV2 {
    root: PathBuf,
    /// Where sandbox cgroups are created.
    parent: PathBuf,
    /// The first cgroup whose `cgroup.subtree_control` is ours to write: the home cgroup,
    /// or the root when the parent was configured.
    delegate_from: PathBuf,
    /// The leaf the server moves into before enabling controllers in its home cgroup;
    /// none when the home is the root (exempt from the "no internal processes" rule) or
    /// the parent was configured.
    server_leaf: Option<PathBuf>,
    /// `memory.max` of `parent`.
    budget: ParentBudget,
}

impl CgroupV2 {
    /// `parent` and `home` are relative to `root`; `home` is `None` for a configured parent.
    pub(super) fn new(root: PathBuf, parent: &str, home: Option<&str>) -> Self {
        let delegate_from = root.join(home.unwrap_or(""));
        let server_leaf = home
            .filter(|h| !h.is_empty())
            .map(|_| delegate_from.join(SERVER_LEAF));
        CgroupV2 {
            parent: root.join(parent),
            root,
            delegate_from,
            server_leaf,
            budget: ParentBudget::new(None),
        }
    }

    /// Limits the memory of all sandboxes together (`memory.max` of the parent).
    pub(super) fn with_memory_budget(mut self, bytes: Option<u64>) -> Self {
        self.budget = ParentBudget::new(bytes);
        self
    }

    /// Moves this process into its leaf, then enables the controllers for children
    /// from `delegate_from` down to `parent`.
    fn delegate(&self) -> Result<()> {
        if let Some(leaf) = &self.server_leaf {
            make_dir(leaf)?;
            let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let in_leaf = own.lines().any(|l| {
                l.strip_prefix("0::")
                    .is_some_and(|p| self.root.join(p.trim_start_matches('/')) == *leaf)
            });
            if !in_leaf {
                write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            }
        }
        make_dir(&self.parent)?;
        let rel = self
            .parent
            .strip_prefix(&self.delegate_from)
            .unwrap_or(Path::new(""));
        let mut dir = self.delegate_from.clone();
        let mut steps = vec![dir.clone()];
        for part in rel.components() {
            dir.push(part);
            steps.push(dir.clone());
        }
        for dir in steps {
            let control = dir.join("cgroup.subtree_control");
            let current = fs::read_to_string(&control).unwrap_or_default();
            for c in NEEDED {
                if !current.split_whitespace().any(|x| x == c) {
                    write_file(&control, &format!("+{c}")).map_err(|e| {
                        let procs = fs::read_to_string(dir.join("cgroup.procs"))
                            .unwrap_or_default()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ");
                        let held = if procs.is_empty() {
                            String::new()
                        } else {
                            format!(" (it holds processes {procs}, and a cgroup with processes cannot delegate)")
                        };
                        cgroup_error(&control, format!("{e}{held}; {DELEGATE_FIX}"))
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

    fn prepare(&self) -> Result<()> {
        if !self.parent.join("cgroup.subtree_control").exists()
            || !fs::read_to_string(self.parent.join("cgroup.subtree_control"))
                .unwrap_or_default()
                .contains("pids")
        {
            self.delegate()?;
        }
        Ok(())
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<SandboxCgroup> {
        self.prepare()?;
        self.budget
            .ensure(|bytes| write_file(&self.parent.join("memory.max"), &bytes.to_string()))?;
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
        let freeze = dir.join("cgroup.freeze");
        write_file(&freeze, if frozen { "1" } else { "0" })?;
        if frozen {
            await_frozen(
                || {
                    fs::read_to_string(dir.join("cgroup.events"))
                        .unwrap_or_default()
                        .contains("frozen 1")
                },
                || write_file(&freeze, "0"),
                dir,
                FREEZE_TIMEOUT,
            )?;
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
    fn a_freeze_that_does_not_take_effect_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let freeze = dir.path().join("cgroup.freeze");
        fs::write(&freeze, "1").unwrap();
        let err = await_frozen(
            || false,
            || write_file(&freeze, "0"),
            dir.path(),
            std::time::Duration::from_millis(20),
        )
        .unwrap_err();
        assert!(err.to_string().contains("thawed again"), "{err}");
        assert_eq!(fs::read_to_string(&freeze).unwrap(), "0");

        fs::write(&freeze, "1").unwrap();
        await_frozen(
            || true,
            || panic!("a freeze that took effect is not undone"),
            dir.path(),
            std::time::Duration::from_millis(20),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(&freeze).unwrap(), "1");
    }

    #[test]
    fn delegates_controllers_writes_limits_reads_usage_and_kills() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let parent = root.join("kiln").join("0123456789abcdef");
        for dir in [root.clone(), root.join("kiln"), parent.clone()] {
            fake_dir(&dir, &["cgroup.subtree_control"]);
        }
        fake_dir(&parent, &["memory.max"]);
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
        // A configured parent: controllers enabled from the root down.
        let v2 = CgroupV2::new(root.clone(), "kiln/0123456789abcdef", None)
            .with_memory_budget(Some(8 << 30));
        assert_eq!(v2.version(), CgroupVersion::V2);
        let limits = Limits {
            memory_bytes: Some(1 << 30),
            disk_bytes: None,
            pids: Some(64),
            cpu_millicores: Some(500),
        };
        let cgroup = v2.create("s1", &limits).unwrap();
        assert_eq!(cgroup.dirs, vec![sandbox.clone()]);
        let read = |name: &str| fs::read_to_string(sandbox.join(name)).unwrap();
        assert_eq!(read("memory.max"), "1073741824");
        assert_eq!(
            fs::read_to_string(parent.join("memory.max")).unwrap(),
            "8589934592",
            "the parent holds the budget of all sandboxes"
        );
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
        let v2 = CgroupV2::new(tmp.path().to_path_buf(), "kiln", None);
        let err = v2.create("s1", &Limits::default()).unwrap_err().to_string();
        assert!(err.contains("Delegate=yes"), "{err}");
    }

    #[test]
    fn the_server_moves_into_a_leaf_of_its_home_and_delegates_only_below_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let home = root.join("system.slice").join("kiln.service");
        fake_dir(&root, &[]);
        fake_dir(&home, &["cgroup.subtree_control", "cgroup.procs"]);
        fake_dir(&home.join(SERVER_LEAF), &["cgroup.procs"]);
        let parent = home.join("kiln").join("0123456789abcdef");
        for dir in [home.join("kiln"), parent.clone()] {
            fake_dir(&dir, &["cgroup.subtree_control"]);
        }
        fake_dir(
            &parent.join("s1"),
            &["cgroup.procs", "memory.max", "pids.max", "cpu.max"],
        );
        let v2 = CgroupV2::new(
            root.clone(),
            "system.slice/kiln.service/kiln/0123456789abcdef",
            Some("system.slice/kiln.service"),
        );
        v2.create("s1", &Limits::default()).unwrap();
        let leaf_procs = fs::read_to_string(home.join(SERVER_LEAF).join("cgroup.procs")).unwrap();
        assert_eq!(leaf_procs, std::process::id().to_string());
        for dir in [&home, &home.join("kiln"), &parent] {
            let control = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert!(control.starts_with('+'), "{}: {control:?}", dir.display());
        }
        assert!(
            !root.join("cgroup.subtree_control").exists(),
            "wrote above the home cgroup"
        );
    }

    #[test]
    fn a_second_runtime_in_the_same_process_does_not_nest_below_the_leaf() {
        assert_eq!(super::super::home_cgroup("/a/b/kiln-server"), "/a/b");
        assert_eq!(super::super::home_cgroup("/kiln-server"), "");
        assert_eq!(super::super::home_cgroup("/a/b"), "/a/b");
        assert_eq!(
            super::super::home_cgroup("/a/not-kiln-server"),
            "/a/not-kiln-server"
        );
        assert_eq!(super::super::home_cgroup(""), "");
    }
}
