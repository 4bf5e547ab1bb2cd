//! API-level load: N sessions created at once, each then running M short commands one
//! after the other (POST exec, then GET the interaction, which long-polls), all sessions
//! concurrently. Prints throughput, per-command and create latencies, and errors; exits
//! non-zero when any operation failed.
//!
//!     kiln-bench-load --base-url http://127.0.0.1:8000/api/v1 --api-key-file D/admin.key
//!
//! `bench/load/run.sh` starts a server and runs this against it.
#![forbid(unsafe_code)]

mod api_client;
mod latency;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::task::JoinSet;

use crate::api_client::{ApiClient, LoadError};
use crate::latency::Latencies;

#[derive(Debug, Parser)]
struct Args {
    /// The API root.
    #[arg(long, env = "KILN_BENCH_BASE_URL")]
    base_url: String,
    /// File holding the API key (e.g. `<data dir>/admin.key`).
    #[arg(long, env = "KILN_BENCH_API_KEY_FILE")]
    api_key_file: PathBuf,
    #[arg(long, default_value = "kiln-demo")]
    dataset: String,
    #[arg(long, default_value = "kiln-demo__inifile-1")]
    sample: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Commands each session runs, one after the other.
    #[arg(long, default_value_t = 200)]
    commands: usize,
    /// The command (bash) every interaction runs.
    #[arg(long, default_value = "true")]
    command: String,
    /// The whole run gives up after this many seconds.
    #[arg(long, default_value_t = 900)]
    deadline_secs: u64,
}

/// How many error messages are printed; the rest are only counted.
const SHOWN_ERRORS: usize = 5;

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: Vec<LoadError>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors.extend(other.errors);
    }
}

async fn create_sessions(client: &ApiClient, args: &Args) -> (Vec<String>, Tally, Duration) {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.sessions {
        let (client, dataset, sample) = (client.clone(), args.dataset.clone(), args.sample.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let result = client.create_ready(&dataset, &sample).await;
            (result, t.elapsed())
        });
    }
    let (mut ids, mut tally) = (Vec::new(), Tally::default());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((Ok(id), took)) => {
                ids.push(id);
                tally.latencies.push(took);
            }
            Ok((Err(e), _)) => tally.errors.push(e),
            Err(e) => panic_to_error(&mut tally, e),
        }
    }
    (ids, tally, start.elapsed())
}

/// A task that panicked is a bug in this program, but the run still reports it.
fn panic_to_error(tally: &mut Tally, e: tokio::task::JoinError) {
    tally.errors.push(LoadError::Status {
        what: "load task",
        status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
        body: e.to_string(),
    });
}

async fn run_commands(client: &ApiClient, ids: &[String], args: &Args) -> (Tally, Duration) {
    let start = Instant::now();
    let command: Arc<str> = Arc::from(args.command.as_str());
    let mut tasks = JoinSet::new();
    for id in ids {
        let (client, id, command, n) = (client.clone(), id.clone(), command.clone(), args.commands);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..n {
                let t = Instant::now();
                match client.run_command(&id, &command).await {
                    Ok(()) => tally.latencies.push(t.elapsed()),
                    Err(e @ LoadError::Deadline(_)) => {
                        tally.errors.push(e);
                        break;
                    }
                    Err(e) => tally.errors.push(e),
                }
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(tally) => all.merge(tally),
            Err(e) => panic_to_error(&mut all, e),
        }
    }
    (all, start.elapsed())
}

async fn close_sessions(client: &ApiClient, ids: Vec<String>) -> Tally {
    let mut tasks = JoinSet::new();
    for id in ids {
        let client = client.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            client.close(&id).await.map(|()| t.elapsed())
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(took)) => tally.latencies.push(took),
            Ok(Err(e)) => tally.errors.push(e),
            Err(e) => panic_to_error(&mut tally, e),
        }
    }
    tally
}

fn print_errors(phase: &str, errors: &[LoadError]) {
    for e in errors.iter().take(SHOWN_ERRORS) {
        println!("  {phase} error: {e}");
    }
    if errors.len() > SHOWN_ERRORS {
        println!(
            "  … and {} more {phase} errors",
            errors.len() - SHOWN_ERRORS
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let key = match std::fs::read_to_string(&args.api_key_file) {
        Ok(key) => key.trim().to_owned(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", args.api_key_file.display());
            return ExitCode::from(2);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let client = match ApiClient::new(&args.base_url, &key, deadline) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "load: {} sessions × {} commands (`{}`) on {}/{} against {}",
        args.sessions, args.commands, args.command, args.dataset, args.sample, args.base_url
    );

    let (ids, created, create_wall) = create_sessions(&client, &args).await;
    let (ran, run_wall) = run_commands(&client, &ids, &args).await;
    let closed = close_sessions(&client, ids).await;

    let commands_ok = ran.latencies.len();
    let throughput = commands_ok as f64 / run_wall.as_secs_f64().max(f64::EPSILON);
    let create_latencies = Latencies::new(created.latencies.clone());
    let summary_ms = |q: f64| {
        create_latencies
            .quantile(q)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    // One line for scripts (bench/concurrency/run.sh), milliseconds.
    println!(
        "summary sessions={} ready={} errors={} create_all_ready_ms={:.1} create_p50_ms={:.1} create_p99_ms={:.1} commands_per_s={throughput:.1}",
        args.sessions,
        created.latencies.len(),
        created.errors.len() + ran.errors.len() + closed.errors.len(),
        create_wall.as_secs_f64() * 1000.0,
        summary_ms(0.5),
        summary_ms(0.99),
    );
    println!(
        "session create → ready      {}   ({} at once, all ready after {:.2?})",
        Latencies::new(created.latencies),
        args.sessions,
        create_wall
    );
    println!(
        "command (exec + result)     {}",
        Latencies::new(ran.latencies)
    );
    println!(
        "session close               {}",
        Latencies::new(closed.latencies)
    );
    println!(
        "throughput                  {throughput:.1} commands/s ({commands_ok} commands in {run_wall:.2?})"
    );
    let errors = created.errors.len() + ran.errors.len() + closed.errors.len();
    println!(
        "errors                      {errors} (create {}, command {}, close {})",
        created.errors.len(),
        ran.errors.len(),
        closed.errors.len()
    );
    print_errors("create", &created.errors);
    print_errors("command", &ran.errors);
    print_errors("close", &closed.errors);
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
