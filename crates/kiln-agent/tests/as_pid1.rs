//! The agent as PID 1 of a fresh pid namespace (`unshare --pid --fork`), as in a
//! sandbox: orphans are reaped, SIGTERM from outside reaches it, it exits cleanly.
//! Skipped (with a note) where `unshare` or the privilege to use it is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kiln_protocol::{AgentClient, ExecRequest};

#[test]
fn as_pid1_reaps_orphans_and_stops_on_sigterm() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot create a pid namespace with unshare here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut unshare = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            env!("CARGO_BIN_EXE_kiln-agent"),
            "--listen",
        ])
        .arg(&socket)
        .spawn()
        .unwrap();
    let client = AgentClient::new(&socket);
    let began = Instant::now();
    while client.ping().is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "agent did not start"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let done = client
        .exec(ExecRequest::shell("echo $PPID; cat /proc/1/comm"))
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "1\nkiln-agent\n");

    client
        .exec(ExecRequest::shell("sh -c 'sleep 0.2 >/dev/null 2>&1 &'"))
        .unwrap();
    thread::sleep(Duration::from_millis(600));
    let states = client
        .exec(ExecRequest::shell("cat /proc/[0-9]*/stat"))
        .unwrap()
        .stdout
        .to_string_lossy();
    assert!(
        !states.contains(") Z "),
        "zombies left under PID 1:\n{states}"
    );

    // SIGTERM from the parent namespace to the namespace's init.
    let agent_host_pid: i32 =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_host_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let began = Instant::now();
    let status = loop {
        if let Some(status) = unshare.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "PID 1 agent ignored SIGTERM"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}
