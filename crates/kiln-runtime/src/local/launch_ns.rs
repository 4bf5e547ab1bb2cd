//! A mount namespace of its own for each bubblewrap launch, without the other sandboxes'
//! mounts in it.
//!
//! bubblewrap reads the whole `/proc/self/mountinfo` for every bind it makes (about 14 per
//! sandbox), while its namespace still holds a copy of its parent's mounts. In the host's
//! namespace every live sandbox adds three (its disk, its socket tmpfs, its overlay root)
//! and the disk pool a few more, so a burst of N creates cost O(N²) in the kernel's
//! mountinfo text alone. So bwrap starts in a namespace of its own (its monitor stays
//! there): a slave copy of the host's, where this sandbox's root and socket directory are
//! bound at fixed paths and every mount of kiln's layout (any runtime's sandboxes and disk
//! pool) is detached. Nothing changes on the host: the mounts stay where teardown,
//! reconcile, snapshots and the agent socket find them.
//!
//! Detaching the copies also keeps them from pinning what they mount: a copy of another
//! sandbox's disk would keep its loop device attached for as long as this sandbox lives.

use std::ffi::{CStr, CString};
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;

use crate::error::{Result, RuntimeError};

/// Room for a few lines of mountinfo (one line is at most a few KiB: overlayfs options
/// are limited to a page).
const SCAN_BUFFER: usize = 64 * 1024;

/// How often the table is scanned again when a pass detached something (a detach while
/// reading may hide lines of the same pass).
const MAX_PASSES: usize = 4;

const MOUNTINFO: &CStr = c"/proc/self/mountinfo";

/// Prepared in the parent, entered in the child between fork and exec.
#[derive(Debug)]
pub struct LaunchNs {
    /// `(host path, path in the new namespace)`, bound in this order.
    binds: Vec<(CString, CString)>,
    /// The scan's buffer, allocated here: the child may not allocate.
    buf: Vec<u8>,
}

