//! Workspaces (host directories a sandbox sees, e.g. an agent job's checkout) are not
//! bound from the host: a bind mount's root field in `/proc/self/mountinfo` is the
//! source's path inside its filesystem, which would tell the sandbox the server's data
//! directory. Each is copied onto a filesystem of the sandbox's own, whose paths say
//! nothing of the host (its disk when it has a disk limit, else a tmpfs), bound from
//! there, and copied back over the host directory when the sandbox is destroyed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, MsFlags};

use crate::error::{Result, RuntimeError};
use crate::local::layout::SandboxDirs;
use crate::local::spec::BindMount;
use crate::spec::Limits;

/// Room a tmpfs workspace has beyond what was copied in, when the sandbox has no memory
/// limit (with one, that limit: its writes there are charged to its memory cgroup).
const TMPFS_HEADROOM: u64 = 1 << 30;

/// Where a sandbox's workspace copies live: `<disk>/workspaces` on a limited disk (they
/// count against it), else a tmpfs mounted at `<base>/workspaces`.
pub fn dir(dirs: &SandboxDirs, limited: bool) -> PathBuf {
    if limited {
        dirs.disk.join("workspaces")
    } else {
        dirs.base.join("workspaces")
    }
}

/// Copies each bind's source into `dir(..)/<i>` and returns the binds bwrap makes: the
/// same targets, their sources under `launch`, where `dir(..)` is bound in bwrap's launch
/// namespace (the sandbox's disk is detached there).
pub fn copy_in(
    dirs: &SandboxDirs,
    limits: &Limits,
    binds: &[BindMount],
    launch: &Path,
) -> Result<Vec<BindMount>> {
    let limited = limits.disk_bytes.is_some();
    let root = dir(dirs, limited);
    fs::create_dir(&root).map_err(|e| RuntimeError::io("cannot create", &root, e))?;
    if !limited {
        mount_tmpfs(&root, None)?;
    }
    let mut launched = Vec::with_capacity(binds.len());
    for (i, bind) in binds.iter().enumerate() {
        let copy = root.join(i.to_string());
        fs::create_dir(&copy).map_err(|e| RuntimeError::io("cannot create", &copy, e))?;
        // `src/.`: the directory's contents and its own mode and owner.
        cp(&bind.source.join("."), &copy)?;
        launched.push(BindMount {
            source: launch.join(i.to_string()),
            target: bind.target.clone(),
        });
    }
    if !limited {
        let used = super::disk::space(&root).map_or(0, |(_, used)| used);
        let headroom = limits.memory_bytes.unwrap_or(TMPFS_HEADROOM);
        mount_tmpfs(&root, Some(used.saturating_add(headroom)))?;
    }
    Ok(launched)
}

/// Replaces each bind's source with the sandbox's copy, exactly (deletions too). The
/// copy goes to a sibling first and is swapped in by renames, so a failed copy leaves
/// the source as it was. Run with the sandbox's processes gone.
pub fn copy_back(dirs: &SandboxDirs, limited: bool, binds: &[BindMount]) -> Result<()> {
    let root = dir(dirs, limited);
    let mut first_error = None;
    for (i, bind) in binds.iter().enumerate() {
        if let Err(e) = replace(&root.join(i.to_string()), &bind.source) {
            tracing::error!(error = %e, workspace = %bind.source.display(), "cannot copy a workspace back");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn replace(copy: &Path, dest: &Path) -> Result<()> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sibling = |suffix: &str| dest.with_file_name(format!(".{name}.kiln-{suffix}"));
    let (new, old) = (sibling("new"), sibling("old"));
    for leftover in [&new, &old] {
        remove_all(leftover)?;
    }
    if let Err(e) = cp(copy, &new).and_then(|()| strip_set_id(&new)) {
        let _ = remove_all(&new);
        return Err(e);
    }
    fs::rename(dest, &old).map_err(|e| RuntimeError::io("cannot rename", dest, e))?;
    if let Err(e) = fs::rename(&new, dest) {
        let _ = fs::rename(&old, dest);
        return Err(RuntimeError::io("cannot rename", &new, e));
    }
    remove_all(&old)
}

/// Clears the setuid and setgid bits of every file under `dir`: the sandbox runs as root,
/// so without this a job could leave a setuid-root binary on the server's disk.
fn strip_set_id(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta =
            fs::symlink_metadata(&path).map_err(|e| RuntimeError::io("cannot stat", &path, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if meta.is_file() && mode & 0o6000 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o6000))
                .map_err(|e| RuntimeError::io("cannot chmod", &path, e))?;
        }
        if meta.is_dir() {
            for entry in
                fs::read_dir(&path).map_err(|e| RuntimeError::io("cannot list", &path, e))?
            {
                let entry = entry.map_err(|e| RuntimeError::io("cannot list", &path, e))?;
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

fn remove_all(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("cannot remove", path, e))
        }
        _ => Ok(()),
    }
}

/// `cp -a`: modes, owners, timestamps, symlinks (never followed), hard links, xattrs.
fn cp(from: &Path, to: &Path) -> Result<()> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RuntimeError::io("cannot run cp for", from, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::io(
            "cannot copy",
            from,
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ))
    }
}

/// Mounts the tmpfs (`bytes` None: the kernel's default size, while copying in), or
/// resizes it once the copy's size is known.
fn mount_tmpfs(dir: &Path, bytes: Option<u64>) -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let (flags, data) = match bytes {
        None => (flags, "mode=0755".to_string()),
        Some(bytes) => (flags | MsFlags::MS_REMOUNT, format!("size={bytes}")),
    };
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|source| RuntimeError::Mount {
        what: "cannot mount the workspace tmpfs on",
        path: dir.to_path_buf(),
        source,
    })
}
