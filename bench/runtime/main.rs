//! Benchmark of the local runtime on real sandboxes (root, bubblewrap, busybox rootfs).
//!
//!     bench/runtime/run.sh            # or: cargo bench -p kiln-runtime --bench runtime
//!
//! Environment: `KILN_BENCH_SESSIONS` (idle sessions, default 500),
//! `KILN_BENCH_CREATES` (sequential creates, default 100), `KILN_AGENT_BIN`.
//!
//! With `KILN_BENCH_DOCKER_HOST` (and `KILN_BENCH_DOCKER_IMAGE`) set, the same operations
//! also run through Docker and the local/docker ratios are printed; run
//! `bench/runtime/docker-baseline.sh`, which starts and removes its own dockerd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod docker_baseline;
mod docker_engine;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_protocol::ExecRequest;
use kiln_runtime::local::{LocalConfig, LocalRuntime, LocalSpec, RootLayers};
use kiln_runtime::{Runtime, SandboxId, SandboxSpec};

const ROOTFS: &str = "/var/cache/kiln-test/busybox-rootfs";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The two numbers the comparison with Docker uses.
#[derive(Clone, Copy)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
}

fn report(name: &str, mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    println!(
        "{name:<34} n={:<4} p50 {:>9.2?}  p99 {:>9.2?}  min {:>9.2?}  max {:>9.2?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[0],
        samples[samples.len() - 1]
    );
    Summary {
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
    }
}

fn spec(id: &str) -> LocalSpec {
    LocalSpec::new(SandboxId::new(id).unwrap(), RootLayers::single(ROOTFS))
}

fn ensure_rootfs() {
    if Path::new(ROOTFS).join("bin/sh").exists() {
        return;
    }
    let tmp = format!("{ROOTFS}.bench");
    let _ = std::fs::remove_dir_all(&tmp);
    for dir in ["bin", "etc", "tmp", "root", "proc", "dev", "sys", "testbed"] {
        std::fs::create_dir_all(Path::new(&tmp).join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", Path::new(&tmp).join("bin/busybox"))
        .expect("apt-get install busybox-static");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", Path::new(&tmp).join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        Path::new(&tmp).join("testbed/hello.txt"),
        "hello from the image\n",
    )
    .unwrap();
    std::fs::rename(&tmp, ROOTFS).unwrap();
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn create_many(rt: &Arc<LocalRuntime>, prefix: &str, n: usize, parallel: usize) -> Duration {
    let start = Instant::now();
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + parallel).min(n))
            .map(|i| {
                let rt = Arc::clone(rt);
                let id = format!("{prefix}{i}");
                tokio::spawn(async move { rt.create_local(spec(&id)).await.unwrap() })
            })
            .collect();
        for task in batch {
            task.await.unwrap();
        }
        next += parallel;
    }
    start.elapsed()
}

