//! Builds the demo dataset's images into an image store, with progress bars.
//!
//! ```text
//! cargo run -p kiln-envimage --example build-demo -- --store /var/lib/kiln/images
//! ```
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use kiln_envimage::{
    build_demo_images, BuildEvent, BuildOptions, BuildPhase, BuildProgress, LayerCompression,
};
use kiln_image::{ImageStore, ProgressEvent};

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
    let images = build_demo_images(&store, &args.dataset, &options, &progress(args.verbose))?;
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

/// One bar, restyled per phase: a spinner showing the latest log line, a byte bar while
/// packing, a layer counter while the store unpacks.
fn progress(verbose: bool) -> BuildProgress {
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let spinner =
        ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed}] {wide_msg}").unwrap();
    let bytes = ProgressStyle::with_template(
        "{spinner} {prefix:.bold} [{elapsed}] packing {wide_bar} {bytes}/{total_bytes}",
    )
    .unwrap();
    BuildProgress::new(move |event| {
        let mut slot = bar.lock().unwrap();
        match event {
            BuildEvent::Started { reference } => {
                let pb = ProgressBar::new_spinner()
                    .with_style(spinner.clone())
                    .with_prefix(reference.clone());
                pb.enable_steady_tick(Duration::from_millis(120));
                *slot = Some(pb);
            }
            BuildEvent::AlreadyBuilt { reference } => {
                eprintln!("= {reference}: already in the store")
            }
            BuildEvent::RootfsCached { .. } => {
                if let Some(pb) = &*slot {
                    pb.set_message("debootstrap: cached root filesystem");
                }
            }
            BuildEvent::Phase { phase, .. } => {
                if let Some(pb) = &*slot {
                    pb.set_style(spinner.clone());
                    pb.set_message(phase.to_string());
                    if *phase == BuildPhase::Packing {
                        pb.set_style(bytes.clone());
                    }
                }
            }
            BuildEvent::Log { line, .. } => {
                if let Some(pb) = &*slot {
                    if verbose {
                        pb.println(line);
                    }
                    pb.set_message(line.clone());
                }
            }
            BuildEvent::PackBytes { done, total, .. } => {
                if let Some(pb) = &*slot {
                    pb.set_length(*total);
                    pb.set_position(*done);
                }
            }
            BuildEvent::Store(store_event) => {
                if let Some(pb) = &*slot {
                    let msg = match store_event {
                        ProgressEvent::LayerUnpacking { index, count, .. } => {
                            format!("unpacking layer {}/{count}", index + 1)
                        }
                        ProgressEvent::LayerCached { index, count, .. } => {
                            format!("layer {}/{count} already unpacked", index + 1)
                        }
                        ProgressEvent::Committed { .. } => "committed".to_owned(),
                        _ => return,
                    };
                    pb.set_message(msg);
                }
            }
            BuildEvent::Finished {
                reference,
                layer_bytes,
                seconds,
            } => {
                if let Some(pb) = slot.take() {
                    pb.finish_and_clear();
                }
                eprintln!(
                    "✓ {reference}: new layer {} in {seconds:.1}s",
                    HumanBytes(*layer_bytes)
                );
            }
        }
    })
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
