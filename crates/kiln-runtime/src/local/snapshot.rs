//! Snapshots: a sandbox's upper directory, copied while its processes are frozen, becomes
//! a read-only layer that forks stack on top of the sandbox's own layers.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, RuntimeError};
use crate::local::resolve::SnapshotRecord;
use crate::local::sandbox::Sandbox;
use crate::local::{replace_file, LocalRuntime};
use crate::spec::{Snapshot, SnapshotId};

static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

impl LocalRuntime {
    pub(crate) async fn snapshot_sandbox(&self, sandbox: &Arc<Sandbox>) -> Result<Snapshot> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = SnapshotId::new(format!("{}-{nanos:x}{seq:x}", sandbox.spec.id))?;
        let layer = self.layers_dir().join(id.as_str());
        let tmp = self.layers_dir().join(format!("{id}.partial"));
        let cgroups = Arc::clone(&self.cgroups);
        let cgroup = sandbox.cgroup.clone();
        let upper = sandbox.dirs.upper.clone();
        let (layer_c, tmp_c) = (layer.clone(), tmp.clone());
        let size_bytes = tokio::task::spawn_blocking(move || -> Result<u64> {
            // Frozen, no process can write while the copy reads: the layer is one
            // consistent point in time. Thawed whatever the copy's outcome.
            cgroups.set_frozen(&cgroup, true)?;
            let copied = copy_tree(&upper, &tmp_c);
            let thawed = cgroups.set_frozen(&cgroup, false);
            copied.and(thawed)?;
            let size = tree_size(&tmp_c);
            fs::rename(&tmp_c, &layer_c)
                .map_err(|e| RuntimeError::io("cannot rename", &layer_c, e))?;
            Ok(size)
        })
        .await
        .map_err(|e| {
            RuntimeError::io("snapshot task failed for", &layer, std::io::Error::other(e))
        })?
        .inspect_err(|_| {
            let _ = fs::remove_dir_all(&tmp);
        })?;
        let record = SnapshotRecord {
            layers: sandbox.spec.layers.with_top(&layer).dirs().to_vec(),
            env: sandbox.spec.env.clone(),
            workdir: sandbox.spec.workdir.clone(),
            image: sandbox.spec.image.clone(),
        };
        let written = serde_json::to_vec(&record)
            .map_err(|e| std::io::Error::other(e.to_string()))
            .map_err(|e| RuntimeError::io("cannot encode the record of", &layer, e))
            .and_then(|json| replace_file(&self.snapshot_record_path(&id), &json, 0o600));
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&layer);
            return Err(e);
        }
        Ok(Snapshot {
            id,
            sandbox: sandbox.spec.id.clone(),
            size_bytes,
        })
    }

    /// The snapshot layers in the layers directory: each directory whose name is a
    /// snapshot id (a copy still being made is `<id>.partial`, which is none).
    pub(crate) async fn snapshot_layers_held(&self) -> Result<Vec<SnapshotId>> {
        let dir = self.layers_dir();
        tokio::task::spawn_blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(RuntimeError::io("cannot list", &dir, e)),
            };
            let mut held = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| RuntimeError::io("cannot list", &dir, e))?;
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let id = entry.file_name().to_str().map(SnapshotId::new);
                if let (true, Some(Ok(id))) = (is_dir, id) {
                    held.push(id);
                }
            }
            Ok(held)
        })
        .await
        .map_err(|e| RuntimeError::io("listing failed for", "layers", std::io::Error::other(e)))?
    }

    pub(crate) async fn remove_snapshot_layer(&self, snapshot_id: &SnapshotId) -> Result<()> {
        // The id's alphabet keeps both paths inside the layers directory.
        let layer = self.layers_dir().join(snapshot_id.as_str());
        let record = self.snapshot_record_path(snapshot_id);
        tokio::task::spawn_blocking(move || match fs::remove_dir_all(&layer) {
            Ok(()) => match fs::remove_file(&record) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    Err(RuntimeError::io("cannot remove", &record, e))
                }
                _ => Ok(()),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Err(RuntimeError::NotFound(format!(
                "snapshot {}",
                layer.display()
            ))),
            Err(e) => Err(RuntimeError::io("cannot remove", &layer, e)),
        })
        .await
        .map_err(|e| {
            RuntimeError::io(
                "snapshot removal failed for",
                snapshot_id.as_str(),
                std::io::Error::other(e),
            )
        })?
    }
}

/// The bytes a tree's files and symlinks hold (apparent sizes; hard links counted once
/// per name, which overstates rather than hides). Unreadable entries count as nothing.
fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Copies a directory tree with everything overlayfs cares about: owners, modes,
/// timestamps, xattrs (opaque directories), whiteouts (0:0 character devices), hard
/// links. `cp -a` does all of it and reflinks where the filesystem can.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let mut source = from.as_os_str().to_owned();
    source.push("/.");
    fs::create_dir(to).map_err(|e| RuntimeError::io("cannot create", to, e))?;
    let output = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(PathBuf::from(source))
        .arg(to)
        .output()
        .map_err(|e| RuntimeError::io("cannot run cp for", to, e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::io(
            "cannot copy the sandbox's changes to",
            to,
            std::io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        ))
    }
}
