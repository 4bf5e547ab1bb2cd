//! Manifest and index handling shared by import and pull: media types, parsing, and picking
//! the linux/amd64 entry of a multi-platform index.

use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, Os};

use crate::digest::Digest;
use crate::error::{ImageError, Result};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest type we can use, for a registry's `Accept` header.
pub(crate) const ACCEPTED_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub(crate) fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Media type of a manifest document: the `mediaType` field, or (OCI allows leaving it out)
/// whether it has `manifests` or `layers`.
pub(crate) fn sniff_media_type(bytes: &[u8]) -> Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        schema_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| bad("manifest", e))?;
    if probe.schema_version == Some(1) {
        return Err(ImageError::BadMetadata {
            what: "manifest",
            reason: "Docker schema 1 manifests are not supported".into(),
        });
    }
    Ok(match (probe.media_type, probe.manifests) {
        (Some(m), _) => m,
        (None, Some(_)) => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    })
}

pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest> {
    ImageManifest::from_reader(bytes).map_err(|e| bad("manifest", e))
}

pub(crate) fn parse_index(bytes: &[u8]) -> Result<ImageIndex> {
    ImageIndex::from_reader(bytes).map_err(|e| bad("image index", e))
}

fn bad(what: &'static str, e: impl std::fmt::Display) -> ImageError {
    ImageError::BadMetadata {
        what,
        reason: e.to_string(),
    }
}

/// The linux/amd64 manifest of an index. Entries without a platform count only when they
/// are the index's single image manifest (as in a plain `skopeo copy` layout).
pub(crate) fn select_platform<'a>(index: &'a ImageIndex, what: &str) -> Result<&'a Descriptor> {
    let usable: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| {
            let mt = d.media_type().to_string();
            is_manifest(&mt) || is_index(&mt)
        })
        .collect();
    let amd64 = usable.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    });
    if let Some(d) = amd64 {
        return Ok(d);
    }
    match usable.as_slice() {
        [only] if only.platform().is_none() => Ok(only),
        _ => Err(ImageError::NoMatchingPlatform(what.to_owned())),
    }
}

/// A descriptor's digest and size, validated.
pub(crate) fn descriptor_digest(d: &Descriptor) -> Result<(Digest, u64)> {
    Ok((Digest::try_from(d.digest())?, d.size()))
}

/// Layers of a manifest as (digest, media type, size).
pub(crate) fn manifest_layers(m: &ImageManifest) -> Result<Vec<(Digest, String, u64)>> {
    m.layers()
        .iter()
        .map(|l| {
            Ok((
                Digest::try_from(l.digest())?,
                l.media_type().to_string(),
                l.size(),
            ))
        })
        .collect()
}
