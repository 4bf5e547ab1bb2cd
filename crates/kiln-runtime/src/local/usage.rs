//! What a sandbox has used so far, read from its cgroup (v1 or v2 file names, whichever
//! exist) and from its disk.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::local::cgroup::SandboxCgroup;
use crate::local::{disk, quota};
use crate::spec::ResourceUsage;

/// Reads the usage of a sandbox with `cgroup`; `disk` is its mounted disk, when limited.
pub fn read(cgroup: &SandboxCgroup, disk: Option<&Path>) -> ResourceUsage {
    let mut usage = ResourceUsage {
        // A project quota's charge, else the used space of the sandbox's own filesystem.
        disk_used_bytes: disk
            .and_then(|d| quota::used_bytes(d).or_else(|| disk::space(d).map(|(_, used)| used))),
        ..ResourceUsage::default()
    };
    for dir in &cgroup.dirs {
        let number = |name: &str| -> Option<u64> {
            fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
        };
        if usage.cpu_time.is_none() {
            usage.cpu_time = fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|stat| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse().ok())
                })
                .map(Duration::from_micros)
                .or_else(|| number("cpuacct.usage").map(Duration::from_nanos));
        }
        if usage.memory_peak_bytes.is_none() {
            usage.memory_peak_bytes =
                number("memory.peak").or_else(|| number("memory.max_usage_in_bytes"));
        }
        if usage.pids.is_none() {
            usage.pids = number("pids.current");
        }
    }
    usage
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_and_v1_names() {
        let v2 = tempfile::tempdir().unwrap();
        fs::write(
            v2.path().join("cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\n",
        )
        .unwrap();
        fs::write(v2.path().join("memory.peak"), "52428800\n").unwrap();
        fs::write(v2.path().join("pids.current"), "3\n").unwrap();
        let usage = read(
            &SandboxCgroup {
                dirs: vec![v2.path().to_path_buf()],
            },
            None,
        );
        assert_eq!(
            usage,
            ResourceUsage {
                cpu_time: Some(Duration::from_millis(1500)),
                memory_peak_bytes: Some(50 << 20),
                disk_used_bytes: None,
                pids: Some(3),
                disk_limit_bytes: None,
            }
        );

        // v1: one directory per hierarchy; cpuacct may be missing entirely.
        let (memory, pids) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(memory.path().join("memory.max_usage_in_bytes"), "4096\n").unwrap();
        fs::write(pids.path().join("pids.current"), "7\n").unwrap();
        let usage = read(
            &SandboxCgroup {
                dirs: vec![memory.path().to_path_buf(), pids.path().to_path_buf()],
            },
            Some(memory.path()),
        );
        assert_eq!(usage.cpu_time, None);
        assert_eq!(usage.memory_peak_bytes, Some(4096));
        assert_eq!(usage.pids, Some(7));
        assert!(usage.disk_used_bytes.is_some(), "statvfs of a directory");
    }
}
