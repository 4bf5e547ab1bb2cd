//! Progress events of a build, for a CLI to draw (e.g. with `indicatif`).

use std::fmt;
use std::sync::Arc;

/// The stages of one image build, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildPhase {
    /// `debootstrap` is installing the root filesystem (its output arrives as
    /// [`BuildEvent::Log`]).
    Debootstrap,
    /// Removing caches, logs and machine-specific files from the root filesystem.
    Cleaning,
    /// Cloning a sample's repository and checking out its base commit.
    Checkout,
    /// Running a layer's install steps (pip, the harness's pre-install and install
    /// commands) inside the image; their output arrives as [`BuildEvent::Log`].
    Installing,
    /// Writing the layer tar (progress as [`BuildEvent::PackBytes`]).
    Packing,
    /// Handing the OCI layout to the image store (its events arrive as
    /// [`BuildEvent::Store`]).
    Importing,
}

impl fmt::Display for BuildPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debootstrap => "debootstrap",
            Self::Cleaning => "cleaning",
            Self::Checkout => "checkout",
            Self::Installing => "installing",
            Self::Packing => "packing",
            Self::Importing => "importing",
        })
    }
}

/// One thing that happened during a build. `reference` names the image being built.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildEvent {
    /// A build starts (it was not in the store, or was forced).
    Started { reference: String },
    /// The image is already in the store: nothing to do.
    AlreadyBuilt { reference: String },
    /// The root filesystem for these packages was debootstrapped before: reused.
    RootfsCached { reference: String },
    /// A new phase begins.
    Phase {
        reference: String,
        phase: BuildPhase,
    },
    /// One line printed by a tool (debootstrap, git).
    Log { reference: String, line: String },
    /// Bytes of file content written to the layer tar so far, out of `total`.
    PackBytes {
        reference: String,
        done: u64,
        total: u64,
    },
    /// An event of the image store's import.
    Store(kiln_image::ProgressEvent),
    /// The image is in the store. `layer_bytes` is the size of the new layer blob.
    Finished {
        reference: String,
        layer_bytes: u64,
        seconds: f64,
    },
}

type Callback = dyn Fn(&BuildEvent) + Send + Sync;

/// Where build events go: nowhere (the default) or a callback. Cheap to clone.
#[derive(Clone, Default)]
pub struct BuildProgress(Option<Arc<Callback>>);

impl BuildProgress {
    /// Discards events.
    pub fn none() -> Self {
        Self(None)
    }

    /// Calls `f` for each event, from whichever thread is doing the work.
    pub fn new(f: impl Fn(&BuildEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    pub(crate) fn emit(&self, event: BuildEvent) {
        if let Some(f) = &self.0 {
            f(&event);
        }
    }

    pub(crate) fn phase(&self, reference: &str, phase: BuildPhase) {
        self.emit(BuildEvent::Phase {
            reference: reference.to_owned(),
            phase,
        });
    }

    /// The image store's progress, forwarded as [`BuildEvent::Store`].
    pub(crate) fn for_store(&self) -> kiln_image::Progress {
        match &self.0 {
            Some(f) => {
                let f = Arc::clone(f);
                kiln_image::Progress::new(move |e| f(&BuildEvent::Store(e.clone())))
            }
            None => kiln_image::Progress::none(),
        }
    }
}

impl fmt::Debug for BuildProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "BuildProgress(callback)"
        } else {
            "BuildProgress(none)"
        })
    }
}
