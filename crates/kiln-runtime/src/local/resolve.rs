//! From the backend-neutral [`SandboxSpec`] to what this backend starts: an image
//! reference becomes the image's unpacked layers (and its `ENV` and `WorkingDir`), a
//! snapshot the layer stack it was taken on, a workspace a `BindMount` (copied in and
//! back, `workspace.rs`).

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use kiln_image::ImageStore;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::local::spec::{BindMount, LocalSpec, RootLayers};
use crate::local::LocalRuntime;
use crate::spec::{SandboxSource, SandboxSpec, SnapshotId};

/// The image store sandboxes' images are resolved in.
#[derive(Clone)]
pub(crate) struct Images(pub ImageStore);

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Images").field(&self.0.root()).finish()
    }
}

/// What a fork of a snapshot needs of the sandbox it was taken from, kept beside the
/// snapshot's layer (`layers/<id>.json`) so that forks work after a restart too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    /// The fork's layers, topmost first: the snapshot's own, then its sandbox's.
    pub layers: Vec<PathBuf>,
    /// Its sandbox's environment (the image's `ENV` merged with its caller's).
    pub env: std::collections::BTreeMap<String, String>,
    /// Its sandbox's default working directory.
    pub workdir: Option<String>,
    /// The image its sandbox stood on (absent in records from before images were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl LocalRuntime {
    /// Resolves image references in `images` from now on (without it every image is
    /// unknown: the runtime's own tests start sandboxes from directories instead).
    pub fn with_images(mut self, images: ImageStore) -> Self {
        self.images = Some(Images(images));
        self
    }

    /// The layers a fork of `snapshot` is stacked from, topmost first.
    pub fn snapshot_layers(&self, snapshot: &SnapshotId) -> Result<RootLayers> {
        Ok(RootLayers::new(self.read_snapshot(snapshot)?.layers))
    }

    pub(crate) fn image(&self, reference: &str) -> Result<kiln_image::Image> {
        let images = self
            .images
            .as_ref()
            .ok_or_else(|| RuntimeError::ImageNotFound {
                reference: reference.to_string(),
                reason: "this runtime has no image store".into(),
            })?;
        images
            .0
            .get(reference)
            .map_err(|e| RuntimeError::ImageNotFound {
                reference: reference.to_string(),
                reason: e.to_string(),
            })
    }

    pub(crate) fn resolve(&self, spec: SandboxSpec) -> Result<LocalSpec> {
        let mut local = match &spec.source {
            SandboxSource::Image(reference) => {
                let mut local = LocalSpec::from_image(spec.id.clone(), &self.image(reference)?);
                local.image = Some(reference.clone());
                local
            }
            SandboxSource::Snapshot(snapshot) => {
                let record = self.read_snapshot(snapshot)?;
                let mut local = LocalSpec::new(spec.id.clone(), RootLayers::new(record.layers));
                local.env = record.env;
                local.workdir = record.workdir;
                local.image = record.image;
                local
            }
        };
        // The caller's environment over the image's (or the snapshot's sandbox's).
        local.env.extend(spec.env);
        if spec.workdir.is_some() {
            local.workdir = spec.workdir;
        }
        local.limits = spec.limits;
        local.network = spec.network;
        local.hostname = spec.hostname;
        local.egress = spec.egress;
        local.binds = spec
            .workspace
            .into_iter()
            .map(|w| BindMount {
                source: w.dir,
                target: w.target,
            })
            .collect();
        Ok(local)
    }

    pub(crate) fn snapshot_record_path(&self, snapshot: &SnapshotId) -> PathBuf {
        self.layers_dir().join(format!("{snapshot}.json"))
    }

    fn read_snapshot(&self, snapshot: &SnapshotId) -> Result<SnapshotRecord> {
        let path = self.snapshot_record_path(snapshot);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => RuntimeError::NotFound(format!("snapshot {snapshot}")),
            _ => RuntimeError::io("cannot read", &path, e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            RuntimeError::io("cannot parse", &path, std::io::Error::other(e.to_string()))
        })
    }
}
