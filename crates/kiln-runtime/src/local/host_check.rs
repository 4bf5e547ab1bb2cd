//! Can this host run local sandboxes? Each check says what it found and, when it fails,
//! how to fix it.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::host_report::HostReport;
use crate::local::cgroup::{
    own_home_cgroup, v2_controller_problem, CgroupMounts, CgroupVersion, DELEGATE_FIX, NEEDED,
};
use crate::local::LocalConfig;

/// Checks what the local backend needs: root, overlayfs, cgroups, bubblewrap, the agent.
pub fn check_host(config: &LocalConfig) -> HostReport {
    let mut report = HostReport::default();
    let root = nix::unistd::geteuid().is_root();
    report.push(
        "root",
        root,
        if root {
            "running as root".into()
        } else {
            "not root".into()
        },
        "run the server as root (the local backend mounts overlayfs and manages cgroups)",
    );

    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"));
    report.push(
        "overlayfs",
        overlay,
        if overlay {
            "overlay in /proc/filesystems".into()
        } else {
            "not available".into()
        },
        "load the overlay module: modprobe overlay",
    );

    let home = match &config.cgroup_parent {
        Some(_) => String::new(),
        None => own_home_cgroup(),
    };
    let (ok, detail, fix) = check_cgroups(&CgroupMounts::read(), &home);
    report.push("cgroups", ok, detail, fix);

    let bwrap = Command::new(&config.bwrap).arg("--version").output();
    let (ok, detail) = match bwrap {
        Ok(out) if out.status.success() => (
            true,
            format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stdout).trim(),
                config.bwrap.display()
            ),
        ),
        Ok(out) => (
            false,
            format!("{} failed: {}", config.bwrap.display(), out.status),
        ),
        Err(e) => (false, format!("{}: {e}", config.bwrap.display())),
    };
    report.push(
        "bubblewrap",
        ok,
        detail,
        "install bubblewrap: apt-get install bubblewrap",
    );

    let (ok, detail) = check_agent(&config.agent_binary);
    report.push(
        "agent",
        ok,
        detail,
        "build the static agent with scripts/build-agent.sh and point the runtime at it",
    );

    if config.default_disk_bytes.is_some() {
        let (ok, detail, fix) = check_disk_limits(config);
        report.push("disk limits", ok, detail, fix);
    }

    let writable = fs::create_dir_all(&config.root).is_ok() && tempfile_probe(&config.root);
    report.push(
        "runtime root",
        writable,
        config.root.display().to_string(),
        "make the runtime root a writable local directory (not NFS)",
    );
    report
}

/// The controllers sandboxes need. On v2 they must be available in `home`, the server's
/// own cgroup (relative to the hierarchy's root, `""` for the root or a configured parent):
/// a systemd service without `Delegate=yes` sits in a cgroup without them even when the
/// root has them all, and the server must not take them from its ancestors itself.
fn check_cgroups(mounts: &CgroupMounts, home: &str) -> (bool, String, &'static str) {
    const MOUNT_FIX: &str =
        "mount cgroup v2 at /sys/fs/cgroup with memory, pids and cpu enabled (or the v1 controllers)";
    let (version, controllers) = mounts.controllers();
    match (version, &mounts.v2) {
        (Some(CgroupVersion::V2), Some(root)) => match v2_controller_problem(root, home) {
            Some(problem) => (false, format!("cgroup v2: {problem}"), DELEGATE_FIX),
            None => (
                true,
                format!(
                    "cgroup v2: {} in the server's cgroup {}",
                    NEEDED.join(" "),
                    if home.is_empty() { "/" } else { home }
                ),
                MOUNT_FIX,
            ),
        },
        (Some(CgroupVersion::V1), _) => {
            let have_all = NEEDED.iter().all(|n| controllers.iter().any(|c| c == n));
            (
                have_all,
                format!("cgroup v1: {}", controllers.join(" ")),
                MOUNT_FIX,
            )
        }
        _ => (false, "no cgroup controllers found".into(), MOUNT_FIX),
    }
}

