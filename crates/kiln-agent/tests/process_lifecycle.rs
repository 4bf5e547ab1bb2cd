//! Timeouts, bounded output, zombie reaping, exit-status routing, SIGTERM shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{proc_status_field, wait_gone, AgentProcess};
use kiln_protocol::{ExecEvent, ExecRequest};

#[test]
fn timeout_kills_the_whole_process_group() {
    let agent = AgentProcess::start();
    let began = Instant::now();
    let done = agent
        .client()
        .exec(ExecRequest::shell("sleep 1000 & disown; echo $!; sleep 1000").timeout_ms(300))
        .unwrap();
    assert!(done.timed_out);
    assert_eq!(done.exit_code, 124);
    assert_eq!(done.signal, Some(15), "sleep dies of the SIGTERM");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    let background: u32 = done.stdout.to_string_lossy().trim().parse().unwrap();
    assert!(
        wait_gone(background, Duration::from_secs(3)),
        "disowned sleep {background} survived the timeout: {:?}",
        proc_status_field(background, "State")
    );
}

#[test]
fn timeout_escalates_to_sigkill_after_the_grace_period() {
    let agent = AgentProcess::start();
    let began = Instant::now();
    let done = agent
        .client()
        .exec(
            ExecRequest::shell("trap '' TERM; echo $$; while :; do sleep 0.05; done")
                .timeout_ms(200),
        )
        .unwrap();
    let elapsed = began.elapsed();
    assert!(done.timed_out);
    assert_eq!(done.exit_code, 124);
    assert_eq!(done.signal, Some(9));
    assert!(
        elapsed >= Duration::from_millis(2_000),
        "grace not given: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_millis(4_000), "{elapsed:?}");
}

#[test]
fn one_gib_of_output_keeps_the_agent_small_and_reports_truncation() {
    let agent = AgentProcess::start();
    let before_kb = agent.status_kb("VmHWM");
    let cap: u64 = 1 << 20;
    let total: u64 = 1 << 30;
    let done = agent
        .client()
        .exec(
            ExecRequest::shell(format!("head -c {total} /dev/zero; printf END"))
                .max_output_bytes(cap)
                .timeout_ms(60_000),
        )
        .unwrap();
    let peak_kb = agent.status_kb("VmHWM");
    eprintln!("agent VmHWM before {before_kb} kB, after 1 GiB of stdout {peak_kb} kB");
    assert_eq!(done.exit_code, 0);
    assert_eq!(done.stdout.len() as u64, cap);
    assert_eq!(done.stdout_truncated_bytes, total + 3 - cap);
    assert!(done.stdout.as_bytes().ends_with(b"END"), "tail kept");
    assert!(
        done.stdout.as_bytes()[..16].iter().all(|&b| b == 0),
        "head kept"
    );
    assert!(
        peak_kb < 32 * 1024,
        "agent peak RSS {peak_kb} kB for 1 GiB of output"
    );
}

#[test]
fn orphans_are_reaped() {
    let agent = AgentProcess::start();
    // The orphan outlives its parent but not the exec (which spares its own group).
    let done = agent
        .client()
        .exec(ExecRequest::shell(
            "p=$(sh -c 'sleep 0.3 >/dev/null 2>&1 & echo $!'); echo $p; \
             grep PPid /proc/$p/status; sleep 1; \
             if [ -e /proc/$p ]; then echo left; else echo gone; fi",
        ))
        .unwrap();
    let stdout = done.stdout.to_string_lossy();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[1].split_whitespace().nth(1),
        Some(agent.pid().to_string().as_str()),
        "the orphan is re-parented to the agent (subreaper): {stdout}"
    );
    assert_eq!(lines[2], "gone", "the orphan was not reaped: {stdout}");
}

