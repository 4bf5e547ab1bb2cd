//! The Docker backend's disk limit and admission, as on the local backend.
//!
//! **Disk.** The engine bounds a container's writable layer itself when its storage can
//! (`overlay2` on XFS mounted with `pquota`: `HostConfig.storage_opt {"size": …}`, a
//! project quota per container). Whether it can is learnt from the engine (`docker
//! info`: driver and backing filesystem) and, for sure, from the first limited create: an
//! engine that refuses `storage_opt` marks the disk limit unsupported, which is logged
//! once and shown in the host report (`disk limits: unsupported`), and that create and
//! every later one runs without it (the disk is then bounded only by the engine's data
//! root). Admission still counts disk limits.
//!
//! **Admission** is `local::admission`'s: memory limits against the engine's memory
//! (`MemTotal` of `docker info`, minus an eighth, at least 1 GiB; or
//! `runtime.memory_budget_mib`) × `memory_overcommit`, disk limits against the free space
//! of the engine's data root when it is on this machine × `disk_overcommit` (else
//! unbounded: a remote engine's disk is not ours to see).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use bollard::Docker;

use crate::error::Result;
use crate::local::admission::{Admission, Budget};
use crate::runtime::NodeCapacity;
use crate::spec::{Limits, SandboxId};

const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

/// Whether the engine enforces a container's disk limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLimitSupport {
    /// Not known until the engine answered (or the first limited create).
    Unknown,
    /// `storage_opt size` works.
    Supported,
    /// The engine's storage cannot; limits are not enforced.
    Unsupported,
}

/// Limits held against the engine's budget, and what the engine can enforce.
#[derive(Debug)]
pub(super) struct DockerLimits {
    admission: Admission,
    /// A configured memory budget (else learnt from the engine).
    configured_memory: bool,
    disk: AtomicU8,
    /// Why the disk limit is unsupported, for the host report.
    why: std::sync::Mutex<String>,
    warned: AtomicBool,
    /// Free space of the engine's data root (`u64::MAX` when not on this machine).
    disk_space: AtomicU64,
    data_root: std::sync::Mutex<Option<std::path::PathBuf>>,
}

impl DockerLimits {
    pub fn new(memory_budget: Option<u64>, memory_overcommit: f64, disk_overcommit: f64) -> Self {
        DockerLimits {
            admission: Admission::new(Budget {
                // Until the engine says how much it has: the configured budget, else
                // nothing is refused for memory.
                memory_bytes: memory_budget.unwrap_or(u64::MAX),
                memory_overcommit,
                disk_overcommit,
            }),
            configured_memory: memory_budget.is_some(),
            disk: AtomicU8::new(UNKNOWN),
            why: std::sync::Mutex::new(String::new()),
            warned: AtomicBool::new(false),
            disk_space: AtomicU64::new(u64::MAX),
            data_root: std::sync::Mutex::new(None),
        }
    }

    /// Learns the engine's memory, storage driver and data root (`docker info`).
    pub async fn learn(&self, docker: &Docker) {
        let Ok(info) = docker.info().await else {
            return;
        };
        if !self.configured_memory {
            if let Some(total) = info.mem_total.and_then(|m| u64::try_from(m).ok()) {
                let reserve = (total / 8).max(1 << 30);
                self.admission
                    .set_memory_budget(total.saturating_sub(reserve).max(256 << 20));
            }
        }
        let driver = info.driver.unwrap_or_default();
        let backing: HashMap<String, String> = info
            .driver_status
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                let mut kv = kv.into_iter();
                Some((kv.next()?, kv.next()?))
            })
            .collect();
        let fs = backing
            .get("Backing Filesystem")
            .cloned()
            .unwrap_or_default();
        if driver != "overlay2" || fs != "xfs" {
            self.mark_unsupported(&format!(
                "the engine's storage is {driver} on {} (a disk limit needs overlay2 on XFS \
                 mounted with pquota)",
                if fs.is_empty() { "?" } else { &fs }
            ));
        }
        if let Some(root) = info.docker_root_dir.map(std::path::PathBuf::from) {
            if root.is_dir() {
                *self.data_root.lock().unwrap_or_else(|p| p.into_inner()) = Some(root);
            }
        }
    }

    /// The disk size to ask the engine for, if it may enforce one.
    pub fn storage_opt(&self, limits: &Limits) -> Option<HashMap<String, String>> {
        let bytes = limits.disk_bytes?;
        (self.disk.load(Ordering::Acquire) != UNSUPPORTED)
            .then(|| HashMap::from([("size".to_string(), bytes.to_string())]))
    }

    /// Whether an engine error says it cannot limit a container's disk.
    pub fn refuses_storage_opt(message: &str) -> bool {
        let m = message.to_ascii_lowercase();
        m.contains("storage-opt") || m.contains("storage_opt") || m.contains("storageopt")
    }

    pub fn mark_supported(&self) {
        let _ = self
            .disk
            .compare_exchange(UNKNOWN, SUPPORTED, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn mark_unsupported(&self, why: &str) {
        self.disk.store(UNSUPPORTED, Ordering::Release);
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why.to_string();
        if !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                reason = why,
                "the Docker engine cannot limit sandboxes' disk: limits are not enforced"
            );
        }
    }

    pub fn disk_support(&self) -> (DiskLimitSupport, String) {
        let why = self.why.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let support = match self.disk.load(Ordering::Acquire) {
            SUPPORTED => DiskLimitSupport::Supported,
            UNSUPPORTED => DiskLimitSupport::Unsupported,
            _ => DiskLimitSupport::Unknown,
        };
        (support, why)
    }

    fn space(&self) -> u64 {
        let root = self
            .data_root
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let space = root.as_deref().and_then(free_space).unwrap_or(u64::MAX);
        self.disk_space.store(space, Ordering::Relaxed);
        space
    }

    pub fn reserve(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        self.admission.reserve(id, limits, self.space())
    }

    pub fn claim(&self, id: &SandboxId, limits: &Limits) -> Result<()> {
        self.admission.claim(id, limits, self.space())
    }

    pub fn adopt(&self, id: &SandboxId, limits: &Limits) {
        self.admission.adopt(id, limits);
    }

    pub fn release(&self, id: &SandboxId) {
        self.admission.release(id);
    }

    pub fn capacity(&self) -> NodeCapacity {
        self.admission.capacity(self.space())
    }
}

fn free_space(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_refusing_storage_opt_is_recognised() {
        assert!(DockerLimits::refuses_storage_opt(
            "Error response from daemon: --storage-opt is supported only for overlay over \
             xfs with 'pquota' mount option"
        ));
        assert!(!DockerLimits::refuses_storage_opt("No such image: busybox"));
    }

    #[test]
    fn unsupported_disk_limits_are_not_asked_for() {
        let limits = DockerLimits::new(Some(1 << 30), 1.0, 1.0);
        let disk = Limits {
            disk_bytes: Some(64 << 20),
            ..Limits::default()
        };
        assert_eq!(
            limits.storage_opt(&disk),
            Some(HashMap::from([("size".into(), (64u64 << 20).to_string())]))
        );
        limits.mark_unsupported("test");
        assert_eq!(limits.storage_opt(&disk), None);
        assert_eq!(limits.disk_support().0, DiskLimitSupport::Unsupported);
    }
}
