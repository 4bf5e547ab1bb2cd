//! What a command leaves behind is killed when it ends: background jobs, daemons that
//! left its process group with `setsid`, a fork bomb's hundreds of copies. Otherwise they
//! would hold the sandbox's pids limit and CPU, and the next command would fail to fork
//! or crawl. Processes of execs still running are spared: those not in their process
//! group nor below their first process are not recognisably theirs, and are killed too.
//!
//! The protocol has no notion of a detached or background exec, so nothing survives the
//! command that started it (a server for the next command is started in that command).

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::agent::Agent;
use crate::process_tree::ProcessTable;

/// The most one clean-up may take: a bound, not an expectation (a fork bomb under a pids
/// limit of 512 is gone in a few milliseconds).
const MAX_CLEANUP: Duration = Duration::from_secs(5);

/// Kills every process below the agent that belongs to no running exec, and collects
/// them, until none is left. No exec starts meanwhile (the spawn gate), so a command
/// being spawned can never be mistaken for a leftover.
pub fn kill_leftovers(agent: &Agent) {
    let _no_spawns = agent
        .spawn_gate
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let protected = agent.execs.running_groups();
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    // As init with nothing to spare, `kill(-1)` reaches every other process of the
    // namespace in one call, which a fork bomb cannot outrun between two scans.
    let everything = agent.is_pid1 && protected.is_empty();
    let deadline = Instant::now() + MAX_CLEANUP;
    loop {
        if everything {
            // First, before any scan: a fork bomb shares the sandbox's CPU quota with the
            // agent, so each scan is slow while it runs, and fast once it is dead.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            agent.reaper.reap_all();
        }
        let table = ProcessTable::scan();
        let leftovers = table.leftovers(me, &protected);
        // Zombies still count against the pids limit: done once they are collected too.
        let left = if everything {
            table.others_than(me)
        } else {
            leftovers.len()
        };
        if left == 0 {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("kiln-agent: {left} leftover processes survived {MAX_CLEANUP:?} of killing");
            return;
        }
        if !everything {
            for leftover in leftovers.iter().filter(|l| !l.zombie) {
                let _ = kill(Pid::from_raw(leftover.pid), Signal::SIGKILL);
            }
            agent.reaper.reap_all();
        }
        thread::sleep(Duration::from_millis(1));
    }
}
