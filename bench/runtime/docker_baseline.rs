//! The same operations as the local-runtime benchmark, through Docker (the daemon that
//! `bench/runtime/docker-baseline.sh` starts, on the same busybox rootfs imported as an
//! image), so the ratios come from one run on one machine in one state.
//!
//! "Ready" for a container means a first `docker exec true` has returned 0: the local
//! runtime's create also only returns once its agent answered from inside the sandbox.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::docker_engine::DockerEngine;
use crate::{mem_available_kib, report, rss_kib, Summary};

/// Docker's side of the comparison, in the same units as the local numbers.
pub struct DockerNumbers {
    pub create_ready: Summary,
    pub exec_true: Summary,
    pub snapshot: Summary,
    pub fork_ready: Summary,
    pub burst_all_started: Duration,
    pub burst_all_ready: Duration,
    pub idle_rss_kib: f64,
    pub idle_available_kib: f64,
}

async fn ready(docker: &DockerEngine, image: &str) -> String {
    let id = docker.run_detached(image).await.unwrap();
    assert_eq!(docker.exec(&id, &["true"]).await.unwrap(), 0);
    id
}

/// Memory charged to one container's cgroup, wherever this host's docker put it.
fn cgroup_memory_bytes(id: &str) -> Option<u64> {
    [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
        format!("/sys/fs/cgroup/docker/{id}/memory.current"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
    .and_then(|v| v.trim().parse().ok())
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

async fn remove_all(docker: &Arc<DockerEngine>, ids: Vec<String>) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let docker = Arc::clone(docker);
            tokio::spawn(async move { docker.remove(&id).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// Starts `n` containers, `parallel` at a time, each until ready.
async fn start_many(
    docker: &Arc<DockerEngine>,
    image: &str,
    n: usize,
    parallel: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + parallel).min(n))
            .map(|_| {
                let (docker, image) = (Arc::clone(docker), image.to_owned());
                tokio::spawn(async move { ready(&docker, &image).await })
            })
            .collect();
        for task in batch {
            ids.push(task.await.unwrap());
        }
        next += parallel;
    }
    ids
}

pub async fn run(host: &str, image: &str, creates: usize, idle: usize) -> DockerNumbers {
    let docker = Arc::new(DockerEngine::new(host).unwrap());
    docker.ping().await.unwrap();
    println!("\n--- docker baseline ({host}, image {image}, Engine API over the socket) ---");

    // Warm-up, as for the local runtime.
    let warm = ready(&docker, image).await;
    docker.remove(&warm).await.unwrap();

    // 1. create → ready, kept, then removed one by one.
    let (mut create_t, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..creates {
        let t = Instant::now();
        ids.push(ready(&docker, image).await);
        create_t.push(t.elapsed());
    }
    let mut destroy_t = Vec::new();
    for id in ids {
        let t = Instant::now();
        docker.remove(&id).await.unwrap();
        destroy_t.push(t.elapsed());
    }
    let create_ready = report("docker run -d -> first exec", create_t);
    report("docker rm -f", destroy_t);

    // 2. exec round trips.
    let id = ready(&docker, image).await;
    let mut samples = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let code = docker.exec(&id, &["true"]).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(code, 0);
    }
    let exec_true = report("docker exec `true`", samples);

    // 3. snapshot (commit) and fork (run from the committed image) with 10 MB changed.
    let code = docker
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "head -c 10485760 /dev/urandom > /testbed/big.bin",
            ],
        )
        .await
        .unwrap();
    assert_eq!(code, 0);
    let (mut snap_t, mut fork_t) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let t = Instant::now();
        docker
            .commit(&id, "kiln-bench-snap", &i.to_string())
            .await
            .unwrap();
        snap_t.push(t.elapsed());
        let tag = format!("kiln-bench-snap:{i}");
        let t = Instant::now();
        let fork = ready(&docker, &tag).await;
        fork_t.push(t.elapsed());
        let size = docker
            .exec(
                &fork,
                &["sh", "-c", "test $(wc -c < /testbed/big.bin) -eq 10485760"],
            )
            .await
            .unwrap();
        assert_eq!(size, 0, "the fork lacks the committed 10 MB file");
        docker.remove(&fork).await.unwrap();
        docker.remove_image(&tag).await.unwrap();
    }
    let snapshot = report("docker commit (10 MB changed)", snap_t);
    let fork_ready = report("run committed image -> first exec", fork_t);
    docker.remove(&id).await.unwrap();

    // 4. 100 concurrent `docker run -d`, each then exec'd once.
    let start = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (docker, image) = (Arc::clone(&docker), image.to_owned());
            tokio::spawn(async move {
                let id = docker.run_detached(&image).await.unwrap();
                let started = start.elapsed();
                assert_eq!(docker.exec(&id, &["true"]).await.unwrap(), 0);
                (id, started)
            })
        })
        .collect();
    let (mut ids, mut burst_all_started) = (Vec::new(), Duration::ZERO);
    for task in tasks {
        let (id, started) = task.await.unwrap();
        burst_all_started = burst_all_started.max(started);
        ids.push(id);
    }
    let burst_all_ready = start.elapsed();
    println!(
        "{:<34} {burst_all_started:>9.2?} until all started, {burst_all_ready:.2?} until all exec'd once",
        "100 concurrent docker run -d"
    );
    let d = remove_all(&docker, ids).await;
    println!("{:<34} {d:>9.2?}", "100 concurrent docker rm -f");

    // 5. idle containers: memory per container, its containerd shim included (the
    //    local runtime's per-session processes are counted the same way).
    let avail_before = mem_available_kib();
    let t = Instant::now();
    let ids = start_many(&docker, image, idle, 25).await;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut rss_total, mut cgroup_total) = (0u64, 0u64);
    for id in &ids {
        let pid = docker.init_pid(id).await.unwrap();
        rss_total += rss_kib(pid);
        if let Some(shim) = parent_pid(pid) {
            rss_total += rss_kib(shim);
        }
        cgroup_total += cgroup_memory_bytes(id).unwrap_or(0);
    }
    let avail_after = mem_available_kib();
    let n = ids.len().max(1) as f64;
    let idle_rss_kib = rss_total as f64 / n;
    let idle_available_kib = avail_before.saturating_sub(avail_after) as f64 / n;
    println!(
        "{idle} idle containers: started in {took:.2?}; RSS (sleep + shim) {:.1} MiB total, \
         {idle_rss_kib:.0} KiB/container; cgroup memory {:.0} KiB/container; \
         host MemAvailable dropped {:.1} MiB ({idle_available_kib:.0} KiB/container)",
        rss_total as f64 / 1024.0,
        cgroup_total as f64 / 1024.0 / n,
        avail_before.saturating_sub(avail_after) as f64 / 1024.0,
    );
    let d = remove_all(&docker, ids).await;
    println!("{:<34} {d:>9.2?}", format!("remove {idle} containers"));

    DockerNumbers {
        create_ready,
        exec_true,
        snapshot,
        fork_ready,
        burst_all_started,
        burst_all_ready,
        idle_rss_kib,
        idle_available_kib,
    }
}
