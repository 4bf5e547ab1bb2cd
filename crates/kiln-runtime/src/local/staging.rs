//! What the host hands every sandbox, kept where its path says nothing about the host.
//!
//! `/proc/self/mountinfo` shows, for every bind mount, the source's path within its
//! filesystem. So the agent binary and the neutral `/proc/cmdline` are bound from the
//! short directory (`/run/kiln`, a tmpfs on most hosts; files named by content, not by
//! data directory), and each sandbox's socket directory is a small tmpfs of its own.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::mount::{mount, MsFlags};

use crate::error::{Result, RuntimeError};
use crate::local::cgroup::fnv1a;

/// What a sandbox reads as `/proc/cmdline` instead of the host's (which names the
/// host's root device, kernel image and boot options).
pub const NEUTRAL_CMDLINE: &str = "ro quiet\n";

/// Host files bound into every sandbox.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The agent binary.
    pub agent: PathBuf,
    /// Bound over `/proc/cmdline`.
    pub cmdline: PathBuf,
}

/// `/run/kiln` (or `/tmp/kiln-run` where there is no `/run`), private to root.
pub fn short_dir() -> Result<PathBuf> {
    let dir = if Path::new("/run").is_dir() {
        Path::new("/run/kiln")
    } else {
        Path::new("/tmp/kiln-run")
    };
    fs::create_dir_all(dir).map_err(|e| RuntimeError::io("cannot create", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| RuntimeError::io("cannot chmod", dir, e))?;
    Ok(dir.to_path_buf())
}

/// Copies the agent into the short directory under a name derived from its content
/// (atomically, only when absent), so rebuilding the agent never changes the binary
/// under running sandboxes, and writes the neutral command line next to it.
pub fn stage(agent_source: &Path) -> Result<Staged> {
    let dir = short_dir()?;
    let bytes = fs::read(agent_source).map_err(|e| match e.kind() {
        ErrorKind::NotFound => RuntimeError::HostNotReady(format!(
            "agent binary {} not found (build it with scripts/build-agent.sh)",
            agent_source.display()
        )),
        _ => RuntimeError::io("cannot read", agent_source, e),
    })?;
    let agent = dir.join(format!("agent-{:016x}", fnv1a(&bytes)));
    if fs::read(&agent).ok().as_deref() != Some(bytes.as_slice()) {
        replace_shared_file(&agent, &bytes, 0o755)?;
    }
    let cmdline = dir.join("cmdline");
    if fs::read(&cmdline).ok().as_deref() != Some(NEUTRAL_CMDLINE.as_bytes()) {
        replace_shared_file(&cmdline, NEUTRAL_CMDLINE.as_bytes(), 0o444)?;
    }
    Ok(Staged { agent, cmdline })
}

/// Writes `path` atomically. Several runtimes (one per test, in threads) may stage the
/// same file at once: each writes its own temporary file, so a rename can never publish
/// a file another writer is still filling.
fn replace_shared_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{unique}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| RuntimeError::io("cannot write", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(|e| RuntimeError::io("cannot chmod", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RuntimeError::io("cannot rename", path, e))
}

/// Mounts a tmpfs just big enough for the agent's socket on a sandbox's run directory.
pub fn mount_run_dir(dir: &Path) -> Result<()> {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=16k,nr_inodes=16,mode=0700"),
    )
    .map_err(|source| RuntimeError::Mount {
        what: "cannot mount the socket directory on",
        path: dir.to_path_buf(),
        source,
    })
}
