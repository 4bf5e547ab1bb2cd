//! Mounts a test left under its temporary directory. A server "crashed" in-process (its
//! `Kiln` dropped without a shutdown, as `TestServer::restart(false)` does) leaves what only
//! a shutdown unmounts — the ready disks of its pool — and a temporary directory cannot be
//! deleted through a mount. Production does not need this: a restart reuses the pool.
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lazily unmounts every mount point at or below `dir` (deepest first), so the directory
/// can be removed. Best effort: what cannot be unmounted is reported on stderr.
pub fn unmount_all_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let mut points = mount_points_under(&dir);
    // Children before parents.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        match Command::new("umount").arg("-l").arg(&point).status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("umount -l {}: {status}", point.display()),
            Err(e) => eprintln!("cannot run umount for {}: {e}", point.display()),
        }
    }
}

/// The mount points of this mount namespace at or below `dir`.
pub fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
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
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(unescape(r"/plain/path"), "/plain/path");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04");
    }
}
