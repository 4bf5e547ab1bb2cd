//! `[limits]`: request bodies and dataset imports.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest dataset file `kiln datasets import` reads, in bytes.
    pub max_import_bytes: u64,
    /// Most samples one import may hold.
    pub max_import_samples: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_import_bytes: 2 * 1024 * 1024 * 1024,
            max_import_samples: 100_000,
        }
    }
}

impl LimitsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Rule(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}
