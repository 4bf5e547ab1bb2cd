//! Waking the start when the agent's socket appears, instead of polling for it.
//!
//! The agent binds its socket in the sandbox's run directory and then restricts its mode;
//! both are inotify events on that directory (the same tmpfs inode on the host, whatever
//! mounts the sandbox sees it through). Polling with a backoff found the socket ≈ 1 ms
//! after it was ready on average; the watch wakes the start at once. A slow tick stays, for
//! what inotify cannot report (bwrap exiting, the start's deadline).

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::{Result, RuntimeError};

/// How long the start sleeps between looks when no event came.
const TICK: Duration = Duration::from_millis(5);

/// An inotify watch on one directory, set before anything can create in it.
pub struct SocketWatch {
    fd: AsyncFd<Watched>,
}

/// `AsyncFd` asks for `AsRawFd`, which nix's `Inotify` only has as `AsFd`.
struct Watched(Inotify);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl SocketWatch {
    /// Watches `dir` for entries created, moved in, or changing their mode.
    pub fn new(dir: &Path) -> Result<Self> {
        let io = |e: nix::Error| RuntimeError::io("cannot watch", dir, std::io::Error::from(e));
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io)?;
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_MOVED_TO,
            )
            .map_err(io)?;
        // SAFETY: the `Inotify` moves into the `AsyncFd`, which alone owns it until
        // dropped; `Watched::as_raw_fd` always returns that one open descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(Watched(inotify), Interest::READABLE) }
            .map_err(|e| RuntimeError::io("cannot watch", dir, e.into()))?;
        Ok(SocketWatch { fd })
    }

    /// Returns after an event in the directory, or after the tick, whichever comes first.
    /// Events are drained: the caller looks at the directory itself.
    pub async fn changed(&self) {
        self.changed_within(TICK).await;
    }

    async fn changed_within(&self, tick: Duration) {
        let Ok(Ok(mut ready)) = tokio::time::timeout(tick, self.fd.readable()).await else {
            return;
        };
        // Drain everything queued; EAGAIN (nothing left) clears readiness.
        while self.fd.get_ref().0.read_events().is_ok() {}
        ready.clear_ready();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_new_entry_or_a_mode_change_wakes_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let watch = SocketWatch::new(dir.path()).unwrap();
        let path = dir.path().join("agent.sock");
        // A tick far longer than any test: returning at all means an event woke it.
        let long = Duration::from_secs(60);
        let created = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::write(created, b"").unwrap();
        });
        let start = Instant::now();
        watch.changed_within(long).await;
        assert!(start.elapsed() < long / 2, "{:?}", start.elapsed());
        writer.join().unwrap();
        assert!(path.exists());

        let chmod = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(chmod, std::fs::Permissions::from_mode(0o600)).unwrap();
        });
        let start = Instant::now();
        watch.changed_within(long).await;
        assert!(start.elapsed() < long / 2, "{:?}", start.elapsed());
        writer.join().unwrap();

        // Drained: a quiet directory waits out its tick.
        let quiet = Instant::now();
        watch.changed_within(Duration::from_millis(50)).await;
        assert!(
            quiet.elapsed() >= Duration::from_millis(50),
            "{:?}",
            quiet.elapsed()
        );
    }
}
