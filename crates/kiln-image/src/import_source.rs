//! Where an import reads from: an unpacked directory, or a tar (optionally gzip'd) streamed
//! once, with every file going straight into the blob store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::blob_store::{check, BlobStore};
use crate::compression::decompressed;
use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::layer_unpack::safe_components;
use crate::progress::{cancelled, Progress};
use crate::store::MAX_METADATA_BYTES;

/// Top-level files read into memory rather than stored as blobs.
const METADATA_FILES: &[&str] = &["index.json", "manifest.json", "oci-layout", "repositories"];

pub(crate) trait ArchiveSource {
    fn location(&self) -> &Path;
    /// A top-level metadata file (`index.json`, `manifest.json`, `oci-layout`), if present.
    fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Makes sure the file at `path` is in the blob store and returns its digest and size,
    /// checked against `expected` and `size` when given.
    fn blob(
        &mut self,
        blobs: &BlobStore,
        path: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64)>;

    fn bad(&self, reason: String) -> ImageError {
        ImageError::BadArchive {
            path: self.location().to_owned(),
            reason,
        }
    }
}

fn normalize(path: &Path) -> Result<String> {
    let comps = safe_components(path)?;
    let parts: Vec<&str> = comps.iter().filter_map(|c| c.to_str()).collect();
    if parts.len() != comps.len() {
        return Err(ImageError::UnsafePath {
            path: path.to_string_lossy().into_owned(),
            reason: "not UTF-8",
        });
    }
    Ok(parts.join("/"))
}

pub(crate) struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub(crate) fn new(root: &Path) -> Result<Self> {
        let root = std::fs::canonicalize(root).map_err(ImageError::io("resolve", root))?;
        Ok(Self { root })
    }
}

impl ArchiveSource for DirSource {
    fn location(&self) -> &Path {
        &self.root
    }

    fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.root.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("open", path)(e)),
        };
        let mut buf = Vec::new();
        file.take(MAX_METADATA_BYTES)
            .read_to_end(&mut buf)
            .map_err(ImageError::io("read", &path))?;
        Ok(Some(buf))
    }

    fn blob(
        &mut self,
        blobs: &BlobStore,
        path: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let rel = normalize(Path::new(path))?;
        let full = self.root.join(&rel);
        // Legacy `docker save` directories link duplicate layers with symlinks: follow them,
        // but only within the archive.
        let resolved = std::fs::canonicalize(&full).map_err(ImageError::io("resolve", &full))?;
        if !resolved.starts_with(&self.root) {
            return Err(ImageError::UnsafePath {
                path: path.to_owned(),
                reason: "resolves outside the archive",
            });
        }
        let file = File::open(&resolved).map_err(ImageError::io("open", &resolved))?;
        blobs.write_from(BufReader::new(file), expected, size, path)
    }
}

pub(crate) struct TarSource {
    path: PathBuf,
    metadata: HashMap<String, Vec<u8>>,
    files: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
}

impl TarSource {
    /// Reads the whole tar once, storing every regular file as a blob. Files that no image
    /// turns out to use are left for garbage collection. Stops if `progress` is cancelled.
    pub(crate) fn ingest(path: &Path, blobs: &BlobStore, progress: &Progress) -> Result<Self> {
        Self::ingest_watched(path, blobs, progress).map_err(|e| cancelled(progress, e))
    }

    fn ingest_watched(path: &Path, blobs: &BlobStore, progress: &Progress) -> Result<Self> {
        let file = File::open(path).map_err(ImageError::io("open", path))?;
        let (_, reader) = decompressed(progress.watch(file))?;
        let mut archive = tar::Archive::new(reader);
        let mut me = Self {
            path: path.to_owned(),
            metadata: HashMap::new(),
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let bad = |e: std::io::Error| ImageError::BadArchive {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = normalize(&entry.path().map_err(bad)?)?;
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().map_err(bad)? else {
                    continue;
                };
                let target = if kind.is_symlink() {
                    // Relative to the link's directory; may climb with `..`, but not out.
                    resolve_relative(&name, &target)?
                } else {
                    normalize(&target)?
                };
                me.links.insert(name, target);
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                if METADATA_FILES.contains(&name.as_str()) {
                    let mut buf = Vec::new();
                    (&mut entry)
                        .take(MAX_METADATA_BYTES)
                        .read_to_end(&mut buf)
                        .map_err(bad)?;
                    me.metadata.insert(name, buf);
                } else {
                    let stored = blobs.write_from(&mut entry, None, None, &name)?;
                    me.files.insert(name, stored);
                }
            }
        }
        Ok(me)
    }
}

fn resolve_relative(link: &str, target: &Path) -> Result<String> {
    let unsafe_link = || ImageError::UnsafePath {
        path: format!("{link} -> {}", target.display()),
        reason: "link points outside the archive",
    };
    if target.is_absolute() {
        return Err(unsafe_link());
    }
    let mut parts: Vec<String> = link.split('/').map(str::to_owned).collect();
    parts.pop();
    for c in target.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop().ok_or_else(unsafe_link)?;
            }
            std::path::Component::CurDir => {}
            _ => return Err(unsafe_link()),
        }
    }
    Ok(parts.join("/"))
}

impl ArchiveSource for TarSource {
    fn location(&self) -> &Path {
        &self.path
    }

    fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.metadata.get(name).cloned())
    }

    fn blob(
        &mut self,
        _blobs: &BlobStore,
        path: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let mut name = normalize(Path::new(path))?;
        for _ in 0..8 {
            match self.links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        let (digest, actual_size) = self
            .files
            .get(&name)
            .cloned()
            .ok_or_else(|| self.bad(format!("{path} is not in the archive")))?;
        check(path, &digest, actual_size, expected, size)?;
        Ok((digest, actual_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_resolve_within_the_archive() {
        let r = resolve_relative("b/layer.tar", Path::new("../a/layer.tar")).unwrap();
        assert_eq!(r, "a/layer.tar");
        assert!(resolve_relative("layer.tar", Path::new("../../etc/passwd")).is_err());
        assert!(resolve_relative("x", Path::new("/etc/passwd")).is_err());
    }
}
