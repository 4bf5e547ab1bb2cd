//! SSE first-byte latency of `POST /v1/instances/{id}/exec/stream`, against the runtime's
//! own `exec_streaming` on the same sandbox in the same run (`bench/exec/run.sh`).
//!
//! Both sides run `echo x` and time from the call to its first output byte: the runtime from
//! `exec_streaming` to its first `Output` event; HTTP from sending the request to reading the
//! first `stdout` frame. Spawning the process is in both; the difference of the medians is
//! what the API adds (request, auth, the stored exec, the spool, SSE) — an upper bound on the
//! delay between the process writing and the client reading. Iterations alternate, so both
//! sides see the machine in the same state. `KILN_BENCH_ITERATIONS` (default 200).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../crates/kiln-api/tests/common/mod.rs"]
mod common;
#[path = "../../crates/kiln-api/tests/sandbox/mod.rs"]
mod sandbox;

use std::time::{Duration, Instant};

use kiln_protocol::{ExecEvent, ExecRequest};
use kiln_runtime::SandboxId;
use serde_json::json;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let iterations: usize = std::env::var("KILN_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let s = sandbox::start(|_| {}).await;
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    let session = s
        .store()
        .await
        .get_session(&id)
        .await
        .expect("store")
        .expect("session");
    let sandbox = SandboxId::new(session.sandbox_id.expect("a sandbox")).expect("id");
    let runtime = s
        .kiln
        .sandboxes
        .available()
        .expect("a runtime")
        .runtime
        .clone();

    let mut direct = Vec::with_capacity(iterations);
    let mut http = Vec::with_capacity(iterations);
    for i in 0..iterations + 5 {
        let started = Instant::now();
        let mut first = None;
        runtime
            .exec_streaming(&sandbox, ExecRequest::shell("echo x"), &mut |event| {
                if matches!(event, ExecEvent::Output { .. }) && first.is_none() {
                    first = Some(started.elapsed());
                }
            })
            .await
            .expect("exec");
        let runtime_first = first.expect("output");

        let started = Instant::now();
        let mut response = s
            .v1(
                reqwest::Method::POST,
                &format!("/instances/{id}/exec/stream"),
            )
            .header("Authorization", common::bearer(&key))
            .json(&json!({"command": "echo x"}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        let mut seen = Vec::new();
        let http_first = loop {
            let chunk = response.chunk().await.expect("read").expect("more");
            seen.extend_from_slice(&chunk);
            if seen.windows(13).any(|w| w == b"event: stdout") {
                break started.elapsed();
            }
        };
        // Read to the end, so the next iteration does not overlap this exec.
        while response.chunk().await.expect("read").is_some() {}
        if i >= 5 {
            direct.push(runtime_first);
            http.push(http_first);
        }
    }
    let (d50, d99) = percentiles(&mut direct);
    let (h50, h99) = percentiles(&mut http);
    println!(
        "exec `echo x`, call → first output byte, {iterations} iterations each, same sandbox:"
    );
    println!(
        "  runtime exec_streaming   p50 {:>8.3} ms  p99 {:>8.3} ms",
        ms(d50),
        ms(d99)
    );
    println!(
        "  HTTP SSE exec/stream     p50 {:>8.3} ms  p99 {:>8.3} ms",
        ms(h50),
        ms(h99)
    );
    println!(
        "  added by the API (p50 difference): {:.3} ms (target ≤ 5 ms)",
        ms(h50.saturating_sub(d50))
    );
}

/// p50 and p99, nearest rank.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    (rank(0.50), rank(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
