//! What the store knows about one image, and how a sandbox stacks its layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// The parts of the OCI image config a sandbox needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` strings, in image order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image says.
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub os: String,
}

impl ImageConfig {
    pub(crate) fn from_oci(config: &oci_spec::image::ImageConfiguration) -> Self {
        let c = config.config().as_ref();
        let get = |f: fn(&oci_spec::image::Config) -> &Option<Vec<String>>| {
            c.and_then(|c| f(c).clone()).unwrap_or_default()
        };
        Self {
            env: get(|c| c.env()),
            working_dir: c
                .and_then(|c| c.working_dir().clone())
                .filter(|w| !w.is_empty()),
            cmd: get(|c| c.cmd()),
            entrypoint: get(|c| c.entrypoint()),
            user: c.and_then(|c| c.user().clone()).filter(|u| !u.is_empty()),
            labels: c
                .and_then(|c| c.labels().clone())
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
            architecture: config.architecture().to_string(),
            os: config.os().to_string(),
        }
    }

    /// Looks up one variable of `env`.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Digest of the blob as distributed (possibly compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar; names the unpacked directory.
    pub diff_id: Digest,
    pub media_type: String,
    /// Size of the distributed blob.
    pub size: u64,
}

/// The index entry of one image (persisted as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub(crate) reference: String,
    pub(crate) manifest_digest: Digest,
    pub(crate) config_digest: Digest,
    pub(crate) layers: Vec<LayerInfo>,
    pub(crate) config: ImageConfig,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub(crate) record: ImageRecord,
    pub(crate) layers_root: PathBuf,
}

impl Image {
    /// Normalised reference, e.g. `127.0.0.1:5000/kiln/python:3.11` or `busybox:latest`.
    pub fn reference(&self) -> &str {
        &self.record.reference
    }

    pub fn manifest_digest(&self) -> &Digest {
        &self.record.manifest_digest
    }

    pub fn config_digest(&self) -> &Digest {
        &self.record.config_digest
    }

    /// Layers, base first.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.record.layers
    }

    pub fn config(&self) -> &ImageConfig {
        &self.record.config
    }

    /// Unpacked layer directories, **lowest (base) layer first**, as in the manifest.
    ///
    /// overlayfs wants the opposite order: in `lowerdir=A:B:C`, `A` is the *topmost* lower
    /// layer. Use [`Image::overlay_lowerdir`] for the mount option, or reverse this list.
    /// Layers that appear twice in an image are listed once, at their highest position
    /// (overlayfs rejects a directory given twice, and the upper copy is the one that wins).
    pub fn layer_dirs(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::HashSet::new();
        let mut top_first: Vec<PathBuf> = Vec::new();
        for layer in self.record.layers.iter().rev() {
            if seen.insert(&layer.diff_id) {
                top_first.push(self.layers_root.join(layer.diff_id.hex()));
            }
        }
        top_first.reverse();
        top_first
    }

    /// The `lowerdir=` value for overlayfs: layer directories joined by `:`, **topmost first**.
    ///
    /// Fails if a path contains `:` or `,` (the store root is the only part we do not choose),
    /// since overlayfs would split on them.
    pub fn overlay_lowerdir(&self) -> Result<String> {
        let dirs = self.layer_dirs();
        let mut parts = Vec::with_capacity(dirs.len());
        for dir in dirs.iter().rev() {
            let s = dir.to_str().filter(|s| !s.contains([':', ',']));
            let s = s.ok_or_else(|| ImageError::BadMetadata {
                what: "layer path",
                reason: format!("{} cannot be used in an overlayfs lowerdir", dir.display()),
            })?;
            parts.push(s);
        }
        Ok(parts.join(":"))
    }

    /// Where the unpacked layers of the store live.
    pub fn layers_root(&self) -> &Path {
        &self.layers_root
    }
}
