//! One preparation, in the background: the blocking store work on a blocking thread,
//! progress events folded into counts and written to the store as they change (never more
//! than one write in flight, so a fast import costs a few writes, not one per event), and
//! the end recorded only if the version is still `preparing`: after an abort the image
//! the preparation made is removed again.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use kiln_image::{ImageError, ImageStore, ImportOptions, Progress, ProgressEvent, PullOptions};
use kiln_store::{BaseImageOutcome, BaseImageProgress, Store};
use tokio::sync::Notify;

use super::source::Work;

pub(super) struct Job {
    pub store: Arc<dyn Store>,
    pub images: ImageStore,
    pub image_id: String,
    /// `base/<family>:<version>`.
    pub target: String,
    pub work: Work,
    /// Notified by an abort.
    pub stop: Arc<Notify>,
    pub running: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

/// Counts so far, and per pulled layer the bytes received.
#[derive(Default)]
struct Counts {
    progress: BaseImageProgress,
    layer_bytes: HashMap<usize, u64>,
    finished: bool,
}

#[derive(Default)]
struct Tracker {
    counts: Mutex<Counts>,
    changed: Notify,
}

impl Tracker {
    fn on_event(&self, event: &ProgressEvent) {
        let mut counts = lock(&self.counts);
        match event {
            ProgressEvent::Resolved {
                layers,
                total_bytes,
                ..
            } => {
                counts.progress.layers_total = *layers as u64;
                counts.progress.bytes_total = *total_bytes;
            }
            ProgressEvent::LayerBytes { index, done, .. } => {
                counts.layer_bytes.insert(*index, *done);
                counts.progress.bytes_done = counts.layer_bytes.values().sum();
            }
            ProgressEvent::LayerCached { .. } | ProgressEvent::LayerDone { .. } => {
                counts.progress.layers_done = counts.progress.layers_done.saturating_add(1);
            }
            ProgressEvent::LayerUnpacking { .. } | ProgressEvent::Committed { .. } => {}
        }
        drop(counts);
        self.changed.notify_one();
    }

    /// Writes the counts each time they change, until the preparation is finished.
    async fn write_until_finished(self: Arc<Self>, store: Arc<dyn Store>, image_id: String) {
        loop {
            self.changed.notified().await;
            let (progress, finished) = {
                let counts = lock(&self.counts);
                (counts.progress, counts.finished)
            };
            if finished {
                return;
            }
            if let Err(e) = store
                .set_base_image_progress(&image_id, progress, Utc::now())
                .await
            {
                tracing::warn!(image_id, error = %e, "cannot record base image progress");
            }
        }
    }

    fn finish(&self) -> BaseImageProgress {
        let mut counts = lock(&self.counts);
        counts.finished = true;
        let mut done = counts.progress;
        done.layers_done = done.layers_total;
        done.bytes_done = done.bytes_total;
        drop(counts);
        self.changed.notify_one();
        done
    }
}

impl Job {
    pub async fn run(self) {
        let tracker = Arc::new(Tracker::default());
        let writer = tokio::spawn(
            tracker
                .clone()
                .write_until_finished(self.store.clone(), self.image_id.clone()),
        );
        let events = tracker.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Progress::new(move |e| events.on_event(e)).cancelled_by(Arc::clone(&cancel));
        let make = self.make(progress);
        tokio::pin!(make);
        let made = tokio::select! {
            made = &mut make => made,
            () = self.stop.notified() => {
                // The blocking steps (an import's read, an unpack) stop at their next
                // check; they are awaited, so that what they made is removed after them.
                // A pull's download stops when dropped.
                cancel.store(true, Ordering::SeqCst);
                if matches!(self.work, Work::Pull { .. }) {
                    Err(ImageError::Cancelled)
                } else {
                    make.await
                }
            }
        };
        let progress = tracker.finish();
        if let Err(e) = writer.await {
            tracing::warn!(error = %e, "base image progress writer failed");
        }
        let outcome = match made {
            Ok(outcome) => outcome,
            Err(e) => BaseImageOutcome::Failed {
                error: e.to_string(),
            },
        };
        if matches!(outcome, BaseImageOutcome::Prepared { .. }) {
            // The final counts, written while the version is still preparing.
            let recorded = self
                .store
                .set_base_image_progress(&self.image_id, progress, Utc::now())
                .await;
            if let Err(e) = recorded {
                tracing::warn!(image_id = self.image_id, error = %e, "cannot record progress");
            }
        }
        let finished = self
            .store
            .finish_base_image(&self.image_id, &outcome, Utc::now())
            .await;
        let keep = matches!(
            (&finished, &outcome),
            (Ok(Some(_)), BaseImageOutcome::Prepared { .. })
        );
        if let Err(e) = &finished {
            tracing::warn!(image_id = self.image_id, error = %e, "cannot record a base image's end");
        }
        if !keep {
            // Failed, aborted, or not recorded: no image of it may stay behind.
            match remove_image(self.images.clone(), self.target.clone()).await {
                Ok(()) | Err(ImageError::NotFound(_)) => {}
                Err(e) => tracing::warn!(image = self.target, error = %e,
                    "cannot remove the image of a base image that is not prepared"),
            }
        }
        lock(&self.running).remove(&self.image_id);
    }

    async fn make(&self, progress: Progress) -> kiln_image::Result<BaseImageOutcome> {
        let images = self.images.clone();
        let target = self.target.clone();
        let image = match &self.work {
            Work::Import(path) => {
                let options = ImportOptions {
                    reference: Some(target),
                    progress,
                };
                let path = path.clone();
                let imported = blocking(move || images.import(&path, &options)).await?;
                imported
                    .into_iter()
                    .next()
                    .ok_or_else(|| ImageError::Task("the archive holds no image".into()))?
            }
            Work::Tag(existing) => {
                let existing = existing.clone();
                blocking(move || images.tag(&existing, &target)).await?
            }
            Work::Pull {
                reference,
                registry,
            } => {
                let had = {
                    let (images, reference) = (images.clone(), reference.clone());
                    blocking(move || Ok(images.get(&reference).is_ok())).await?
                };
                let options = PullOptions {
                    registry: registry.clone(),
                    progress,
                };
                images.pull(reference, &options).await?;
                let (store, pulled) = (images.clone(), reference.clone());
                let image = blocking(move || store.tag(&pulled, &target)).await?;
                if !had {
                    // Only the base image's own reference stays.
                    let pulled = reference.clone();
                    blocking(move || images.remove(&pulled).map(drop)).await?;
                }
                image
            }
        };
        Ok(BaseImageOutcome::Prepared {
            size_bytes: image.layers().iter().map(|l| l.size).sum(),
            digest: image.manifest_digest().to_string(),
        })
    }
}

/// Removes `reference` from the image store (its layers too when nothing else uses them).
pub(super) async fn remove_image(images: ImageStore, reference: String) -> kiln_image::Result<()> {
    match blocking(move || images.remove(&reference).map(drop)).await {
        Err(ImageError::NotFound(_)) => Ok(()),
        other => other,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> kiln_image::Result<T> + Send + 'static,
) -> kiln_image::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Task(e.to_string()))?
}

/// A poisoned lock still holds consistent data here (single inserts and removals).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
