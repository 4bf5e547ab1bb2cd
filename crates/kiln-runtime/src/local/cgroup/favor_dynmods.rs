//! Cheap cgroup migrations: the cgroup2 mount option `favordynmods`.
//!
//! Every sandbox start moves bubblewrap into the sandbox's cgroup (it writes `0` to
//! `cgroup.procs` between fork and exec). By default the kernel guards that move with a
//! global per-CPU rwsem whose writer waits out an RCU grace period: on an idle 2-core host
//! one move took 5–11 ms (p50 6.5 ms), two thirds of a bubblewrap launch, and the wait
//! returns whenever creates are a few tens of milliseconds apart. With `favordynmods` the
//! move takes ≈ 0.1 ms; in exchange every fork and exit on the host takes the rwsem's
//! slower shared path (an atomic instead of a per-CPU counter). The option is the kernel's
//! own answer for hosts that create and fill cgroups all the time (Linux ≥ 6.0,
//! `Documentation/admin-guide/cgroup-v2.rst`); on some kernels it cannot be turned off
//! again until a reboot.
//!
//! It is a flag of the cgroup2 superblock, set by remounting it with the options it has
//! plus `favordynmods`. It speeds up moves in v1 hierarchies as well (the rwsem is
//! shared), so hybrid hosts get it through their `unified` mount.

use std::fs;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};

use crate::local::overlay::unescape_mountinfo;

/// What [`enable`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FavorDynmods {
    /// As asked before (by the host, or an earlier start).
    Unchanged(PathBuf),
    /// Changed now, on this mount.
    Changed(PathBuf),
    /// No cgroup2 hierarchy is mounted (a v1-only host): nothing to set.
    NoCgroup2,
    /// The remount was refused (e.g. not root in the initial namespaces).
    Refused(PathBuf, String),
}

/// Sets `favordynmods` on the first cgroup2 mount, keeping its other options.
pub fn enable() -> FavorDynmods {
    set(true)
}

/// Sets (`on`) or clears `favordynmods` on the first cgroup2 mount, keeping its other
/// options. (Clearing is for tests: where the kernel keeps it, the mount shows it off and
/// moves stay fast.)
pub fn set(on: bool) -> FavorDynmods {
    let Some(mount_line) = Cgroup2Mount::first() else {
        return FavorDynmods::NoCgroup2;
    };
    if mount_line.has_favordynmods() == on {
        return FavorDynmods::Unchanged(mount_line.point);
    }
    let (flags, data) = mount_line.remount_args(on);
    match mount(
        None::<&str>,
        mount_line.point.as_path(),
        Some("cgroup2"),
        flags,
        Some(data.as_str()),
    ) {
        Ok(()) => FavorDynmods::Changed(mount_line.point),
        Err(errno) => FavorDynmods::Refused(mount_line.point, errno.desc().to_string()),
    }
}

/// Whether the first cgroup2 mount has `favordynmods` now (`None`: there is none).
pub fn is_on() -> Option<bool> {
    Cgroup2Mount::first().map(|m| m.has_favordynmods())
}

/// One cgroup2 line of mountinfo: where, with which per-mount and superblock options.
#[derive(Debug)]
struct Cgroup2Mount {
    point: PathBuf,
    mount_options: String,
    super_options: String,
}

impl Cgroup2Mount {
    /// This process's first cgroup2 mount.
    fn first() -> Option<Self> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines().find_map(Self::parse)
    }

    fn parse(line: &str) -> Option<Self> {
        let (left, right) = line.split_once(" - ")?;
        let mut left = left.split_whitespace();
        let point = left.nth(4)?;
        let mount_options = left.next()?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup2" {
            return None;
        }
        let super_options = right.nth(1).unwrap_or_default();
        Some(Cgroup2Mount {
            point: PathBuf::from(unescape_mountinfo(point)),
            mount_options: mount_options.to_string(),
            super_options: super_options.to_string(),
        })
    }

    fn has_favordynmods(&self) -> bool {
        self.super_options.split(',').any(|o| o == "favordynmods")
    }

    /// The flags and data of a remount that changes nothing but `favordynmods` (on or
    /// off): a remount replaces the mount's flags (so `nosuid`, `nodev`, `noexec` must be
    /// passed again) and the superblock's cgroup2 options (so `nsdelegate` and the others
    /// must too).
    fn remount_args(&self, on: bool) -> (MsFlags, String) {
        let mut flags = MsFlags::MS_REMOUNT;
        for option in self.mount_options.split(',') {
            flags |= match option {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
        let mut data: Vec<&str> = self
            .super_options
            .split(',')
            .filter(|o| !o.is_empty() && !["rw", "ro", "favordynmods"].contains(o))
            .collect();
        if on {
            data.push("favordynmods");
        }
        (flags, data.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remount_keeps_the_mount_flags_and_the_cgroup2_options() {
        let line = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        let found = Cgroup2Mount::parse(line).expect("a cgroup2 line");
        assert_eq!(found.point, PathBuf::from("/sys/fs/cgroup"));
        assert!(!found.has_favordynmods());
        let (flags, data) = found.remount_args(true);
        assert_eq!(
            flags,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME
        );
        assert_eq!(data, "nsdelegate,memory_recursiveprot,favordynmods");
    }

    #[test]
    fn only_cgroup2_lines_count_and_the_flag_is_seen() {
        assert!(Cgroup2Mount::parse(
            "36 24 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids"
        )
        .is_none());
        assert!(Cgroup2Mount::parse("garbage").is_none());
        let on = Cgroup2Mount::parse(
            r"30 25 0:27 / /sys/fs/cgroup/uni\040fied rw,relatime - cgroup2 cgroup2 rw,favordynmods",
        )
        .expect("a cgroup2 line");
        assert!(on.has_favordynmods());
        assert_eq!(on.point, PathBuf::from("/sys/fs/cgroup/uni fied"));
        let (flags, data) = on.remount_args(false);
        assert_eq!(flags, MsFlags::MS_REMOUNT | MsFlags::MS_RELATIME);
        assert_eq!(data, "");
    }
}
