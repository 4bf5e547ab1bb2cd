//! Strips a freshly debootstrapped tree of what is specific to the build host or the build
//! moment, so the image is small and two builds differ as little as possible.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::{EnvImageError, Result};

/// Cleans `root` in place. `suite` goes into the canonical `sources.list`; `epoch` (seconds)
/// replaces the password-change dates in `/etc/shadow`.
pub fn clean_rootfs(root: &Path, suite: &str, epoch: u64) -> Result<()> {
    // Package indexes and downloaded .debs: large, stale tomorrow, refetched by `apt update`.
    empty_dir(&root.join("var/lib/apt/lists"), true)?;
    empty_dir(&root.join("var/cache/apt"), true)?;
    // Logs of this build (dpkg.log, apt/term.log, bootstrap.log), kept as empty dirs since
    // packages expect e.g. /var/log/apt to exist.
    empty_dir(&root.join("var/log"), true)?;
    empty_dir(&root.join("tmp"), false)?;
    empty_dir(&root.join("var/tmp"), false)?;
    for rel in [
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dbus/machine-id",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
        "root/.bash_history",
    ] {
        remove_file_if_any(&root.join(rel))?;
    }
    // An empty machine-id means "not yet initialised": every sandbox must not share one.
    if root.join("etc/machine-id").exists() {
        write(&root.join("etc/machine-id"), b"")?;
    }
    // debootstrap copies these from the host; the sandbox runtime provides its own.
    write(&root.join("etc/resolv.conf"), b"")?;
    write(&root.join("etc/hostname"), b"localhost\n")?;
    // The host's mirror (maybe a proxy) means nothing inside the image.
    let sources = format!("deb http://deb.debian.org/debian {suite} main\n");
    write(&root.join("etc/apt/sources.list"), sources.as_bytes())?;
    slim(root)?;
    let shadow = root.join("etc/shadow");
    if shadow.exists() {
        let text = fs::read_to_string(&shadow).map_err(EnvImageError::io("read", &shadow))?;
        write(&shadow, fix_shadow_dates(&text, epoch / 86_400).as_bytes())?;
    }
    Ok(())
}

/// What dpkg is told to leave out from now on (as Debian's "slim" container images do), and
/// what [`slim`] removes from the packages already installed: documentation but the
/// copyright files, manual pages, info pages and message translations. About 65 MB of a
/// 330 MB image; no test runner reads them.
const DPKG_EXCLUDES: &str = "\
# Written by kiln-envimage: keep environment images small.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*/LC_MESSAGES/*.mo
";

fn slim(root: &Path) -> Result<()> {
    let docs = root.join("usr/share/doc");
    if let Ok(entries) = fs::read_dir(&docs) {
        for entry in entries {
            let path = entry.map_err(EnvImageError::io("list", &docs))?.path();
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                keep_only(&path, "copyright")?;
            } else {
                remove_file_if_any(&path)?;
            }
        }
    }
    empty_dir(&root.join("usr/share/man"), false)?;
    empty_dir(&root.join("usr/share/info"), false)?;
    // Translations live in per-language directories; top-level files such as
    // locale.alias are read by glibc and stay.
    let locale = root.join("usr/share/locale");
    if let Ok(entries) = fs::read_dir(&locale) {
        for entry in entries {
            let path = entry.map_err(EnvImageError::io("list", &locale))?.path();
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&path).map_err(EnvImageError::io("remove", &path))?;
            }
        }
    }
    let dpkg_cfg = root.join("etc/dpkg/dpkg.cfg.d");
    if dpkg_cfg.is_dir() {
        write(&dpkg_cfg.join("kiln-slim"), DPKG_EXCLUDES.as_bytes())?;
    }
    Ok(())
}

/// Removes everything in `dir` except the entry named `keep`.
fn keep_only(dir: &Path, keep: &str) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(EnvImageError::io("list", dir))? {
        let entry = entry.map_err(EnvImageError::io("list", dir))?;
        if entry.file_name() == keep {
            continue;
        }
        let path = entry.path();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&path).map_err(EnvImageError::io("remove", &path))?;
        } else {
            remove_file_if_any(&path)?;
        }
    }
    Ok(())
}

