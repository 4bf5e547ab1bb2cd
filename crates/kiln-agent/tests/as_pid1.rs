//! The agent as PID 1 of a fresh pid namespace (`unshare --pid --fork`), as in a
//! sandbox: orphans are reaped, signals from inside change nothing, SIGTERM from outside
//! reaches it, it exits cleanly.
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

    // From inside, nothing stops or freezes the agent: the stop signals it takes are
    // ignored when their sender is in its namespace, and the kernel drops SIGKILL and
    // SIGSTOP sent to a namespace's init from within.
    let done = client
        .exec(ExecRequest::shell(
            "for s in TERM INT HUP KILL STOP; do kill -$s 1 || echo failed $s; done; echo sent",
        ))
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "sent\n", "{done:?}");
    thread::sleep(Duration::from_millis(200));
    let done = client
        .exec(ExecRequest::shell("grep State /proc/1/status"))
        .unwrap();
    let state = done.stdout.to_string_lossy();
    assert!(!state.contains("stopped"), "{state}");
    assert!(unshare.try_wait().unwrap().is_none(), "the agent died");

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

/// The static build as PID 1 of a busybox-only root: no bash (falls back to `sh`), no
/// /dev (stdin still reads EOF), no libc to load. Runs only when `KILN_AGENT_BIN` names
/// a static build and a static `busybox` is installed.
#[test]
fn static_build_runs_in_a_busybox_only_root() {
    let (Some(agent_bin), true) = (
        std::env::var_os("KILN_AGENT_BIN"),
        std::path::Path::new("/bin/busybox").exists(),
    ) else {
        eprintln!("skipped: needs KILN_AGENT_BIN=$(scripts/build-agent.sh) and /bin/busybox");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    for dir in ["bin", "run", "proc", "testbed"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).unwrap();
    std::fs::copy(agent_bin, root.path().join("kiln-agent")).unwrap();
    let spawn = || {
        Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--mount-proc=/proc",
            ])
            .arg(format!("--root={}", root.path().display()))
            .args(["/kiln-agent", "--listen", "/run/agent.sock"])
            .env_clear()
            .spawn()
            .unwrap()
    };
    let mut unshare = spawn();
    let client = AgentClient::new(root.path().join("run/agent.sock"));
    let began = Instant::now();
    while client.ping().is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "agent did not start"
        );
        // Another test thread forking while we copied the binary can hold a write fd
        // to it for an instant: exec then fails with ETXTBSY. Try again.
        if unshare.try_wait().unwrap().is_some() {
            unshare = spawn();
        }
        thread::sleep(Duration::from_millis(5));
    }
    let done = client
        .exec(ExecRequest::shell(
            "echo $0 $$; pwd; /bin/busybox cat; echo eof",
        ))
        .unwrap();
    let stdout = done.stdout.to_string_lossy();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("/bin/sh "), "{stdout}");
    assert_eq!(&lines[1..], ["/testbed", "eof"], "{stdout}");
    let _ = unshare.kill();
    let _ = unshare.wait();
}
