//! Acting inside a running sandbox's mount namespace from the host, and the few mount
//! operations done there. Every read-only bind goes through `bind_read_only` /
//! `remount_read_only`, so "read-only" means the same thing everywhere.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Result, RuntimeError};

/// Runs `work` in the mount namespace of process `pid`, where paths are the sandbox's
/// (setns also moves the thread's root and working directory to the namespace's root).
///
/// `setns` into a mount namespace is refused to a thread sharing its filesystem context
/// with others (every thread of a normal process), so a short-lived thread first takes a
/// private copy with `unshare(CLONE_FS)`; the rest of the process is unaffected.
pub fn in_namespace_of<F>(pid: u32, work: F) -> Result<()>
where
    F: FnOnce() -> Result<()> + Send + 'static,
{
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = File::open(&ns_path).map_err(|e| RuntimeError::io("cannot open", &ns_path, e))?;
    let failed = |what: &'static str| {
        let path = ns_path.clone();
        move |source| RuntimeError::Mount { what, path, source }
    };
    let worker = std::thread::Builder::new()
        .name("kiln-setns".into())
        .spawn({
            let (unshare_failed, setns_failed) = (
                failed("cannot unshare the fs context to enter"),
                failed("cannot enter"),
            );
            move || -> Result<()> {
                unshare(CloneFlags::CLONE_FS).map_err(unshare_failed)?;
                setns(&ns, CloneFlags::CLONE_NEWNS).map_err(setns_failed)?;
                work()
            }
        })
        .map_err(|e| RuntimeError::io("cannot start a thread for", &ns_path, e))?;
    worker
        .join()
        .map_err(|_| failed("thread panicked in")(nix::Error::EIO))?
}

/// Binds `source` onto `target` (with everything mounted below it) and makes the result
/// read-only.
pub fn bind_read_only(source: &Path, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_error("cannot bind", target))?;
    remount_read_only(target)
}

/// Makes the mount at `target` and every mount below it read-only and nosuid.
///
/// `mount_setattr(AT_RECURSIVE)` (Linux 5.12) changes the whole subtree at once; a plain
/// `MS_REMOUNT` would change only the topmost mount and leave submounts writable. Older
/// kernels fall back to that, which is enough where the only submounts are bubblewrap's
/// own read-only ones.
pub fn remount_read_only(target: &Path) -> Result<()> {
    match mount_setattr_read_only(target) {
        Err(nix::Error::ENOSYS) => mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(mount_error("cannot remount read-only", target)),
        other => other.map_err(mount_error("cannot make read-only", target)),
    }
}

/// Covers the directory `target` with an empty, read-only tmpfs.
pub fn mount_empty_read_only(target: &Path) -> Result<()> {
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=0,mode=0555"),
    )
    .map_err(mount_error("cannot cover", target))
}

pub fn mount_error(what: &'static str, target: &Path) -> impl FnOnce(nix::Error) -> RuntimeError {
    let path = target.to_path_buf();
    move |source| RuntimeError::Mount { what, path, source }
}

/// `struct mount_attr` of `<linux/mount.h>` (not in the libc crate).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;

fn mount_setattr_read_only(target: &Path) -> nix::Result<()> {
    let path = CString::new(target.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    set_mount_attributes(
        libc::AT_FDCWD,
        &path,
        AT_RECURSIVE,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
    )
}

/// `mount_setattr(dirfd, path, flags)` setting the `MOUNT_ATTR_*` bits of `set`.
pub fn set_mount_attributes(
    dirfd: RawFd,
    path: &CStr,
    flags: libc::c_uint,
    set: u64,
) -> nix::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a NUL-terminated string and `attr` a `struct mount_attr` of the
    // size passed; both outlive the call, and the kernel only reads them (`dirfd` is the
    // caller's, at worst a closed one, which fails with EBADF).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}
