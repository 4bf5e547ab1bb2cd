//! The one place the server's sandbox backend lives: built (or found unavailable) once
//! by the composition root and shared by sessions, verification and agent jobs.

use std::sync::Arc;

use kiln_config::Config;
use kiln_runtime::{Limits, Runtime};

/// The sandbox backend, when this server can make sandboxes.
pub struct Sandboxes {
    state: Result<Available, String>,
}

/// A backend ready for use, with the limits its sandboxes get and where they run.
pub struct Available {
    pub runtime: Arc<dyn Runtime>,
    pub limits: Limits,
    pub location: String,
    /// The largest disk a sample may ask for (`runtime.max_disk_mib`), in bytes.
    pub max_disk_bytes: u64,
}

impl Sandboxes {
    /// The backend the configuration names, or why this host cannot run it.
    pub fn open(config: &Config) -> Self {
        let state = kiln_runtime::open(&config.runtime, &config.data_dir, &config.images_dir())
            .map(|opened| Available {
                runtime: opened.runtime,
                limits: opened.limits,
                location: opened.location,
                max_disk_bytes: config.runtime.max_disk_mib.saturating_mul(1 << 20),
            })
            .map_err(|unavailable| unavailable.reason);
        Sandboxes { state }
    }

    /// A backend supplied by the caller (a test's fake, another backend's crate), with
    /// the configuration's default limits.
    pub fn with_runtime(
        config: &Config,
        runtime: Arc<dyn Runtime>,
        location: impl Into<String>,
    ) -> Self {
        Sandboxes {
            state: Ok(Available {
                runtime,
                limits: kiln_runtime::default_limits(&config.runtime),
                location: location.into(),
                max_disk_bytes: config.runtime.max_disk_mib.saturating_mul(1 << 20),
            }),
        }
    }

    /// No backend, for this reason.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Sandboxes {
            state: Err(reason.into()),
        }
    }

    /// The backend, or why there is none (the cause and the fix, for people).
    pub fn available(&self) -> Result<&Available, &str> {
        self.state.as_ref().map_err(String::as_str)
    }

    /// Why sandboxes cannot be made here, when they cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.state.as_ref().err().cloned()
    }
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            Ok(available) => f
                .debug_struct("Sandboxes")
                .field("location", &available.location)
                .field("limits", &available.limits)
                .finish(),
            Err(why) => f.debug_tuple("Sandboxes::Unavailable").field(why).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_none_is_unavailable_with_its_reason() {
        let mut config = Config::default();
        config.runtime.backend = kiln_config::RuntimeBackend::None;
        let sandboxes = Sandboxes::open(&config);
        assert_eq!(
            sandboxes.unavailable_reason().as_deref(),
            Some("runtime.backend is \"none\"")
        );
        assert!(sandboxes.available().is_err());
    }
}
