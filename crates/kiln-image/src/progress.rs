//! Progress events for imports and pulls, so a CLI can draw a progress bar.

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::digest::Digest;

/// One step of an import or pull. `index` is 0-based, `count` is the number of layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The manifest is known: this many layers, this many (compressed) bytes in all.
    Resolved {
        reference: String,
        layers: usize,
        total_bytes: u64,
    },
    /// A layer is already unpacked in the store: nothing to fetch or unpack.
    LayerCached {
        index: usize,
        count: usize,
        digest: Digest,
    },
    /// Bytes of a layer blob received so far (pulls only; sent per chunk).
    LayerBytes {
        index: usize,
        count: usize,
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// A layer is being unpacked.
    LayerUnpacking {
        index: usize,
        count: usize,
        digest: Digest,
    },
    /// A layer is unpacked and published.
    LayerDone {
        index: usize,
        count: usize,
        digest: Digest,
    },
    /// The image is recorded in the index under `reference`.
    Committed {
        reference: String,
        manifest_digest: Digest,
    },
}

type Callback = dyn Fn(&ProgressEvent) + Send + Sync;

/// Where progress events go: nowhere (the default) or a callback; and whether the caller
/// has given up (a flag the long blocking steps check, so an import stops mid-copy instead
/// of running to its end). Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress {
    callback: Option<Arc<Callback>>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Progress {
    /// Discards events.
    pub fn none() -> Self {
        Self::default()
    }

    /// Calls `f` for each event, from whichever thread is doing the work.
    pub fn new(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Self {
            callback: Some(Arc::new(f)),
            cancel: None,
        }
    }

    /// The work stops with [`ImageError::Cancelled`] at its next check once `flag` is
    /// set: before each layer, while reading a layer or an archive, before the image is
    /// recorded. Nothing is recorded under the reference then.
    ///
    /// [`ImageError::Cancelled`]: crate::ImageError::Cancelled
    pub fn cancelled_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// `Err(Cancelled)` once the caller has given up.
    pub(crate) fn check(&self) -> crate::Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(crate::ImageError::Cancelled),
            _ => Ok(()),
        }
    }

    /// `reader`, failing once the caller has given up (with an `Other` error: readers
    /// retry `Interrupted`).
    pub(crate) fn watch<R: Read>(&self, reader: R) -> Watched<R> {
        Watched {
            inner: reader,
            cancel: self.cancel.clone(),
        }
    }

    /// Sends each event into a channel (events are dropped once the receiver is gone).
    pub fn channel(tx: std::sync::mpsc::Sender<ProgressEvent>) -> Self {
        let tx = std::sync::Mutex::new(tx);
        Self::new(move |e| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(e.clone());
            }
        })
    }

    pub(crate) fn emit(&self, event: ProgressEvent) {
        if let Some(f) = &self.callback {
            f(&event);
        }
    }
}

/// A reader that stops once its [`Progress`] is cancelled.
pub(crate) struct Watched<R> {
    inner: R,
    cancel: Option<Arc<AtomicBool>>,
}

/// The message a cancelled read fails with (mapped back to `Cancelled` by [`cancelled`]).
const CANCELLED: &str = "cancelled by the caller";

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
        {
            return Err(std::io::Error::other(CANCELLED));
        }
        self.inner.read(buf)
    }
}

/// `Cancelled` if `progress` was cancelled (whatever error the cut-off read surfaced as),
/// else `err`.
pub(crate) fn cancelled(progress: &Progress, err: crate::ImageError) -> crate::ImageError {
    match progress.check() {
        Err(cancelled) => cancelled,
        Ok(()) => err,
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.callback.is_some() {
            "Progress(callback)"
        } else {
            "Progress(none)"
        })
    }
}
