//! The size limit of a sandbox's writable layer: a sparse image file holding an ext4
//! filesystem of exactly the limit, attached to a loop device and mounted at the
//! sandbox's `disk/`, which holds the overlay's `upper/` and `work/` (and so `/tmp`).
//! Writing past it fails inside with `ENOSPC`; the host loses at most the limit, and
//! only as the sandbox really writes (the file is sparse).
//!
//! Formatting (≈ 20 ms) and mounting (10–60 ms: ext4 writes its superblock through the
//! loop device) are too slow for a create, so a small pool keeps images formatted,
//! attached and mounted in `<root>/disks` (a private bind mount, so mounts can be moved
//! out of it), filled in the background: a create claims one and moves its mount into
//! the sandbox's directory (`MS_MOVE`, microseconds). Numbers: ARCHITECTURE.md, "Disk
//! and memory limits".

use std::ffi::CString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::mount::{mount, MsFlags};

use crate::error::{Result, RuntimeError};
use crate::local::disk_template::DiskTemplates;
use crate::local::{find_in_path, loopdev, overlay};

/// How long the refill waits before each entry while the pool is at least half full:
/// about one sandbox start, so the create that just took one is not slowed by the mkfs.
/// (It was 150 ms: a stream of forks 50 ms apart then drained a pool of 4.)
const REFILL_PAUSE: Duration = Duration::from_millis(20);

/// The pool's subdirectory of disk templates (`disk_template.rs`).
const TEMPLATES: &str = "templates";

/// Images of one size, formatted and mounted ahead, in `<root>/disks`: for each entry
/// `<n>.img`, its mount point `mnt/<n>` and, once it is complete, the marker
/// `<n>.ready-<bytes>`. The images stay outside `mnt` (a mount of its own: a file cannot
/// be renamed out of a mount), so they can be renamed into sandbox directories.
#[derive(Debug)]
pub struct DiskPool {
    dir: PathBuf,
    mounts: PathBuf,
    /// Size of the images kept ready (the usual limit).
    ready_bytes: u64,
    /// How many are kept ready.
    target: usize,
    mkfs: Option<PathBuf>,
    /// The formatted image each disk of the pool's size is copied from (`templates/`).
    templates: Option<DiskTemplates>,
    refilling: AtomicBool,
    /// Set by `drain`: no more entries are made.
    closed: AtomicBool,
    /// Held while an entry is made, and by `drain`, so none is made after it.
    making: Mutex<()>,
    seq: AtomicU64,
}

impl DiskPool {
    /// A pool in `dir` (created; unfinished entries of a
    /// previous run removed, finished ones kept). Nothing is made or mounted until `refill`.
    pub fn new(dir: PathBuf, ready_bytes: u64, target: usize) -> Result<Arc<Self>> {
        let mounts = dir.join("mnt");
        fs::create_dir_all(&mounts).map_err(|e| RuntimeError::io("cannot create", &mounts, e))?;
        let templates_dir = dir.join(TEMPLATES);
        // Without templates every disk is formatted by mkfs, as before them.
        let templates = DiskTemplates::new(templates_dir.clone())
            .inspect_err(|e| {
                tracing::warn!(dir = %templates_dir.display(), error = %e,
                "cannot keep disk templates; formatting each disk")
            })
            .ok();
        let pool = DiskPool {
            dir,
            mounts,
            ready_bytes,
            target,
            mkfs: mkfs_binary(),
            templates,
            refilling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            making: Mutex::new(()),
            seq: AtomicU64::new(0),
        };
        pool.remove_unfinished();
        Ok(Arc::new(pool))
    }

    /// Mounts an empty, formatted image of `bytes` at `disk` (its file at `image`), with
    /// `upper/` and `work/` prepared: a pool entry's when one of that size is ready, else
    /// made now. Starts a refill either way.
    pub fn take(self: &Arc<Self>, bytes: u64, image: &Path, disk: &Path) -> Result<()> {
        let taken = bytes == self.ready_bytes && self.take_ready(image, disk);
        let result = if taken {
            Ok(())
        } else {
            self.format(image, bytes)
                .and_then(|()| mount_image(image, disk))
                .and_then(|()| prepare_layer(&disk.join("upper"), &disk.join("work")))
        };
        self.refill();
        result
    }

