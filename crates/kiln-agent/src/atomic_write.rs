//! Replacing a file so that readers see the old content or the new, never a mix: write a
//! temporary file in the same directory, fsync it, rename it over the target, fsync the
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_protocol::{AgentError, ErrorCode};

use crate::file_ops::{io_error, permission_bits};

/// Mode of a file that did not exist and whose mode the caller did not give.
const NEW_FILE_MODE: u32 = 0o644;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `path` atomically. `mode` defaults to the existing file's (or
/// 0o644); an existing file's owner is kept; a symlink's target is replaced, not the link.
pub fn write_atomically(
    path: &str,
    content: &[u8],
    mode: Option<u32>,
    create_parents: bool,
) -> Result<(), AgentError> {
    if let Some(mode) = mode {
        if mode > 0o7777 {
            return Err(AgentError::new(
                ErrorCode::InvalidRequest,
                format!("mode {mode:o} has bits beyond 0o7777"),
            ));
        }
    }
    let target = resolve_target(Path::new(path));
    let existing = match fs::metadata(&target) {
        Ok(meta) if meta.is_dir() => {
            return Err(AgentError::new(
                ErrorCode::IsDirectory,
                format!("{path} is a directory"),
            ))
        }
        Ok(meta) => Some(meta),
        Err(_) => None,
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        if !create_parents {
            return Err(AgentError::new(
                ErrorCode::NotFound,
                format!(
                    "cannot write {path}: parent directory {} does not exist",
                    parent.display()
                ),
            ));
        }
        fs::create_dir_all(&parent).map_err(|err| io_error("create parents of", path, &err))?;
    }
    let mode = mode
        .or(existing.as_ref().map(permission_bits))
        .unwrap_or(NEW_FILE_MODE);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(
        ".{name}.kiln-{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp(&temp, content, mode, existing.as_ref())
        .and_then(|()| fs::rename(&temp, &target));
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", path, &err));
    }
    // Makes the rename itself durable; the content already is.
    if let Ok(dir) = File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_temp(
    temp: &Path,
    content: &[u8],
    mode: u32,
    existing: Option<&fs::Metadata>,
) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(content)?;
    if let Some(meta) = existing {
        // Best effort: only root may give a file away.
        let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
    }
    // Explicit chmod after chown (which clears setuid bits), unaffected by umask.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

/// Follows a symlink at `path` so the file it names is replaced; keeps `path` otherwise.
fn resolve_target(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}
