//! Zombie reaping that never steals an exit status.
//!
//! One reaper calls `waitpid(-1)` for every child, ours or re-parented orphans. A command
//! the agent spawned registers its pid *while the reaper's lock is held across the
//! spawn*, so the reaper cannot collect it before it is registered; its status is then
//! handed to the one waiter that asked for it. Statuses of unknown pids (orphans) are
//! simply dropped: reaping them is the point.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::spawn::{spawn, Launch, Spawned};

/// Hands exit statuses to whoever spawned the process.
#[derive(Default)]
pub struct ChildReaper {
    waiters: Mutex<HashMap<i32, ExitSender>>,
}

struct ExitSender {
    status: Sender<WaitStatus>,
    // A byte on this socket wakes the waiter's poll loop; a socketpair is CLOEXEC, so
    // children never inherit it.
    wake: UnixStream,
}

/// The receiving end for one spawned child's exit status.
pub struct ExitReceiver {
    status: Receiver<WaitStatus>,
    wake: UnixStream,
}

impl ExitReceiver {
    /// Readable once the status has arrived; for `poll`.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The status, if it has arrived.
    pub fn try_status(&mut self) -> Option<WaitStatus> {
        let mut byte = [0u8; 1];
        match self.status.try_recv() {
            Ok(status) => {
                // Drain the wake byte so poll stops reporting it.
                let _ = self.wake.read(&mut byte);
                Some(status)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }
}

impl ChildReaper {
    /// Starts `launch` (see [`spawn`]) and registers it, atomically with respect to
    /// reaping.
    pub fn spawn(&self, launch: &Launch, pipe_stdin: bool) -> io::Result<(Spawned, ExitReceiver)> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        let (tx, rx) = mpsc::channel();
        let mut waiters = self.lock();
        // posix_spawn itself waitpid()s a child whose exec failed; holding the lock keeps
        // the reaper from racing it for that status.
        let spawned = match spawn(launch, pipe_stdin) {
            // As execvp: a file exec does not recognise is a script for /bin/sh.
            Err(e) if e.raw_os_error() == Some(Errno::ENOEXEC as i32) => {
                spawn(&launch.as_sh_script(), pipe_stdin)?
            }
            other => other?,
        };
        waiters.insert(
            spawned.pid,
            ExitSender {
                status: tx,
                wake: wake_tx,
            },
        );
        Ok((
            spawned,
            ExitReceiver {
                status: rx,
                wake: wake_rx,
            },
        ))
    }

    /// Collects every child that has exited; call on each SIGCHLD.
    pub fn reap_all(&self) {
        let mut waiters = self.lock();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    let exited =
                        matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..));
                    let Some(pid) = status.pid() else { continue };
                    if !exited {
                        continue;
                    }
                    if let Some(mut waiter) = waiters.remove(&pid.as_raw()) {
                        // The waiter may have gone away (connection dropped): fine.
                        let _ = waiter.status.send(status);
                        let _ = waiter.wake.write(&[1]);
                    }
                }
                Err(Errno::EINTR) => continue,
                // ECHILD: no children left.
                Err(_) => break,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, ExitSender>> {
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