#[test]
fn what_a_command_leaves_behind_is_killed_when_it_ends() {
    let agent = AgentProcess::start();
    let client = agent.client();
    // A background job, a daemon in its own session, a grandchild of a vanished parent.
    let done = client
        .exec(ExecRequest::shell(
            "sleep 1000 >/dev/null 2>&1 & echo $!; \
             setsid sh -c 'echo $$; exec sleep 1001' </dev/null 2>/dev/null & sleep 0.2; \
             sh -c 'sleep 1002 >/dev/null 2>&1 & echo $!'",
        ))
        .unwrap();
    assert_eq!(done.exit_code, 0);
    let pids: Vec<u32> = done
        .stdout
        .to_string_lossy()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{:?}", done.stdout);
    for pid in pids {
        // Already gone when the result arrives: killed and reaped before the answer.
        assert_eq!(
            proc_status_field(pid, "State"),
            None,
            "leftover {pid} survived its command"
        );
    }
    // The same after a timeout, for what escaped the group kill with setsid.
    let done = client
        .exec(
            ExecRequest::shell("setsid sleep 1003 </dev/null >/dev/null 2>&1 & sleep 1000")
                .timeout_ms(200),
        )
        .unwrap();
    assert!(done.timed_out);
    let count = client
        .exec(ExecRequest::shell(
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done \
             | grep -c '^sleep 100' || true",
        ))
        .unwrap();
    assert_eq!(count.stdout.to_string_lossy().trim(), "0");
}

#[test]
fn a_running_exec_keeps_its_processes_when_another_ends() {
    let agent = AgentProcess::start();
    let (tx, rx) = mpsc::channel();
    let long = {
        let client = agent.client();
        thread::spawn(move || {
            // A background job, one re-parented to the agent (its sub-shell exits) and
            // one in its own session: all this exec's own while it runs.
            let script = "sleep 3017 & (sleep 3018 &); setsid sleep 3019 & echo started; \
                          sleep 1.5; for p in /proc/[0-9]*; do \
                          tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done \
                          | grep -c '^sleep 301[789] $'";
            client.exec_streaming(ExecRequest::shell(script), |event| {
                if let ExecEvent::Output { data, .. } = event {
                    if data.to_string_lossy().contains("started") {
                        let _ = tx.send(());
                    }
                }
            })
        })
    };
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    for _ in 0..3 {
        let done = agent.client().exec(ExecRequest::shell("true")).unwrap();
        assert_eq!(done.exit_code, 0);
    }
    let done = long.join().unwrap().unwrap();
    let stdout = done.stdout.to_string_lossy();
    assert_eq!(
        stdout.lines().last(),
        Some("3"),
        "the running exec's processes were killed: {stdout}"
    );
}

#[test]
fn concurrent_execs_each_get_their_own_exit_status() {
    let agent = AgentProcess::start();
    let runners: Vec<_> = (0..24)
        .map(|code| {
            let client = agent.client();
            thread::spawn(move || {
                // An orphan exiting at the same time competes for the reaper's attention.
                let script = format!("(sleep 0.0{} &) ; sleep 0.05; exit {code}", code % 10);
                (
                    code,
                    client.exec(ExecRequest::shell(script)).unwrap().exit_code,
                )
            })
        })
        .collect();
    for runner in runners {
        let (code, got) = runner.join().unwrap();
        assert_eq!(got, code);
    }
}

#[test]
fn sigterm_stops_running_commands_and_exits_cleanly() {
    let mut agent = AgentProcess::start();
    let (tx, rx) = mpsc::channel();
    let runner = {
        let client = agent.client();
        thread::spawn(move || {
            client.exec_streaming(ExecRequest::shell("sleep 1000"), |event| {
                if let ExecEvent::Started { pid, .. } = event {
                    tx.send(pid).unwrap();
                }
            })
        })
    };
    let pid = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let done = runner.join().unwrap().unwrap();
    assert_eq!(done.signal, Some(15), "SIGTERM forwarded to the command");
    let began = Instant::now();
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "agent did not exit"
        );
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    assert!(wait_gone(pid, Duration::from_secs(2)));
    assert!(!agent.socket.exists(), "socket removed on shutdown");
}
