//! Removing every trace of a sandbox: processes, mounts, disk, directories, cgroup. Each step
//! tolerates what an earlier, interrupted teardown already removed.

use std::fs;
use std::io::ErrorKind;

use crate::error::{Result, RuntimeError};
use crate::local::cgroup::{CgroupBackend, SandboxCgroup};
use crate::local::layout::SandboxDirs;
use crate::local::{overlay, quota};

/// Kills, unmounts, removes. Blocking: run it off the async threads.
pub fn teardown(
    cgroups: &dyn CgroupBackend,
    cgroup: &SandboxCgroup,
    dirs: &SandboxDirs,
) -> Result<()> {
    // Processes first: nothing may hold the mounts or write into the directories.
    cgroups.kill_all(cgroup)?;
    // Deepest mounts first (anything under the sandbox directory, then the root); the
    // disk last, as the overlay on top of it uses it. Its loop device detaches itself
    // (autoclear) once unmounted.
    let (disk, others): (Vec<_>, Vec<_>) = overlay::mounts_under(&dirs.base)
        .into_iter()
        .partition(|m| *m == dirs.disk);
    for mount in others.iter().chain(&disk) {
        overlay::unmount(mount)?;
    }
    // A project quota's limits are cleared before its files go: once they are gone the
    // id is free for another sandbox (`quota.rs`), and a crash in between leaves a
    // directory the next reconcile removes, never limits on someone else's files.
    quota::release(&dirs.disk);
    match fs::remove_dir_all(&dirs.base) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::io("cannot remove", &dirs.base, e)),
    }
    cgroup.remove()
}
