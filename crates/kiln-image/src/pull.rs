//! [`ImageStore::pull`]: fetch an image from a registry over the OCI distribution API.

use std::io::Write;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::image::Image;
use crate::manifest::{self, descriptor_digest, manifest_layers, select_platform};
use crate::progress::{Progress, ProgressEvent};
use crate::reference::Reference;
use crate::registry_client::{RegistryClient, RegistryConfig};
use crate::store::{pair_layers, ImageStore, MAX_METADATA_BYTES};

/// Options for [`ImageStore::pull`].
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    pub registry: RegistryConfig,
    pub progress: Progress,
}

impl ImageStore {
    /// Pulls `reference` (e.g. `127.0.0.1:5000/kiln/python:3.11`), choosing linux/amd64 from
    /// a multi-platform index, and stores it under that reference. Layers already unpacked in
    /// the store are not downloaded again. Needs a Tokio runtime with blocking threads.
    pub async fn pull(&self, reference: &str, options: &PullOptions) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let store = self.clone();
        let _guard = blocking(move || store.import_guard()).await?;
        let mut client = RegistryClient::new(&reference, &options.registry)?;

        let (mut bytes, mut media_type) = client.manifest(&reference.manifest_reference()).await?;
        let mut digest = Digest::of_bytes(&bytes);
        if let Some(pinned) = &reference.digest {
            verify_manifest(pinned, &digest, &reference)?;
        }
        for _ in 0..4 {
            if !manifest::is_index(&media_type) {
                break;
            }
            let index = manifest::parse_index(&bytes)?;
            let chosen = select_platform(&index, &reference.to_string())?;
            let (wanted, _) = descriptor_digest(chosen)?;
            (bytes, media_type) = client.manifest(&wanted.to_string()).await?;
            digest = Digest::of_bytes(&bytes);
            verify_manifest(&wanted, &digest, &reference)?;
        }
        if !manifest::is_manifest(&media_type) {
            return Err(ImageError::BadMetadata {
                what: "manifest",
                reason: format!("unsupported media type {media_type:?} for {reference}"),
            });
        }
        let m = manifest::parse_manifest(&bytes)?;
        self.blobs().write_bytes(&bytes, "manifest")?;

        let (config_digest, config_size) = descriptor_digest(m.config())?;
        if config_size > MAX_METADATA_BYTES {
            return Err(ImageError::BadMetadata {
                what: "image config",
                reason: format!("{config_size} bytes is too large"),
            });
        }
        if !self.blobs().contains(&config_digest) {
            self.download(
                &mut client,
                &config_digest,
                config_size,
                None,
                &Progress::none(),
            )
            .await?;
        }
        let (config, diff_ids) = self.read_config(&config_digest)?;
        let layers = pair_layers(manifest_layers(&m)?, diff_ids)?;

        let progress = &options.progress;
        let count = layers.len();
        progress.emit(ProgressEvent::Resolved {
            reference: reference.to_string(),
            layers: count,
            total_bytes: layers.iter().map(|l| l.size).sum(),
        });
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
            if !self.blobs().contains(&digest) {
                self.download(
                    &mut client,
                    &digest,
                    layer.size,
                    Some((index, count)),
                    progress,
                )
                .await?;
            }
            progress.emit(ProgressEvent::LayerUnpacking {
                index,
                count,
                digest: digest.clone(),
            });
            let (store, blob, diff_id) = (self.clone(), digest.clone(), layer.diff_id.clone());
            let watched = progress.clone();
            blocking(move || store.unpack_from_blob(&blob, &diff_id, &watched)).await?;
            progress.emit(ProgressEvent::LayerDone {
                index,
                count,
                digest,
            });
        }
        progress.check()?;
        let (store, progress) = (self.clone(), progress.clone());
        blocking(move || store.commit(&reference, digest, config_digest, layers, config, &progress))
            .await
    }

    /// Streams one blob into the blob store, verifying size and digest.
    async fn download(
        &self,
        client: &mut RegistryClient,
        digest: &Digest,
        size: u64,
        layer: Option<(usize, usize)>,
        progress: &Progress,
    ) -> Result<()> {
        let mut resp = client.blob(digest).await?;
        let mut pending = self.blobs().begin()?;
        let what = format!("blob {digest}");
        while let Some(chunk) = resp.chunk().await.map_err(|source| ImageError::Http {
            url: what.clone(),
            source,
        })? {
            // Chunks are small (network-sized), so a plain write does not stall the runtime.
            pending
                .writer
                .write_all(&chunk)
                .map_err(ImageError::io("write", self.blobs().dir()))?;
            if pending.written() > size {
                return Err(ImageError::SizeMismatch {
                    what,
                    expected: size,
                    actual: pending.written(),
                });
            }
            if let Some((index, count)) = layer {
                progress.emit(ProgressEvent::LayerBytes {
                    index,
                    count,
                    digest: digest.clone(),
                    done: pending.written(),
                    total: size,
                });
            }
        }
        let (store, digest) = (self.clone(), digest.clone());
        blocking(move || {
            store
                .blobs()
                .commit(pending, Some(&digest), Some(size), &what)
        })
        .await?;
        Ok(())
    }
}

fn verify_manifest(expected: &Digest, actual: &Digest, reference: &Reference) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what: format!("manifest of {reference}"),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Task(e.to_string()))?
}