    /// Claims a ready entry (renaming its marker: of racing creates one wins) and moves
    /// it to `image` and `disk`.
    fn take_ready(&self, image: &Path, disk: &Path) -> bool {
        for marker in self.ready() {
            let taken = marker.with_extension("taken");
            if fs::rename(&marker, &taken).is_err() {
                continue;
            }
            let _ = fs::remove_file(&taken);
            let (entry_image, entry_mount) = self.entry(&marker);
            if let Err(e) = fs::rename(&entry_image, image) {
                tracing::warn!(error = %e, "cannot take a pooled disk image");
                discard(&entry_mount, &entry_image);
                continue;
            }
            let moved = mount(
                Some(entry_mount.as_path()),
                disk,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            );
            let placed = match moved {
                Ok(()) => true,
                // Not movable here: mount the image, formatted and prepared already,
                // where it belongs.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot move a pooled disk; mounting it instead");
                    let _ = overlay::unmount(&entry_mount);
                    mount_image(image, disk).is_ok()
                }
            };
            let _ = fs::remove_dir(&entry_mount);
            if placed {
                return true;
            }
            let _ = fs::remove_file(image);
        }
        false
    }

    /// Makes entries in the background (one low-priority thread at a time) until
    /// `target` are ready. The thread holds the pool weakly: it ends with the runtime.
    pub fn refill(self: &Arc<Self>) {
        if self.target == 0
            || self.mkfs.is_none()
            || self.closed.load(Ordering::Acquire)
            || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak: Weak<DiskPool> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("kiln-disk-pool".into())
            .spawn(move || {
                lower_priority();
                // While at least half the pool is ready, let the create that just took
                // one finish first: mkfs and the mount's superblock write compete with
                // it. Below that, refill at once: a steady stream of creates (a fork
                // every few tens of milliseconds) would otherwise drain the pool and
                // format each disk inline (≈ 5 ms of every start).
                while let Some(healthy) = weak.upgrade().map(|p| p.is_healthy()) {
                    if healthy {
                        std::thread::sleep(REFILL_PAUSE);
                    }
                    let Some(pool) = weak.upgrade() else { break };
                    if !pool.make_entry() {
                        pool.refilling.store(false, Ordering::Release);
                        break;
                    }
                }
            });
        if spawned.is_err() {
            self.refilling.store(false, Ordering::Release);
        }
    }

    /// At least half the target (and one) ready: a refill may wait.
    fn is_healthy(&self) -> bool {
        let ready = self.ready().len();
        ready > 0 && ready * 2 >= self.target
    }

    /// Makes one entry if the pool wants one; false when it is full, closed or failing.
    fn make_entry(&self) -> bool {
        let _making = self.making.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::Acquire) || self.ready().len() >= self.target {
            return false;
        }
        // The private mount is made with the first entry, not with the pool: a process
        // that never makes one (a CLI command) leaves no mount behind.
        if let Err(e) = make_private_mount(&self.mounts) {
            tracing::warn!(error = %e, "cannot prepare the sandbox disk pool");
            return false;
        }
        let name = self.unique();
        let (image, mnt) = (
            self.dir.join(format!("{name}.img")),
            self.mounts.join(&name),
        );
        let made = self
            .format(&image, self.ready_bytes)
            .and_then(|()| {
                fs::create_dir(&mnt).map_err(|e| RuntimeError::io("cannot create", &mnt, e))
            })
            .and_then(|()| mount_image(&image, &mnt))
            .and_then(|()| prepare_layer(&mnt.join("upper"), &mnt.join("work")))
            .and_then(|()| {
                let marker = self.dir.join(format!("{name}.ready-{}", self.ready_bytes));
                File::create(&marker)
                    .map(drop)
                    .map_err(|e| RuntimeError::io("cannot create", &marker, e))
            });
        if let Err(e) = made {
            tracing::warn!(error = %e, "cannot prepare a sandbox disk");
            discard(&mnt, &image);
            return false;
        }
        true
    }

    /// Unmounts and removes every entry and the pool's own mount; makes no more.
    pub fn drain(&self) {
        self.closed.store(true, Ordering::Release);
        let _making = self.making.lock().unwrap_or_else(|p| p.into_inner());
        for entry in fs::read_dir(&self.mounts).into_iter().flatten().flatten() {
            discard(&entry.path(), Path::new(""));
        }
        let _ = overlay::unmount(&self.mounts);
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.path() != self.mounts {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Entries of a crashed or concurrent making (no marker) are removed.
    fn remove_unfinished(&self) {
        let _making = self.making.lock().unwrap_or_else(|p| p.into_inner());
        let finished: Vec<PathBuf> = self.ready().iter().map(|m| self.entry(m).0).collect();
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                *p != self.mounts
                    && !p.ends_with(TEMPLATES)
                    && !p.to_string_lossy().contains(".ready-")
            })
            .collect();
        names.extend(
            fs::read_dir(&self.mounts)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
        for path in names {
            let (image, mnt) = self.entry(&path);
            if !finished.contains(&image) {
                discard(&mnt, &image);
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// The image and mount point of the entry a marker, image or mount point names.
    fn entry(&self, path: &Path) -> (PathBuf, PathBuf) {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = file_name.split('.').next().unwrap_or_default();
        (self.dir.join(format!("{name}.img")), self.mounts.join(name))
    }

    /// Markers of the ready entries of the pool's size.
    fn ready(&self) -> Vec<PathBuf> {
        let suffix = format!(".ready-{}", self.ready_bytes);
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
            .map(|e| e.path())
            .collect()
    }

    fn unique(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{nanos:x}{:x}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// An empty filesystem of `bytes` in a new image at `dest`: a copy of the template of
    /// the pool's size, else mkfs.
    fn format(&self, dest: &Path, bytes: u64) -> Result<()> {
        if let Some(templates) = self
            .templates
            .as_ref()
            .filter(|_| bytes == self.ready_bytes)
        {
            let copied = templates.copy_to(dest, bytes, |template| {
                self.mkfs(template, bytes).map_err(std::io::Error::other)
            });
            match copied {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot copy the disk template; running mkfs");
                }
            }
        }
        self.mkfs(dest, bytes)
    }

    /// A sparse file of `bytes` with an ext4 filesystem made by mkfs, at `dest`.
    fn mkfs(&self, dest: &Path, bytes: u64) -> Result<()> {
        let mkfs = self.mkfs.as_ref().ok_or_else(|| {
            RuntimeError::HostNotReady("mkfs.ext4 not found (apt-get install e2fsprogs)".into())
        })?;
        let made = (|| {
            let file =
                File::create(dest).map_err(|e| RuntimeError::io("cannot create", dest, e))?;
            file.set_len(bytes)
                .map_err(|e| RuntimeError::io("cannot size", dest, e))?;
            drop(file);
            // No journal: the filesystem dies with its sandbox, a host crash removes both.
            // No reserved blocks: the limit is all the sandbox's. Lazy inode tables, never
            // zeroed (`noinit_itable` at mount): the image stays sparse. No resize inode:
            // a disk is never grown, and its reserved descriptor blocks were most of what
            // mkfs wrote (4.3 MB of a 10 GiB image, now 0.2 MB).
            let out = Command::new(mkfs)
                .args([
                    "-q",
                    "-F",
                    "-O",
                    "^has_journal,^resize_inode",
                    "-m",
                    "0",
                    "-E",
                ])
                .arg("lazy_itable_init=1,nodiscard,root_owner=0:0")
                .arg(dest)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| RuntimeError::io("cannot run", mkfs, e))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(RuntimeError::io(
                    "mkfs.ext4 failed on",
                    dest,
                    std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                ))
            }
        })();
        if made.is_err() {
            let _ = fs::remove_file(dest);
        }
        made
    }
}

/// Unmounts a pool entry (its loop device goes with it) and removes its files.
fn discard(mnt: &Path, image: &Path) {
    if mnt.exists() {
        let _ = overlay::unmount(mnt);
        let _ = fs::remove_dir_all(mnt);
    }
    let _ = fs::remove_file(image);
}

/// Makes `dir` a mount of its own with private propagation: a mount can be moved only
/// out of a parent that is not shared (and `/` is shared on systemd hosts).
fn make_private_mount(dir: &Path) -> Result<()> {
    let mounted = overlay::mounts_under(dir).iter().any(|m| m == dir);
    if !mounted {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|source| {
            RuntimeError::Mount {
                what: "cannot bind",
                path: dir.to_path_buf(),
                source,
            }
        })?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| RuntimeError::Mount {
        what: "cannot make private",
        path: dir.to_path_buf(),
        source,
    })
}

