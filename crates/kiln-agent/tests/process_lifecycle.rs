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
    let done = agent
        .client()
        .exec(ExecRequest::shell(
            "sh -c 'sleep 0.5 >/dev/null 2>&1 & echo $!'",
        ))
        .unwrap();
    let orphan: u32 = done.stdout.to_string_lossy().trim().parse().unwrap();
    assert_eq!(
        proc_status_field(orphan, "PPid").as_deref(),
        Some(agent.pid().to_string().as_str()),
        "the orphan is re-parented to the agent (subreaper)"
    );
    assert!(
        wait_gone(orphan, Duration::from_secs(5)),
        "orphan {orphan} was not reaped: state {:?}",
        proc_status_field(orphan, "State")
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