impl LaunchNs {
    /// A launch that binds each `(source, target)` (existing directories) in the new
    /// namespace.
    pub fn new(binds: &[(&Path, &Path)]) -> Result<Self> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|e| RuntimeError::io("cannot use", p, std::io::Error::other(e)))
        };
        let binds = binds
            .iter()
            .map(|(source, target)| Ok((c(source)?, c(target)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(LaunchNs {
            binds,
            buf: vec![0; SCAN_BUFFER],
        })
    }

    /// Moves the calling process into the new namespace. Runs in the forked child before
    /// exec: only system calls, no allocation, no locks.
    pub fn enter(&mut self) -> std::io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNS)?;
        // Nothing done here may reach the host (whose `/` is shared on systemd hosts).
        mount(
            None::<&CStr>,
            c"/",
            None::<&CStr>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&CStr>,
        )?;
        for (source, target) in &self.binds {
            mount(
                Some(source.as_c_str()),
                target.as_c_str(),
                None::<&CStr>,
                MsFlags::MS_BIND,
                None::<&CStr>,
            )?;
        }
        for _ in 0..MAX_PASSES {
            if detach_kiln_mounts(&mut self.buf)? == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// One pass over this namespace's mount table, detaching every mount of kiln's layout;
/// returns how many it detached.
fn detach_kiln_mounts(buf: &mut [u8]) -> std::io::Result<usize> {
    let fd = open(MOUNTINFO, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut detached = 0;
    let mut filled = 0;
    loop {
        let Some(free) = buf.get_mut(filled..) else {
            return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
        };
        let n = nix::unistd::read(&fd, free)?;
        let end = filled + n;
        let mut start = 0;
        while let Some(at) = buf[start..end].iter().position(|&b| b == b'\n') {
            if detach_if_kiln(&mut buf[start..start + at]) {
                detached += 1;
            }
            start += at + 1;
        }
        if n == 0 {
            return Ok(detached);
        }
        buf.copy_within(start..end, 0);
        filled = end - start;
        if filled == buf.len() {
            // One line longer than the buffer: mountinfo never has one.
            return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
        }
    }
}

/// Detaches the mount of one mountinfo line if its mount point is kiln's.
fn detach_if_kiln(line: &mut [u8]) -> bool {
    // The fifth field is the mount point, octal-escaped; unescaped in place (never
    // longer) and NUL-terminated over the space that follows it.
    let Some(start) = nth_field_start(line, 4) else {
        return false;
    };
    let Some(len) = unescape_field(&mut line[start..]) else {
        return false;
    };
    let path = &line[start..start + len];
    if !is_kiln_mount_point(path) {
        return false;
    }
    let Ok(path) = CStr::from_bytes_until_nul(&line[start..]) else {
        return false;
    };
    // Already gone with a detached parent (EINVAL): nothing to count.
    umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_ok()
}

fn nth_field_start(line: &[u8], n: usize) -> Option<usize> {
    let mut field = 0;
    if n == 0 {
        return Some(0);
    }
    for (i, &b) in line.iter().enumerate() {
        if b == b' ' {
            field += 1;
            if field == n {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Unescapes the field at the start of `field` (up to its space) in place and writes a
/// NUL after it; returns its length. `None` when no space follows it.
fn unescape_field(field: &mut [u8]) -> Option<usize> {
    let end = field.iter().position(|&b| b == b' ')?;
    let (mut read, mut write) = (0, 0);
    while read < end {
        let escape = field.get(read + 1..read + 4).filter(|digits| {
            field[read] == b'\\'
                && read + 3 < end
                && digits.iter().all(|b| (b'0'..=b'7').contains(b))
        });
        let octal = escape.map(|d| d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0')));
        match octal.and_then(|v| u8::try_from(v).ok()) {
            Some(byte) => {
                field[write] = byte;
                read += 4;
            }
            None => {
                field[write] = field[read];
                read += 1;
            }
        }
        write += 1;
    }
    field[write] = 0;
    Some(write)
}

/// Mount points of kiln's layout under any runtime root: a sandbox's `disk`, `merged`,
/// `run` and `workspaces` (`…/sandboxes/<id>/<leaf>`), the disk pool (`…/disks/mnt`) and its entries
/// (`…/disks/mnt/<n>`). See `layout.rs` and `disk.rs`.
fn is_kiln_mount_point(path: &[u8]) -> bool {
    let mut parts = path.rsplit(|&b| b == b'/');
    let leaf = parts.next().unwrap_or_default();
    let parent = parts.next().unwrap_or_default();
    let grand = parts.next().unwrap_or_default();
    (grand == b"sandboxes" && [&b"disk"[..], b"merged", b"run", b"workspaces"].contains(&leaf))
        || (parent == b"disks" && leaf == b"mnt")
        || (grand == b"disks" && parent == b"mnt")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(line: &str) -> Option<(String, bool)> {
        let mut bytes = line.as_bytes().to_vec();
        let start = nth_field_start(&bytes, 4)?;
        let len = unescape_field(&mut bytes[start..])?;
        let path = &bytes[start..start + len];
        Some((
            String::from_utf8_lossy(path).into_owned(),
            is_kiln_mount_point(path),
        ))
    }

    #[test]
    fn finds_the_mount_point_of_a_mountinfo_line() {
        let line = r"36 35 98:0 / /var/lib/kiln/runtime/sandboxes/s\040x/merged rw,nodev - overlay overlay rw,lowerdir=l/0";
        assert_eq!(
            point(line),
            Some(("/var/lib/kiln/runtime/sandboxes/s x/merged".into(), true))
        );
        assert_eq!(
            point("36 35 98:0 / / rw - ext4 /dev/sda1 rw"),
            Some(("/".into(), false))
        );
        assert_eq!(point("36 35 98:0 /"), None);
    }

    #[test]
    fn only_kiln_layout_mount_points_are_detached() {
        for (path, kiln) in [
            ("/d/runtime/sandboxes/abc/disk", true),
            ("/d/runtime/sandboxes/abc/merged", true),
            ("/d/runtime/sandboxes/abc/run", true),
            ("/d/runtime/sandboxes/abc/workspaces", true),
            ("/d/runtime/disks/mnt", true),
            ("/d/runtime/disks/mnt/18f3a", true),
            ("/d/runtime/sandboxes", false),
            ("/d/runtime/sandboxes/abc", false),
            ("/d/runtime/launch/root", false),
            ("/run/kiln", false),
            ("/", false),
        ] {
            assert_eq!(is_kiln_mount_point(path.as_bytes()), kiln, "{path}");
        }
    }
}
