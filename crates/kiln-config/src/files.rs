//! `[files]`: limits of the instance file routes (`/v1/instances/{id}/files…`).
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Most bytes one write may carry: its base64 must fit in one agent frame (8 MiB).
pub const MAX_FILE_WRITE_BYTES: usize = 6 * 1024 * 1024 - 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Most bytes one read returns (a whole file, or one range of it); a larger file is
    /// read in ranges.
    pub max_read_bytes: u64,
    /// Largest file one write or upload replaces, in bytes (at most 6 MiB − 64 KiB).
    pub max_write_bytes: usize,
    /// Deepest `depth` a listing may ask for.
    pub max_list_depth: u32,
    /// Most entries one listing returns; past it the answer says `truncated`.
    pub max_list_entries: usize,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_read_bytes: 8 * 1024 * 1024,
            max_write_bytes: 5 * 1024 * 1024,
            max_list_depth: 10,
            max_list_entries: 10_000,
        }
    }
}

impl FilesConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_read_bytes == 0 {
            return Err(ConfigError::Rule(
                "files.max_read_bytes must be at least 1".into(),
            ));
        }
        if self.max_write_bytes == 0 || self.max_write_bytes > MAX_FILE_WRITE_BYTES {
            return Err(ConfigError::Rule(format!(
                "files.max_write_bytes must be between 1 and {MAX_FILE_WRITE_BYTES}"
            )));
        }
        if self.max_list_depth == 0 || self.max_list_entries == 0 {
            return Err(ConfigError::Rule(
                "files.max_list_depth and files.max_list_entries must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_must_leave_room_and_fit_one_agent_frame() {
        assert!(FilesConfig::default().check().is_ok());
        let at_most = FilesConfig {
            max_write_bytes: MAX_FILE_WRITE_BYTES,
            ..FilesConfig::default()
        };
        assert!(at_most.check().is_ok());
        for bad in [
            FilesConfig {
                max_write_bytes: MAX_FILE_WRITE_BYTES + 1,
                ..FilesConfig::default()
            },
            FilesConfig {
                max_read_bytes: 0,
                ..FilesConfig::default()
            },
            FilesConfig {
                max_list_depth: 0,
                ..FilesConfig::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
