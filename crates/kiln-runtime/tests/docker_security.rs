//! The isolation promises of `security.rs`, on the Docker backend: the same checks
//! (`security/shared.rs`) against containers of the private engine
//! (`scripts/start-dockerd.sh`). Skipped, saying why, where dockerd cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod docker_support;
#[path = "security/shared.rs"]
mod shared;

use docker_support::{ensure_busybox, host, runtime, BUSYBOX};
use kiln_runtime::docker::DockerRuntime;
use kiln_runtime::{Limits, Runtime, SandboxId, SandboxSpec};

fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

/// A runtime of its own (`prefix`: tests running at once never reconcile each other's
/// containers away) with the busybox image, and its state directory.
async fn docker(prefix: &str) -> Option<(DockerRuntime, tempfile::TempDir)> {
    let host = host()?;
    let root = tempfile::Builder::new()
        .prefix("kiln-docker-sec-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let rt = runtime(&host, prefix, root.path());
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    Some((rt, root))
}

async fn create(rt: &DockerRuntime, name: &str, limits: Limits) -> SandboxId {
    let sid = id(name);
    let mut spec = SandboxSpec::image(sid.clone(), BUSYBOX);
    spec.limits = limits;
    rt.create(spec).await.unwrap();
    sid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_other_containers_are_invisible() {
    let Some((rt, root)) = docker("kilntest-sec-iso").await else {
        return;
    };
    let marker = root.path().join("host-marker.txt");
    std::fs::write(&marker, "host secret").unwrap();
    let a = create(&rt, "iso-a", Limits::default()).await;
    let b = create(&rt, "iso-b", Limits::default()).await;
    shared::assert_host_and_neighbour_invisible(&rt, &a, &b, &marker, root.path()).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileges_are_dropped_and_init_ignores_signals() {
    let Some((rt, _root)) = docker("kilntest-sec-priv").await else {
        return;
    };
    let sid = create(&rt, "priv1", Limits::default()).await;
    shared::assert_privileges_dropped(&rt, &sid).await;
    shared::assert_signals_to_init_ignored(&rt, &sid).await;
    rt.shutdown().await.unwrap();
}

/// In a container, root (no capabilities) owns host-wide `/proc` entries such as
/// `/proc/version` (procfs shares their modes between mounts) and Docker makes only
/// `/proc/{bus,fs,irq,sys,sysrq-trigger}` read-only: the container asks for every
/// top-level entry read-only (`docker/proc_paths.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_entry_modes_cannot_be_changed() {
    let Some((rt, _root)) = docker("kilntest-sec-proc").await else {
        return;
    };
    let sid = create(&rt, "proc1", Limits::default()).await;
    shared::assert_proc_modes_unchangeable(&rt, &sid).await;
    // Nor does it read the host's boot options (root device, kernel image).
    let (code, out) = shared::sh(&rt, &sid, "cat /proc/cmdline").await;
    let host = std::fs::read_to_string("/proc/cmdline").unwrap();
    assert_eq!((code, out.as_str()), (0, ""), "the host's is {host:?}");
    rt.shutdown().await.unwrap();
}

/// The agent's binary and socket stay the agent's: the sandbox's root shares its uid, so
/// the socket directory bound from the host is made read-only once the agent listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_binary_and_socket_cannot_be_replaced() {
    let Some((rt, _root)) = docker("kilntest-sec-seal").await else {
        return;
    };
    let sid = create(&rt, "seal1", Limits::default()).await;
    for attempt in [
        "echo evil > /.kiln/agent",
        "rm -f /.kiln/agent",
        "rm -f /.kiln/run/agent.sock",
        "mv /.kiln/run/agent.sock /.kiln/run/old",
        "touch /.kiln/run/evil",
        "ln -s /etc /.kiln/run/link",
        "chmod 777 /.kiln/run/agent.sock",
        "touch /tmp/f; mount --bind /tmp/f /.kiln/run/agent.sock",
    ] {
        let (code, out) = shared::sh(&rt, &sid, attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
    }
    let (code, out) = shared::sh(&rt, &sid, "echo still-the-agent").await;
    assert_eq!((code, out.as_str()), (0, "still-the-agent\n"));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_network() {
    let Some((rt, _root)) = docker("kilntest-sec-net").await else {
        return;
    };
    let sid = create(&rt, "net1", Limits::default()).await;
    shared::assert_only_loopback(&rt, &sid).await;
    rt.shutdown().await.unwrap();
}

/// The agent's leftover sweep holds in a container too: after a fork bomb at the default
/// limits and after a `setsid` daemon, the next command starts at once, alone with the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_command_starts_outlives_it() {
    let Some((rt, _root)) = docker("kilntest-sec-left").await else {
        return;
    };
    let sid = create(&rt, "left1", Limits::default()).await;
    shared::assert_leftovers_are_killed(&rt, &sid, "bomb() { bomb | bomb & }; bomb").await;
    // `/tmp` is the container's writable layer (under its disk limit where the engine
    // enforces one), never a tmpfs that a fill would charge silently to memory.
    let (code, out) = shared::sh(
        &rt,
        &sid,
        r#"[ "$(stat -c %d /tmp)" = "$(stat -c %d /)" ] && echo same; grep -c ' /tmp tmpfs ' /proc/mounts"#,
    )
    .await;
    assert_eq!((code, out.as_str()), (1, "same\n0\n"), "{out}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_memory_hog_and_output_flood_are_contained() {
    let Some((rt, _root)) = docker("kilntest-sec-res").await else {
        return;
    };
    let bomb = create(
        &rt,
        "bomb1",
        Limits {
            pids: Some(64),
            ..Limits::default()
        },
    )
    .await;
    shared::assert_fork_bomb_contained(&rt, &bomb, 64).await;
    let hog = create(
        &rt,
        "hog1",
        Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        },
    )
    .await;
    shared::assert_memory_hog_killed(&rt, &hog).await;
    let out = create(&rt, "out1", Limits::default()).await;
    shared::assert_output_flood_bounded(&rt, &out).await;
    rt.shutdown().await.unwrap();
}
