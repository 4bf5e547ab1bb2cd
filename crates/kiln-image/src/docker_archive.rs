//! Images out of the store as a `docker save` tarball, which `docker load` (the Engine
//! API's `POST /images/load`) takes: how the Docker backend moves a store image into an
//! engine. Plain and gzip layers go as stored (the engine decompresses them and checks each
//! against the config's `diff_ids`); zstd ones go decompressed, since engines before
//! Docker 23 cannot read zstd. Either way the engine's image id is the config's digest.

use std::io::{Read, Write};

use crate::compression::{decompressed, Compression};

use crate::error::{ImageError, Result};
use crate::image::Image;
use crate::store::ImageStore;

impl ImageStore {
    /// Writes image `reference` as a `docker save` tarball to `out`, tagged `tag` when
    /// given (a name the engine accepts); returns the image.
    pub fn write_docker_archive(
        &self,
        reference: &str,
        tag: Option<&str>,
        out: impl Write,
    ) -> Result<Image> {
        // Removal and collection wait while we read the blobs.
        let _guard = self.import_guard()?;
        let image = self.get(reference)?;
        let mut tar = tar::Builder::new(out);
        let config_name = format!("{}.json", image.config_digest().hex());
        append_blob(self, &mut tar, image.config_digest(), &config_name)?;
        let mut layer_names = Vec::new();
        for layer in image.layers() {
            let name = format!("{}/layer.tar", layer.digest.hex());
            if !layer_names.contains(&name) {
                append_layer(self, &mut tar, &layer.digest, &name)?;
            }
            layer_names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": tag.map(|t| vec![t]),
            "Layers": layer_names,
        }]);
        let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::BadMetadata {
            what: "docker manifest",
            reason: e.to_string(),
        })?;
        append_bytes(&mut tar, "manifest.json", &manifest)?;
        tar.into_inner().map_err(|source| ImageError::Io {
            action: "cannot finish the docker archive of",
            path: reference.into(),
            source,
        })?;
        Ok(image)
    }
}

fn append_blob(
    store: &ImageStore,
    tar: &mut tar::Builder<impl Write>,
    digest: &crate::Digest,
    name: &str,
) -> Result<()> {
    let mut file = store.blobs().open(digest)?;
    let len = file
        .metadata()
        .map_err(|source| ImageError::Io {
            action: "cannot stat blob",
            path: store.blobs().path(digest),
            source,
        })?
        .len();
    let mut header = header(len);
    tar.append_data(&mut header, name, &mut file)
        .map_err(|source| ImageError::Io {
            action: "cannot add to the docker archive the blob",
            path: store.blobs().path(digest),
            source,
        })
}

/// A layer blob as stored, or decompressed when it is zstd: the size a tar header needs
/// is learnt by a first decompression pass (zstd decodes at memory speed; no temporary).
fn append_layer(
    store: &ImageStore,
    tar: &mut tar::Builder<impl Write>,
    digest: &crate::Digest,
    name: &str,
) -> Result<()> {
    let (compression, mut reader) = decompressed(store.blobs().open(digest)?)?;
    if compression != Compression::Zstd {
        return append_blob(store, tar, digest, name);
    }
    let io_err = |source| ImageError::Io {
        action: "cannot decompress for the docker archive the layer",
        path: store.blobs().path(digest),
        source,
    };
    let len = std::io::copy(&mut reader, &mut std::io::sink()).map_err(io_err)?;
    let (_, reader) = decompressed(store.blobs().open(digest)?)?;
    let mut header = header(len);
    tar.append_data(&mut header, name, reader.take(len))
        .map_err(io_err)
}

fn append_bytes(tar: &mut tar::Builder<impl Write>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = header(bytes.len() as u64);
    tar.append_data(&mut header, name, bytes)
        .map_err(|source| ImageError::Io {
            action: "cannot add to the docker archive",
            path: name.into(),
            source,
        })
}

fn header(len: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header
}
