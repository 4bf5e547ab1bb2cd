//! Noticing that a sandbox stopped on its own: its init (the agent, PID 1 inside) exited,
//! was killed from the host, or fell to the OOM killer. When PID 1 of a pid namespace ends,
//! the kernel kills everything else in it, so the init's end is the sandbox's end.
//!
//! A pidfd of the init becomes readable when the process ends, whoever its parent is: a
//! sandbox adopted after a restart (not our grandchild any more) is watched the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{pidfd_open, Pid, PidfdFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

use crate::local::cgroup::{CgroupBackend, SandboxCgroup};
use crate::runtime::SandboxExit;

/// How often the fallback (no pidfd) looks for the init in the sandbox's cgroup.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A sandbox's watcher, as its record keeps it.
#[derive(Debug)]
pub struct ExitWatch {
    exit: watch::Receiver<Option<SandboxExit>>,
    destroying: Arc<AtomicBool>,
}

impl ExitWatch {
    /// Starts watching `init_pid`, a process of `cgroup`. Needs a Tokio runtime.
    pub fn start(init_pid: u32, cgroups: Arc<dyn CgroupBackend>, cgroup: SandboxCgroup) -> Self {
        let (tx, exit) = watch::channel(None);
        let destroying = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&destroying);
        tokio::spawn(async move {
            wait_for_end(init_pid, &cgroup).await;
            // Read after the end: a destroy marks the sandbox before it kills anything.
            let exit = if flag.load(Ordering::SeqCst) {
                SandboxExit::Destroyed
            } else {
                SandboxExit::Died {
                    reason: reason(cgroups.as_ref(), &cgroup),
                }
            };
            tx.send_replace(Some(exit));
        });
        ExitWatch { exit, destroying }
    }

    /// Called by destroy before it kills anything: the end that follows is not a death.
    pub fn mark_destroying(&self) {
        self.destroying.store(true, Ordering::SeqCst);
    }

    /// Holds the sandbox's end once it stopped (`crate::backend::wait_exit` waits for it).
    pub fn receiver(&self) -> &watch::Receiver<Option<SandboxExit>> {
        &self.exit
    }
}

fn reason(cgroups: &dyn CgroupBackend, cgroup: &SandboxCgroup) -> String {
    if cgroups.oom_killed(cgroup) {
        "the sandbox ran out of memory and the kernel's OOM killer ended it".into()
    } else {
        "the sandbox's init process (its agent, PID 1) exited or was killed".into()
    }
}

async fn wait_for_end(init_pid: u32, cgroup: &SandboxCgroup) {
    let Some(pid) = i32::try_from(init_pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        // ESRCH: already gone.
        Err(rustix::io::Errno::SRCH) => return,
        Err(e) => {
            tracing::warn!(pid = init_pid, error = %e, "no pidfd for a sandbox init: polling");
            return poll_for_end(init_pid, cgroup).await;
        }
    };
    // The pid was free for reuse if the init ended before the pidfd was opened: only a
    // process of the sandbox's own cgroup is the init.
    if !in_cgroup(init_pid, cgroup) {
        return;
    }
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which alone owns it until dropped;
    // `OwnedFd::as_raw_fd` always returns that one open descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
    match registered {
        Ok(fd) => {
            let _ = fd.readable().await;
        }
        Err(e) => {
            tracing::warn!(pid = init_pid, error = %e, "cannot poll a pidfd: polling the cgroup");
            poll_for_end(init_pid, cgroup).await
        }
    }
}

async fn poll_for_end(init_pid: u32, cgroup: &SandboxCgroup) {
    while in_cgroup(init_pid, cgroup) {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn in_cgroup(init_pid: u32, cgroup: &SandboxCgroup) -> bool {
    i32::try_from(init_pid).is_ok_and(|pid| cgroup.pids().contains(&pid))
}
