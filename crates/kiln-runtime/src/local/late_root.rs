//! A root given to a sandbox that is already running: how a warm sandbox (`warm.rs`)
//! serves any create or fork of its class, whatever its layers.
//!
//! A warm sandbox starts on a *skeleton*: an empty directory that bubblewrap fills with
//! its mount points (`/proc`, `/dev`, `/.kiln/agent`, `/.kiln/run`). The agent needs
//! nothing else until its first command. When the sandbox is taken, the host mounts the
//! real root (the overlay of the create's layers, or of a fork's snapshot on its image)
//! as usual, clones that mount, and, from inside the sandbox's mount namespace:
//! 1. attaches the clone on the skeleton's slot directory, `nosuid,nodev` as
//!    bubblewrap's `--bind` of a root would be;
//! 2. moves bubblewrap's mounts into it, with everything below them (the sealed
//!    `/proc`, the read-only `/.kiln/run`, `/dev/shm`);
//! 3. makes it the namespace's root with `pivot_root(".", ".")` and detaches the
//!    skeleton.
//!
//! `pivot_root` moves the root and working directory of every process of the namespace
//! whose root was the old one: the agent, the only process there, is in the new root
//! without knowing it, and without any capability of its own (the host does the work).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::fcntl::{openat, AtFlags, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

use crate::error::{Result, RuntimeError};
use crate::local::bwrap::{AGENT_PATH, RUN_DIR};
use crate::local::mount_namespace::{self, mount_error};

/// The skeleton's directory on which the real root is attached (inside the sandbox).
pub const SLOT: &str = "/.kiln-root";

/// bubblewrap's mounts of a sandbox, moved into the real root: each is a directory of
/// the root but `AGENT_PATH`, a file.
const MOVED: [&str; 4] = ["/proc", "/dev", AGENT_PATH, RUN_DIR];

/// Makes `skeleton` (the directory bound as the root of a sandbox started to be given
/// its root later), with its slot.
pub fn make_skeleton(skeleton: &Path) -> Result<()> {
    let slot = skeleton.join(SLOT.trim_start_matches('/'));
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o755);
    builder
        .create(skeleton)
        .map_err(|e| RuntimeError::io("cannot create", skeleton, e))?;
    builder
        .mode(0o700)
        .create(&slot)
        .map_err(|e| RuntimeError::io("cannot create", &slot, e))
}