fn tempfile_probe(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

/// The agent must exist, be executable and be static: sandboxes have no libc to lend it.
fn check_agent(path: &Path) -> (bool, String) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return (false, format!("{}: {e}", path.display())),
    };
    match elf_needs_interpreter(&bytes) {
        None => (
            false,
            format!("{} is not an x86_64 ELF executable", path.display()),
        ),
        Some(true) => (
            false,
            format!(
                "{} is dynamically linked (needs the sandbox's libc)",
                path.display()
            ),
        ),
        Some(false) => (true, format!("{} (static)", path.display())),
    }
}

/// `Some(true)` if the ELF64 file has a `PT_INTERP` program header (dynamic linking).
fn elf_needs_interpreter(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

/// Whether the configured `disk_limit_mode` can work here, and how limits are enforced.
fn check_disk_limits(config: &LocalConfig) -> (bool, String, &'static str) {
    use crate::local::{quota, DiskLimitMode};
    let root = &config.root;
    let _ = fs::create_dir_all(root);
    let loop_disk = || {
        let problem = crate::local::disk_limit_problem();
        (
            problem.is_none(),
            problem.unwrap_or_else(|| "loop disks (mkfs.ext4 and loop devices)".into()),
            "apt-get install e2fsprogs; modprobe loop ext4 (or set runtime.disk_mib = 0)",
        )
    };
    let quota_fix = "put the runtime root on XFS mounted with prjquota (or ext4 made with \
                     -O quota,project and mounted with prjquota), or set \
                     runtime.disk_limit_mode = \"loop_disk\"";
    match config.disk_limit_mode {
        DiskLimitMode::None => (true, "not enforced (disk_limit_mode = none)".into(), ""),
        DiskLimitMode::LoopDisk => loop_disk(),
        DiskLimitMode::ProjectQuota => match quota::problem(root) {
            None => (true, "project quotas".into(), quota_fix),
            Some(why) => (false, why, quota_fix),
        },
        DiskLimitMode::Auto => match quota::problem(root) {
            None => (true, "project quotas".into(), quota_fix),
            Some(_) => loop_disk(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_dynamic_from_static_elf() {
        // This test binary itself is dynamically linked (`/bin/sh` need not be).
        let exe = std::env::current_exe().expect("own path");
        let dynamic = fs::read(exe).unwrap_or_default();
        assert_eq!(elf_needs_interpreter(&dynamic), Some(true));
        assert_eq!(elf_needs_interpreter(b"#!/bin/sh\n"), None);
        if let Ok(busybox) = fs::read("/bin/busybox") {
            // Debian's busybox-static, when installed.
            assert_eq!(elf_needs_interpreter(&busybox), Some(false));
        }
    }

    /// A fake unified hierarchy: the root has every controller, the server's cgroup (a
    /// systemd service without `Delegate=yes`) none.
    #[test]
    fn an_undelegated_v2_cgroup_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let service = root.join("undelegated").join("kiln.service");
        fs::create_dir_all(&service).expect("mkdir");
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        fs::write(
            root.join("undelegated/cgroup.controllers"),
            "cpu memory pids\n",
        )
        .expect("write");
        fs::write(service.join("cgroup.controllers"), "\n").expect("write");
        let mounts = CgroupMounts {
            v2: Some(root.to_path_buf()),
            ..CgroupMounts::default()
        };
        let (ok, detail, fix) = check_cgroups(&mounts, "/undelegated/kiln.service");
        assert!(!ok);
        assert_eq!(
            detail,
            "cgroup v2: the controllers memory, pids, cpu are not available in the server's \
             cgroup /undelegated/kiln.service (it has: none)"
        );
        assert!(fix.contains("Delegate=yes"), "{fix}");
        let (ok, detail, _) = check_cgroups(&mounts, "/undelegated");
        assert!(ok, "{detail}");
        let (ok, detail, _) = check_cgroups(&mounts, "");
        assert!(ok, "{detail}");
    }
}