/// Lowers the calling thread's CPU priority (its children inherit it): pool work must not
/// slow the creates it is meant to speed up.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; `who` 0 is the calling thread on Linux.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// What keeps disk limits from working on this host, if anything.
pub fn disk_limit_problem() -> Option<String> {
    if mkfs_binary().is_none() {
        return Some("mkfs.ext4 not found".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("/dev/loop-control is missing (no loop device support)".into());
    }
    None
}

fn mkfs_binary() -> Option<PathBuf> {
    find_in_path("mkfs.ext4").or_else(|| {
        ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// Mounts the ext4 image at `target` through a loop device that goes away with the mount.
pub fn mount_image(image: &Path, target: &Path) -> Result<()> {
    let device = loopdev::attach(image)?;
    mount(
        Some(device.path.as_path()),
        target,
        Some("ext4"),
        MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        Some("noinit_itable,errors=remount-ro"),
    )
    .map_err(|source| RuntimeError::Mount {
        what: "cannot mount the sandbox's disk on",
        path: target.to_path_buf(),
        source,
    })
    // Our descriptor closes here; the mount keeps the device until it is unmounted.
}

/// Creates the overlay's `upper/` and `work/` (in the sandbox's disk), and `upper/tmp`: the sandbox's
/// `/tmp`, mode 1777 and opaque (empty whatever the layers below hold), so what is
/// written there counts against the disk limit, not memory.
pub fn prepare_layer(upper: &Path, work: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700);
    for dir in [upper, work] {
        builder
            .create(dir)
            .map_err(|e| RuntimeError::io("cannot create", dir, e))?;
    }
    // The upper dir becomes the sandbox's `/`: it must look like a normal root.
    fs::set_permissions(upper, fs::Permissions::from_mode(0o755))
        .map_err(|e| RuntimeError::io("cannot chmod", upper, e))?;
    let tmp = upper.join("tmp");
    builder
        .create(&tmp)
        .map_err(|e| RuntimeError::io("cannot create", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))
        .map_err(|e| RuntimeError::io("cannot chmod", &tmp, e))?;
    set_opaque(&tmp)
}

/// Marks a directory of an overlay's upper layer opaque: the layers below do not show
/// through it.
fn set_opaque(dir: &Path) -> Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| RuntimeError::io("cannot mark opaque", dir, std::io::Error::other(e)))?;
    // SAFETY: both strings are NUL-terminated and the value buffer has the length
    // passed; the kernel only reads them.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(RuntimeError::io(
            "cannot mark opaque",
            dir,
            std::io::Error::last_os_error(),
        ))
    }
}

/// Bytes the host filesystem really holds for `image` (it is sparse).
pub fn allocated_bytes(image: &Path) -> u64 {
    fs::metadata(image)
        .map(|m| m.blocks().saturating_mul(512))
        .unwrap_or(0)
}

/// `(available, used)` bytes of the filesystem holding `path`.
pub fn space(path: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = stat.fragment_size();
    let available = stat.blocks_available().saturating_mul(frsize);
    let used = stat
        .blocks()
        .saturating_sub(stat.blocks_free())
        .saturating_mul(frsize);
    Some((available, used))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_below_half_its_target_is_refilled_without_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let disks = dir.path().join("disks");
        let pool = DiskPool::new(disks.clone(), 1 << 20, 4).unwrap();
        let ready = |name: &str| File::create(disks.join(format!("{name}.ready-{}", 1 << 20)));
        assert!(!pool.is_healthy(), "empty");
        ready("a").unwrap();
        assert!(!pool.is_healthy(), "1 of 4");
        // Another size's entry does not count.
        File::create(disks.join("b.ready-7")).unwrap();
        assert!(!pool.is_healthy(), "still 1 of 4");
        ready("c").unwrap();
        assert!(pool.is_healthy(), "2 of 4");
    }
}
