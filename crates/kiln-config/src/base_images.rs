//! `[base_images]`: base image families and the pipeline that prepares their versions
//! (`/v1/base-images`, `/v1/images/*`).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BaseImagesConfig {
    /// The family `GET /v1/base-images/default` answers with; none by default.
    pub default_family: Option<String>,
    /// The only directory `{"import": "<path>"}` sources may come from (an OCI layout or a
    /// `docker save` / OCI tar inside it). Unset: imports by path are refused.
    pub import_dir: Option<PathBuf>,
    /// Registries (`host:port`) `{"pull": "<reference>"}` sources may name. Empty: pulls
    /// are refused.
    pub allowed_registries: Vec<String>,
    /// Of the allowed registries, those spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Most versions being prepared at once, over all families.
    pub max_preparing: u32,
    /// Most versions one family may keep (aborted and failed ones included, until deleted).
    pub max_versions_per_family: u32,
}

impl Default for BaseImagesConfig {
    fn default() -> Self {
        Self {
            default_family: None,
            import_dir: None,
            allowed_registries: Vec::new(),
            insecure_registries: Vec::new(),
            max_preparing: 2,
            max_versions_per_family: 100,
        }
    }
}

impl BaseImagesConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.max_preparing) {
            return Err(ConfigError::Rule(
                "base_images.max_preparing must be between 1 and 64".into(),
            ));
        }
        if !(1..=10_000).contains(&self.max_versions_per_family) {
            return Err(ConfigError::Rule(
                "base_images.max_versions_per_family must be between 1 and 10000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(BaseImagesConfig::default().check().is_ok());
        for bad in [
            BaseImagesConfig {
                max_preparing: 0,
                ..Default::default()
            },
            BaseImagesConfig {
                max_versions_per_family: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
