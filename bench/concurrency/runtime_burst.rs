//! The runtime alone (no store, no HTTP): N concurrent creates of the demo image, each
//! until the agent answered, then all destroyed; ROUNDS times. The baseline of
//! `bench/concurrency/run.sh`, which runs this and the same burst over HTTP in one run.
//!
//!     cargo bench -p kiln-runtime --bench concurrency -- ROUNDS
//!
//! Environment: `KILN_BENCH_IMAGE_STORE` (a ready image store), `KILN_BENCH_IMAGE` (a
//! reference in it), `KILN_BENCH_BURST` (default 100), `KILN_AGENT_BIN`. Prints one
//! `runtime-alone` line per round, in milliseconds, for run.sh to parse.
//!
//! With `KILN_BENCH_EXECS=SESSIONSxCOMMANDS` (e.g. `50x200`) it instead measures what
//! `bench/load` measures over HTTP, through the runtime alone: that many sandboxes, each
//! running that many `true` one after another (as the contract runs them: `bash -c`,
//! with the server's output limit), all sandboxes at once. It prints one
//! `runtime-execs` line: the ceiling the server's own work is measured against.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_runtime::local::{LocalConfig, LocalRuntime};
use kiln_runtime::{Limits, Runtime, SandboxId, SandboxSpec};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest rank, as kiln-bench-load computes it.
fn quantile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

// Two workers, like `kiln serve` on this 2-core machine (tokio's default is one per core).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let store = PathBuf::from(env_or(
        "KILN_BENCH_IMAGE_STORE",
        "/var/cache/kiln-test/images",
    ));
    let reference = env_or(
        "KILN_BENCH_IMAGE",
        "kiln-demo/sample/kiln-demo__inifile-1:1",
    );
    let mut burst: usize = env_or("KILN_BENCH_BURST", "100").parse().unwrap();
    let mut rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1);
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this too, as a smoke
    // test: one small burst, and only where the demo images are built.
    if !std::env::args().any(|a| a == "--bench") {
        (burst, rounds) = (burst.min(5), 1);
        let present = kiln_image::ImageStore::open(&store)
            .and_then(|images| images.get(&reference))
            .is_ok();
        if !present {
            println!("concurrency bench (test mode): {reference} not in {store:?}, skipped");
            return;
        }
    }
    let agent = PathBuf::from(std::env::var_os("KILN_AGENT_BIN").expect("KILN_AGENT_BIN"));
    let images = kiln_image::ImageStore::open(&store).unwrap();
    let root = tempfile::Builder::new()
        .prefix("kiln-bench-conc-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mut config = LocalConfig::new(root.path(), agent);
    // A burst of 100 at the server's default limits is past this host's admission ratios:
    // the benchmark measures creates, not admission.
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    let rt = Arc::new(LocalRuntime::new(config).unwrap().with_images(images));
    // The server's default limits (kiln-config's runtime section).
    let limits = Limits {
        memory_bytes: Some(2048 * 1024 * 1024),
        pids: Some(512),
        cpu_millicores: Some(1000),
        ..Limits::default()
    };
    let spec = |id: &str| {
        let mut spec = SandboxSpec::image(SandboxId::new(id).unwrap(), &reference);
        spec.limits = limits;
        spec.hostname = "kiln".into();
        spec
    };
    // Warm-up: page cache, first bwrap exec.
    rt.create(spec("warm")).await.unwrap();
    rt.destroy(&SandboxId::new("warm").unwrap()).await.unwrap();

    if let Ok(shape) = std::env::var("KILN_BENCH_EXECS") {
        exec_load(&rt, &shape, spec).await;
        rt.shutdown().await.unwrap();
        return;
    }

    for round in 0..rounds {
        let start = Instant::now();
        let tasks: Vec<_> = (0..burst)
            .map(|i| {
                let (rt, spec) = (Arc::clone(&rt), spec(&format!("r{round}b{i}")));
                tokio::spawn(async move {
                    let t = Instant::now();
                    rt.create(spec).await.unwrap();
                    t.elapsed()
                })
            })
            .collect();
        let mut each = Vec::with_capacity(burst);
        for task in tasks {
            each.push(task.await.unwrap());
        }
        let wall = start.elapsed();
        each.sort_unstable();
        println!(
            "runtime-alone round={round} n={burst} all_ready_ms={:.1} p50_ms={:.1} p99_ms={:.1}",
            ms(wall),
            ms(quantile(&each, 0.5)),
            ms(quantile(&each, 0.99)),
        );
        let ids: Vec<SandboxId> = rt.list().await.unwrap().into_iter().map(|i| i.id).collect();
        for id in ids {
            rt.destroy(&id).await.unwrap();
        }
    }
    rt.shutdown().await.unwrap();
}

/// `SESSIONSxCOMMANDS` sandboxes × sequential `true` each, all at once; prints
/// `runtime-execs sessions=… commands=… commands_per_s=… p50_ms=… p99_ms=…`.
async fn exec_load(rt: &Arc<LocalRuntime>, shape: &str, spec: impl Fn(&str) -> SandboxSpec) {
    let (sessions, commands) = shape
        .split_once('x')
        .and_then(|(s, c)| Some((s.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
        .expect("KILN_BENCH_EXECS is SESSIONSxCOMMANDS, e.g. 50x200");
    let ids: Vec<SandboxId> = (0..sessions)
        .map(|i| SandboxId::new(format!("x{i}")).unwrap())
        .collect();
    for id in &ids {
        rt.create(spec(id.as_str())).await.unwrap();
    }
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (rt, id) = (Arc::clone(rt), id.clone());
            tokio::spawn(async move {
                let mut each = Vec::with_capacity(commands);
                for _ in 0..commands {
                    // The server's defaults for a Codeset exec.
                    let request = kiln_protocol::ExecRequest::shell("true")
                        .timeout_ms(300_000)
                        .max_output_bytes(1 << 20);
                    let t = Instant::now();
                    let done = rt.exec(&id, request).await.unwrap();
                    assert_eq!(done.exit_code, 0, "{done:?}");
                    each.push(t.elapsed());
                }
                each
            })
        })
        .collect();
    let mut each = Vec::with_capacity(sessions * commands);
    for task in tasks {
        each.extend(task.await.unwrap());
    }
    let wall = start.elapsed();
    each.sort_unstable();
    println!(
        "runtime-execs sessions={sessions} commands={} commands_per_s={:.1} p50_ms={:.2} p99_ms={:.2}",
        each.len(),
        each.len() as f64 / wall.as_secs_f64(),
        ms(quantile(&each, 0.5)),
        ms(quantile(&each, 0.99)),
    );
    for id in &ids {
        rt.destroy(id).await.unwrap();
    }
}
