//! Round-trip latency over the socket (ignored by default: it measures, it does not test
//! behaviour). Run with
//! `cargo test -p kiln-agent --test latency -- --ignored --nocapture`, optionally with
//! `KILN_AGENT_BIN=$(scripts/build-agent.sh)` to measure the static release build.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::AgentProcess;
use kiln_protocol::ExecRequest;

fn median(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

#[test]
#[ignore]
fn measure_round_trips() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let runs = 1000;
    let ping: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            client.ping().unwrap();
            t.elapsed()
        })
        .collect();
    let exec: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let done = client.exec(ExecRequest::argv(["true"])).unwrap();
            assert_eq!(done.exit_code, 0);
            t.elapsed()
        })
        .collect();
    let shell: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let done = client.exec(ExecRequest::shell("true")).unwrap();
            assert_eq!(done.exit_code, 0);
            t.elapsed()
        })
        .collect();
    let (p50, p99) = median(ping);
    eprintln!("ping (connect + hello + request): median {p50:?}, p99 {p99:?}");
    let (p50, p99) = median(exec);
    eprintln!("exec argv [true]:                  median {p50:?}, p99 {p99:?}");
    let (p50, p99) = median(shell);
    eprintln!("exec bash -c true:                 median {p50:?}, p99 {p99:?}");
}
