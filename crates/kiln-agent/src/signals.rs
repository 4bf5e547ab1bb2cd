//! Signal handling without handlers: the signals the agent cares about are blocked in
//! every thread (set before any thread exists, inherited by all) and one thread takes
//! them from a signalfd, which also says who sent each one. Blocked signals are also
//! what lets PID 1 receive SIGTERM at all: the kernel drops default-disposition signals
//! sent to a namespace's init, but never blocked ones. Commands start with an empty
//! mask (std resets it on spawn).
//!
//! Blocked means *anyone* who may signal the agent reaches it, the sandbox's own
//! processes included (same uid). So a stop signal is obeyed only when it comes from
//! outside the sandbox: see [`sent_from_outside`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::libc;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::agent::Agent;
use crate::process_tree::ProcessTable;

/// How long running commands get between SIGTERM and SIGKILL when the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// After SIGKILL, how long to wait for exec threads to send their results.
const SHUTDOWN_REPORT_WAIT: Duration = Duration::from_secs(1);

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the handled signals in the calling thread; must run before any thread spawns.
pub fn block_handled_signals() -> nix::Result<()> {
    handled_signals().thread_block()
}

/// Who sent a signal, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// `si_code`: how the signal was sent.
    pub code: i32,
    /// `si_pid`: the sender's pid in the agent's pid namespace, 0 when it is outside.
    pub pid: u32,
}

/// Whether a stop signal comes from outside the sandbox, so must be obeyed.
///
/// Only `kill(2)` (`SI_USER`) has its sender filled in by the kernel; `sigqueue` and
/// `pidfd_send_signal` let the sender write `si_pid` itself (any negative `si_code`), and
/// `F_SETSIG` turns I/O readiness into any signal (positive codes, no pid): neither
/// proves anything, so neither stops the agent. As PID 1 of its own pid namespace, a
/// sender the agent cannot see (pid 0) is outside by construction; as an ordinary
/// process (tests, development), a sender is inside when it descends from the agent.
pub fn sent_from_outside(sender: Sender, is_pid1: bool, descends_from_agent: bool) -> bool {
    if sender.code != libc::SI_USER {
        return false;
    }
    if is_pid1 {
        sender.pid == 0
    } else {
        !descends_from_agent
    }
}

/// Runs forever: reaps on SIGCHLD, starts the shutdown on SIGTERM/SIGINT/SIGHUP sent
/// from outside; the same signals from the sandbox's own processes are ignored.
pub fn run_signal_loop(agent: Arc<Agent>) {
    let signals = match SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(err) => {
            eprintln!("kiln-agent: cannot create a signalfd: {err}");
            std::process::exit(1);
        }
    };
    let stopping = Arc::new(AtomicBool::new(false));
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(err) => {
                eprintln!("kiln-agent: reading signals failed: {err}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            agent.reaper.reap_all();
            continue;
        }
        let sender = Sender {
            code: info.ssi_code,
            pid: info.ssi_pid,
        };
        let descends = !agent.is_pid1
            && i32::try_from(sender.pid).is_ok_and(|pid| {
                ProcessTable::scan().descends_from(pid, std::process::id() as i32)
            });
        if !sent_from_outside(sender, agent.is_pid1, descends) {
            eprintln!(
                "kiln-agent: ignored {signal} from inside the sandbox (pid {}, code {})",
                sender.pid, sender.code
            );
            continue;
        }
        if !stopping.swap(true, Ordering::SeqCst) {
            eprintln!("kiln-agent: {signal}, stopping");
            let agent = Arc::clone(&agent);
            // A separate thread, so this one keeps reaping during the grace period:
            // exec threads need those statuses to report.
            if thread::Builder::new()
                .name("shutdown".into())
                .spawn(move || shutdown(&agent))
                .is_err()
            {
                std::process::exit(1);
            }
        }
    }
}

/// Forwards SIGTERM to every command, gives them the grace period, kills what is left,
/// lets exec threads report, removes the socket, exits 0.
fn shutdown(agent: &Agent) {
    agent.execs.signal_all(Signal::SIGTERM);
    if agent.is_pid1 {
        // As init of the namespace, -1 means every other process in it. Never done
        // outside PID 1: there it would mean every process the user can signal.
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    }
    if !agent.execs.wait_all_reported(SHUTDOWN_GRACE) {
        agent.execs.signal_all(Signal::SIGKILL);
        agent.execs.wait_all_reported(SHUTDOWN_REPORT_WAIT);
    }
    if agent.is_pid1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    if let Some(path) = &agent.socket_path {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kill_from_outside_stops_the_agent() {
        let user = |pid| Sender {
            code: libc::SI_USER,
            pid,
        };
        // PID 1: outside is "no pid visible".
        assert!(sent_from_outside(user(0), true, false));
        assert!(!sent_from_outside(user(7), true, false));
        // sigqueue can claim any pid, 0 included; F_SETSIG and the kernel give no pid.
        for code in [libc::SI_QUEUE, libc::SI_TKILL, 1, libc::SI_KERNEL] {
            let forged = Sender { code, pid: 0 };
            assert!(!sent_from_outside(forged, true, false), "{code}");
            assert!(!sent_from_outside(forged, false, false), "{code}");
        }
        // An ordinary process: the agent's descendants are inside.
        assert!(sent_from_outside(user(4242), false, false));
        assert!(!sent_from_outside(user(4242), false, true));
    }
}