async fn destroy_all(rt: &Arc<LocalRuntime>) -> Duration {
    let start = Instant::now();
    let ids: Vec<SandboxId> = rt.list().await.unwrap().into_iter().map(|i| i.id).collect();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let rt = Arc::clone(rt);
            tokio::spawn(async move { rt.destroy(&id).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    ensure_rootfs();
    let root = tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mut config = LocalConfig::new(root.path(), kiln_test_support::agent_binary());
    // Hundreds of idle sandboxes of 10 GiB disk limits each: admission control is not what
    // is measured here, and a CI disk with 5 GB free would refuse them at any sane ratio.
    config.memory_overcommit = 1e6;
    config.disk_overcommit = 1e6;
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, as a smoke
    // test of every step at a tenth of the size (the variables still override).
    let scale = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        10
    };
    let rt = Arc::new(LocalRuntime::new(config).unwrap());
    let report_host = rt.health().await;
    print!("{report_host}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    println!(
        "cgroups: {:?}; cores: {}",
        rt.cgroup_version(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // Warm-up (page cache, first bwrap exec).
    rt.create_local(spec("warm")).await.unwrap();
    rt.destroy(&SandboxId::new("warm").unwrap()).await.unwrap();

    // 1. create → ready (agent answered hello): sequentially with the sandboxes kept,
    //    then destroyed one by one; then create+destroy interleaved (kernel teardown of
    //    the previous sandbox overlapping the next start).
    let creates = env_usize("KILN_BENCH_CREATES", 100 / scale);
    let mut create_t = Vec::new();
    for i in 0..creates {
        let t = Instant::now();
        rt.create_local(spec(&format!("seq{i}"))).await.unwrap();
        create_t.push(t.elapsed());
    }
    let mut destroy_t = Vec::new();
    for i in 0..creates {
        let t = Instant::now();
        rt.destroy(&SandboxId::new(format!("seq{i}")).unwrap())
            .await
            .unwrap();
        destroy_t.push(t.elapsed());
    }
    let create_ready = report("create -> ready", create_t);
    report("destroy", destroy_t);
    let mut interleaved = Vec::new();
    for i in 0..creates {
        let id = format!("int{i}");
        let t = Instant::now();
        rt.create_local(spec(&id)).await.unwrap();
        interleaved.push(t.elapsed());
        rt.destroy(&SandboxId::new(id).unwrap()).await.unwrap();
    }
    report("create -> ready (after a destroy)", interleaved);

    // 2. exec round trips.
    let id = SandboxId::new("execs").unwrap();
    rt.create_local(spec("execs")).await.unwrap();
    let mut exec_true = None;
    for (name, request) in [
        ("exec `true` (argv)", ExecRequest::argv(["true"])),
        ("exec `true` (sh -c)", ExecRequest::shell("true")),
    ] {
        let mut samples = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            let done = rt.exec(&id, request.clone()).await.unwrap();
            samples.push(t.elapsed());
            assert_eq!(done.exit_code, 0);
        }
        let summary = report(name, samples);
        exec_true.get_or_insert(summary);
    }
    let exec_true = exec_true.unwrap();
    let mut samples = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        rt.read_file(&id, "/testbed/hello.txt", None).await.unwrap();
        samples.push(t.elapsed());
    }
    report("read_file (small)", samples);

    // 3. snapshot and fork with 10 MB changed.
    rt.exec(
        &id,
        ExecRequest::shell("head -c 10485760 /dev/urandom > /testbed/big.bin"),
    )
    .await
    .unwrap();
    let (mut snap_t, mut fork_t) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let t = Instant::now();
        let snap = rt.snapshot(&id).await.unwrap();
        snap_t.push(t.elapsed());
        let fork = SandboxId::new(format!("fork{i}")).unwrap();
        let t = Instant::now();
        rt.create(SandboxSpec::fork(fork.clone(), &snap))
            .await
            .unwrap();
        fork_t.push(t.elapsed());
        rt.destroy(&fork).await.unwrap();
        rt.remove_snapshot(&snap.id).await.unwrap();
    }
    let snapshot = report("snapshot (10 MB changed)", snap_t);
    let fork_ready = report("fork from snapshot -> ready", fork_t);
    rt.destroy(&id).await.unwrap();

    // 4. 100 concurrent creates.
    let concurrent = 100 / scale;
    let burst = create_many(&rt, "burst", concurrent, concurrent).await;
    println!(
        "{:<34} {:>9.2?} until all ready",
        format!("{concurrent} concurrent creates"),
        burst
    );
    let d = destroy_all(&rt).await;
    println!(
        "{:<34} {:>9.2?}",
        format!("{concurrent} concurrent destroys"),
        d
    );

    // 5. idle sessions: memory per session.
    let sessions = env_usize("KILN_BENCH_SESSIONS", 500 / scale);
    let avail_before = mem_available_kib();
    let took = create_many(&rt, "idle", sessions, 25).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let infos = rt.list().await.unwrap();
    let cgroup_total: u64 = infos.iter().filter_map(|i| i.memory_bytes).sum();
    let mut rss_total = 0;
    let mut processes = 0;
    for info in &infos {
        for pid in rt.pids(&info.id).unwrap() {
            rss_total += rss_kib(pid);
            processes += 1;
        }
    }
    let avail_after = mem_available_kib();
    let n = infos.len() as u64;
    println!(
        "{sessions} idle sessions: created in {took:.2?}; {processes} processes; \
         RSS {:.1} MiB total, {:.0} KiB/session; cgroup memory {:.1} MiB total, {:.0} KiB/session; \
         host MemAvailable dropped {:.1} MiB ({:.0} KiB/session)",
        rss_total as f64 / 1024.0,
        rss_total as f64 / n as f64,
        cgroup_total as f64 / 1048576.0,
        cgroup_total as f64 / 1024.0 / n as f64,
        avail_before.saturating_sub(avail_after) as f64 / 1024.0,
        avail_before.saturating_sub(avail_after) as f64 / n as f64,
    );
    let d = destroy_all(&rt).await;
    println!("{:<34} {:>9.2?}", format!("destroy {sessions} sessions"), d);
    rt.shutdown().await.unwrap();
    let local = LocalNumbers {
        create_ready,
        exec_true,
        snapshot,
        fork_ready,
        burst,
        idle_rss_kib: rss_total as f64 / n as f64,
        idle_available_kib: avail_before.saturating_sub(avail_after) as f64 / n as f64,
    };
    drop(root);
    compare_with_docker(&local).await;
}

