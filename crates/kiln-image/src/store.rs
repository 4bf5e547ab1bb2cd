//! [`ImageStore`]: the on-disk layout, lookups, removal and garbage collection.
//!
//! ```text
//! <root>/
//!   blobs/sha256/<hex>          verified blobs: manifests, configs, layer blobs
//!   layers/sha256/<diff_id>/    one unpacked directory per layer (overlayfs lower dir)
//!   images.json                 reference → manifest, config, layers, config summary
//!   tmp/                        temp files and dirs; renamed into place when complete
//!   locks/                      flock files
//! ```

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blob_store::BlobStore;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::image::{Image, ImageConfig, ImageRecord, LayerInfo};
use crate::image_index::ImageIndex;
use crate::layer_store::LayerStore;
use crate::progress::{Progress, ProgressEvent};
use crate::reference::Reference;
use crate::store_lock::{self, LockGuard};

/// Largest manifest, index or config we read into memory.
pub(crate) const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// What a garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub layers_removed: usize,
    pub blobs_removed: usize,
    /// Layers no image uses any more but something outside the store still does (a live
    /// sandbox's lower dir): kept for a later collection.
    pub layers_kept: usize,
}

/// Something outside the store that uses layer directories (a sandbox, by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerUser {
    pub name: String,
    /// The layer directories it uses (as [`Image::layer_dirs`] gives them).
    pub layers: Vec<PathBuf>,
}

/// Who uses layers at this moment; asked by every removal and collection.
pub type LayerUsers = Arc<dyn Fn() -> Vec<LayerUser> + Send + Sync>;

