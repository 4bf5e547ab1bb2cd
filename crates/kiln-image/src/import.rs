//! [`ImageStore::import`]: OCI image layouts and `docker save` archives, as directories or tars.

use std::path::Path;

use serde::Deserialize;

use crate::blob_store::BlobStore;
use crate::compression::{decompressed, Compression};
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::image::Image;
use crate::import_source::{ArchiveSource, DirSource, TarSource};
use crate::manifest::{self, descriptor_digest, manifest_layers, select_platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{ImageStore, MAX_METADATA_BYTES};

/// Options for [`ImageStore::import`].
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Name to store the image under. Required when the archive names none; when given, the
    /// archive must hold exactly one image, and this name replaces the archive's own.
    pub reference: Option<String>,
    pub progress: Progress,
}

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

impl ImageStore {
    /// Imports every image of an OCI image layout or a `docker save` archive, given as a
    /// directory or a tar file (plain or gzip'd). Blocking: run it on a blocking thread in
    /// async code. Returns the images as stored, one per reference.
    pub fn import(&self, path: &Path, options: &ImportOptions) -> Result<Vec<Image>> {
        let override_ref = options
            .reference
            .as_deref()
            .map(Reference::parse)
            .transpose()?;
        let guard = self.import_guard()?;
        let mut source: Box<dyn ArchiveSource> = if path.is_dir() {
            Box::new(DirSource::new(path)?)
        } else {
            Box::new(TarSource::ingest(path, self.blobs(), &options.progress)?)
        };
        let result = options.progress.check().and_then(|()| {
            self.import_from(source.as_mut(), override_ref.as_ref(), &options.progress)
        });
        drop(guard);
        if !path.is_dir() {
            // A tar's every file went into the blob store; drop the ones no image uses.
            self.gc_if_idle()?;
        }
        result
    }

    fn import_from(
        &self,
        source: &mut dyn ArchiveSource,
        override_ref: Option<&Reference>,
        progress: &Progress,
    ) -> Result<Vec<Image>> {
        if let Some(json) = source.metadata("manifest.json")? {
            self.import_docker(source, &json, override_ref, progress)
        } else if let Some(json) = source.metadata("index.json")? {
            self.import_oci(source, &json, override_ref, progress)
        } else {
            Err(source
                .bad("neither manifest.json (docker save) nor index.json (OCI layout)".into()))
        }
    }

    fn import_oci(
        &self,
        source: &mut dyn ArchiveSource,
        index_json: &[u8],
        override_ref: Option<&Reference>,
        progress: &Progress,
    ) -> Result<Vec<Image>> {
        let index = manifest::parse_index(index_json)?;
        let entries: Vec<_> = index
            .manifests()
            .iter()
            .filter(|d| {
                let mt = d.media_type().to_string();
                manifest::is_manifest(&mt) || manifest::is_index(&mt)
            })
            .collect();
        if entries.is_empty() {
            return Err(source.bad("index.json lists no image".into()));
        }
        if override_ref.is_some() && entries.len() > 1 {
            return Err(source.bad(format!(
                "holds {} images; a single reference cannot name them all",
                entries.len()
            )));
        }
        let mut images = Vec::new();
        for entry in entries {
            let reference = match override_ref {
                Some(r) => r.clone(),
                None => oci_reference(entry.annotations().as_ref())?
                    .ok_or_else(|| ImageError::NoReference(entry.digest().to_string()))?,
            };
            let (mut digest, mut size) = descriptor_digest(entry)?;
            let mut media_type = entry.media_type().to_string();
            // Nested indexes (multi-platform images) are followed down to one manifest.
            for _ in 0..4 {
                if !manifest::is_index(&media_type) {
                    break;
                }
                let bytes = self.oci_blob(source, &digest, size)?;
                let nested = manifest::parse_index(&bytes)?;
                let chosen = select_platform(&nested, &reference.to_string())?;
                (digest, size) = descriptor_digest(chosen)?;
                media_type = chosen.media_type().to_string();
            }
            let bytes = self.oci_blob(source, &digest, size)?;
            let m = manifest::parse_manifest(&bytes)?;
            let (config_digest, config_size) = descriptor_digest(m.config())?;
            self.oci_blob(source, &config_digest, config_size)?;
            let layers = manifest_layers(&m)?;
            for (layer, _, size) in &layers {
                progress.check()?;
                source.blob(self.blobs(), &blob_path(layer), Some(layer), Some(*size))?;
            }
            images.push(self.install(&reference, digest, config_digest, layers, progress)?);
        }
        Ok(images)
    }

