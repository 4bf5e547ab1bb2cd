//! `blobs/sha256/<hex>`: content-addressed, verified blobs.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher, HashingWriter};
use crate::error::{ImageError, Result};

/// Blobs are written to a temp file in `tmp/` and renamed into place only once their digest is
/// checked, so a blob file that exists is always complete and correct.
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        Self { dir, tmp }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub(crate) fn open(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(ImageError::io("open blob", path))
    }

    pub(crate) fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(digest)?
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(ImageError::io("read blob", self.path(digest)))?;
        if buf.len() as u64 > limit {
            return Err(ImageError::BadMetadata {
                what: "blob",
                reason: format!("{digest} is larger than {limit} bytes"),
            });
        }
        Ok(buf)
    }

    /// A temp file to stream a blob into; hand it back to [`BlobStore::commit`].
    pub(crate) fn begin(&self) -> Result<PendingBlob> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(ImageError::io("create temp blob in", &self.tmp))?;
        Ok(PendingBlob {
            writer: HashingWriter {
                inner: file,
                hasher: Hasher::default(),
            },
        })
    }

    /// Verifies and renames a finished blob into place. `what` names it in errors.
    pub(crate) fn commit(
        &self,
        pending: PendingBlob,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        let HashingWriter { inner, hasher } = pending.writer;
        let (digest, size) = hasher.finish();
        check(what, &digest, size, expected, expected_size)?;
        inner
            .as_file()
            .sync_all()
            .map_err(ImageError::io("sync blob", inner.path()))?;
        let dest = self.path(&digest);
        // Same digest, same bytes: losing a rename race to a concurrent writer is fine.
        inner
            .persist(&dest)
            .map_err(|e| ImageError::io("store blob", &dest)(e.error))?;
        Ok((digest, size))
    }

    /// Copies a stream into the store, checking digest and size when known.
    pub(crate) fn write_from(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if self.contains(d) {
                io::copy(&mut reader, &mut io::sink())
                    .map_err(ImageError::io("read", what.to_owned()))?;
                return Ok((d.clone(), expected_size.unwrap_or(0)));
            }
        }
        let mut pending = self.begin()?;
        io::copy(&mut reader, &mut pending.writer)
            .map_err(ImageError::io("copy", what.to_owned()))?;
        self.commit(pending, expected, expected_size, what)
    }

    pub(crate) fn write_bytes(&self, bytes: &[u8], what: &str) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if !self.contains(&digest) {
            self.write_from(bytes, Some(&digest), None, what)?;
        }
        Ok(digest)
    }

    /// Digests of every blob on disk (for garbage collection).
    pub(crate) fn all(&self) -> Result<Vec<Digest>> {
        list_digest_names(&self.dir)
    }

    pub(crate) fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io("remove blob", path)(e))
            }
            _ => Ok(()),
        }
    }
}

/// A blob being written.
pub(crate) struct PendingBlob {
    pub(crate) writer: HashingWriter<tempfile::NamedTempFile>,
}

impl PendingBlob {
    pub(crate) fn written(&self) -> u64 {
        self.writer.hasher.len()
    }
}

pub(crate) fn check(
    what: &str,
    digest: &Digest,
    size: u64,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
) -> Result<()> {
    if let Some(exp) = expected {
        if exp != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_owned(),
                expected: exp.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    if let Some(exp) = expected_size {
        if exp != size {
            return Err(ImageError::SizeMismatch {
                what: what.to_owned(),
                expected: exp,
                actual: size,
            });
        }
    }
    Ok(())
}

/// Entries of a `sha256/` directory whose names are digests; anything else (lock files, stray
/// names) is ignored.
pub(crate) fn list_digest_names(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ImageError::io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io("list", dir))?;
        if let Some(d) = entry
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        {
            out.push(d);
        }
    }
    Ok(out)
}
