//! Advisory file locks (`flock`) that order imports, index updates and garbage collection
//! across threads and processes.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{ImageError, Result};

/// A held lock; released on drop. Each guard opens its own file description, so two threads
/// of one process exclude each other just like two processes do.
pub(crate) struct LockGuard {
    _lock: Flock<File>,
}

fn lock(path: &Path, arg: FlockArg) -> Result<LockGuard> {
    try_lock(path, arg)?.ok_or_else(|| ImageError::Io {
        action: "lock",
        path: path.to_owned(),
        source: std::io::ErrorKind::WouldBlock.into(),
    })
}

fn try_lock(path: &Path, arg: FlockArg) -> Result<Option<LockGuard>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ImageError::io("open lock file", path))?;
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(LockGuard { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(ImageError::Io {
            action: "lock",
            path: path.to_owned(),
            source: errno.into(),
        }),
    }
}

/// Shared: many imports/pulls at once. Exclusive: garbage collection, which must not delete a
/// blob or layer an in-flight import has written but not yet recorded in the index.
pub(crate) fn shared(path: &Path) -> Result<LockGuard> {
    lock(path, FlockArg::LockShared)
}

pub(crate) fn exclusive(path: &Path) -> Result<LockGuard> {
    lock(path, FlockArg::LockExclusive)
}

/// Exclusive, or `None` at once if anyone holds the lock.
pub(crate) fn try_exclusive(path: &Path) -> Result<Option<LockGuard>> {
    try_lock(path, FlockArg::LockExclusiveNonblock)
}
