//! Disk limits by project quotas: where the filesystem holding the runtime root has
//! project quotas on (XFS mounted with `prjquota`/`pquota`, ext4 with the `project` and
//! `quota` features mounted with `prjquota`), a sandbox's `disk/` directory (which holds
//! the overlay's `upper/` and `work/`) gets a project id of its own with
//! `FS_XFLAG_PROJINHERIT`, so everything created below it is charged to that project,
//! and a hard block and inode limit on the project. No mkfs, no mount, no loop device:
//! two ioctls and a quotactl per create. Writing past the limit fails inside with
//! `ENOSPC` on XFS (`EDQUOT` on ext4, as its quota code reports it); `statfs` of the
//! directory (and so `df /` inside, through overlayfs) shows the limit on both.
//!
//! Project ids are random in `[ID_FLOOR, 2^31)` and taken only when the kernel reports
//! the id unused (no limit, no inode charged), so runtimes sharing one filesystem (other
//! nodes' roots, test suites) do not collide but by a race of microseconds on a 2^31
//! space. A project is freed (its limits cleared) by teardown, before the directory is
//! removed; teardown reads the id back from the directory, so a crashed runtime's
//! leftovers are freed by the next start's reconcile the same way.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, RuntimeError};

/// Project ids below this are left to the host's administrator (`/etc/projid`).
const ID_FLOOR: u32 = 1 << 20;
/// One inode allowed per this many bytes of the limit (ext4's default ratio), at least
/// `MIN_INODES`: the loop disk's inode count, so both modes bound inodes alike.
const BYTES_PER_INODE: u64 = 16 << 10;
const MIN_INODES: u64 = 4096;

// <linux/quota.h>, <linux/dqblk_xfs.h>, <linux/fs.h>: not in the libc crate.
const PRJQUOTA: libc::c_int = 2;
const Q_XGETQSTATV: libc::c_int = ((b'X' as libc::c_int) << 8) | 8;
const FS_QSTATV_VERSION1: i8 = 1;
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const FS_IOC_FSGETXATTR: libc::Ioctl = 0x801c_581f_u32 as libc::Ioctl;
const FS_IOC_FSSETXATTR: libc::Ioctl = 0x401c_5820_u32 as libc::Ioctl;

/// How sandboxes' disk limits are enforced (`runtime.disk_limit_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskLimitMode {
    /// Project quotas where the runtime root's filesystem has them, else loop disks.
    #[default]
    Auto,
    /// Project quotas; the runtime refuses to start where they are not on.
    ProjectQuota,
    /// A size-limited ext4 image per sandbox, from a pool (`disk.rs`).
    LoopDisk,
    /// Limits are accounted for admission but not enforced.
    None,
}

/// `struct fsxattr`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct fs_qfilestatv`.
#[repr(C)]
#[derive(Default)]
struct QFileStatV {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}

/// `struct fs_quota_statv`.
#[repr(C)]
#[derive(Default)]
struct QuotaStatV {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: QFileStatV,
    gquota: QFileStatV,
    pquota: QFileStatV,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}

fn qcmd(cmd: libc::c_int, kind: libc::c_int) -> libc::c_int {
    // QCMD(): the command in the high bits, the quota type in the low byte.
    (((cmd as u32) << 8) | (kind as u32 & 0xff)) as libc::c_int
}

