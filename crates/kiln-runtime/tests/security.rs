//! The isolation promises, tested by trying to break them from inside real sandboxes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "security/inside.rs"]
mod inside;
mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use kiln_protocol::ExecRequest;
use kiln_runtime::{Limits, Runtime};
use support::*;

async fn sh(rt: &TestRuntime, sandbox: &str, script: &str) -> (i32, String) {
    sh_within(rt, sandbox, script, 120_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_other_sandboxes_are_invisible() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let marker = rt.root.path().join("host-marker.txt");
    std::fs::write(&marker, "host secret").unwrap();
    rt.create_local(busybox_spec("iso-a")).await.unwrap();
    rt.create_local(busybox_spec("iso-b")).await.unwrap();

    let (code, out) = sh(&rt, "iso-a", "cat /etc/shadow").await;
    assert_ne!(code, 0, "read /etc/shadow: {out}");
    let probes = [
        marker.display().to_string(),
        format!("/proc/1/root{}", marker.display()),
        "/proc/1/root/etc/shadow".into(),
        "/sys/fs/cgroup/cgroup.procs".into(),
    ];
    for path in &probes {
        let (code, out) = sh(&rt, "iso-a", &format!("cat {path}")).await;
        assert_ne!(code, 0, "read {path}: {out}");
        assert!(!out.contains("host secret"));
    }
    // Host paths must not lead anywhere (nor show: `inside::host_paths_…`).
    let host_dir = rt.root.path().display().to_string();
    let (code, out) = sh(&rt, "iso-a", &format!("ls {host_dir} /var/tmp /work")).await;
    assert_ne!(code, 0, "host directories reachable: {out}");
    // Only the sandbox's own processes are visible.
    let (_, out) = sh(&rt, "iso-a", "ls /proc | grep -c '^[0-9]'").await;
    assert!(out.trim().parse::<u32>().unwrap() < 6, "{out}");

    let (code, _) = sh(&rt, "iso-a", "echo mine > /testbed/a-only.txt").await;
    assert_eq!(code, 0);
    let (code, out) = sh(&rt, "iso-b", "cat /testbed/a-only.txt").await;
    assert_ne!(code, 0, "sandbox b sees a's file: {out}");
    let (_, out) = sh(&rt, "iso-b", "find / -name a-only.txt 2>/dev/null").await;
    assert_eq!(out, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileges_are_dropped() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("priv1")).await.unwrap();
    let (_, out) = sh(
        &rt,
        "priv1",
        "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status",
    )
    .await;
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert!(out.contains(&format!("{set}:\t0000000000000000")), "{out}");
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    for attempt in [
        "mount -t tmpfs none /mnt",
        "umount /.kiln/run",
        "unshare -U true",
        "unshare -r true",
        "nsenter -t 1 -m true",
        "mknod /tmp/sda b 8 0",
        "chroot / true",
        // Opened for writing, nothing written: a regression must not reboot the host.
        // Hidden, it is `/dev/null` (a character device), which may be written.
        "[ ! -c /proc/sysrq-trigger ] && : >> /proc/sysrq-trigger",
        // The same mode again: a regression changes nothing, but would show that the
        // mode of a host-wide /proc entry can be changed from inside.
        "chmod 0444 /proc/version",
    ] {
        let (code, out) = sh(&rt, "priv1", attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
    }
    // Host-wide sysctls, each written with the value it has now (read on the host), so
    // that a regression cannot change the machine.
    for sysctl in [
        "kernel/sysrq",
        "kernel/core_pattern",
        "kernel/modprobe",
        "vm/swappiness",
    ] {
        let host_path = format!("/proc/sys/{sysctl}");
        let Ok(current) = std::fs::read_to_string(&host_path) else {
            continue; // not in this kernel
        };
        let quoted = current.trim_end_matches('\n').replace('\'', "'\\''");
        let attempt = format!("printf '%s\\n' '{quoted}' > {host_path}");
        let (code, out) = sh(&rt, "priv1", &attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
        assert_eq!(std::fs::read_to_string(&host_path).unwrap(), current);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_network() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.create_local(busybox_spec("net1")).await.unwrap();
    let (_, out) = sh(&rt, "net1", "ip -o link").await;
    let links: Vec<&str> = out.lines().collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].contains(": lo:"), "{out}");
    let (code, out) = sh(&rt, "net1", &format!("echo hi | nc -w 1 127.0.0.1 {port}")).await;
    assert_ne!(code, 0, "reached the host's listener: {out}");
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
    let (code, _) = sh(&rt, "net1", "wget -q -T 1 -O - http://1.1.1.1/").await;
    assert_ne!(code, 0);
    // Loopback itself works inside.
    let (code, out) = sh(
        &rt,
        "net1",
        // The listener's stdin stays open (a background job's is /dev/null, whose EOF can
        // end busybox nc before it reads); the client retries until the listener is up,
        // then the file is polled: no timing guess either way.
        "(sleep 5 | nc -l -p 7070 > /tmp/got) & \
         for i in $(seq 100); do echo ping | nc -w 1 127.0.0.1 7070 && break; sleep 0.05; done; \
         for i in $(seq 100); do grep -q ping /tmp/got && break; sleep 0.05; done; cat /tmp/got",
    )
    .await;
    assert!(
        out.contains("ping"),
        "loopback inside failed ({code}): {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_hits_the_pids_limit() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let mut spec = busybox_spec("bomb1");
    spec.limits = Limits {
        pids: Some(64),
        ..Limits::default()
    };
    rt.create_local(spec).await.unwrap();
    let start = Instant::now();
    let done = rt
        .exec(
            &id("bomb1"),
            ExecRequest::shell("bomb() { bomb | bomb & }; bomb; sleep 2").timeout_ms(3000),
        )
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(120));
    eprintln!("bomb: exit {} timed_out {}", done.exit_code, done.timed_out);
    let pids = rt.pids(&id("bomb1")).unwrap();
    assert!(pids.len() <= 64, "{} processes", pids.len());
    // The host can still start processes, and the sandbox recovers once the bomb is gone.
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
    rt.destroy(&id("bomb1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_killed_inside_the_sandbox() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let mut spec = busybox_spec("hog1");
    spec.limits = Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    rt.create_local(spec).await.unwrap();
    let done = rt
        .exec(
            &id("hog1"),
            ExecRequest::shell("awk 'BEGIN { s = \"xxxxxxxx\"; while (1) s = s s }'")
                .timeout_ms(120_000),
        )
        .await
        .unwrap();
    assert!(!done.timed_out);
    assert_eq!(done.signal, Some(9), "exit {}", done.exit_code);
    assert!(rt.oom_killed(&id("hog1")).unwrap());
    // The agent survived: the sandbox still works.
    assert_alive(&rt, "hog1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_die_with_a_timed_out_command() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("bg1")).await.unwrap();
    let done = rt
        .exec(
            &id("bg1"),
            ExecRequest::shell("sleep 1000 & disown 2>/dev/null; sleep 1001").timeout_ms(300),
        )
        .await
        .unwrap();
    assert!(done.timed_out);
    let (_, out) = sh(&rt, "bg1", "ps -o args").await;
    assert!(!out.contains("sleep 100"), "survivors: {out}");
    let host_survivors: Vec<i32> = rt
        .pids(&id("bg1"))
        .unwrap()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .starts_with("sleep")
        })
        .collect();
    assert!(host_survivors.is_empty(), "{host_survivors:?}");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gib_of_output_keeps_memory_bounded() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("out1")).await.unwrap();
    let before = rss_kib();
    let done = rt
        .exec(
            &id("out1"),
            ExecRequest::shell("head -c 1073741824 /dev/zero")
                .max_output_bytes(1 << 20)
                .timeout_ms(600_000),
        )
        .await
        .unwrap();
    let grown = rss_kib().saturating_sub(before);
    assert_eq!(done.exit_code, 0);
    assert_eq!(done.stdout.len(), 1 << 20);
    assert_eq!(done.stdout_truncated_bytes, (1 << 30) - (1 << 20));
    assert!(grown < 64 * 1024, "server RSS grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_binary_and_socket_cannot_be_replaced() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let h = rt.create_local(busybox_spec("seal1")).await.unwrap();
    let agent_on_host = std::fs::read(rt.agent_path()).unwrap();
    for attempt in [
        "echo evil > /.kiln/agent",
        "rm -f /.kiln/agent",
        "mv /.kiln/agent /tmp/agent",
        "rm -f /.kiln/run/agent.sock",
        "mv /.kiln/run/agent.sock /.kiln/run/old",
        "touch /.kiln/run/evil",
        "ln -s /etc /.kiln/run/link",
        "chmod 777 /.kiln/run/agent.sock",
        "echo evil > /proc/1/exe",
        "mount --bind /tmp /.kiln/run",
        "touch /tmp/f; mount --bind /tmp/f /.kiln/agent",
        "touch /tmp/f; mount --bind /tmp/f /.kiln/run/agent.sock",
    ] {
        let (code, out) = sh(&rt, "seal1", attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
    }
    // Renaming the directory above does not move what the server connects to.
    let _ = sh(&rt, "seal1", "mv /.kiln /.kiln-moved; mkdir -p /.kiln/run").await;
    assert_eq!(std::fs::read(rt.agent_path()).unwrap(), agent_on_host);
    let run_dir = rt.sandbox_dir(&h.id).join("run");
    let names: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["agent.sock"]);
    let (code, out) = sh(&rt, "seal1", "echo still-the-agent").await;
    assert_eq!((code, out.as_str()), (0, "still-the-agent\n"));
}

/// Everything under `/proc` that is not a process's own: opening any of it for writing
/// (append, so nothing is written even if a regression lets it through) must fail.
/// Host-wide state lives there (`kernel.core_pattern`, `vm.*`, sysrq, dynamic debug) and
/// the sandbox's root is uid 0, which mode bits alone do not stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_kernel_state_in_proc_is_read_only() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("proc1")).await.unwrap();
    let (code, out) = sh(
        &rt,
        "proc1",
        "find /proc \\( -path '/proc/[0-9]*' -o -path /proc/self -o -path /proc/thread-self \\) -prune \
         -o ! -type d ! -type l ! -type c -print | while read -r f; do \
           if (: >> \"$f\") 2>/dev/null; then echo \"writable: $f\"; fi; \
         done; echo walked",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("walked\n"), "{out}");
    let writable: Vec<&str> = out.lines().filter(|l| l.starts_with("writable")).collect();
    assert!(writable.is_empty(), "{}", writable.join("\n"));
    // Kernel internals are hidden (character devices above: `/dev/null` in their place).
    let (code, out) = sh(
        &rt,
        "proc1",
        "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sysrq-trigger; do \
           [ ! -e $f ] || [ \"$(head -c 1 $f | wc -c)\" = 0 ] || echo \"readable: $f\"; done; \
         [ ! -d /proc/acpi ] || [ -z \"$(ls -A /proc/acpi)\" ] || echo 'readable: /proc/acpi'",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, ""));
    // The process's own view still works (python, ps, fd listings rely on it).
    let (code, out) = sh(
        &rt,
        "proc1",
        "ls /proc/self/fd >/dev/null && cat /proc/self/comm && ps -o pid | wc -l",
    )
    .await;
    assert_eq!(code, 0, "{out}");
}
