//! Where a new version comes from, checked before anything is recorded: a family name
//! that makes a valid image reference, an import path inside `[base_images] import_dir`,
//! a pull from an allowed registry, a copy of an image the store has.
use std::path::{Path, PathBuf};

use kiln_config::BaseImagesConfig;
use kiln_image::{ImageStore, Reference, RegistryConfig};

use crate::error::{ServiceError, ServiceResult};

/// Longest family name, in bytes.
pub const MAX_FAMILY_BYTES: usize = 64;
/// Longest source reference or path, in bytes.
const MAX_SOURCE_BYTES: usize = 1024;

/// What a version is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseImageSource {
    /// A registry reference (`127.0.0.1:5000/kiln/python:3.12`).
    Pull(String),
    /// A path of an OCI layout or an OCI / `docker save` tar under the import directory
    /// (relative to it, or absolute).
    Import(String),
    /// An image already in the server's image store.
    From(String),
}

/// The checked work a preparation does.
#[derive(Debug, Clone)]
pub(super) enum Work {
    Pull {
        reference: String,
        registry: RegistryConfig,
    },
    Import(PathBuf),
    Tag(String),
}

/// Lowercase letters, digits and `-`, `_`, `.` (not first), at most 64 bytes: a family
/// names an image repository (`base/<family>`) and appears in URLs.
pub fn check_family(family: &str) -> ServiceResult<()> {
    let valid = !family.is_empty()
        && family.len() <= MAX_FAMILY_BYTES
        && family
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && family.starts_with(|c: char| c.is_ascii_alphanumeric())
        && family.ends_with(|c: char| c.is_ascii_alphanumeric())
        && Reference::parse(&kiln_store::base_image_reference(family, 1)).is_ok();
    if valid {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            &["family"],
            format!(
                "a family is 1 to {MAX_FAMILY_BYTES} lowercase letters, digits, '-', '_' or \
                 '.', beginning and ending with a letter or digit"
            ),
            "string_pattern_mismatch",
        ))
    }
}

impl BaseImageSource {
    /// For people and the record: `pull:<ref>`, `import:<path>`, `from:<ref>`.
    pub fn describe(&self) -> String {
        match self {
            Self::Pull(r) => format!("pull:{r}"),
            Self::Import(p) => format!("import:{p}"),
            Self::From(r) => format!("from:{r}"),
        }
    }

    fn field(&self) -> [&'static str; 2] {
        match self {
            Self::Pull(_) => ["source", "pull"],
            Self::Import(_) => ["source", "import"],
            Self::From(_) => ["source", "from"],
        }
    }

    fn invalid(&self, msg: impl Into<String>) -> ServiceError {
        ServiceError::invalid(&self.field(), msg, "value_error")
    }

    pub(super) fn resolve(
        &self,
        config: &BaseImagesConfig,
        images: &ImageStore,
    ) -> ServiceResult<Work> {
        let value = match self {
            Self::Pull(v) | Self::Import(v) | Self::From(v) => v,
        };
        if value.is_empty() || value.len() > MAX_SOURCE_BYTES {
            return Err(self.invalid(format!("must be 1 to {MAX_SOURCE_BYTES} bytes")));
        }
        match self {
            Self::Pull(reference) => self.pull(config, reference),
            Self::Import(path) => self.import(config, path).map(Work::Import),
            Self::From(reference) => match images.get(reference) {
                Ok(image) => Ok(Work::Tag(image.reference().to_string())),
                Err(e) => Err(self.invalid(format!("no such image in the store: {e}"))),
            },
        }
    }

    fn pull(&self, config: &BaseImagesConfig, reference: &str) -> ServiceResult<Work> {
        let parsed = Reference::parse(reference).map_err(|e| self.invalid(e.to_string()))?;
        let host = parsed.registry_host().to_string();
        if !config.allowed_registries.contains(&host) {
            return Err(self.invalid(format!(
                "pulls from {host} are not allowed on this server (base_images.allowed_registries)"
            )));
        }
        Ok(Work::Pull {
            reference: parsed.to_string(),
            registry: RegistryConfig {
                insecure_registries: config.insecure_registries.clone(),
                ..RegistryConfig::default()
            },
        })
    }

    fn import(&self, config: &BaseImagesConfig, path: &str) -> ServiceResult<PathBuf> {
        let Some(dir) = &config.import_dir else {
            return Err(self.invalid(
                "imports by path are disabled on this server (set base_images.import_dir)",
            ));
        };
        let dir = dir
            .canonicalize()
            .map_err(|e| ServiceError::Unavailable(format!("base_images.import_dir: {e}")))?;
        // Resolved with symlinks followed, so that no link leads outside the directory.
        let file = dir
            .join(Path::new(path))
            .canonicalize()
            .map_err(|_| self.invalid("no such file or directory in the import directory"))?;
        if file == dir || !file.starts_with(&dir) {
            return Err(self.invalid("must be a file or directory inside the import directory"));
        }
        Ok(file)
    }
}
