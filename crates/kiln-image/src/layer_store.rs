//! `layers/sha256/<diff_id>/`: each layer unpacked exactly once, shared by every image using it.
//!
//! A layer directory is keyed by its diff_id (digest of the *uncompressed* tar), so the same
//! layer arriving gzip'd from a registry and plain from `docker save` is unpacked once.
//! Publication is a single `rename` of a fully unpacked (and synced) temp directory: a layer
//! directory that exists is complete, and a crash leaves only a temp dir that GC removes.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::blob_store::list_digest_names;
use crate::compression::decompressed;
use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::layer_unpack::unpack_layer;
use crate::store_lock;

#[derive(Clone, Debug)]
pub(crate) struct LayerStore {
    dir: PathBuf,
    tmp: PathBuf,
    locks: PathBuf,
}

impl LayerStore {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf, locks: PathBuf) -> Self {
        Self { dir, tmp, locks }
    }

    pub(crate) fn path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(diff_id.hex())
    }

    pub(crate) fn contains(&self, diff_id: &Digest) -> bool {
        self.path(diff_id).is_dir()
    }

    /// Unpacks `blob` (any supported compression) as layer `diff_id`, unless it already is.
    /// Returns `true` if this call did the unpacking.
    pub(crate) fn ensure(&self, diff_id: &Digest, blob: impl Read) -> Result<bool> {
        let final_dir = self.path(diff_id);
        if final_dir.is_dir() {
            return Ok(false);
        }
        // Concurrent importers of the same layer serialise here; the loser finds the
        // directory present and does nothing.
        let lock_path = self.locks.join(format!("layer-{}.lock", diff_id.hex()));
        let _guard = store_lock::exclusive(&lock_path)?;
        if final_dir.is_dir() {
            return Ok(false);
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!("layer-{}-", &diff_id.hex()[..12]))
            .tempdir_in(&self.tmp)
            .map_err(ImageError::io("create temp dir in", &self.tmp))?;
        let (_, plain) = decompressed(blob)?;
        let mut hashing = HashingReader::new(plain);
        let stats = unpack_layer(&mut hashing, temp.path())?;
        let (actual, _) = hashing
            .finish()
            .map_err(|e| ImageError::BadTar(format!("reading layer {diff_id}: {e}")))?;
        if &actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: "layer diff_id (uncompressed tar)".into(),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        sync_filesystem(temp.path())?;
        let temp_path = temp.keep();
        if let Err(e) = fs::rename(&temp_path, &final_dir) {
            let _ = fs::remove_dir_all(&temp_path);
            return Err(ImageError::io("publish layer", final_dir)(e));
        }
        tracing::debug!(%diff_id, entries = stats.entries, whiteouts = stats.whiteouts, "layer unpacked");
        Ok(true)
    }

    pub(crate) fn all(&self) -> Result<Vec<Digest>> {
        list_digest_names(&self.dir)
    }

    pub(crate) fn remove(&self, diff_id: &Digest) -> Result<()> {
        let path = self.path(diff_id);
        // Rename first so a half-deleted layer is never visible under its real name.
        let doomed = self.tmp.join(format!("doomed-{}", diff_id.hex()));
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("remove layer", path)(e)),
        }
        fs::remove_dir_all(&doomed).map_err(ImageError::io("remove layer", doomed))
    }
}

/// Makes the unpacked files durable before the rename publishes them; one `syncfs` is far
/// cheaper than an fsync per file.
fn sync_filesystem(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir).map_err(ImageError::io("open", dir))?;
    nix::unistd::syncfs(&f).map_err(|e| ImageError::io("syncfs", dir)(e.into()))
}
