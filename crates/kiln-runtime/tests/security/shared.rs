//! The isolation promises every backend keeps, as checks on running sandboxes through the
//! `Runtime` interface alone: `security.rs` runs them on the local backend and
//! `docker_security.rs` on the Docker backend; each adds what only it can see from the
//! host (the local backend's process list, its OOM record).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_protocol::ExecRequest;
use kiln_runtime::{Runtime, SandboxId};

/// Runs `script` with the shell: the exit code and stdout followed by stderr.
pub async fn sh(rt: &dyn Runtime, sandbox: &SandboxId, script: &str) -> (i32, String) {
    let done = rt
        .exec(sandbox, ExecRequest::shell(script).timeout_ms(120_000))
        .await
        .unwrap();
    let mut out = done.stdout.to_string_lossy();
    out.push_str(&done.stderr.to_string_lossy());
    (done.exit_code, out)
}

/// The sandbox still runs commands (its agent survived what the test did).
pub async fn assert_alive(rt: &dyn Runtime, sandbox: &SandboxId) {
    let (code, out) = sh(rt, sandbox, "echo alive").await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
}

/// From `a`: the host's files (`host_file`, holding "host secret", in `host_dir`) and
/// its processes are out of reach, and so is what sandbox `b` writes.
pub async fn assert_host_and_neighbour_invisible(
    rt: &dyn Runtime,
    a: &SandboxId,
    b: &SandboxId,
    host_file: &Path,
    host_dir: &Path,
) {
    let (code, out) = sh(rt, a, "cat /etc/shadow").await;
    assert_ne!(code, 0, "read /etc/shadow: {out}");
    let probes = [
        host_file.display().to_string(),
        format!("/proc/1/root{}", host_file.display()),
        "/proc/1/root/etc/shadow".into(),
        "/sys/fs/cgroup/cgroup.procs".into(),
    ];
    for path in &probes {
        let (code, out) = sh(rt, a, &format!("cat {path}")).await;
        assert_ne!(code, 0, "read {path}: {out}");
        assert!(!out.contains("host secret"));
    }
    let host_dir = host_dir.display().to_string();
    let (code, out) = sh(rt, a, &format!("ls {host_dir} /var/tmp /work")).await;
    assert_ne!(code, 0, "host directories reachable: {out}");
    // Only the sandbox's own processes are visible.
    let (_, out) = sh(rt, a, "ls /proc | grep -c '^[0-9]'").await;
    assert!(out.trim().parse::<u32>().unwrap() < 6, "{out}");

    let (code, _) = sh(rt, a, "echo mine > /testbed/a-only.txt").await;
    assert_eq!(code, 0);
    let (code, out) = sh(rt, b, "cat /testbed/a-only.txt").await;
    assert_ne!(code, 0, "sandbox b sees a's file: {out}");
    let (_, out) = sh(rt, b, "find / -name a-only.txt 2>/dev/null").await;
    assert_eq!(out, "");
}

/// No capabilities, no new privileges, a seccomp filter; mounts, namespaces, devices,
/// chroot and the host's kernel settings refused.
pub async fn assert_privileges_dropped(rt: &dyn Runtime, sandbox: &SandboxId) {
    let (_, out) = sh(
        rt,
        sandbox,
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
    ] {
        let (code, out) = sh(rt, sandbox, attempt).await;
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
        let (code, out) = sh(rt, sandbox, &attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
        assert_eq!(std::fs::read_to_string(&host_path).unwrap(), current);
    }
}

/// The mode of a host-wide `/proc` entry cannot be changed from inside (procfs entries
/// are shared by every mount of it). The same mode again: a regression changes nothing.
pub async fn assert_proc_modes_unchangeable(rt: &dyn Runtime, sandbox: &SandboxId) {
    let (code, out) = sh(rt, sandbox, "chmod 0444 /proc/version").await;
    assert_ne!(code, 0, "chmod 0444 /proc/version succeeded: {out}");
}

/// Loopback only: no other interface, the host's listeners and the outside unreachable;
/// loopback itself works.
pub async fn assert_only_loopback(rt: &dyn Runtime, sandbox: &SandboxId) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_, out) = sh(rt, sandbox, "ip -o link").await;
    let links: Vec<&str> = out.lines().collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].contains(": lo:"), "{out}");
    let (code, out) = sh(rt, sandbox, &format!("echo hi | nc -w 1 127.0.0.1 {port}")).await;
    assert_ne!(code, 0, "reached the host's listener: {out}");
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
    let (code, _) = sh(rt, sandbox, "wget -q -T 1 -O - http://1.1.1.1/").await;
    assert_ne!(code, 0);
    let (code, out) = sh(
        rt,
        sandbox,
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

/// A fork bomb in a sandbox limited to `pids` processes: the command ends, the sandbox
/// never holds more, the host still starts processes.
pub async fn assert_fork_bomb_contained(rt: &dyn Runtime, sandbox: &SandboxId, pids: u64) {
    let start = Instant::now();
    let done = rt
        .exec(
            sandbox,
            ExecRequest::shell("bomb() { bomb | bomb & }; bomb; sleep 2").timeout_ms(3000),
        )
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(120));
    eprintln!("bomb: exit {} timed_out {}", done.exit_code, done.timed_out);
    let usage = rt.usage(sandbox).await.unwrap();
    let counted = usage.pids.expect("the backend counts processes");
    assert!(counted <= pids, "{counted} processes");
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
}

