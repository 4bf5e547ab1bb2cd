//! Snapshots, restores and forks over HTTP (`/v1`) against the runtime alone, in one run.
//!
//! A test server (real HTTP on 127.0.0.1, real sandboxes of the busybox test sample) holds
//! one ready instance with 10 MB changed. Then, alternating where it matters:
//! - snapshot: `POST /v1/instances/{id}/snapshots` vs `Runtime::snapshot` of the same
//!   sandbox;
//! - restore into the same instance (`POST …/snapshots/{sid}/restore`) vs the runtime's
//!   create of a sandbox from the snapshot (what a restore waits for);
//! - fork → N ready for N = 1, 10, 100: from `POST /v1/instances/{id}/fork` until a
//!   long-poll GET of every copy answered `ready`, vs the runtime's snapshot plus N creates
//!   from it, started together.
//!
//! Then the fork series again (HTTP and runtime alone) on a second server with a warm pool of
//! 100 sandboxes of the image, which forks take, each run once the pool is full again
//! (`KILN_BENCH_WARM=0` skips it).
//!
//! Prints each series (p50, p99 nearest rank, min, max) and the ratios HTTP / runtime of the
//! medians. Needs root, bubblewrap and busybox-static; `bench/instances/run.sh` runs it.
//! `KILN_BENCH_ROUNDS` (default 20) bounds the single-sandbox series, the N = 10 series run
//! ROUNDS / 4 times, N = 100 twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../crates/kiln-api/tests/common/mod.rs"]
mod common;
#[path = "../../crates/kiln-api/tests/sandbox/mod.rs"]
mod sandbox;

use std::time::{Duration, Instant};

use common::TestServer;
use kiln_runtime::{SandboxId, SandboxSpec};
use reqwest::Method;
use serde_json::{json, Value};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    println!(
        "{name:<40} n={:<3} p50 {:>9.2?}  p99 {:>9.2?}  min {:>9.2?}  max {:>9.2?}",
        samples.len(),
        p50,
        percentile(&samples, 0.99),
        samples[0],
        samples[samples.len() - 1]
    );
    p50
}

async fn v1(s: &TestServer, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = s.v1_as(key, method, path, body.as_ref()).await;
    assert!((200..300).contains(&status), "{path}: {status} {answer}");
    answer
}

async fn sh(s: &TestServer, key: &str, id: &str, command: &str) {
    let iid = sandbox::start_exec(s, key, id, command).await;
    let done = sandbox::finished(s, key, id, &iid).await;
    assert_eq!(done["exit_code"], 0, "{done}");
}

/// Long-polls every instance until it is ready; all at once.
async fn all_ready(s: &TestServer, key: &str, ids: &[String]) {
    let waits = ids.iter().map(|id| async move {
        loop {
            let session = s.get_ok(key, &format!("/sessions/{id}")).await;
            match session["status"].as_str() {
                Some("ready") => return,
                Some("creating") => continue,
                other => panic!("instance {id} is {other:?}: {session}"),
            }
        }
    });
    futures_join_all(waits).await;
}

/// `join_all` without another dependency: each future on a task of its own would need
/// `'static`; these borrow the server, so they are polled together in place.
/// A test server with the limits every series uses, and a warm pool of `warm` sandboxes of
/// the sample's image if asked.
async fn server(warm: Option<usize>) -> TestServer {
    let reference =
        kiln_services::sessions::sample_image_reference(sandbox::DATASET, sandbox::SAMPLE);
    let Some(s) = sandbox::start_if_possible(|c| {
        c.runtime.memory_mib = 64;
        c.runtime.disk_mib = 128;
        c.sessions.max_live_sessions_per_user = 250;
        c.snapshots.max_per_user = 1000;
        if let Some(size) = warm {
            c.runtime.warm_pools.insert(reference, size);
        }
    })
    .await
    else {
        eprintln!("cannot run: see above");
        std::process::exit(1);
    };
    s
}

/// A ready instance of the sample with 10 MB written.
async fn changed_instance(s: &TestServer, key: &str) -> String {
    let id = sandbox::create_ready(s, key).await;
    sh(
        s,
        key,
        &id,
        "head -c 10485760 /dev/urandom > /testbed/big.bin",
    )
    .await;
    id
}

