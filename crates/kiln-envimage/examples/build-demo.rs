//! Builds the demo dataset's images into an image store, with progress bars.
//!
//! ```text
//! cargo run -p kiln-envimage --example build-demo -- --store /var/lib/kiln/images
//! ```
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use indicatif::HumanBytes;
use kiln_envimage::{build_demo_images, BuildOptions, LayerCompression};
use kiln_image::ImageStore;

#[derive(Parser)]
#[command(about = "Build the kiln-demo images (needs root and a Debian mirror)")]
struct Args {
    /// Image store directory.
    #[arg(long)]
    store: PathBuf,
    /// Cache of debootstrapped trees and .debs [default: <store>-envimage-cache].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Dataset directory holding samples.jsonl and repos/.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/kiln-demo"))]
    dataset: PathBuf,
    /// Debian mirror [default: the host's apt mirror].
    #[arg(long)]
    mirror: Option<String>,
    /// Rebuild images already in the store (the debootstrap cache is still used).
    #[arg(long)]
    force: bool,
    /// Layer compression: zstd, gzip or none.
    #[arg(long, default_value = "zstd")]
    compression: String,
    /// Print every line debootstrap and git print.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = ImageStore::open(&args.store)?;
    let cache = args.cache.clone().unwrap_or_else(|| {
        let mut name = args.store.as_os_str().to_owned();
        name.push("-envimage-cache");
        PathBuf::from(name)
    });
    let mut options = BuildOptions::new(&cache);
    options.mirror = args.mirror.clone();
    options.force = args.force;
    options.compression = match args.compression.as_str() {
        "zstd" => LayerCompression::Zstd,
        "gzip" => LayerCompression::Gzip,
        "none" => LayerCompression::None,
        other => return Err(format!("unknown compression {other:?}").into()),
    };
    let started = Instant::now();
    let images = build_demo_images(
        &store,
        &args.dataset,
        &options,
        &kiln_envimage::terminal_progress(args.verbose),
    )?;
    eprintln!("done in {:.1}s\n", started.elapsed().as_secs_f64());
    println!(
        "{:<44} {:>6} {:>10} {:>10}",
        "image", "layers", "blobs", "unpacked"
    );
    for image in images.bases.values().chain(images.samples.values()) {
        let blobs: u64 = image.layers().iter().map(|l| l.size).sum();
        let unpacked: u64 = image.layer_dirs().iter().map(|d| tree_bytes(d)).sum();
        println!(
            "{:<44} {:>6} {:>10} {:>10}",
            image.reference(),
            image.layers().len(),
            HumanBytes(blobs).to_string(),
            HumanBytes(unpacked).to_string()
        );
    }
    Ok(())
}

/// Bytes of regular files under `dir`, each inode counted once.
fn tree_bytes(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && seen.insert(meta.ino()) {
                total += meta.len();
            }
        }
    }
    total
}