    /// Stores a blob of an OCI layout and returns its bytes (for manifests and configs).
    fn oci_blob(
        &self,
        source: &mut dyn ArchiveSource,
        digest: &Digest,
        size: u64,
    ) -> Result<Vec<u8>> {
        if size > MAX_METADATA_BYTES {
            return Err(source.bad(format!(
                "{digest} is too large for a manifest ({size} bytes)"
            )));
        }
        source.blob(self.blobs(), &blob_path(digest), Some(digest), Some(size))?;
        self.blobs().read(digest, MAX_METADATA_BYTES)
    }

    fn import_docker(
        &self,
        source: &mut dyn ArchiveSource,
        manifest_json: &[u8],
        override_ref: Option<&Reference>,
        progress: &Progress,
    ) -> Result<Vec<Image>> {
        let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(manifest_json)
            .map_err(|e| source.bad(format!("manifest.json: {e}")))?;
        if entries.is_empty() {
            return Err(source.bad("manifest.json lists no image".into()));
        }
        if override_ref.is_some() && entries.len() > 1 {
            return Err(source.bad(format!(
                "holds {} images; a single reference cannot name them all",
                entries.len()
            )));
        }
        let mut images = Vec::new();
        for entry in entries {
            let (config_digest, config_size) = source.blob(
                self.blobs(),
                &entry.config,
                digest_in_name(&entry.config).as_ref(),
                None,
            )?;
            let mut layers = Vec::new();
            for path in &entry.layers {
                progress.check()?;
                let (digest, size) =
                    source.blob(self.blobs(), path, digest_in_name(path).as_ref(), None)?;
                let media_type = layer_media_type(self.blobs(), &digest)?;
                layers.push((digest, media_type, size));
            }
            // `docker save` ships no distribution manifest; write the OCI one it implies so
            // the image has a manifest digest like any other.
            let manifest_digest = self.synthesize_manifest(&config_digest, config_size, &layers)?;
            let references: Vec<Reference> = match override_ref {
                Some(r) => vec![r.clone()],
                None => entry
                    .repo_tags
                    .unwrap_or_default()
                    .iter()
                    .map(|t| Reference::parse(t))
                    .collect::<Result<_>>()?,
            };
            let Some((first, rest)) = references.split_first() else {
                return Err(ImageError::NoReference(config_digest.to_string()));
            };
            let image = self.install(
                first,
                manifest_digest.clone(),
                config_digest.clone(),
                layers,
                progress,
            )?;
            let (layers, config) = (image.layers().to_vec(), image.config().clone());
            images.push(image);
            for r in rest {
                images.push(self.commit(
                    r,
                    manifest_digest.clone(),
                    config_digest.clone(),
                    layers.clone(),
                    config.clone(),
                    progress,
                )?);
            }
        }
        Ok(images)
    }

    fn synthesize_manifest(
        &self,
        config: &Digest,
        config_size: u64,
        layers: &[(Digest, String, u64)],
    ) -> Result<Digest> {
        let descriptor = |media_type: &str, digest: &Digest, size: u64| serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size });
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config, config_size),
            "layers": layers.iter().map(|(d, mt, s)| descriptor(mt, d, *s)).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::BadMetadata {
            what: "manifest",
            reason: e.to_string(),
        })?;
        self.blobs().write_bytes(&bytes, "synthesized manifest")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Both `docker save` layouts name files by their digest: `<hex>.json` (legacy configs) and
/// `blobs/sha256/<hex>` (Docker 25+). Legacy layer tars (`<id>/layer.tar`) are named by an
/// unrelated ID, so they get no expected digest.
fn digest_in_name(path: &str) -> Option<Digest> {
    let name = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json"))?;
    Digest::from_hex(name).ok()
}

fn layer_media_type(blobs: &BlobStore, digest: &Digest) -> Result<String> {
    let (compression, _) = decompressed(blobs.open(digest)?)?;
    Ok(match compression {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
    .to_owned())
}

/// The name an OCI layout gives an image: containerd's full-name annotation, or
/// `org.opencontainers.image.ref.name` when that is a full reference. A bare tag there
/// (what `skopeo copy … oci:dir:tag` writes) names no repository, so it needs an explicit
/// reference.
fn oci_reference(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Result<Option<Reference>> {
    let Some(a) = annotations else {
        return Ok(None);
    };
    if let Some(name) = a.get(CONTAINERD_NAME) {
        return Reference::parse(name).map(Some);
    }
    match a.get(OCI_REF_NAME) {
        Some(name) if name.contains('/') || name.contains(':') => Reference::parse(name).map(Some),
        _ => Ok(None),
    }
}
