//! cgroup v1: one directory per controller hierarchy (memory, pids, cpu and, when
//! mounted, freezer), each holding a directory per sandbox.

use std::fs;
use std::path::PathBuf;

use super::{
    await_frozen, make_dir, write_file, CgroupBackend, CgroupVersion, ParentBudget, SandboxCgroup,
    CPU_PERIOD_US, FREEZE_TIMEOUT,
};
use crate::error::{Result, RuntimeError};
use crate::spec::Limits;

/// cgroup v1: one directory per controller hierarchy.
#[derive(Debug)]
pub(super) struct CgroupV1 {
    /// (controller, parent directory of the sandbox cgroups); memory first.
    pub(super) hierarchies: Vec<(&'static str, PathBuf)>,
    pub(super) budget: ParentBudget,
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
        if let Some((_, parent)) = self.hierarchies.iter().find(|(c, _)| *c == "memory") {
            self.budget.ensure(|bytes| {
                // memsw (memory + swap) must stay ≥ the memory limit at every step.
                let memsw = parent.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write_file(&memsw, "-1")?;
                }
                write_file(&parent.join("memory.limit_in_bytes"), &bytes.to_string())?;
                if memsw.exists() {
                    write_file(&memsw, &bytes.to_string())?;
                }
                Ok(())
            })?;
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
            await_frozen(
                || fs::read_to_string(&state).unwrap_or_default().trim() == "FROZEN",
                || write_file(&state, "THAWED"),
                &state,
                FREEZE_TIMEOUT,
            )?;
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
        cgroup.wait_empty()
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
