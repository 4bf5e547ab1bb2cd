//! Removing every trace of a sandbox: processes, mounts, directories, cgroup. Each step
//! tolerates what an earlier, interrupted teardown already removed.

use std::fs;
use std::io::ErrorKind;

use crate::error::{Result, RuntimeError};
use crate::local::cgroup::{CgroupBackend, SandboxCgroup};
use crate::local::layout::SandboxDirs;
use crate::local::overlay;

/// Kills, unmounts, removes. Blocking: run it off the async threads.
pub fn teardown(
    cgroups: &dyn CgroupBackend,
    cgroup: &SandboxCgroup,
    dirs: &SandboxDirs,
) -> Result<()> {
    // Processes first: nothing may hold the mounts or write into the directories.
    cgroups.kill_all(cgroup)?;
    // Deepest mounts first (anything under the sandbox directory, then the root).
    for mount in overlay::mounts_under(&dirs.base) {
        overlay::unmount(&mount)?;
    }
    match fs::remove_dir_all(&dirs.base) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::io("cannot remove", &dirs.base, e)),
    }
    cgroup.remove()
}
