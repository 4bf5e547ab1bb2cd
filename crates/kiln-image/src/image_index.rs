//! `images.json`: reference → image record. Rewritten whole, via temp file and rename, under
//! an exclusive lock, so readers (who take no lock) always see a complete file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::image::ImageRecord;
use crate::store_lock;

const FORMAT_VERSION: u32 = 1;

#[derive(Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

#[derive(Clone, Debug)]
pub(crate) struct ImageIndex {
    path: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

impl ImageIndex {
    pub(crate) fn new(path: PathBuf, lock: PathBuf, tmp: PathBuf) -> Self {
        Self { path, lock, tmp }
    }

    pub(crate) fn load(&self) -> Result<BTreeMap<String, ImageRecord>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(ImageError::io("read image index", &self.path)(e)),
        };
        let file: IndexFile =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::BadMetadata {
                what: "image index",
                reason: format!("{}: {e}", self.path.display()),
            })?;
        if file.version != FORMAT_VERSION {
            return Err(ImageError::BadMetadata {
                what: "image index",
                reason: format!(
                    "unsupported version {} (want {FORMAT_VERSION})",
                    file.version
                ),
            });
        }
        Ok(file.images)
    }

    /// Read-modify-write under the index lock.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, ImageRecord>) -> Result<T>,
    ) -> Result<T> {
        let _guard = store_lock::exclusive(&self.lock)?;
        let mut images = self.load()?;
        let out = f(&mut images)?;
        let file = IndexFile {
            version: FORMAT_VERSION,
            images,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| ImageError::BadMetadata {
            what: "image index",
            reason: e.to_string(),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(ImageError::io("create temp index in", &self.tmp))?;
        tmp.write_all(&json)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(ImageError::io("write", tmp.path().to_owned()))?;
        tmp.persist(&self.path)
            .map_err(|e| ImageError::io("replace", &self.path)(e.error))?;
        Ok(out)
    }
}