/// The local runtime's side of the comparison.
struct LocalNumbers {
    create_ready: Summary,
    exec_true: Summary,
    snapshot: Summary,
    fork_ready: Summary,
    burst: Duration,
    idle_rss_kib: f64,
    idle_available_kib: f64,
}

async fn compare_with_docker(local: &LocalNumbers) {
    let Ok(host) = std::env::var("KILN_BENCH_DOCKER_HOST") else {
        println!("docker baseline: skipped (bench/runtime/docker-baseline.sh runs it)");
        return;
    };
    let image = std::env::var("KILN_BENCH_DOCKER_IMAGE").unwrap_or("kiln-bench-busybox:1".into());
    let idle = env_usize("KILN_BENCH_DOCKER_IDLE", 100);
    let creates = env_usize("KILN_BENCH_CREATES", 100);
    let docker = docker_baseline::run(&host, &image, creates, idle).await;

    println!("\n--- local / docker (below 1 means the local runtime is faster or smaller) ---");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, l, d) in [
        ("create -> ready", local.create_ready, docker.create_ready),
        ("exec `true`", local.exec_true, docker.exec_true),
        ("snapshot (10 MB changed)", local.snapshot, docker.snapshot),
        ("fork -> ready", local.fork_ready, docker.fork_ready),
    ] {
        println!(
            "{name:<28} p50 {:>8.2} ms / {:>8.2} ms = {:>5.3}   p99 {:>8.2} ms / {:>8.2} ms = {:>5.3}",
            ms(l.p50),
            ms(d.p50),
            ms(l.p50) / ms(d.p50),
            ms(l.p99),
            ms(d.p99),
            ms(l.p99) / ms(d.p99),
        );
    }
    println!(
        "{:<28} {:>8.2} ms / {:>8.2} ms = {:>5.3}  (all ready; docker: all started after {:.2?})",
        "100 concurrent creates",
        ms(local.burst),
        ms(docker.burst_all_ready),
        ms(local.burst) / ms(docker.burst_all_ready),
        docker.burst_all_started,
    );
    println!(
        "{:<28} RSS {:.0} KiB / {:.0} KiB = {:.3}   host MemAvailable drop {:.0} KiB / {:.0} KiB = {:.3}",
        "idle memory per session",
        local.idle_rss_kib,
        docker.idle_rss_kib,
        local.idle_rss_kib / docker.idle_rss_kib.max(1.0),
        local.idle_available_kib,
        docker.idle_available_kib,
        local.idle_available_kib / docker.idle_available_kib.max(1.0),
    );
}
