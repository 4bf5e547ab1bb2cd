//! `kiln datasets validate`: every chosen sample graded without a patch (must fail) and
//! with its gold patch (must pass), in sessions of a node of its own, so a server on the
//! same data directory is never touched; a signal closes what it started before it exits.
use std::process::ExitCode;

use anyhow::{bail, Context};
use kiln_config::Config;
use kiln_services::dataset_validation::{validate_dataset, SampleFilter, SampleValidation};
use kiln_services::Kiln;

/// Exit code after SIGINT/SIGTERM (128 + SIGINT, as shells report an interrupted command).
const INTERRUPTED: u8 = 130;

pub async fn run(
    mut config: Config,
    dataset: &str,
    samples: Vec<String>,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    crate::install_embedded_agent(&mut config)?;
    config.build_demo_images = false;
    let kiln = Kiln::open_ephemeral(config, "validate").await?;
    let outcome = tokio::select! {
        outcome = validate(&kiln, dataset, SampleFilter { patterns: samples }) => Some(outcome),
        signal = stop_signal() => {
            eprintln!("kiln: {signal}: closing the validation's sessions");
            None
        }
    };
    // Whatever happened (done, an error, a signal): nothing of this node stays live.
    let closed = kiln.sessions.close_all().await;
    if closed > 0 {
        tracing::info!(sessions = closed, "closed the validation's sessions");
    }
    kiln.shutdown().await;
    match outcome {
        None => Ok(ExitCode::from(INTERRUPTED)),
        Some(outcome) => outcome,
    }
}

async fn validate(kiln: &Kiln, dataset: &str, filter: SampleFilter) -> anyhow::Result<ExitCode> {
    let report = kiln.bootstrap().await?;
    if let Some(why) = report.sessions_unavailable {
        bail!("cannot validate: {why}");
    }
    let user = kiln
        .auth
        .create_user("kiln datasets validate", "validate@localhost", false)
        .await?;
    println!(
        "{:<40} {:>14} {:>14}  verdict",
        "sample", "without patch", "with gold"
    );
    let started = std::time::Instant::now();
    let results = validate_dataset(
        &kiln.sessions,
        &kiln.datasets,
        &user.user_id,
        dataset,
        &filter,
        print_row,
    )
    .await?;
    let bad = results.iter().filter(|r| !r.agrees()).count();
    println!(
        "{} samples, {} agree, {bad} disagree ({:.1} s)",
        results.len(),
        results.len() - bad,
        started.elapsed().as_secs_f64()
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_row(r: &SampleValidation) {
    let show = |v: Option<bool>| match v {
        Some(true) => "pass",
        Some(false) => "fail",
        None => "ERROR",
    };
    let verdict = if r.agrees() { "ok" } else { "DISAGREES" };
    println!(
        "{:<40} {:>14} {:>14}  {verdict}",
        r.sample_id,
        show(r.without_patch),
        show(r.with_gold)
    );
    if let Some(problem) = &r.problem {
        println!("    {problem}");
    }
    for line in &r.disagreeing_tests {
        println!("    {line}");
    }
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for SIGINT/SIGTERM");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
