//! Nodes on one data directory: which process owns which sandboxes.
//!
//! A **node** is one process running sandboxes from its own runtime root. The data
//! directory's own node (`kiln serve`) has a lasting id (`<data-dir>/node-id`) and the root
//! `<data-dir>/runtime`; a one-off process beside it (`kiln datasets validate`) gets an
//! **ephemeral** node, `<data-dir>/nodes/<id>/` with the root `…/runtime` and a lease: an
//! exclusive `flock` on `…/lease`, held as long as the process lives (the kernel drops it
//! when the process dies, `kill -9` included). Sessions record their node (migration
//! 0015), recovery and shutdown act only on their own node's sandboxes, and an ephemeral
//! node whose lease anyone can take is dead: the next process to start reclaims it.
//! Issue 12's node registry replaces the lease with heartbeats in PostgreSQL; the id
//! stays the same (ARCHITECTURE.md, "Nodes on one data directory").

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Where ephemeral nodes live under a data directory.
const NODES_DIR: &str = "nodes";
const LEASE_FILE: &str = "lease";
const PRIMARY_ID_FILE: &str = "node-id";

/// A node this process is, for as long as this value lives.
#[derive(Debug)]
pub struct NodeLease {
    id: String,
    runtime_root: PathBuf,
    /// The ephemeral node's directory and lease; `None` for the data directory's own node.
    ephemeral: Option<(PathBuf, Flock<File>)>,
}

impl NodeLease {
    /// The data directory's own node: its id, made once and kept in `<data-dir>/node-id`.
    pub fn primary(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(PRIMARY_ID_FILE);
        let id = match fs::read_to_string(&path) {
            Ok(text) if valid_id(text.trim()) => text.trim().to_string(),
            Ok(_) => write_id(&path)?,
            Err(e) if e.kind() == ErrorKind::NotFound => write_id(&path)?,
            Err(e) => return Err(e),
        };
        Ok(Self {
            id,
            runtime_root: data_dir.join("runtime"),
            ephemeral: None,
        })
    }

    /// A node of its own for a one-off process: `<data-dir>/nodes/<label>-<random>/`,
    /// leased until this value is dropped ([`NodeLease::retire`] also removes it).
    pub fn ephemeral(data_dir: &Path, label: &str) -> std::io::Result<Self> {
        let id = format!("{label}-{}", random_hex()?);
        if !valid_id(&id) {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                format!("{id:?} is not a node id"),
            ));
        }
        let dir = data_dir.join(NODES_DIR).join(&id);
        fs::create_dir_all(&dir)?;
        let lease = try_lease(&dir)?.ok_or_else(|| {
            std::io::Error::new(ErrorKind::WouldBlock, "a fresh node's lease is taken")
        })?;
        Ok(Self {
            id,
            runtime_root: dir.join("runtime"),
            ephemeral: Some((dir, lease)),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this is the data directory's own node (which also owns sessions stored
    /// before nodes existed, `node_id` NULL).
    pub fn is_primary(&self) -> bool {
        self.ephemeral.is_none()
    }

    /// The root its runtime keeps its sandboxes under.
    pub fn runtime_root(&self) -> &Path {
        &self.runtime_root
    }

    /// Removes an ephemeral node's directory (call after its runtime's shutdown), then
    /// lets the lease go. Nothing for the data directory's own node.
    pub fn retire(self) {
        if let Some((dir, lease)) = self.ephemeral {
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a node's directory");
            }
            drop(lease);
        }
    }
}

/// An ephemeral node whose process is gone, leased by the caller while it reclaims it.
#[derive(Debug)]
pub struct DeadNode {
    pub id: String,
    dir: PathBuf,
    _lease: Flock<File>,
}

impl DeadNode {
    /// The root its runtime kept its sandboxes under.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("runtime")
    }

    /// Removes what is left of it (after its sandboxes are torn down).
    pub fn remove(self) -> std::io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Every ephemeral node of `data_dir` whose lease nobody holds (its process ended), other
/// than `except`. Each is leased to the caller, so two processes never reclaim one node.
pub fn dead_nodes(data_dir: &Path, except: &str) -> Vec<DeadNode> {
    let Ok(entries) = fs::read_dir(data_dir.join(NODES_DIR)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let id = entry.file_name().to_str()?.to_string();
            if id == except || !valid_id(&id) || !entry.path().is_dir() {
                return None;
            }
            match try_lease(&entry.path()) {
                Ok(Some(lease)) => Some(DeadNode {
                    id,
                    dir: entry.path(),
                    _lease: lease,
                }),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "cannot check a node's lease");
                    None
                }
            }
        })
        .collect()
}

/// Every runtime root under `data_dir`: the data directory's own node's and each
/// ephemeral node's, live or dead (what an image store must not delete layers under).
pub fn runtime_roots(data_dir: &Path) -> Vec<PathBuf> {
    let mut roots = vec![data_dir.join("runtime")];
    if let Ok(entries) = fs::read_dir(data_dir.join(NODES_DIR)) {
        roots.extend(entries.flatten().map(|e| e.path().join("runtime")));
    }
    roots
}

fn try_lease(dir: &Path) -> std::io::Result<Option<Flock<File>>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LEASE_FILE))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lease) => Ok(Some(lease)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno.into()),
    }
}

/// Ids are file names and sandbox-id-like: short, `[a-z0-9-]`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 48
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 6];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_id(path: &Path) -> std::io::Result<String> {
    let id = format!("node-{}", random_hex()?);
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{id}\n"))?;
    fs::rename(&tmp, path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lease_is_not_dead_and_a_dropped_one_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = NodeLease::ephemeral(dir.path(), "validate").expect("lease");
        assert!(!live.is_primary());
        assert!(
            dead_nodes(dir.path(), "").is_empty(),
            "held by this process"
        );
        let id = live.id().to_string();
        drop(live);
        let dead = dead_nodes(dir.path(), "");
        assert_eq!(dead.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [id]);
        assert!(
            dead_nodes(dir.path(), "").is_empty(),
            "leased by the reclaimer"
        );
        for d in dead {
            d.remove().expect("remove");
        }
        assert!(dead_nodes(dir.path(), "").is_empty());
    }

    #[test]
    fn the_primary_id_lasts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = NodeLease::primary(dir.path()).expect("primary");
        let again = NodeLease::primary(dir.path()).expect("primary");
        assert_eq!(first.id(), again.id());
        assert!(first.is_primary());
        assert_eq!(first.runtime_root(), dir.path().join("runtime"));
        assert_eq!(runtime_roots(dir.path()), [dir.path().join("runtime")]);
    }
}
