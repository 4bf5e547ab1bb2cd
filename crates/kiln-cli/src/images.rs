//! `kiln images …`: the environment image store, from the terminal.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use kiln_config::Config;
use kiln_image::{ImageStore, ImportOptions, PullOptions};

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// List the images in the store.
    List,
    /// Import an OCI image layout (directory or tar) or a `docker save` tarball.
    Import {
        path: PathBuf,
        /// The name to give it (when the archive names none, or to rename it).
        #[arg(long)]
        reference: Option<String>,
    },
    /// Pull an image from a registry (OCI distribution protocol), or with --dataset every
    /// sample's SWE-bench image (the harness's official names), stored under the names
    /// the dataset's sessions use.
    Pull {
        #[arg(required_unless_present = "dataset", conflicts_with = "dataset")]
        reference: Option<String>,
        /// Every sample of this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// A registry (host:port) serving Docker Hub's names: a mirror, or where the images
        /// were pushed (--dataset only).
        #[arg(long, requires = "dataset")]
        registry: Option<String>,
        /// Images downloaded at once (--dataset only).
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Registries (host:port) to reach over plain HTTP; localhost always is.
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
    },
    /// Remove an image; layers no other image uses are deleted. Refused while a sandbox
    /// (a live session or agent job of this data directory) uses them.
    Rm {
        reference: String,
        /// Remove the image anyway; layers in use stay on disk until they are unused.
        #[arg(long)]
        force: bool,
    },
    /// Build the environment images of the bundled kiln-demo dataset from Debian's
    /// packages (needs root and a Debian mirror; ≈ 5 minutes the first time, cached after).
    BuildDemo {
        /// Rebuild images that are already in the store.
        #[arg(long)]
        force: bool,
        /// Where debootstrapped trees and packages are cached [default: <images_dir>-cache].
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print every line of debootstrap's output.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Build the environment images the SWE-bench harness would build for a file of
    /// records, from its install specs, Debian and PyPI (needs root and the network).
    BuildSwebench(crate::swebench::BuildSwebenchArgs),
}