/// `quotactl_fd(2)` (Linux 5.14) on the filesystem holding `file`, for project quotas.
fn quotactl<T>(file: &File, cmd: libc::c_int, id: u32, data: &mut T) -> std::io::Result<()> {
    // SAFETY: `file` is an open descriptor for the call's duration and `data` an
    // exclusively borrowed, properly sized `#[repr(C)]` value of the type the command
    // reads or fills; the kernel touches nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            file.as_raw_fd(),
            qcmd(cmd, PRJQUOTA),
            id as libc::c_int,
            (data as *mut T).cast::<libc::c_void>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `FS_IOC_FSGETXATTR` / `FS_IOC_FSSETXATTR` on `file`.
fn fsxattr(file: &File, request: libc::Ioctl, attr: &mut FsXattr) -> std::io::Result<()> {
    // SAFETY: `file` is open and `attr` is an exclusively borrowed `struct fsxattr`, the
    // argument both requests take.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, attr as *mut FsXattr) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_dir(dir: &Path) -> Result<File> {
    File::open(dir).map_err(|e| RuntimeError::io("cannot open", dir, e))
}

/// Why project quotas cannot limit sandboxes under `dir`, or `None` when they can:
/// accounting and enforcement are on, and a directory there takes a project id.
pub fn problem(dir: &Path) -> Option<String> {
    let file = match File::open(dir) {
        Ok(file) => file,
        Err(e) => return Some(format!("cannot open {}: {e}", dir.display())),
    };
    let mut stat = QuotaStatV {
        version: FS_QSTATV_VERSION1,
        ..QuotaStatV::default()
    };
    if let Err(e) = quotactl(&file, Q_XGETQSTATV, 0, &mut stat) {
        return Some(format!("no quota support for {} ({e})", dir.display()));
    }
    let on = FS_QUOTA_PDQ_ACCT | FS_QUOTA_PDQ_ENFD;
    if stat.flags & on != on {
        return Some(format!(
            "project quotas are not enforced on the filesystem of {} (XFS: mount with \
             prjquota; ext4: mkfs -O quota,project, mount with prjquota)",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".kiln-quota-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir(&probe);
    if let Err(e) = std::fs::create_dir(&probe) {
        return Some(format!("cannot create {}: {e}", probe.display()));
    }
    let tagged = File::open(&probe).and_then(|f| {
        let mut attr = FsXattr::default();
        fsxattr(&f, FS_IOC_FSGETXATTR, &mut attr)?;
        attr.projid = ID_FLOOR - 1;
        attr.xflags |= FS_XFLAG_PROJINHERIT;
        fsxattr(&f, FS_IOC_FSSETXATTR, &mut attr)
    });
    let _ = std::fs::remove_dir(&probe);
    tagged
        .err()
        .map(|e| format!("cannot set a project id under {}: {e}", dir.display()))
}

/// Gives the empty directory `dir` a project of its own limited to `bytes` (and a
/// proportional number of inodes); returns the project id.
pub fn assign(dir: &Path, bytes: u64) -> Result<u32> {
    let file = open_dir(dir)?;
    let err = |what: &'static str| move |e| RuntimeError::io(what, dir, e);
    for _ in 0..16 {
        let id = candidate(dir);
        if !unused(&file, id) {
            continue;
        }
        let mut attr = FsXattr::default();
        fsxattr(&file, FS_IOC_FSGETXATTR, &mut attr).map_err(err("cannot read attributes of"))?;
        attr.projid = id;
        attr.xflags |= FS_XFLAG_PROJINHERIT;
        fsxattr(&file, FS_IOC_FSSETXATTR, &mut attr).map_err(err("cannot set a project on"))?;
        let inodes = (bytes / BYTES_PER_INODE).max(MIN_INODES);
        set_limits(&file, id, bytes.div_ceil(1024), inodes)
            .map_err(err("cannot set the quota of"))?;
        return Ok(id);
    }
    Err(RuntimeError::io(
        "no free project id for",
        dir,
        std::io::Error::other("16 random ids were all in use"),
    ))
}

/// Clears the limits of `dir`'s project, if it has one of ours: the id is free again
/// once the directory's files are gone. Returns the id.
pub fn release(dir: &Path) -> Option<u32> {
    let file = File::open(dir).ok()?;
    let id = project_of(&file)?;
    if let Err(e) = set_limits(&file, id, 0, 0) {
        tracing::warn!(dir = %dir.display(), project = id, error = %e, "cannot clear a project quota");
    }
    Some(id)
}

/// Bytes charged to `dir`'s project, if it has one of ours.
pub fn used_bytes(dir: &Path) -> Option<u64> {
    let file = File::open(dir).ok()?;
    let id = project_of(&file)?;
    let mut q = zeroed_dqblk();
    quotactl(&file, libc::Q_GETQUOTA, id, &mut q).ok()?;
    Some(q.dqb_curspace)
}

/// The project id of `dir`, if it is one of ours (a sandbox's `disk/`).
pub fn project_id(dir: &Path) -> Option<u32> {
    project_of(&File::open(dir).ok()?)
}

/// `(block limit in bytes, inode limit, bytes used, inodes used)` of project `id` on the
/// filesystem holding `dir` (for tests and diagnostics).
pub fn project_usage(dir: &Path, id: u32) -> std::io::Result<(u64, u64, u64, u64)> {
    let file = File::open(dir)?;
    let mut q = zeroed_dqblk();
    quotactl(&file, libc::Q_GETQUOTA, id, &mut q)?;
    Ok((
        q.dqb_bhardlimit.saturating_mul(1024),
        q.dqb_ihardlimit,
        q.dqb_curspace,
        q.dqb_curinodes,
    ))
}

/// The project id of a directory we tagged (0, the default project, is never ours).
fn project_of(file: &File) -> Option<u32> {
    let mut attr = FsXattr::default();
    fsxattr(file, FS_IOC_FSGETXATTR, &mut attr).ok()?;
    (attr.projid >= ID_FLOOR && attr.xflags & FS_XFLAG_PROJINHERIT != 0).then_some(attr.projid)
}

fn zeroed_dqblk() -> libc::dqblk {
    libc::dqblk {
        dqb_bhardlimit: 0,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: 0,
    }
}

fn set_limits(file: &File, id: u32, kib: u64, inodes: u64) -> std::io::Result<()> {
    let mut q = zeroed_dqblk();
    q.dqb_bhardlimit = kib;
    q.dqb_ihardlimit = inodes;
    q.dqb_valid = libc::QIF_LIMITS;
    quotactl(file, libc::Q_SETQUOTA, id, &mut q)
}

/// Whether project `id` has neither limits nor charges (XFS: no quota record at all).
fn unused(file: &File, id: u32) -> bool {
    let mut q = zeroed_dqblk();
    match quotactl(file, libc::Q_GETQUOTA, id, &mut q) {
        Ok(()) => {
            q.dqb_bhardlimit == 0
                && q.dqb_ihardlimit == 0
                && q.dqb_curinodes == 0
                && q.dqb_curspace == 0
        }
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
}

/// A random-enough id in `[ID_FLOOR, 2^31)`: the time, the process, a counter and the
/// directory, hashed.
fn candidate(dir: &Path) -> u32 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&nanos.to_le_bytes());
    bytes.extend_from_slice(&std::process::id().to_le_bytes());
    bytes.extend_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    bytes.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    let hash = crate::local::cgroup::fnv1a(&bytes);
    let span = u64::from((1u32 << 31) - ID_FLOOR);
    ID_FLOOR + u32::try_from(hash % span).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<QuotaStatV>(), 160);
        assert_eq!(std::mem::size_of::<libc::dqblk>(), 72);
        assert_eq!(FS_IOC_FSGETXATTR as u32, 0x801c_581f);
        assert_eq!(qcmd(libc::Q_SETQUOTA, PRJQUOTA) as u32, 0x8000_0802);
    }

    #[test]
    fn candidates_stay_in_range() {
        let dir = Path::new("/x");
        for _ in 0..1000 {
            let id = candidate(dir);
            assert!((ID_FLOOR..1 << 31).contains(&id), "{id}");
        }
    }

    #[test]
    fn a_directory_without_our_project_has_no_quota_usage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(used_bytes(dir.path()), None);
        assert_eq!(release(dir.path()), None);
    }
}
