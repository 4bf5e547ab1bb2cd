//! Builds Kiln's environment images and puts them in a [`kiln_image::ImageStore`].
//!
//! - [`build_base_image`]: `debootstrap --variant=minbase --include=<packages>` of a Debian
//!   suite, cleaned of build leftovers, packed as **one deterministic layer** (sorted entries,
//!   clamped mtimes, fixed compression), written as an OCI image layout and imported. The
//!   debootstrapped tree is cached by package list, so a rebuild only repacks.
//! - [`build_sample_layer`]: a base image plus one layer with a sample's repository checked
//!   out at its base commit in `/testbed`, `.git` included.
//! - [`swebench::build_swebench_images`]: the images the SWE-bench harness would build for
//!   its records (base, environment and instance layers; see [`swebench`]).
//! - [`build_demo_images`]: both, for every sample of the bundled `kiln-demo` dataset
//!   (`kiln-demo/{python,rust,node}:1` and `kiln-demo/sample/<instance_id>:1`).
//!
//! Building needs root and a Debian mirror (the host's own, see [`host_mirror`]). Progress
//! arrives as [`BuildEvent`]s: phases, debootstrap's output lines, bytes packed, and the
//! store's import events.
//!
//! ```no_run
//! # fn demo() -> kiln_envimage::Result<()> {
//! use kiln_envimage::{build_base_image, BuildOptions, BuildProgress, ImageSpec};
//! let store = kiln_image::ImageStore::open(std::path::Path::new("/var/lib/kiln/images"))?;
//! let options = BuildOptions::new(std::path::Path::new("/var/lib/kiln/envimage-cache"));
//! let progress = BuildProgress::new(|event| eprintln!("{event:?}"));
//! let image = build_base_image(&ImageSpec::demo_python(), &store, &options, &progress)?;
//! println!("{} -> {}", image.reference(), image.overlay_lowerdir()?);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod apt_mirror;
mod base_image;
mod build_progress;
mod debootstrap;
mod demo_dataset;
mod error;
mod image_spec;
mod layer_tar;
mod oci_layout;
mod rootfs_cleanup;
mod sample_image;
pub mod swebench;
mod terminal;
mod tool_command;

pub use apt_mirror::{find_mirror, host_mirror, DEFAULT_MIRROR};
pub use base_image::{build_base_image, BUILDER_LABEL};
pub use build_progress::{BuildEvent, BuildPhase, BuildProgress};
pub use demo_dataset::{
    build_demo_images, bundle_path, read_samples, sample_reference, DemoImages, SampleRecord,
};
pub use error::{EnvImageError, Result};
pub use image_spec::{default_env, BuildOptions, ImageSpec, DEFAULT_SUITE, VARIANT};
pub use layer_tar::{pack_tree, LayerTarOptions, PackStats, DEFAULT_MTIME_CLAMP};
pub use oci_layout::{LayerBlob, LayerCompression, OciLayout};
pub use rootfs_cleanup::clean_rootfs;
pub use sample_image::{build_sample_layer, BASE_COMMIT_LABEL, BASE_IMAGE_LABEL};
pub use terminal::terminal_progress;
