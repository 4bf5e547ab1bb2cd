//! What a sandbox's `/proc` may change: only its own processes.
//!
//! Sandbox processes are uid 0 without capabilities, and much host-wide kernel state in
//! `/proc` is guarded by nothing but "root-owned, 0644" (`kernel.core_pattern`,
//! `kernel.modprobe`, `vm.*`, `/proc/dynamic_debug/control`, `/proc/pressure/*`), or can
//! be made writable by its owner (`chmod` on a top-level entry changes the mode for
//! every procfs instance, the host's included). bubblewrap seals only `sysrq-trigger`,
//! `irq` and `bus`; its probe skips `/proc/sys`, which `access(W_OK)` reports read-only
//! to root. So every top-level entry that is not per-process is bound read-only onto
//! itself, and Docker's list of hardware and kernel internals is hidden.

use std::fs;
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::local::mount_namespace::{bind_read_only, mount_empty_read_only};

/// Hidden as under Docker: `/dev/null` over files, an empty read-only tmpfs over
/// directories.
pub(crate) const HIDDEN: &[&str] = &[
    "acpi",
    "asound",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "sysrq-trigger",
    "timer_list",
    "timer_stats",
];

/// The kind of a top-level `/proc` entry, as far as sealing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Dir,
    File,
    Symlink,
}

/// What happens to one top-level entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seal {
    /// A process's own view (`<pid>`, `self`, `thread-self`), or a symlink into it.
    Keep,
    /// Covered by an empty read-only tmpfs.
    HideDir,
    /// Covered by a read-only `/dev/null`.
    HideFile,
    /// Bound read-only onto itself, with everything below it.
    ReadOnly,
}

pub(crate) fn seal_for(name: &str, kind: EntryKind) -> Seal {
    let per_process = name == "self"
        || name == "thread-self"
        || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()));
    match kind {
        _ if per_process => Seal::Keep,
        // `mounts`, `net` and the like point into `self`.
        EntryKind::Symlink => Seal::Keep,
        EntryKind::Dir if HIDDEN.contains(&name) => Seal::HideDir,
        EntryKind::File if HIDDEN.contains(&name) => Seal::HideFile,
        EntryKind::Dir | EntryKind::File => Seal::ReadOnly,
    }
}

/// Seals `proc` (the sandbox's `/proc`; call it inside the sandbox's mount namespace).
pub fn seal_proc(proc: &Path) -> Result<()> {
    let entries = fs::read_dir(proc).map_err(|e| RuntimeError::io("cannot list", proc, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RuntimeError::io("cannot list", proc, e))?;
        let file_type = entry
            .file_type()
            .map_err(|e| RuntimeError::io("cannot stat", entry.path(), e))?;
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::File
        };
        let path = entry.path();
        match seal_for(&entry.file_name().to_string_lossy(), kind) {
            Seal::Keep => {}
            Seal::HideDir => mount_empty_read_only(&path)?,
            Seal::HideFile => bind_read_only(Path::new("/dev/null"), &path)?,
            Seal::ReadOnly => bind_read_only(&path, &path)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_keep_their_own_view_and_the_host_state_is_sealed() {
        use EntryKind::*;
        for (name, kind, seal) in [
            ("1", Dir, Seal::Keep),
            ("4242", Dir, Seal::Keep),
            ("self", Symlink, Seal::Keep),
            ("thread-self", Symlink, Seal::Keep),
            ("mounts", Symlink, Seal::Keep),
            ("net", Symlink, Seal::Keep),
            ("sys", Dir, Seal::ReadOnly),
            ("pressure", Dir, Seal::ReadOnly),
            ("dynamic_debug", Dir, Seal::ReadOnly),
            ("version", File, Seal::ReadOnly),
            ("1a", Dir, Seal::ReadOnly),
            ("acpi", Dir, Seal::HideDir),
            ("scsi", Dir, Seal::HideDir),
            ("kcore", File, Seal::HideFile),
            ("sysrq-trigger", File, Seal::HideFile),
            ("timer_list", File, Seal::HideFile),
        ] {
            assert_eq!(seal_for(name, kind), seal, "{name}");
        }
    }
}