/// Sets field 3 (last password change, in days) of every `/etc/shadow` entry that has one.
fn fix_shadow_dates(text: &str, day: u64) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        let day = day.to_string();
        if fields.len() > 2 && !fields[2].is_empty() {
            fields[2] = &day;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Removes the files under `dir`; subdirectories are emptied and kept when `keep_dirs`,
/// removed otherwise. A missing `dir` is fine.
fn empty_dir(dir: &Path, keep_dirs: bool) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EnvImageError::io("list", dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(EnvImageError::io("list", dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(EnvImageError::io("stat", &path))?;
        if meta.is_dir() {
            if keep_dirs {
                empty_dir(&path, true)?;
            } else {
                fs::remove_dir_all(&path).map_err(EnvImageError::io("remove", &path))?;
            }
        } else {
            fs::remove_file(&path).map_err(EnvImageError::io("remove", &path))?;
        }
    }
    Ok(())
}

fn remove_file_if_any(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(EnvImageError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Replaces a file's content; a symlink there (resolv.conf often is one) is replaced too,
/// rather than written through to wherever it points.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        remove_file_if_any(path)?;
    }
    fs::write(path, bytes).map_err(EnvImageError::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_dates_are_pinned_and_other_lines_kept() {
        let text = "root:*:19999:0:99999:7:::\nnobody:*::0:99999:7:::\nbroken\n";
        let fixed = fix_shadow_dates(text, 20089);
        assert_eq!(
            fixed,
            "root:*:20089:0:99999:7:::\nnobody:*::0:99999:7:::\nbroken\n"
        );
    }

    #[test]
    fn cleaning_removes_build_leftovers_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "var/lib/apt/lists/partial",
            "var/log/apt",
            "var/cache/apt/archives/partial",
            "etc/apt",
            "tmp/sub",
            "usr/bin",
            "usr/share/doc/git/contrib",
            "usr/share/man/man1",
            "usr/share/locale/de/LC_MESSAGES",
            "etc/dpkg/dpkg.cfg.d",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for (f, text) in [
            ("var/lib/apt/lists/deb.debian.org_Packages", "x"),
            ("var/log/apt/term.log", "x"),
            ("var/log/dpkg.log", "x"),
            ("var/cache/apt/archives/git.deb", "x"),
            ("etc/machine-id", "0123456789abcdef"),
            ("etc/shadow", "root:*:19999:0:99999:7:::\n"),
            ("etc/passwd-", "x"),
            ("tmp/sub/f", "x"),
            ("usr/bin/tool", "keep me"),
            ("usr/share/doc/git/copyright", "GPL"),
            ("usr/share/doc/git/changelog.gz", "x"),
            ("usr/share/doc/git/contrib/x", "x"),
            ("usr/share/man/man1/git.1.gz", "x"),
            ("usr/share/locale/de/LC_MESSAGES/git.mo", "x"),
            ("usr/share/locale/locale.alias", "keep"),
        ] {
            fs::write(root.join(f), text).unwrap();
        }
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            root.join("etc/resolv.conf"),
        )
        .unwrap();
        clean_rootfs(root, "bookworm", 86_400 * 20_000).unwrap();
        assert!(!root
            .join("var/lib/apt/lists/deb.debian.org_Packages")
            .exists());
        assert!(root.join("var/lib/apt/lists/partial").is_dir());
        assert!(root.join("var/log/apt").is_dir());
        assert!(!root.join("var/log/apt/term.log").exists());
        assert!(!root.join("var/log/dpkg.log").exists());
        assert!(!root.join("var/cache/apt/archives/git.deb").exists());
        assert!(!root.join("etc/passwd-").exists());
        assert!(!root.join("tmp/sub").exists());
        assert!(root.join("tmp").is_dir());
        assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert!(!fs::symlink_metadata(root.join("etc/resolv.conf"))
            .unwrap()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(root.join("etc/shadow")).unwrap(),
            "root:*:20000:0:99999:7:::\n"
        );
        assert!(fs::read_to_string(root.join("etc/apt/sources.list"))
            .unwrap()
            .contains("bookworm"));
        assert_eq!(
            fs::read_to_string(root.join("usr/bin/tool")).unwrap(),
            "keep me"
        );
    }
}
