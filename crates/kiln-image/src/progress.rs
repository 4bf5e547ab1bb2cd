//! Progress events for imports and pulls, so a CLI can draw a progress bar.

use std::fmt;
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

/// Where progress events go: nowhere (the default) or a callback. Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<Callback>>);

impl Progress {
    /// Discards events.
    pub fn none() -> Self {
        Self(None)
    }

    /// Calls `f` for each event, from whichever thread is doing the work.
    pub fn new(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
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
        if let Some(f) = &self.0 {
            f(&event);
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(callback)"
        } else {
            "Progress(none)"
        })
    }
}