/// `POST /v1/instances/{parent}/fork {count: n}` until every copy answered `ready`; the
/// copies are closed after the clock stops.
async fn fork_ready(s: &TestServer, key: &str, parent: &str, n: usize) -> Duration {
    let t = Instant::now();
    let forked = v1(
        s,
        key,
        Method::POST,
        &format!("/instances/{parent}/fork"),
        Some(json!({"count": n})),
    )
    .await;
    let ids: Vec<String> = forked["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["instance_id"].as_str().expect("id").to_string())
        .collect();
    all_ready(s, key, &ids).await;
    let took = t.elapsed();
    close_all(s, key, &ids).await;
    took
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

async fn close_all(s: &TestServer, key: &str, ids: &[String]) {
    for id in ids {
        let (status, body) = s.delete_as(key, &format!("/sessions/{id}")).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=kiln_runtime=debug shows each sandbox start's phases.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(1);
    let s = server(None).await;
    let key = s.admin_key.clone();
    let available = s.kiln.sandboxes.available().expect("runtime");
    // The runtime-alone sandboxes get the limits the server gives its instances.
    let (runtime, limits) = (available.runtime.clone(), available.limits);
    let spec_from = |id: SandboxId, snapshot: &kiln_runtime::Snapshot| {
        let mut spec = SandboxSpec::fork(id, snapshot);
        spec.limits = limits;
        spec
    };
    let parent = changed_instance(&s, &key).await;
    // A fresh instance's sandbox is named after it.
    let parent_box = SandboxId::new(parent.clone()).expect("sandbox id");
    println!(
        "machine: {} cores; one instance with 10 MB changed",
        num_cpus()
    );

    // Snapshots, alternating.
    let (mut http, mut rt) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let snap = v1(
            &s,
            &key,
            Method::POST,
            &format!("/instances/{parent}/snapshots"),
            Some(json!({})),
        )
        .await;
        http.push(t.elapsed());
        let sid = snap["snapshot_id"].as_str().expect("id");
        v1(
            &s,
            &key,
            Method::DELETE,
            &format!("/instances/{parent}/snapshots/{sid}"),
            None,
        )
        .await;
        let t = Instant::now();
        let taken = runtime.snapshot(&parent_box).await.expect("snapshot");
        rt.push(t.elapsed());
        runtime.remove_snapshot(&taken.id).await.expect("remove");
    }
    let snap_http = report("snapshot, HTTP", http);
    let snap_rt = report("snapshot, runtime alone", rt);

    // Restore into the same instance vs a create from the snapshot.
    let restored = changed_instance(&s, &key).await;
    let snap = v1(
        &s,
        &key,
        Method::POST,
        &format!("/instances/{restored}/snapshots"),
        Some(json!({"name": "r"})),
    )
    .await;
    let sid = snap["snapshot_id"].as_str().expect("id").to_string();
    let taken = runtime.snapshot(&parent_box).await.expect("snapshot");
    let (mut http, mut rt) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let t = Instant::now();
        v1(
            &s,
            &key,
            Method::POST,
            &format!("/instances/{restored}/snapshots/{sid}/restore"),
            None,
        )
        .await;
        http.push(t.elapsed());
        let id = SandboxId::new(format!("bench-restore-{i}")).expect("id");
        let t = Instant::now();
        runtime
            .create(spec_from(id.clone(), &taken))
            .await
            .expect("create");
        rt.push(t.elapsed());
        runtime.destroy(&id).await.expect("destroy");
    }
    let restore_http = report("restore into the instance, HTTP", http);
    let restore_rt = report("create from a snapshot, runtime alone", rt);
    close_all(&s, &key, &[restored]).await;

    let mut ratios = vec![
        ("snapshot", snap_http, snap_rt),
        ("restore", restore_http, restore_rt),
    ];
    for (name, h, r) in fork_series(&s, &parent, rounds, None).await {
        ratios.push((name, h, r));
    }
    close_all(&s, &key, &[parent]).await;
    drop(s);
    let warm = if std::env::var("KILN_BENCH_WARM").as_deref() == Ok("0") {
        Vec::new()
    } else {
        warm_forks(rounds).await
    };
    println!();
    for (name, h, r) in ratios {
        println!(
            "{name:<10} HTTP p50 {h:>9.2?}  runtime p50 {r:>9.2?}  ratio {:.2}",
            h.as_secs_f64() / r.as_secs_f64().max(1e-9)
        );
    }
    for (name, h, r) in warm {
        println!(
            "{name:<10} HTTP p50 {h:>9.2?}  runtime p50 {r:>9.2?}  ratio {:.2}  (warm pool of {WARM_POOL})",
            h.as_secs_f64() / r.as_secs_f64().max(1e-9)
        );
    }
}

/// The warm pool of the second server: as many sandboxes as the largest fork.
const WARM_POOL: usize = 100;

/// Fork → N ready for N = 1, 10, 100 (ROUNDS, ROUNDS / 4 and 2 times) of the instance
/// `parent` of `s`, over HTTP and through `s`'s runtime alone, alternating: a snapshot plus
/// N creates from it, started together, with the limits the server gives its instances.
/// With `warm` (the sandboxes directory of a server with a pool of [`WARM_POOL`]), each
/// run starts once the pool is full again. Returns each N's name and medians.
async fn fork_series(
    s: &TestServer,
    parent: &str,
    rounds: usize,
    warm: Option<&std::path::Path>,
) -> Vec<(&'static str, Duration, Duration)> {
    let key = s.admin_key.clone();
    let available = s.kiln.sandboxes.available().expect("runtime");
    let (runtime, limits) = (available.runtime.clone(), available.limits);
    // A fresh instance's sandbox is named after it.
    let parent_box = SandboxId::new(parent).expect("sandbox id");
    let full = || async {
        if let Some(sandboxes) = warm {
            wait_pool_full(sandboxes).await;
        }
    };
    let suffix = if warm.is_some() { ", warm pool" } else { "" };
    let mut medians = Vec::new();
    for (n, times, name) in [
        (1usize, rounds, "fork 1"),
        (10, (rounds / 4).max(1), "fork 10"),
        (100, 2, "fork 100"),
    ] {
        let (mut http, mut rt) = (Vec::new(), Vec::new());
        for round in 0..times {
            full().await;
            http.push(fork_ready(s, &key, parent, n).await);

            full().await;
            let t = Instant::now();
            let taken = runtime.snapshot(&parent_box).await.expect("snapshot");
            let forks: Vec<SandboxId> = (0..n)
                .map(|i| SandboxId::new(format!("bench-fork-{round}-{i}")).expect("id"))
                .collect();
            futures_join_all(forks.iter().map(|id| {
                let mut spec = SandboxSpec::fork(id.clone(), &taken);
                spec.limits = limits;
                let runtime = runtime.clone();
                async move {
                    runtime.create(spec).await.expect("fork");
                }
            }))
            .await;
            rt.push(t.elapsed());
            for id in &forks {
                runtime.destroy(id).await.expect("destroy");
            }
            runtime.remove_snapshot(&taken.id).await.expect("remove");
        }
        let label = format!("fork -> {n} ready{suffix}");
        let h = report(&format!("{label}, HTTP"), http);
        let r = report(&format!("{label}, runtime alone"), rt);
        medians.push((name, h, r));
    }
    medians
}

/// The same fork series on a server keeping [`WARM_POOL`] sandboxes of the sample's image
/// started ahead (`runtime.warm_pools`), which forks of its sessions take (given the
/// snapshot's root when taken).
async fn warm_forks(rounds: usize) -> Vec<(&'static str, Duration, Duration)> {
    let s = server(Some(WARM_POOL)).await;
    let key = s.admin_key.clone();
    let sandboxes = s.kiln.config.data_dir.join("runtime/sandboxes");
    // The image's first session fills the pool.
    let parent = changed_instance(&s, &key).await;
    let medians = fork_series(&s, &parent, rounds, Some(&sandboxes)).await;
    close_all(&s, &key, &[parent]).await;
    medians
}

/// Waits until [`WARM_POOL`] warm sandboxes are ready (their state file is written).
async fn wait_pool_full(sandboxes: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = std::fs::read_dir(sandboxes)
            .expect("sandboxes dir")
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("warm-")
                    && e.path().join("state.json").exists()
            })
            .count();
        if ready >= WARM_POOL {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the warm pool holds {ready} of {WARM_POOL} after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
