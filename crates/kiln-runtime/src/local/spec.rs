//! What the local backend starts a sandbox from: read-only layer directories stacked by
//! overlayfs, and host directories bound inside. Nothing outside `local` sees these.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};
use crate::spec::{Limits, Network, SandboxId};

/// The read-only layers a sandbox's root is stacked from, **topmost first** (overlayfs
/// order: the first directory wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootLayers {
    top_first: Vec<PathBuf>,
}

impl RootLayers {
    /// Layers given topmost first.
    pub fn new(top_first: Vec<PathBuf>) -> Self {
        RootLayers { top_first }
    }

    /// A single directory used as the whole (read-only) root, e.g. a test rootfs.
    pub fn single(dir: impl Into<PathBuf>) -> Self {
        RootLayers {
            top_first: vec![dir.into()],
        }
    }

    /// The unpacked layers of an image.
    pub fn from_image(image: &kiln_image::Image) -> Self {
        let mut dirs = image.layer_dirs();
        dirs.reverse();
        RootLayers { top_first: dirs }
    }

    /// These layers with `layer` on top (how a fork stacks a snapshot on its image).
    pub fn with_top(&self, layer: &Path) -> Self {
        let mut top_first = Vec::with_capacity(self.top_first.len() + 1);
        top_first.push(layer.to_path_buf());
        top_first.extend(self.top_first.iter().cloned());
        RootLayers { top_first }
    }

    /// The directories, topmost first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.top_first
    }

    /// The overlayfs `lowerdir=` value.
    pub(crate) fn lowerdir_option(&self) -> Result<String> {
        if self.top_first.is_empty() {
            return Err(RuntimeError::InvalidSpec("no root layers".into()));
        }
        let mut parts = Vec::with_capacity(self.top_first.len());
        for dir in &self.top_first {
            let s = dir
                .to_str()
                .filter(|s| s.starts_with('/') && !s.contains([':', ',', '\\']))
                .ok_or_else(|| {
                    RuntimeError::InvalidSpec(format!(
                        "layer {} must be an absolute UTF-8 path without ':', ',' or '\\'",
                        dir.display()
                    ))
                })?;
            parts.push(s);
        }
        Ok(parts.join(":"))
    }
}

/// What the local backend starts a sandbox from: a [`SandboxSpec`] resolved to layer
/// directories and host binds. The runtime's own tests and benchmarks start sandboxes
/// from a directory with it ([`LocalRuntime::create_local`]).
///
/// [`SandboxSpec`]: crate::SandboxSpec
/// [`LocalRuntime::create_local`]: crate::local::LocalRuntime::create_local
#[derive(Debug, Clone)]
pub struct LocalSpec {
    /// Its id.
    pub id: SandboxId,
    /// The read-only layers of its root (image layers, snapshot layers on top).
    pub layers: RootLayers,
    /// Resource limits.
    pub limits: Limits,
    /// Network access.
    pub network: Network,
    /// Environment of every command (the image's `ENV`, then the caller's).
    pub env: BTreeMap<String, String>,
    /// Working directory of commands that name none (the image's `WorkingDir`);
    /// when `None` the agent uses `/testbed` if it exists, else `/`.
    pub workdir: Option<String>,
    /// Hostname inside.
    pub hostname: String,
    /// Host directories seen read-write inside, e.g. an agent job's checkout.
    pub binds: Vec<BindMount>,
    /// Its way out through the server, if any (`egress.rs`).
    pub egress: Option<crate::spec::Egress>,
    /// The image it stands on, directly or through snapshots: its warm pool is that
    /// image's (`warm_pools`), for forks and restores too. `None` for a spec of
    /// directories.
    pub image: Option<String>,
}

/// A host directory seen read-write at `target` inside the sandbox. It is copied onto
/// the sandbox's own filesystem (never bound from the host, whose path would show in
/// the sandbox's mountinfo), not into its overlay, and the sandbox's tree replaces the
/// host directory at destroy (`workspace.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The directory on the host (absolute).
    pub source: PathBuf,
    /// Where it appears inside (absolute), created if missing.
    pub target: String,
}

impl LocalSpec {
    /// A spec with default limits, loopback network, no extra environment, hostname `kiln`.
    pub fn new(id: SandboxId, layers: RootLayers) -> Self {
        LocalSpec {
            id,
            layers,
            limits: Limits::default(),
            network: Network::default(),
            env: BTreeMap::new(),
            workdir: None,
            hostname: "kiln".into(),
            binds: Vec::new(),
            egress: None,
            image: None,
        }
    }

    /// A spec for an image: its layers, `ENV` and `WorkingDir`.
    pub fn from_image(id: SandboxId, image: &kiln_image::Image) -> Self {
        let mut spec = LocalSpec::new(id, RootLayers::from_image(image));
        for kv in &image.config().env {
            if let Some((k, v)) = kv.split_once('=') {
                spec.env.insert(k.to_string(), v.to_string());
            }
        }
        spec.workdir = image.config().working_dir.clone();
        spec
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_is_topmost_first_and_rejects_separators() {
        let base = RootLayers::new(vec!["/l/b".into(), "/l/a".into()]);
        let forked = base.with_top(Path::new("/snap/1"));
        assert_eq!(forked.lowerdir_option().unwrap(), "/snap/1:/l/b:/l/a");
        assert!(RootLayers::single("/x:y").lowerdir_option().is_err());
        assert!(RootLayers::single("relative").lowerdir_option().is_err());
        assert!(RootLayers::default().lowerdir_option().is_err());
    }
}
