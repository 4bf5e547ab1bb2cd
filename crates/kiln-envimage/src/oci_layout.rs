//! Writes an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`) that
//! [`kiln_image::ImageStore::import`] reads.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{EnvImageError, Result};
use crate::layer_tar::{pack_tree, LayerTarOptions, PackStats};

pub(crate) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// How layer blobs are compressed. zstd is the default: about as small as gzip at several
/// times the speed, and `kiln-image` (and Docker ≥ 23, containerd, podman) read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// A plain tar: fastest to write, largest on disk.
    None,
    /// gzip, for consumers that predate zstd layers.
    Gzip,
    #[default]
    Zstd,
}

impl LayerCompression {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// One layer blob in a layout: a content descriptor plus the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:<hex>` of the blob as stored (compressed).
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Size of the blob in bytes.
    pub size: u64,
    pub media_type: String,
}

impl LayerBlob {
    pub(crate) fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// A layout directory being written.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Creates the layout skeleton in `dir` (which may exist and be empty).
    pub fn create(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(EnvImageError::io("create", &blobs))?;
        let marker = dir.join("oci-layout");
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(EnvImageError::io("write", &marker))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Packs the tree under `root` into a compressed layer blob.
    pub fn write_layer(
        &self,
        root: &Path,
        tar_options: &LayerTarOptions,
        compression: LayerCompression,
        on_bytes: impl FnMut(u64, u64),
    ) -> Result<(LayerBlob, PackStats)> {
        let tmp = self.dir.join("blobs/sha256/.layer.tmp");
        let file = File::create(&tmp).map_err(EnvImageError::io("create", &tmp))?;
        let blob_hasher = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let compressor = Compressor::new(compression, blob_hasher)
            .map_err(EnvImageError::io("start compressing", &tmp))?;
        let tar_hasher = HashingWriter::new(compressor);
        let (tar_hasher, stats) = pack_tree(root, tar_options, tar_hasher, on_bytes)?;
        let (compressor, diff_id, _) = tar_hasher.finish();
        let blob_hasher = compressor
            .finish()
            .map_err(EnvImageError::io("finish compressing", &tmp))?;
        let (mut buffered, digest, size) = blob_hasher.finish();
        buffered.flush().map_err(EnvImageError::io("write", &tmp))?;
        let blob = LayerBlob {
            digest,
            diff_id,
            size,
            media_type: compression.media_type().to_owned(),
        };
        let dest = self.blob_path(&blob.digest);
        fs::rename(&tmp, &dest).map_err(EnvImageError::io("rename into", &dest))?;
        Ok((blob, stats))
    }

    /// Puts an existing blob file (say, from the image store) into the layout: a hard link
    /// when both are on one filesystem, a copy otherwise.
    pub fn link_blob(&self, source: &Path, digest: &str) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        if fs::hard_link(source, &dest).is_err() {
            fs::copy(source, &dest).map_err(EnvImageError::io("copy blob to", &dest))?;
        }
        Ok(())
    }

    /// Writes a JSON document as a blob; returns its descriptor fields (digest, size).
    pub fn write_json(&self, value: &Value) -> Result<(String, u64)> {
        // serde_json sorts object keys (no `preserve_order`), so equal values give equal bytes.
        let bytes = serde_json::to_vec(value).map_err(|source| EnvImageError::Json {
            what: "serialise OCI document".into(),
            source,
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let path = self.blob_path(&digest);
        fs::write(&path, &bytes).map_err(EnvImageError::io("write", &path))?;
        Ok((digest, bytes.len() as u64))
    }

    /// Writes the config, the manifest over `layers` and an `index.json` naming the image
    /// `reference`. Returns the manifest digest.
    pub fn finish(&self, config: &Value, layers: &[LayerBlob], reference: &str) -> Result<String> {
        let (config_digest, config_size) = self.write_json(config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size },
            "layers": layers.iter().map(LayerBlob::descriptor).collect::<Vec<_>>(),
        });
        let (manifest_digest, manifest_size) = self.write_json(&manifest)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": { "architecture": "amd64", "os": "linux" },
                "annotations": { "org.opencontainers.image.ref.name": reference },
            }],
        });
        let path = self.dir.join("index.json");
        let bytes = serde_json::to_vec_pretty(&index).map_err(|source| EnvImageError::Json {
            what: "serialise index.json".into(),
            source,
        })?;
        fs::write(&path, bytes).map_err(EnvImageError::io("write", &path))?;
        Ok(manifest_digest)
    }
}

/// Passes bytes through while hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, `sha256:<hex>` of everything written, and its length.
    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    fn new(kind: LayerCompression, inner: W) -> io::Result<Self> {
        Ok(match kind {
            LayerCompression::None => Self::None(inner),
            // GzEncoder writes mtime 0 and no file name, so the header is fixed.
            LayerCompression::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            LayerCompression::Zstd => Self::Zstd(zstd::Encoder::new(inner, 3)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Self::None(w) => Ok(w),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(e) => e.write(buf),
            Self::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::None(w) => w.flush(),
            Self::Gzip(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }
}
