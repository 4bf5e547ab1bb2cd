//! What to build ([`ImageSpec`]) and how ([`BuildOptions`]).

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::layer_tar::DEFAULT_MTIME_CLAMP;
use crate::oci_layout::LayerCompression;

/// The Debian release every demo image is built from.
pub const DEFAULT_SUITE: &str = "bookworm";

/// debootstrap's smallest variant: essential packages and apt, no `Priority: important`
/// extras. Everything else comes from [`ImageSpec::packages`].
pub const VARIANT: &str = "minbase";

/// Bumped whenever [`crate::clean_rootfs`] changes what it leaves, so cached trees cleaned
/// the old way are not reused.
const CLEANUP_VERSION: u32 = 2;

/// A Debian-based environment image: a suite and the packages to install on top of minbase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Where the image goes in the store, e.g. `kiln-demo/python:1`.
    pub reference: String,
    pub suite: String,
    /// Passed to `debootstrap --include`, which resolves their dependencies (but not virtual
    /// packages: name a real provider, e.g. `libc6-dev` for `libc-dev`).
    pub packages: Vec<String>,
    /// The image config's `Env`.
    pub env: Vec<String>,
    /// The image config's `WorkingDir`, created (empty) in the root filesystem.
    pub working_dir: String,
}

impl ImageSpec {
    /// A bookworm image with `packages`, the default environment and `/testbed` as its
    /// working directory.
    pub fn new(reference: &str, packages: &[&str]) -> Self {
        Self {
            reference: reference.to_owned(),
            suite: DEFAULT_SUITE.to_owned(),
            packages: packages.iter().map(|p| (*p).to_owned()).collect(),
            env: default_env(),
            working_dir: "/testbed".to_owned(),
        }
    }

    /// `kiln-demo/python:1`: python3 3.11, pytest 7.2, git.
    pub fn demo_python() -> Self {
        Self::new("kiln-demo/python:1", &["python3", "python3-pytest", "git"])
    }

    /// `kiln-demo/rust:1`: Debian's rustc and cargo, git. `libc6-dev` is named because
    /// rustc's dependency is on the virtual `libc-dev`, which debootstrap does not resolve,
    /// and without it nothing links.
    pub fn demo_rust() -> Self {
        let mut spec = Self::new("kiln-demo/rust:1", &["cargo", "rustc", "libc6-dev", "git"]);
        // The sandbox has no network; cargo should say so rather than time out.
        spec.env.push("CARGO_NET_OFFLINE=true".to_owned());
        spec
    }

    /// `kiln-demo/node:1`: Node.js 18, git.
    pub fn demo_node() -> Self {
        Self::new("kiln-demo/node:1", &["nodejs", "git"])
    }

    /// The three images the demo dataset's samples name.
    pub fn demo_specs() -> Vec<Self> {
        vec![Self::demo_node(), Self::demo_python(), Self::demo_rust()]
    }

    /// The packages, sorted and deduplicated (the order given to debootstrap does not
    /// matter, so it must not change the cache key either).
    pub fn sorted_packages(&self) -> Vec<String> {
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        packages
    }

    /// Names the cached root filesystem: a hash of what debootstrap is asked to install.
    /// The mirror is left out on purpose: any mirror serves the same suite.
    pub fn rootfs_key(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("{CLEANUP_VERSION}\n{VARIANT}\n{}\n", self.suite));
        hasher.update(self.working_dir.as_bytes());
        for p in self.sorted_packages() {
            hasher.update(b"\n");
            hasher.update(p.as_bytes());
        }
        hex::encode(&hasher.finalize()[..8])
    }
}

/// `PATH`, a UTF-8 locale that exists without `locales` (glibc ≥ 2.35 has C.UTF-8 built
/// in) and UTC without needing `tzdata`.
pub fn default_env() -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "LANG=C.UTF-8".to_owned(),
        "TZ=UTC".to_owned(),
    ]
}

/// How images are built.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Holds debootstrapped root filesystems (`rootfs/<key>/`), downloaded packages
    /// (`debs/`) and scratch space (`work/`). Should be on the store's filesystem, so layer
    /// blobs can be hard-linked rather than copied.
    pub cache_dir: PathBuf,
    /// Debian mirror for debootstrap; `None` uses the host's (see [`crate::host_mirror`]).
    pub mirror: Option<String>,
    /// Rebuild images even when the store already has them (the cached root filesystem is
    /// still reused; delete `cache_dir` to debootstrap afresh).
    pub force: bool,
    pub compression: LayerCompression,
    /// Newer file mtimes are clamped to this (seconds since the epoch).
    pub mtime_clamp: u64,
}

impl BuildOptions {
    /// Defaults: the host's mirror, no forcing, zstd layers, [`DEFAULT_MTIME_CLAMP`].
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            cache_dir: cache_dir.to_owned(),
            mirror: None,
            force: false,
            compression: LayerCompression::default(),
            mtime_clamp: DEFAULT_MTIME_CLAMP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_key_ignores_package_order_but_not_content() {
        let a = ImageSpec::new("x/a:1", &["git", "python3"]);
        let b = ImageSpec::new("x/b:2", &["python3", "git", "git"]);
        let c = ImageSpec::new("x/a:1", &["python3"]);
        assert_eq!(a.rootfs_key(), b.rootfs_key());
        assert_ne!(a.rootfs_key(), c.rootfs_key());
        assert_eq!(a.rootfs_key().len(), 16);
    }

    #[test]
    fn demo_specs_are_valid_references() {
        for spec in ImageSpec::demo_specs() {
            kiln_image::Reference::parse(&spec.reference).unwrap();
            assert!(spec.packages.contains(&"git".to_owned()));
        }
    }
}
