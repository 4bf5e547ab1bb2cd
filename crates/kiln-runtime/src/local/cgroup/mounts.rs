//! Where the cgroup hierarchies are mounted, which cgroup this process is in, and whether
//! the controllers sandboxes need were delegated to it.

use std::fs;
use std::path::{Path, PathBuf};

use super::{CgroupVersion, NEEDED, SERVER_LEAF};

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Default)]
pub struct CgroupMounts {
    pub(crate) v1: Vec<(Vec<String>, PathBuf)>,
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

/// How to give the server the controllers it needs.
pub const DELEGATE_FIX: &str =
    "run Kiln in a delegated cgroup (systemd: Delegate=yes in its service unit)";

/// What is wrong, if anything, with v2 `cgroup` (relative to `root`) as the home of
/// sandbox cgroups: the controllers must be available in it (enabled by its parent).
pub fn v2_controller_problem(root: &Path, cgroup: &str) -> Option<String> {
    let dir = root.join(cgroup.trim_start_matches('/'));
    let have = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let have: Vec<&str> = have.split_whitespace().collect();
    if NEEDED.iter().all(|n| have.contains(n)) {
        return None;
    }
    let shown = if cgroup.is_empty() { "/" } else { cgroup };
    Some(format!(
        "the controllers {} are not available in the server's cgroup {shown} (it has: {})",
        NEEDED.join(", "),
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(" ")
        }
    ))
}

/// The v2 cgroup this process was given: its own, without the leaf a runtime in this
/// process may already have moved it into (a second runtime must not nest below it).
pub fn home_cgroup(own: &str) -> &str {
    own.strip_suffix(SERVER_LEAF)
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or(own)
}

/// This process's v2 cgroup, its home (see `home_cgroup`).
pub fn own_home_cgroup() -> String {
    home_cgroup(&own_cgroup(None)).to_string()
}

/// This process's cgroup path in the v1 hierarchy of `controller`, or the v2 one.
pub(crate) fn own_cgroup(controller: Option<&str>) -> String {
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
