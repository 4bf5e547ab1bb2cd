//! `kiln eval`: a model's predictions graded as the SWE-bench harness grades them, by an
//! in-process Kiln on the data directory (like `datasets validate`), with the harness's
//! outputs under the current directory (or `--output-dir`).
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_config::Config;
use kiln_services::eval_runs::{self, EvalRequest, Finished, Layout, RunReport};
use kiln_services::Kiln;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Rewrite the run report `<model>.<run_id>.json` from the saved instance reports.
    Report {
        run_id: String,
        #[command(flatten)]
        inputs: Inputs,
    },
}

#[derive(Args)]
struct Inputs {
    /// The dataset the predictions are for (required).
    #[arg(long)]
    dataset: Option<String>,
    /// Predictions: a JSON list, a JSON object keyed by instance id, or JSON lines of
    /// `instance_id`, `model_name_or_path`, `model_patch` (required).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Only these instances (space or comma separated, or the option repeated).
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    instance_ids: Vec<String>,
    /// Where `logs/run_evaluation/…` and the run report go.
    #[arg(long, default_value = ".")]
    output_dir: PathBuf,
    /// Print JSON (one line per finished instance, then the run report) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Instances evaluated at once.
    #[arg(long, default_value_t = 4)]
    max_workers: usize,
    /// Seconds one instance may take, sandbox to grade (the harness's `--timeout`).
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// The run's id: its directory under logs/run_evaluation and the report's name. Run
    /// again with the same id, instances that have a report are not run again.
    #[arg(long)]
    run_id: Option<String>,
}

pub async fn run(config: Config, args: EvalArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(EvalCommand::Report { run_id, inputs }) => report(config, &run_id, &inputs).await,
        None => evaluate(config, &args.run.inputs, &args.run).await,
    }
}

fn read_predictions(path: &Path) -> anyhow::Result<eval_runs::Predictions> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    eval_runs::parse_predictions(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn request(inputs: &Inputs, run: Option<&RunArgs>) -> anyhow::Result<EvalRequest> {
    if let Some(run) = run {
        if run.max_workers == 0 || run.timeout == 0 {
            bail!("--max-workers and --timeout must be at least 1");
        }
    }
    // Checked here, not by clap: the options are shared with `kiln eval report`, and clap
    // would demand them of `kiln eval` before seeing the subcommand.
    let (Some(dataset), Some(predictions)) = (&inputs.dataset, &inputs.predictions) else {
        bail!("kiln eval needs --dataset and --predictions");
    };
    Ok(EvalRequest {
        dataset: dataset.clone(),
        predictions: read_predictions(predictions)?,
        instance_ids: (!inputs.instance_ids.is_empty()).then(|| {
            inputs
                .instance_ids
                .iter()
                .flat_map(|s| s.split_whitespace())
                .map(str::to_string)
                .collect()
        }),
        max_workers: run.map_or(1, |r| r.max_workers),
        timeout: Duration::from_secs(run.map_or(1, |r| r.timeout)),
    })
}

async fn open(mut config: Config) -> anyhow::Result<Kiln> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    crate::install_embedded_agent(&mut config)?;
    config.build_demo_images = false;
    // A node of its own (like `datasets validate`): a server on the same data directory
    // keeps its sandboxes, and what a killed eval leaves is reclaimed by the next start.
    let kiln = Kiln::open_ephemeral(config, "eval").await?;
    kiln.bootstrap().await?;
    Ok(kiln)
}