/// Gives the sandbox whose PID 1 is `init_pid` (started on a skeleton) the root mounted
/// on the host at `root`. Blocking: mounts, a thread.
pub fn attach(root: &Path, init_pid: u32) -> Result<()> {
    make_mount_points(root)?;
    let tree = clone_mount(root)?;
    set_nosuid_nodev(&tree).map_err(mount_error("cannot restrict the clone of", root))?;
    mount_namespace::in_namespace_of(init_pid, move || {
        let slot = Path::new(SLOT);
        move_into(&tree, slot).map_err(mount_error("cannot attach the root at", slot))?;
        for path in MOVED {
            let target = format!("{SLOT}{path}");
            mount(
                Some(path),
                target.as_str(),
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .map_err(mount_error("cannot move a mount to", Path::new(&target)))?;
        }
        nix::unistd::chdir(slot).map_err(mount_error("cannot enter", slot))?;
        // The old root lands on top of the new one and is detached at once (as runc
        // does): no directory of the image is needed to park it.
        nix::unistd::pivot_root(".", ".").map_err(mount_error("cannot pivot to", slot))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(mount_error("cannot detach the skeleton under", slot))?;
        nix::unistd::chdir("/").map_err(mount_error("cannot enter", Path::new("/")))
    })
}

/// bubblewrap's mount points in the real root, made as bubblewrap makes them (parents
/// 0700, directories 0755, the agent's file 0444, under the same umask), each component
/// opened without following a symbolic link: an image's `/.kiln -> /etc` must not reach
/// the host's.
fn make_mount_points(root: &Path) -> Result<()> {
    let failed = |what, path: &str| mount_error(what, &root.join(path.trim_start_matches('/')));
    let top = nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed("cannot open", "/"))?;
    for path in MOVED {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((leaf, parents)) = parts.split_last() else {
            continue;
        };
        let mut dir = top
            .try_clone()
            .map_err(|e| RuntimeError::io("cannot use", root, e))?;
        let leaf_dir = (path != AGENT_PATH).then_some(leaf);
        let modes = parents
            .iter()
            .map(|p| (p, 0o700))
            .chain(leaf_dir.map(|l| (l, 0o755)));
        for (part, mode) in modes {
            match mkdirat(&dir, *part, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(failed("cannot create the mount point", path)(e)),
            }
            dir = openat(
                &dir,
                *part,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(failed("cannot open the mount point", path))?;
        }
        if path == AGENT_PATH {
            // Only when missing: opening a lower layer's file to write would copy it up,
            // and bubblewrap leaves an existing one alone. An existing one must be a file
            // (not a link the move would follow).
            match openat(
                &dir,
                *leaf,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o444),
            ) {
                Ok(_) => {}
                Err(nix::Error::EEXIST) => {
                    let stat = fstatat(&dir, *leaf, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(failed("cannot inspect the mount point", path))?;
                    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                        return Err(failed("the mount point is not a file", path)(
                            nix::Error::EEXIST,
                        ));
                    }
                }
                Err(e) => return Err(failed("cannot create the mount point", path)(e)),
            }
        }
    }
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A detached copy of the mount at `path` (not of those below it), which can be
/// attached in another mount namespace.
fn clone_mount(path: &Path) -> Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| RuntimeError::io("cannot use", path, std::io::Error::other(e)))?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; open_tree only
    // reads it and returns a new descriptor (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_path.as_ptr(), flags) };
    let fd = i32::try_from(fd).unwrap_or(-1);
    if fd < 0 {
        return Err(mount_error("cannot clone the mount", path)(
            nix::Error::last(),
        ));
    }
    // SAFETY: `fd` was just returned by open_tree and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nosuid_nodev(tree: &OwnedFd) -> nix::Result<()> {
    mount_namespace::set_mount_attributes(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
        mount_namespace::MOUNT_ATTR_NOSUID | mount_namespace::MOUNT_ATTR_NODEV,
    )
}

/// Attaches the detached mount `tree` at `target` in the caller's mount namespace.
fn move_into(tree: &OwnedFd, target: &Path) -> nix::Result<()> {
    let c_target = CString::new(target.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: `tree` is an open mount descriptor and both paths NUL-terminated strings
    // that outlive the call; move_mount only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_made_as_bubblewrap_makes_them() {
        let root = tempfile::tempdir().expect("tempdir");
        make_mount_points(root.path()).expect("made");
        let mode = |p: &str| {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::symlink_metadata(root.path().join(p)).expect(p);
            (meta.is_dir(), meta.permissions().mode() & 0o7777)
        };
        // Read, not set: setting it would race with the other tests' files.
        let status = fs::read_to_string("/proc/self/status").expect("status");
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .expect("umask");
        let masked = |m: u32| m & !umask;
        assert_eq!(mode("proc"), (true, masked(0o755)));
        assert_eq!(mode("dev"), (true, masked(0o755)));
        assert_eq!(mode(".kiln"), (true, masked(0o700)));
        assert_eq!(mode(".kiln/run"), (true, masked(0o755)));
        assert_eq!(mode(".kiln/agent"), (false, masked(0o444)));
        // Again, on what is there: nothing changes.
        make_mount_points(root.path()).expect("made again");
        assert_eq!(mode(".kiln/agent"), (false, masked(0o444)));
    }

    #[test]
    fn no_symbolic_link_of_the_image_is_followed() {
        let outside = tempfile::tempdir().expect("tempdir");
        for link in [".kiln", ".kiln/agent", "proc"] {
            let root = tempfile::tempdir().expect("tempdir");
            if link == ".kiln/agent" {
                fs::create_dir(root.path().join(".kiln")).expect("dir");
            }
            std::os::unix::fs::symlink(outside.path(), root.path().join(link)).expect("link");
            let made = make_mount_points(root.path());
            assert!(made.is_err(), "{link}: {made:?}");
            assert_eq!(
                fs::read_dir(outside.path()).expect("outside").count(),
                0,
                "{link}: something was made through the link"
            );
        }
    }
}
