//! `kiln images build-swebench`: the environment images the SWE-bench harness would build,
//! for a file of SWE-bench records (see `kiln_envimage::swebench`).
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use kiln_envimage::swebench::{build_swebench_images, read_records, SpecTable, SwebenchBuild};
use kiln_envimage::{BuildEvent, BuildOptions, BuildProgress};
use kiln_image::ImageStore;

#[derive(Args)]
pub struct BuildSwebenchArgs {
    /// SWE-bench records: a JSON array or JSON lines file (e.g.
    /// datasets/swebench-fixture/samples.jsonl).
    records: PathBuf,
    /// The dataset the records are (or will be) imported as: instance images are named
    /// `<dataset>/sample/<instance_id>:1` [default: the records file's directory name].
    #[arg(long)]
    dataset: Option<String>,
    /// Directory holding the repositories (`<name>.bundle`, `<owner>__<name>.bundle`, …)
    /// [default: `repos/` next to the records file].
    #[arg(long)]
    repos: Option<PathBuf>,
    /// A JSON file of more specs (same shape as the built-in table), added to and
    /// overriding it.
    #[arg(long)]
    specs: Option<PathBuf>,
    /// Images built at the same time.
    #[arg(long, short, default_value_t = 2)]
    jobs: usize,
    /// Rebuild images already in the store.
    #[arg(long)]
    force: bool,
    /// Where debootstrapped trees, packages and the pip cache live [default:
    /// <images_dir>-cache].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Print every line the build steps print.
    #[arg(long, short)]
    verbose: bool,
}

pub fn build(
    store: &ImageStore,
    default_cache: PathBuf,
    args: BuildSwebenchArgs,
) -> anyhow::Result<()> {
    let records = read_records(&args.records)
        .with_context(|| format!("cannot read records from {}", args.records.display()))?;
    let parent = args
        .records
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let dataset = match args.dataset {
        Some(d) => d,
        None => std::fs::canonicalize(&parent)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .context("name the dataset with --dataset")?,
    };
    let repos_dir = args.repos.unwrap_or_else(|| parent.join("repos"));
    let specs = SpecTable::builtin_extended_by(args.specs.as_deref())?;
    let mut options = BuildOptions::new(&args.cache.unwrap_or(default_cache));
    options.force = args.force;
    let started = Instant::now();
    let images = build_swebench_images(
        &SwebenchBuild {
            records: &records,
            specs: &specs,
            dataset: &dataset,
            repos_dir: &repos_dir,
            jobs: args.jobs,
        },
        store,
        &options,
        &line_progress(args.verbose),
    )?;
    eprintln!(
        "built {} base, {} environment and {} instance image(s) in {:.1} s",
        images.bases.len(),
        images.environments.len(),
        images.samples.len(),
        started.elapsed().as_secs_f64()
    );
    for (id, image) in &images.samples {
        println!("{id}\t{}", image.reference());
    }
    Ok(())
}

/// One line per image event (builds run in parallel, so no redrawn bars); with `verbose`,
/// every line the steps print, prefixed by the image.
fn line_progress(verbose: bool) -> BuildProgress {
    let started = Mutex::new(std::collections::HashMap::<String, Instant>::new());
    BuildProgress::new(move |event| match event {
        BuildEvent::Started { reference } => {
            started
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(reference.clone(), Instant::now());
            eprintln!("▶ {reference}");
        }
        BuildEvent::AlreadyBuilt { reference } => eprintln!("= {reference}: already built"),
        BuildEvent::Phase { reference, phase } => eprintln!("  {reference}: {phase}"),
        BuildEvent::Log { reference, line } if verbose => eprintln!("  {reference} | {line}"),
        BuildEvent::Finished {
            reference,
            layer_bytes,
            seconds,
        } => eprintln!(
            "✓ {reference}: new layer of {:.1} MiB in {seconds:.1} s",
            *layer_bytes as f64 / (1024.0 * 1024.0)
        ),
        _ => {}
    })
}
