//! `kiln images …`: the environment image store, from the terminal.
use std::path::{Path, PathBuf};

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
    /// Pull an image from a registry (OCI distribution protocol).
    Pull {
        reference: String,
        /// Registries (host:port) to reach over plain HTTP; localhost always is.
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
    },
    /// Remove an image; layers no other image uses are deleted.
    Rm { reference: String },
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
}

pub async fn run(config: &Config, command: ImagesCommand) -> anyhow::Result<()> {
    let dir = config.images_dir();
    let store = ImageStore::open(&dir)
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
            insecure,
        } => {
            let mut options = PullOptions::default();
            options.registry.insecure_registries = insecure;
            let image = store.pull(&reference, &options).await?;
            println!("pulled {} ({})", image.reference(), image.manifest_digest());
        }
        ImagesCommand::Rm { reference } => {
            let stats = store.remove(&reference)?;
            println!("removed {reference} ({stats:?})");
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
    }
    Ok(())
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

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