/// A command that grows past the sandbox's memory limit is killed (SIGKILL); the agent
/// survives.
pub async fn assert_memory_hog_killed(rt: &dyn Runtime, sandbox: &SandboxId) {
    let done = rt
        .exec(
            sandbox,
            ExecRequest::shell("awk 'BEGIN { s = \"xxxxxxxx\"; while (1) s = s s }'")
                .timeout_ms(120_000),
        )
        .await
        .unwrap();
    assert!(!done.timed_out);
    assert_eq!(done.signal, Some(9), "exit {}", done.exit_code);
    assert_alive(rt, sandbox).await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A GiB of output: the caller gets the first MiB and the count of the rest, and the
/// server's memory stays bounded.
pub async fn assert_output_flood_bounded(rt: &dyn Runtime, sandbox: &SandboxId) {
    let before = rss_kib();
    let done = rt
        .exec(
            sandbox,
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

/// SIGTERM/INT/HUP/KILL/STOP sent to PID 1 (the agent) from inside change nothing.
pub async fn assert_signals_to_init_ignored(rt: &dyn Runtime, sandbox: &SandboxId) {
    let (code, out) = sh(
        rt,
        sandbox,
        "for s in TERM INT HUP KILL STOP; do kill -$s 1 || echo refused $s; done; echo sent",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "sent\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive(rt, sandbox).await;
}

/// After a fork bomb and after a daemon that left the command's session, the next
/// command starts at once, in a sandbox holding only the agent and itself.
pub async fn assert_leftovers_are_killed(rt: &dyn Runtime, sandbox: &SandboxId, bomb: &str) {
    let began = Instant::now();
    let bombed = rt
        .exec(sandbox, ExecRequest::shell(bomb).timeout_ms(30_000))
        .await
        .unwrap();
    let bomb_took = began.elapsed();
    let began = Instant::now();
    let (code, out) = sh(rt, sandbox, "echo ok; ls /proc | grep -c '^[0-9]'").await;
    let next_took = began.elapsed();
    eprintln!(
        "{sandbox}: the fork bomb answered (exit {}) in {bomb_took:?}, the next command in {next_took:?}",
        bombed.exit_code
    );
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ok"), "{out}");
    // The agent, the shell, ls and grep.
    let processes: u32 = lines.next().unwrap().parse().unwrap();
    assert!(processes <= 4, "{processes} processes after the bomb");
    assert!(next_took < Duration::from_secs(1), "{next_took:?}");

    let (code, out) = sh(
        rt,
        sandbox,
        "setsid sh -c 'sleep 1000' </dev/null >/dev/null 2>&1 & sleep 0.2; echo started",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "started\n"));
    let began = Instant::now();
    let (code, out) = sh(rt, sandbox, "echo ok").await;
    let next_took = began.elapsed();
    assert_eq!((code, out.as_str()), (0, "ok\n"));
    assert!(next_took < Duration::from_secs(1), "{next_took:?}");
    let (code, out) = sh(
        rt,
        sandbox,
        r"for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 1000 $' || true",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "0\n"), "the daemon survived");
}