async fn evaluate(config: Config, inputs: &Inputs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let request = request(inputs, Some(args))?;
    let run_id = args.run_id.clone().unwrap_or_else(chrono_free_run_id);
    let layout = Layout::new(&inputs.output_dir, &run_id).map_err(anyhow::Error::msg)?;
    let kiln = open(config).await?;
    if let Some(why) = kiln.sessions.unavailable_reason() {
        bail!("cannot evaluate: {why}");
    }
    let plan = eval_runs::plan(&kiln.datasets, &request, &layout, None).await?;
    let user = kiln
        .auth
        .create_user("kiln eval", "eval@localhost", false)
        .await?;
    if !inputs.json {
        eprintln!(
            "run {run_id}: {} to run, {} already done, {} empty patches",
            plan.to_run.len(),
            plan.already_done.len(),
            plan.empty.len()
        );
    }
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel_tx.send(true);
        }
    });
    let bar = (!inputs.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(plan.to_run.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let (mut resolved, mut errors) = (0, 0);
    let on_finished = |f: &Finished| {
        resolved += usize::from(f.resolved == Some(true));
        errors += usize::from(f.resolved.is_none());
        let line = describe(f);
        if inputs.json {
            println!("{}", serde_json::to_string(f).unwrap_or_default());
        } else if let Some(bar) = &bar {
            bar.println(line);
            bar.set_message(format!("resolved {resolved}, errors {errors}"));
            bar.inc(1);
        } else {
            eprintln!("{line}");
        }
    };
    let started = std::time::Instant::now();
    let outcome = eval_runs::run(
        &kiln.sessions,
        &user.user_id,
        &request,
        &plan,
        &layout,
        on_finished,
        cancel.clone(),
    )
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    kiln.sessions.close_all().await;
    kiln.shutdown().await;
    let report = outcome?;
    print_report(&report, inputs, &layout, &request, started.elapsed())?;
    Ok(if *cancel.borrow() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

async fn report(config: Config, run_id: &str, inputs: &Inputs) -> anyhow::Result<ExitCode> {
    let request = request(inputs, None)?;
    let layout = Layout::new(&inputs.output_dir, run_id).map_err(anyhow::Error::msg)?;
    let kiln = open(config).await?;
    let plan = eval_runs::plan(&kiln.datasets, &request, &layout, None).await?;
    kiln.shutdown().await;
    let report = eval_runs::write_run_report(&layout, &plan.dataset_ids, &request.predictions)?;
    print_report(&report, inputs, &layout, &request, Duration::ZERO)?;
    Ok(ExitCode::SUCCESS)
}

fn describe(f: &Finished) -> String {
    let verdict = match (f.resolved, &f.error) {
        (Some(true), _) => "resolved".to_string(),
        (Some(false), _) => "unresolved".to_string(),
        (None, Some(e)) => format!("error: {}", e.lines().next().unwrap_or_default()),
        (None, None) => "error".to_string(),
    };
    let t = &f.timing;
    format!(
        "{:<40} {verdict}  (create {:.1} s, apply {:.1} s, tests {:.1} s, grade {:.1} s)",
        f.instance_id, t.create, t.apply, t.tests, t.grade
    )
}

fn print_report(
    report: &RunReport,
    inputs: &Inputs,
    layout: &Layout,
    request: &EvalRequest,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let path = layout.run_report_path(request.predictions.first());
    if inputs.json {
        let mut value = serde_json::to_value(report)?;
        value["run_report"] = serde_json::Value::String(path.display().to_string());
        println!("{value}");
        return Ok(());
    }
    println!("Total instances: {}", report.total_instances);
    println!("Instances submitted: {}", report.submitted_instances);
    println!("Instances completed: {}", report.completed_instances);
    println!("Instances incomplete: {}", report.incomplete_ids.len());
    println!("Instances resolved: {}", report.resolved_instances);
    println!("Instances unresolved: {}", report.unresolved_instances);
    println!(
        "Instances with empty patches: {}",
        report.empty_patch_instances
    );
    println!("Instances with errors: {}", report.error_instances);
    if !elapsed.is_zero() {
        println!("Wall time: {:.1} s", elapsed.as_secs_f64());
    }
    println!("Report written to {}", path.display());
    Ok(())
}

/// `kiln-<unix seconds>`: unique enough for runs started by hand, sortable.
fn chrono_free_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("kiln-{secs}")
}
