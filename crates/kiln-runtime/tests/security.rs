//! The isolation promises, tested by trying to break them from inside real sandboxes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "security/inside.rs"]
mod inside;
#[path = "security/shared.rs"]
mod shared;
mod support;

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
    // Host paths must not lead anywhere (nor show: `inside::host_paths_…`).
    shared::assert_host_and_neighbour_invisible(
        &rt.runtime,
        &id("iso-a"),
        &id("iso-b"),
        &marker,
        rt.root.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileges_are_dropped() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("priv1")).await.unwrap();
    shared::assert_privileges_dropped(&rt.runtime, &id("priv1")).await;
    shared::assert_proc_modes_unchangeable(&rt.runtime, &id("priv1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_network() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("net1")).await.unwrap();
    shared::assert_only_loopback(&rt.runtime, &id("net1")).await;
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
    shared::assert_fork_bomb_contained(&rt.runtime, &id("bomb1"), 64).await;
    let pids = rt.pids(&id("bomb1")).unwrap();
    assert!(pids.len() <= 64, "{} processes", pids.len());
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
    shared::assert_memory_hog_killed(&rt.runtime, &id("hog1")).await;
    assert!(rt.oom_killed(&id("hog1")).unwrap());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gib_of_output_keeps_memory_bounded() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("out1")).await.unwrap();
    shared::assert_output_flood_bounded(&rt.runtime, &id("out1")).await;
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
