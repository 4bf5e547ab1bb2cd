//! The copy-on-write root of a sandbox: an overlayfs mount of read-only layers with a
//! per-sandbox upper directory, and finding overlay mounts left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, RuntimeError};

/// overlayfs takes its options in one page.
const MAX_OPTIONS_LEN: usize = 4000;

/// Mounts `lowerdir` (topmost first, `:`-separated) + `upper` (with `work`) at `merged`.
pub fn mount_overlay(lowerdir: &str, upper: &Path, work: &Path, merged: &Path) -> Result<()> {
    let path_str = |p: &Path| {
        p.to_str()
            .filter(|s| !s.contains([':', ',', '\\']))
            .map(str::to_string)
            .ok_or_else(|| {
                RuntimeError::InvalidSpec(format!("{} cannot be used by overlayfs", p.display()))
            })
    };
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        path_str(upper)?,
        path_str(work)?
    );
    if options.len() > MAX_OPTIONS_LEN {
        return Err(RuntimeError::InvalidSpec(format!(
            "{} layers give overlayfs options of {} bytes (at most {MAX_OPTIONS_LEN})",
            lowerdir.split(':').count(),
            options.len()
        )));
    }
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|source| RuntimeError::Mount {
        what: "cannot mount overlayfs on",
        path: merged.to_path_buf(),
        source,
    })
}

/// Mounts `layers` (topmost first) + `upper` (with `work`) at `merged`, naming every
/// directory relative to `dir` in the options: overlayfs keeps its option strings as
/// given, and the sandbox reads them in `/proc/self/mountinfo`. Directories under `dir`
/// get their relative path; others a short symlink `dir/l/<n>` (as Docker's overlay2
/// does), resolved once, at mount time.
pub fn mount_overlay_relative(
    dir: &Path,
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<()> {
    let links = dir.join("l");
    fs::create_dir_all(&links).map_err(|e| RuntimeError::io("cannot create", &links, e))?;
    let mut next = 0usize;
    let mut short = |path: &Path| -> Result<PathBuf> {
        if let Ok(relative) = path.strip_prefix(dir) {
            if !relative.as_os_str().is_empty() {
                return Ok(relative.to_path_buf());
            }
        }
        let name = PathBuf::from("l").join(next.to_string());
        next += 1;
        std::os::unix::fs::symlink(path, dir.join(&name))
            .map_err(|e| RuntimeError::io("cannot link", dir.join(&name), e))?;
        Ok(name)
    };
    let mut lower = Vec::with_capacity(layers.len());
    for layer in layers {
        let name = short(layer)?;
        lower.push(name.to_string_lossy().into_owned());
    }
    let (upper, work) = (short(upper)?, short(work)?);
    let lowerdir = lower.join(":");
    let (in_dir, target) = (dir.to_path_buf(), merged.to_path_buf());
    // The working directory is per process; a thread of our own with a private copy
    // (`unshare(CLONE_FS)`) changes it without moving the rest of the server.
    let worker = std::thread::Builder::new()
        .name("kiln-overlay".into())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|source| {
                RuntimeError::Mount {
                    what: "cannot unshare the fs context to mount",
                    path: target.clone(),
                    source,
                }
            })?;
            std::env::set_current_dir(&in_dir)
                .map_err(|e| RuntimeError::io("cannot enter", &in_dir, e))?;
            mount_overlay(&lowerdir, &upper, &work, &target)
        })
        .map_err(|e| RuntimeError::io("cannot start a thread to mount", merged, e))?;
    worker.join().map_err(|_| {
        RuntimeError::io(
            "a panic while mounting",
            merged,
            std::io::Error::other("panic"),
        )
    })?
}

/// Unmounts `path`; a path that is not mounted is fine. Busy mounts are retried briefly,
/// then detached (they disappear once the last user is gone).
pub fn unmount(path: &Path) -> Result<()> {
    for attempt in 0..20 {
        match umount2(path, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) if attempt < 19 => std::thread::sleep(Duration::from_millis(5)),
            Err(Errno::EBUSY) => break,
            Err(source) => {
                return Err(RuntimeError::Mount {
                    what: "cannot unmount",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(|source| {
        RuntimeError::Mount {
            what: "cannot detach",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Mount points at or under `root`, deepest first (the order to unmount them in).
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &s[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\"), r"/end\");
    }
}
