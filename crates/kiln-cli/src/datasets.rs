//! `kiln datasets …`: import SWE-bench-style records, list datasets, make one private to
//! an organization or public again, and validate every sample (`validate.rs`). Works on
//! the data directory directly, beside a running server or without one.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use kiln_config::Config;
use kiln_services::datasets::{ImportError, ImportRequest};
use kiln_services::Kiln;

use crate::validate;

#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// Import SWE-bench-style records (a JSON array, JSON lines or Parquet, as Hugging
    /// Face publishes SWE-bench). Re-importing a sample makes a new version. All or
    /// nothing: any bad record imports nothing.
    Import {
        file: PathBuf,
        /// The dataset to import into (created if new).
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// A note stored with the new versions.
        #[arg(long)]
        version_description: Option<String>,
        /// A directory holding the records' repositories (OWNER/NAME.bundle,
        /// OWNER__NAME.bundle, OWNER/NAME git directories, …).
        #[arg(long)]
        repos: Option<PathBuf>,
    },
    /// List datasets (a private one with the org that sees it).
    List,
    /// Make a dataset private to an organization: only those acting in it (its keys, its
    /// members with X-Org-Slug or as their default) see its samples.
    Private {
        name: String,
        /// The organization's slug or id.
        #[arg(long)]
        org: String,
    },
    /// Make a dataset public again.
    Public { name: String },
    /// Check every sample: graded without the fix it must fail, with the gold patch it
    /// must pass. Prints a table; exits non-zero on any disagreement. Needs the samples'
    /// environment images. Prints, for a disagreeing sample, which expected tests did
    /// otherwise. Runs beside a server on the same data directory without touching it;
    /// Ctrl-C closes its sessions.
    Validate {
        name: String,
        /// Only these samples: an instance id or a glob (`*`, `?`); repeatable.
        #[arg(long = "sample", value_name = "ID")]
        samples: Vec<String>,
    },
}

pub async fn run(config: Config, command: DatasetsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DatasetsCommand::List => {
            let kiln = Kiln::open(config).await?;
            for d in kiln.datasets.list_datasets().await? {
                let private = if d.owner_user_id.is_some() {
                    "private"
                } else {
                    ""
                };
                println!(
                    "{:<32} {:>6} samples  {:<8} {}",
                    d.name,
                    d.sample_count,
                    private,
                    d.description.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Private { name, org } => {
            let kiln = Kiln::open(config).await?;
            let org = kiln.orgs.find(&org).await?;
            kiln.datasets
                .set_owner(&name, Some(&org.account_user_id))
                .await?;
            println!("{name} is private to {}", org.slug);
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Public { name } => {
            let kiln = Kiln::open(config).await?;
            kiln.datasets.set_owner(&name, None).await?;
            println!("{name} is public");
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Validate { name, samples } => validate::run(config, &name, samples).await,
        DatasetsCommand::Import {
            file,
            name,
            description,
            version_description,
            repos,
        } => {
            import(
                config,
                &file,
                &name,
                description,
                version_description,
                repos.as_deref(),
            )
            .await
        }
    }
}

async fn import(
    config: Config,
    file: &Path,
    name: &str,
    description: Option<String>,
    version_description: Option<String>,
    repos: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let limit = config.limits.max_import_bytes;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > limit {
        bail!(
            "{} is {size} bytes; the import limit is {limit} (limits.max_import_bytes)",
            file.display()
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = match kiln_services::record_formats::records_text(bytes) {
        Ok(text) => text,
        Err(problem) => {
            eprintln!("kiln: {}: {problem}; nothing was imported", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let kiln = Kiln::open(config).await?;
    let request = ImportRequest {
        dataset: name,
        description,
        version_description,
        text: &text,
        repos_dir: repos,
    };
    match kiln.datasets.import(request).await {
        Ok(summary) => {
            println!(
                "imported into {name}: {} new sample(s), {} new version(s)",
                summary.created, summary.updated
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Records(problems)) => {
            eprintln!(
                "kiln: {} problem(s) in {}; nothing was imported:",
                problems.len(),
                file.display()
            );
            for p in &problems {
                eprintln!("  {p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Err(ImportError::Service(e)) => Err(e.into()),
    }
}
