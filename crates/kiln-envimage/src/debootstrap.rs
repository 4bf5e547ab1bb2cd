//! Debootstrapped root filesystems, cached under `<cache_dir>/rootfs/<key>/` by what was
//! installed, so rebuilding an image (or one whose store was wiped) skips the download.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt_mirror::host_mirror;
use crate::build_progress::{BuildEvent, BuildPhase, BuildProgress};
use crate::error::{EnvImageError, Result};
use crate::image_spec::{BuildOptions, ImageSpec, VARIANT};
use crate::rootfs_cleanup::clean_rootfs;
use crate::tool_command::run_logged;

/// The cleaned root filesystem for `spec`: from the cache, or debootstrapped now.
pub(crate) fn ensure_rootfs(
    spec: &ImageSpec,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<PathBuf> {
    let rootfs_dir = options.cache_dir.join("rootfs");
    fs::create_dir_all(&rootfs_dir).map_err(EnvImageError::io("create", &rootfs_dir))?;
    // Absolute: debootstrap chroots and wants absolute target and cache paths.
    let rootfs_dir =
        fs::canonicalize(&rootfs_dir).map_err(EnvImageError::io("resolve", &rootfs_dir))?;
    let done = rootfs_dir.join(spec.rootfs_key());
    if done.is_dir() {
        progress.emit(BuildEvent::RootfsCached {
            reference: spec.reference.clone(),
        });
        return Ok(done);
    }
    let partial = rootfs_dir.join(format!(
        "{}.partial-{}",
        spec.rootfs_key(),
        std::process::id()
    ));
    remove_tree(&partial)?;
    let debs = options.cache_dir.join("debs");
    fs::create_dir_all(&debs).map_err(EnvImageError::io("create", &debs))?;
    let debs = fs::canonicalize(&debs).map_err(EnvImageError::io("resolve", &debs))?;
    let mirror = options
        .mirror
        .clone()
        .unwrap_or_else(|| host_mirror(&spec.suite));

    progress.phase(&spec.reference, BuildPhase::Debootstrap);
    let command = debootstrap_command(spec, &partial, &debs, &mirror);
    let reference = spec.reference.clone();
    let ran = run_logged(command, |line| {
        progress.emit(BuildEvent::Log {
            reference: reference.clone(),
            line: line.to_owned(),
        });
    });
    // debootstrap mounts /proc and /sys inside the target and may leave them behind when it
    // fails; removing the tree with them mounted would descend into the host's.
    let unmounted = unmount_below(&partial);
    if let Err(e) = ran.and(unmounted) {
        let _ = unmount_below(&partial).and_then(|()| remove_tree(&partial));
        return Err(e);
    }

    progress.phase(&spec.reference, BuildPhase::Cleaning);
    clean_rootfs(&partial, &spec.suite, options.mtime_clamp)?;
    let workdir = partial.join(spec.working_dir.trim_start_matches('/'));
    fs::create_dir_all(&workdir).map_err(EnvImageError::io("create", &workdir))?;
    let record = rootfs_dir.join(format!("{}.packages", spec.rootfs_key()));
    let listing = format!(
        "{} {}\n{}\n",
        VARIANT,
        spec.suite,
        spec.sorted_packages().join(" ")
    );
    fs::write(&record, listing).map_err(EnvImageError::io("write", &record))?;
    if let Err(e) = fs::rename(&partial, &done) {
        // Another build of the same packages finished first: use its tree.
        if !done.is_dir() {
            return Err(EnvImageError::io("rename into", &done)(e));
        }
        remove_tree(&partial)?;
    }
    Ok(done)
}

fn debootstrap_command(spec: &ImageSpec, target: &Path, debs: &Path, mirror: &str) -> Command {
    let mut command = Command::new("debootstrap");
    command
        .arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", spec.sorted_packages().join(",")))
        .arg(format!("--cache-dir={}", debs.display()))
        .arg(&spec.suite)
        .arg(target)
        .arg(mirror)
        // Maintainer scripts must not ask questions nor pick up the caller's locale.
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .env("LANG", "C.UTF-8");
    command
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(EnvImageError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
fn unmount_below(dir: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(EnvImageError::io("read", "/proc/self/mountinfo"))?;
    let mut points = mounts_below(&info, dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let mut umount = Command::new("umount");
        umount.arg("--lazy").arg(&point);
        run_logged(umount, |_| {})?;
    }
    Ok(())
}

/// Mount points (field 5 of mountinfo, octal escapes decoded) at or below `dir`.
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_mountinfo(escaped)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_below_a_dir_with_escaped_names() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    40 22 0:35 / /cache/rootfs/ab.partial-1/proc rw - proc proc rw\n\
                    41 22 0:36 / /cache/rootfs/ab.partial-1/my\\040dir rw - tmpfs t rw\n\
                    42 22 0:37 / /cache/rootfs/ab.partial-10/proc rw - proc proc rw\n";
        let found = mounts_below(info, Path::new("/cache/rootfs/ab.partial-1"));
        assert_eq!(
            found,
            [
                PathBuf::from("/cache/rootfs/ab.partial-1/proc"),
                PathBuf::from("/cache/rootfs/ab.partial-1/my dir"),
            ]
        );
    }

    #[test]
    fn debootstrap_gets_sorted_packages_and_the_mirror() {
        let spec = ImageSpec::new("x/y:1", &["python3", "git"]);
        let cmd = debootstrap_command(&spec, Path::new("/t"), Path::new("/d"), "http://m/debian");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--variant=minbase",
                "--include=git,python3",
                "--cache-dir=/d",
                "bookworm",
                "/t",
                "http://m/debian"
            ]
        );
    }
}
