//! The dashboard's pages with 1,000 sessions in the store: what a browser asks the server
//! for to show each page, timed over real HTTP on 127.0.0.1, against the cheapest route
//! (`GET /api/v1/health`) in the same run as the baseline.
//!
//! The sessions page is the page itself (`/`, its script and stylesheet, served from the
//! binary) plus its two API calls (`/v1/instances?limit=100` and the live count); a
//! search in it is the same two calls with `q` (the server's substring search); the
//! keys page is `/api/v1/users/me`; `/docs` is its page and Redoc's bundle. The 1,000
//! sessions belong to one user (rows only: no sandboxes). Prints p50/p99/min/max per
//! series; `bench/dashboard/run.sh` runs it. `KILN_BENCH_ROUNDS` (default 200; 3 when run
//! by `cargo test --all-targets`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../crates/kiln-api/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::TestServer;
use kiln_domain::{NewSession, SessionLimits, SessionSource};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    println!(
        "{name:<44} n={:<4} p50 {:>9.2?}  p99 {:>9.2?}  min {:>9.2?}  max {:>9.2?}",
        samples.len(),
        p50,
        percentile(&samples, 0.99),
        samples[0],
        samples[samples.len() - 1]
    );
    p50
}

/// GETs `paths` one after the other (as a page loads them), each answer read whole.
async fn load(s: &TestServer, root: &str, key: &str, paths: &[&str]) -> Duration {
    let start = Instant::now();
    for path in paths {
        let r = s
            .client
            .get(format!("{root}{path}"))
            .header("Authorization", format!("Bearer {key}"))
            .send()
            .await
            .expect("send");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await.expect("body");
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 200 } else { 3 });
    let s = TestServer::start_with(|c| {
        c.server.key_requests_per_sec = 0;
        c.server.ip_requests_per_sec = 0;
    })
    .await;
    let root = s.base.replace("/api/v1", "");
    let (user, key) = s.user("bench").await;
    let store = s.store().await;
    let now = Utc::now();
    for n in 0..1000 {
        store
            .insert_session(
                &NewSession {
                    session_id: format!("bench-{n:04}"),
                    user_id: user.clone(),
                    source: SessionSource::Image {
                        reference: "base/bench:1".into(),
                    },
                    name: Some(format!("bench session {n}")),
                    labels: Default::default(),
                    limits: SessionLimits::default(),
                    requested_at: now,
                    expires_at: now + chrono::Duration::hours(1),
                },
                None,
            )
            .await
            .expect("insert session");
    }
    println!(
        "1,000 sessions of one user in the store ({}), {rounds} rounds",
        s.backend()
    );
    let pages: [(&str, &[&str]); 5] = [
        ("baseline: GET /api/v1/health", &["/api/v1/health"]),
        (
            "sessions page (html, js, css, 2 API calls)",
            &[
                "/",
                "/dashboard/app.js",
                "/dashboard/app.css",
                "/v1/instances?limit=100",
                "/v1/instances?limit=1&status=creating,ready",
            ],
        ),
        (
            "sessions search (q matching 11 of 1,000)",
            &[
                "/v1/instances?limit=100&q=session%2042",
                "/v1/instances?limit=1&status=creating,ready",
            ],
        ),
        ("keys page data (/api/v1/users/me)", &["/api/v1/users/me"]),
        (
            "/docs (page + 0.9 MB Redoc bundle)",
            &["/docs", "/docs/redoc.standalone.js"],
        ),
    ];
    let mut series: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); pages.len()];
    for _ in 0..rounds {
        for (i, (_, paths)) in pages.iter().enumerate() {
            series[i].push(load(&s, &root, &key, paths).await);
        }
    }
    let mut medians = Vec::new();
    for ((name, _), samples) in pages.iter().zip(series) {
        medians.push(report(name, samples));
    }
    let goal = |p50: Duration| {
        if p50 <= Duration::from_millis(100) {
            "within"
        } else {
            "OVER"
        }
    };
    println!(
        "sessions page p50 {:.2?} ({} the 100 ms goal); search p50 {:.2?} ({}); baseline p50 {:.2?}",
        medians[1],
        goal(medians[1]),
        medians[2],
        goal(medians[2]),
        medians[0]
    );
}