pub async fn run(config: &Config, command: ImagesCommand) -> anyhow::Result<ExitCode> {
    let dir = config.images_dir();
    // Sandboxes mount layers as overlay lower dirs: those are never deleted under them,
    // whichever process on this data directory runs them.
    let store = kiln_runtime::open_images(&config.data_dir, &dir)
        .with_context(|| format!("cannot open the image store in {}", dir.display()))?;
    match command {
        ImagesCommand::List => {
            for image in store.list()? {
                let bytes: u64 = image.layers().iter().map(|l| l.size).sum();
                println!(
                    "{:<56} {:>3} layer(s) {:>12} bytes  {}",
                    image.reference(),
                    image.layers().len(),
                    bytes,
                    image.manifest_digest()
                );
            }
        }
        ImagesCommand::Import { path, reference } => {
            let options = ImportOptions {
                reference,
                ..Default::default()
            };
            let images =
                tokio::task::spawn_blocking(move || store.import(&path, &options)).await??;
            for image in images {
                println!("imported {}", image.reference());
            }
        }
        ImagesCommand::Pull {
            reference,
            dataset,
            registry,
            jobs,
            insecure,
        } => {
            let mut options = PullOptions::default();
            options.registry.insecure_registries = insecure;
            if let Some(dataset) = dataset {
                return crate::pull_dataset::run(
                    config,
                    store,
                    &dataset,
                    registry.as_deref(),
                    options.registry,
                    jobs,
                )
                .await;
            }
            let reference = reference.context("name an image, or --dataset")?;
            let image = store.pull(&reference, &options).await?;
            println!("pulled {} ({})", image.reference(), image.manifest_digest());
        }
        ImagesCommand::Rm { reference, force } => {
            let stats = if force {
                store.remove_forced(&reference)?
            } else {
                store.remove(&reference)?
            };
            println!("removed {reference} ({stats:?})");
            if stats.layers_kept > 0 {
                println!(
                    "{} layer(s) kept while sandboxes use them; a later `kiln images rm` or \
                     import deletes them once unused",
                    stats.layers_kept
                );
            }
        }
        ImagesCommand::BuildDemo {
            force,
            cache,
            verbose,
        } => {
            let cache = cache.unwrap_or_else(|| sibling(&dir, "-cache"));
            tokio::task::spawn_blocking(move || build_demo(&store, &cache, force, verbose))
                .await??;
        }
        ImagesCommand::BuildSwebench(args) => {
            let cache = sibling(&dir, "-cache");
            tokio::task::spawn_blocking(move || crate::swebench::build(&store, cache, args))
                .await??;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn build_demo(store: &ImageStore, cache: &Path, force: bool, verbose: bool) -> anyhow::Result<()> {
    let staging = tempfile::tempdir()?;
    let dataset = kiln_services::demo::write_demo_dataset(staging.path())
        .context("cannot stage the demo dataset")?;
    let mut options = kiln_envimage::BuildOptions::new(cache);
    options.force = force;
    let started = std::time::Instant::now();
    let images = kiln_envimage::build_demo_images(
        store,
        &dataset,
        &options,
        &kiln_envimage::terminal_progress(verbose),
    )?;
    eprintln!(
        "built {} base and {} sample image(s) in {:.1} s",
        images.bases.len(),
        images.samples.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// At start: builds the demo images that are missing, in the background, logging its
/// progress, so that a fresh server needs no separate build step.
pub fn spawn_demo_build(config: &Config) {
    let dir = config.images_dir();
    let store = match ImageStore::open(&dir) {
        Ok(store) => store,
        Err(e) => {
            return tracing::warn!(error = %e, "cannot open the image store; demo images not built")
        }
    };
    let staging = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return tracing::warn!(error = %e, "cannot stage the demo dataset"),
    };
    let dataset = match kiln_services::demo::write_demo_dataset(staging.path()) {
        Ok(d) => d,
        Err(e) => return tracing::warn!(error = %e, "cannot stage the demo dataset"),
    };
    let missing = match kiln_envimage::read_samples(&dataset) {
        Ok(records) => records
            .iter()
            .filter(|r| {
                let reference =
                    kiln_services::sessions::sample_image_reference("kiln-demo", &r.instance_id);
                store.get(&reference).is_err()
            })
            .count(),
        Err(e) => return tracing::warn!(error = %e, "cannot read the demo dataset"),
    };
    if missing == 0 {
        return;
    }
    if kiln_runtime::local::find_in_path("debootstrap").is_none() {
        return tracing::warn!(
            missing,
            "demo images are missing and debootstrap is not installed: apt-get install debootstrap, then restart or run `kiln images build-demo`"
        );
    }
    tracing::info!(
        missing,
        "building the demo environment images in the background (a few minutes, once)"
    );
    let cache = sibling(&dir, "-cache");
    std::thread::spawn(move || {
        let _staging = staging;
        let progress = kiln_envimage::BuildProgress::new(|event| match event {
            kiln_envimage::BuildEvent::Started { reference } => {
                tracing::info!(%reference, "building image")
            }
            kiln_envimage::BuildEvent::Phase { phase, .. } => tracing::info!(%phase, "image build"),
            kiln_envimage::BuildEvent::Finished {
                reference, seconds, ..
            } => {
                tracing::info!(%reference, seconds, "image ready")
            }
            _ => {}
        });
        match kiln_envimage::build_demo_images(
            &store,
            &dataset,
            &kiln_envimage::BuildOptions::new(&cache),
            &progress,
        ) {
            Ok(images) => tracing::info!(
                samples = images.samples.len(),
                "demo images ready: sessions of kiln-demo can start"
            ),
            Err(e) => {
                tracing::error!(error = %e, "building the demo images failed; retry with `kiln images build-demo`")
            }
        }
    });
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