/// A content-addressed image store rooted at one directory. Cheap to clone; safe to use from
/// many threads and processes at once.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
    /// Users of layers outside the store (see [`ImageStore::with_layer_users`]).
    users: Option<LayerUsers>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("inner", &self.inner)
            .field("users", &self.users.as_ref().map(|_| "…"))
            .finish()
    }
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    blobs: BlobStore,
    layers: LayerStore,
    index: ImageIndex,
    tmp: PathBuf,
    store_lock: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs_dir = root.join("blobs/sha256");
        let layers_dir = root.join("layers/sha256");
        let tmp = root.join("tmp");
        let locks = root.join("locks");
        for dir in [&blobs_dir, &layers_dir, &tmp, &locks] {
            fs::create_dir_all(dir).map_err(ImageError::io("create store dir", dir))?;
        }
        let root = fs::canonicalize(root).map_err(ImageError::io("resolve", root))?;
        let inner = Inner {
            blobs: BlobStore::new(root.join("blobs/sha256"), root.join("tmp")),
            layers: LayerStore::new(
                root.join("layers/sha256"),
                root.join("tmp"),
                root.join("locks"),
            ),
            index: ImageIndex::new(
                root.join("images.json"),
                root.join("locks/index.lock"),
                root.join("tmp"),
            ),
            tmp: root.join("tmp"),
            store_lock: root.join("locks/store.lock"),
            root,
        };
        Ok(Self {
            inner: Arc::new(inner),
            users: None,
        })
    }

    /// Tells the store who uses its layers from outside (sandboxes mount them as overlay
    /// lower dirs; the store cannot see mounts): [`ImageStore::remove`] then refuses to
    /// delete a layer in use, and no collection deletes one.
    pub fn with_layer_users(mut self, users: LayerUsers) -> Self {
        self.users = Some(users);
        self
    }

    fn layer_users(&self) -> Vec<LayerUser> {
        self.users.as_ref().map(|users| users()).unwrap_or_default()
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Every image, sorted by reference.
    pub fn list(&self) -> Result<Vec<Image>> {
        Ok(self
            .inner
            .index
            .load()?
            .into_values()
            .map(|record| self.image(record))
            .collect())
    }

    /// The image stored under `reference` (normalised: `busybox` finds `busybox:latest`).
    pub fn get(&self, reference: &str) -> Result<Image> {
        let key = Reference::parse(reference)?.to_string();
        self.inner
            .index
            .load()?
            .remove(&key)
            .map(|record| self.image(record))
            .ok_or(ImageError::NotFound(key))
    }

    /// Gives an existing image a second reference.
    pub fn tag(&self, existing: &str, new: &str) -> Result<Image> {
        let new_key = Reference::parse(new)?.to_string();
        let mut record = self.get(existing)?.record;
        record.reference = new_key.clone();
        self.inner.index.update(|images| {
            images.insert(new_key, record.clone());
            Ok(())
        })?;
        Ok(self.image(record))
    }

    /// Removes `reference` from the index, then garbage-collects the layers and blobs no image
    /// uses any more. Refused ([`ImageError::InUse`]) when a layer it would delete is used
    /// by one of the [layer users](ImageStore::with_layer_users).
    pub fn remove(&self, reference: &str) -> Result<GcStats> {
        self.remove_checked(reference, false)
    }

    /// Like [`ImageStore::remove`], but removes the image even when its layers are in use:
    /// those layers stay on disk until a later collection finds them unused.
    pub fn remove_forced(&self, reference: &str) -> Result<GcStats> {
        self.remove_checked(reference, true)
    }

    fn remove_checked(&self, reference: &str, force: bool) -> Result<GcStats> {
        let key = Reference::parse(reference)?.to_string();
        let root = self.inner.root.join("layers/sha256");
        // Under the store lock (imports and pulls wait), so the index the check saw is the
        // one the collection uses.
        let exclusive = store_lock::exclusive(&self.inner.store_lock)?;
        let users = self.layer_users();
        self.inner.index.update(|images| {
            let record = images
                .remove(&key)
                .ok_or_else(|| ImageError::NotFound(key.clone()))?;
            if force {
                return Ok(());
            }
            let still_used: HashSet<&Digest> = images
                .values()
                .flat_map(|r| r.layers.iter().map(|l| &l.diff_id))
                .collect();
            let doomed: HashSet<PathBuf> = record
                .layers
                .iter()
                .filter(|l| !still_used.contains(&l.diff_id))
                .map(|l| root.join(l.diff_id.hex()))
                .collect();
            let blocking: Vec<String> = users
                .iter()
                .filter(|u| u.layers.iter().any(|l| doomed.contains(l)))
                .map(|u| u.name.clone())
                .collect();
            if blocking.is_empty() {
                Ok(())
            } else {
                Err(ImageError::InUse {
                    reference: key.clone(),
                    users: blocking,
                })
            }
        })?;
        self.gc_locked(&exclusive)
    }

    /// Deletes unreferenced layers and blobs, and leftovers of interrupted imports. Waits for
    /// imports and pulls in progress (in any process) to finish first.
    pub fn gc(&self) -> Result<GcStats> {
        let exclusive = store_lock::exclusive(&self.inner.store_lock)?;
        self.gc_locked(&exclusive)
    }

    /// Like [`ImageStore::gc`], but does nothing if an import or pull is running.
    pub(crate) fn gc_if_idle(&self) -> Result<Option<GcStats>> {
        match store_lock::try_exclusive(&self.inner.store_lock)? {
            Some(exclusive) => self.gc_locked(&exclusive).map(Some),
            None => Ok(None),
        }
    }

    fn gc_locked(&self, _exclusive: &LockGuard) -> Result<GcStats> {
        let images = self.inner.index.load()?;
        let mut live_layers = HashSet::new();
        let mut live_blobs = HashSet::new();
        for record in images.values() {
            live_blobs.insert(record.manifest_digest.clone());
            live_blobs.insert(record.config_digest.clone());
            for layer in &record.layers {
                live_blobs.insert(layer.digest.clone());
                live_layers.insert(layer.diff_id.clone());
            }
        }
        // Manifests reached through an index (multi-platform images) are kept by their child.
        let mut stats = GcStats::default();
        let in_use: HashSet<PathBuf> = self
            .layer_users()
            .into_iter()
            .flat_map(|u| u.layers)
            .collect();
        for diff_id in self.inner.layers.all()? {
            if live_layers.contains(&diff_id) {
                continue;
            }
            if in_use.contains(&self.inner.layers.path(&diff_id)) {
                stats.layers_kept += 1;
                continue;
            }
            self.inner.layers.remove(&diff_id)?;
            stats.layers_removed += 1;
        }
        for digest in self.inner.blobs.all()? {
            if !live_blobs.contains(&digest) {
                self.inner.blobs.remove(&digest)?;
                stats.blobs_removed += 1;
            }
        }
        // Nothing else holds the store lock, so whatever is in tmp/ was left by a crash.
        let tmp = &self.inner.tmp;
        for entry in fs::read_dir(tmp).map_err(ImageError::io("list", tmp))? {
            let path = entry.map_err(ImageError::io("list", tmp))?.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(ImageError::io("remove leftover", &path))?;
        }
        Ok(stats)
    }

    fn image(&self, record: ImageRecord) -> Image {
        Image {
            record,
            layers_root: self.inner.root.join("layers/sha256"),
        }
    }

    pub(crate) fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// Held for the whole of an import or pull so GC cannot sweep its half-recorded blobs.
    pub(crate) fn import_guard(&self) -> Result<LockGuard> {
        store_lock::shared(&self.inner.store_lock)
    }

    /// Reads and parses a config blob; returns it with its diff_ids.
    pub(crate) fn read_config(&self, digest: &Digest) -> Result<(ImageConfig, Vec<Digest>)> {
        let bytes = self.inner.blobs.read(digest, MAX_METADATA_BYTES)?;
        let config = oci_spec::image::ImageConfiguration::from_reader(&bytes[..]).map_err(|e| {
            ImageError::BadMetadata {
                what: "image config",
                reason: format!("{digest}: {e}"),
            }
        })?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<Result<Vec<_>>>()?;
        Ok((ImageConfig::from_oci(&config), diff_ids))
    }

    pub(crate) fn has_layer(&self, diff_id: &Digest) -> bool {
        self.inner.layers.contains(diff_id)
    }

    /// Unpacks a layer from its stored blob (blocking), stopping if `progress` is
    /// cancelled (the layer is then not published).
    pub(crate) fn unpack_from_blob(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        progress: &Progress,
    ) -> Result<bool> {
        let file = self.inner.blobs.open(blob)?;
        self.inner
            .layers
            .ensure(diff_id, std::io::BufReader::new(progress.watch(file)))
            .map_err(|e| crate::progress::cancelled(progress, e))
    }

    /// Unpacks every layer not yet unpacked (blocking), then records the image. The layer blobs
    /// must already be in the blob store; the caller holds [`ImageStore::import_guard`].
    pub(crate) fn install(
        &self,
        reference: &Reference,
        manifest_digest: Digest,
        config_digest: Digest,
        blobs: Vec<(Digest, String, u64)>,
        progress: &Progress,
    ) -> Result<Image> {
        let (config, diff_ids) = self.read_config(&config_digest)?;
        let layers = pair_layers(blobs, diff_ids)?;
        progress.emit(ProgressEvent::Resolved {
            reference: reference.to_string(),
            layers: layers.len(),
            total_bytes: layers.iter().map(|l| l.size).sum(),
        });
        let count = layers.len();
        for (index, layer) in layers.iter().enumerate() {
            progress.check()?;
            let digest = layer.digest.clone();
            if self.has_layer(&layer.diff_id) {
                progress.emit(ProgressEvent::LayerCached {
                    index,
                    count,
                    digest,
                });
                continue;
            }
            progress.emit(ProgressEvent::LayerUnpacking {
                index,
                count,
                digest: digest.clone(),
            });
            self.unpack_from_blob(&layer.digest, &layer.diff_id, progress)?;
            progress.emit(ProgressEvent::LayerDone {
                index,
                count,
                digest,
            });
        }
        progress.check()?;
        self.commit(
            reference,
            manifest_digest,
            config_digest,
            layers,
            config,
            progress,
        )
    }

    pub(crate) fn commit(
        &self,
        reference: &Reference,
        manifest_digest: Digest,
        config_digest: Digest,
        layers: Vec<LayerInfo>,
        config: ImageConfig,
        progress: &Progress,
    ) -> Result<Image> {
        let key = reference.to_string();
        let record = ImageRecord {
            reference: key.clone(),
            manifest_digest: manifest_digest.clone(),
            config_digest,
            layers,
            config,
        };
        self.inner.index.update(|images| {
            images.insert(key.clone(), record.clone());
            Ok(())
        })?;
        progress.emit(ProgressEvent::Committed {
            reference: key,
            manifest_digest,
        });
        Ok(self.image(record))
    }
}

/// Matches manifest layers with config diff_ids, which must agree in number and order.
pub(crate) fn pair_layers(
    blobs: Vec<(Digest, String, u64)>,
    diff_ids: Vec<Digest>,
) -> Result<Vec<LayerInfo>> {
    if blobs.len() != diff_ids.len() {
        return Err(ImageError::BadMetadata {
            what: "image",
            reason: format!(
                "manifest lists {} layers but config has {} diff_ids",
                blobs.len(),
                diff_ids.len()
            ),
        });
    }
    Ok(blobs
        .into_iter()
        .zip(diff_ids)
        .map(|((digest, media_type, size), diff_id)| LayerInfo {
            digest,
            diff_id,
            media_type,
            size,
        })
        .collect())
}
