//! Signal handling without handlers: the signals the agent cares about are blocked in
//! every thread (set before any thread exists, inherited by all) and one thread takes
//! them with `sigwait`. Blocked signals are also what lets PID 1 receive SIGTERM at all:
//! the kernel drops default-disposition signals sent to a namespace's init, but never
//! blocked ones. Commands start with an empty mask (std resets it on spawn).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use crate::agent::Agent;

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

/// Runs forever: reaps on SIGCHLD, starts the shutdown on SIGTERM/SIGINT/SIGHUP.
pub fn run_signal_loop(agent: Arc<Agent>) {
    let set = handled_signals();
    let stopping = Arc::new(AtomicBool::new(false));
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => agent.reaper.reap_all(),
            Ok(signal) => {
                if !stopping.swap(true, Ordering::SeqCst) {
                    eprintln!("kiln-agent: {signal}, stopping");
                    let agent = Arc::clone(&agent);
                    // A separate thread, so this one keeps reaping during the grace
                    // period: exec threads need those statuses to report.
                    if thread::Builder::new()
                        .name("shutdown".into())
                        .spawn(move || shutdown(&agent))
                        .is_err()
                    {
                        std::process::exit(1);
                    }
                }
            }
            Err(err) => {
                eprintln!("kiln-agent: sigwait failed: {err}");
                thread::sleep(Duration::from_millis(100));
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
    let _ = std::fs::remove_file(&agent.socket_path);
    std::process::exit(0);
}
