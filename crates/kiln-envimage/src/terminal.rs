//! A terminal rendering of build progress (indicatif spinners and byte bars), shared by
//! `kiln images build-demo` and the `build-demo` example.
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use kiln_image::ProgressEvent;

use crate::{BuildEvent, BuildPhase, BuildProgress};

/// Progress on standard error: one spinner per image being built; with `verbose`, every
/// line debootstrap and git print as well.
pub fn terminal_progress(verbose: bool) -> BuildProgress {
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let spinner = ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed}] {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bytes = ProgressStyle::with_template(
        "{spinner} {prefix:.bold} [{elapsed}] packing {wide_bar} {bytes}/{total_bytes}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    BuildProgress::new(move |event| {
        // A panic in a callback leaves at worst a stale bar: keep going.
        let mut slot = bar.lock().unwrap_or_else(|p| p.into_inner());
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
