//! What a container's `/proc` may change: only its own processes, as on the local backend
//! (`local::proc_seal`).
//!
//! The agent and the commands are uid 0 without capabilities, and procfs entries are
//! owned by uid 0: without a user namespace, `chmod` on a top-level entry (`/proc/version`)
//! succeeds and changes its mode for every procfs instance, the host's included, and
//! host-wide kernel state guarded only by "root-owned, 0644" (`dynamic_debug/control`,
//! `pressure/*`) is writable. Docker's defaults make only `/proc/{bus,fs,irq,sys,
//! sysrq-trigger}` read-only, so the container asks for more: every top-level entry that
//! is not per-process is bound read-only onto itself (`HostConfig.ReadonlyPaths`; a
//! read-only mount refuses `chmod` with `EROFS`), and the local backend's hidden list and
//! `/proc/cmdline` (the host's boot options) join Docker's masked paths. Both lists replace the engine's defaults, so they
//! include them.
//!
//! The entries are this machine's `/proc` plus a list of the kernel's known ones (an
//! engine elsewhere may run another kernel); the runtime skips a path its kernel lacks.

use std::sync::OnceLock;

use crate::local::proc_seal::{seal_for, EntryKind, Seal, HIDDEN};

/// The engine's own masked paths (moby `oci.DefaultLinuxSpec`), kept when the list is
/// replaced.
const ENGINE_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Host details no sandbox needs: the kernel's command line names the host's root device,
/// kernel image and boot options (the local backend binds a neutral one instead).
const HOST_DETAILS: &[&str] = &["/proc/cmdline"];

/// Top-level procfs entries of current kernels that belong to no process (per-process
/// directories and the `self`, `thread-self`, `mounts`, `net` links are left alone).
const KNOWN: &[&str] = &[
    "bootconfig",
    "buddyinfo",
    "bus",
    "cgroups",
    "cmdline",
    "config.gz",
    "consoles",
    "cpuinfo",
    "crypto",
    "devices",
    "diskstats",
    "dma",
    "driver",
    "dynamic_debug",
    "execdomains",
    "fb",
    "filesystems",
    "fs",
    "iomem",
    "ioports",
    "irq",
    "kallsyms",
    "key-users",
    "kmsg",
    "kpagecgroup",
    "kpagecount",
    "kpageflags",
    "loadavg",
    "lock_stat",
    "locks",
    "mdstat",
    "meminfo",
    "misc",
    "modules",
    "mpt",
    "mtrr",
    "pagetypeinfo",
    "partitions",
    "pressure",
    "schedstat",
    "slabinfo",
    "softirqs",
    "stat",
    "swaps",
    "sys",
    "sysrq-trigger",
    "sysvipc",
    "tty",
    "uptime",
    "version",
    "vmallocinfo",
    "vmcore",
    "vmstat",
    "zoneinfo",
];

/// The container's `MaskedPaths` and `ReadonlyPaths`, computed once.
pub(super) fn proc_paths() -> &'static (Vec<String>, Vec<String>) {
    static PATHS: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let local: Vec<(String, EntryKind)> = std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .filter_map(|entry| {
                        let entry = entry.ok()?;
                        let file_type = entry.file_type().ok()?;
                        let kind = if file_type.is_dir() {
                            EntryKind::Dir
                        } else if file_type.is_symlink() {
                            EntryKind::Symlink
                        } else {
                            EntryKind::File
                        };
                        Some((entry.file_name().to_string_lossy().into_owned(), kind))
                    })
                    .collect()
            })
            .unwrap_or_default();
        paths_for(&local)
    })
}

/// The lists for a `/proc` holding `local` (name, kind) plus the known entries.
fn paths_for(local: &[(String, EntryKind)]) -> (Vec<String>, Vec<String>) {
    let mut masked: Vec<String> = ENGINE_MASKED.iter().map(|p| p.to_string()).collect();
    masked.extend(HIDDEN.iter().map(|name| format!("/proc/{name}")));
    masked.extend(HOST_DETAILS.iter().map(|p| p.to_string()));
    masked.sort();
    masked.dedup();
    let known = KNOWN.iter().map(|name| (name.to_string(), EntryKind::File));
    let mut readonly: Vec<String> = local
        .iter()
        .cloned()
        .chain(known)
        .filter(|(name, kind)| seal_for(name, *kind) == Seal::ReadOnly)
        .map(|(name, _)| format!("/proc/{name}"))
        .filter(|path| !masked.contains(path))
        .collect();
    readonly.sort();
    readonly.dedup();
    (masked, readonly)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_state_is_read_only_and_processes_keep_their_view() {
        let local = [
            ("1".to_string(), EntryKind::Dir),
            ("self".to_string(), EntryKind::Symlink),
            ("mounts".to_string(), EntryKind::Symlink),
            ("version".to_string(), EntryKind::File),
            ("new_thing".to_string(), EntryKind::Dir),
            ("kcore".to_string(), EntryKind::File),
        ];
        let (masked, readonly) = paths_for(&local);
        for path in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/sysrq-trigger",
            "/proc/cmdline",
            "/sys/firmware",
        ] {
            assert!(masked.iter().any(|p| p == path), "{path} not masked");
        }
        // The engine's defaults stay read-only, and an entry only this kernel has is too.
        for path in [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/version",
            "/proc/pressure",
            "/proc/new_thing",
        ] {
            assert!(readonly.iter().any(|p| p == path), "{path} not read-only");
        }
        for path in [
            "/proc/1",
            "/proc/self",
            "/proc/mounts",
            "/proc/kcore",
            "/proc/cmdline",
        ] {
            assert!(!readonly.iter().any(|p| p == path), "{path} read-only");
        }
    }
}
