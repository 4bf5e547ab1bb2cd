//! Kiln's OCI image store.
//!
//! Images arrive from an OCI image layout, a `docker save` archive ([`ImageStore::import`]) or
//! a registry ([`ImageStore::pull`]). Every blob is verified against its digest and kept under
//! `blobs/sha256/`; every layer is unpacked **once** into `layers/sha256/<diff_id>/`, with OCI
//! whiteouts converted to overlayfs's own form, and shared by all images that contain it.
//! A sandbox stacks [`Image::layer_dirs`] read-only as overlayfs lower dirs
//! ([`Image::overlay_lowerdir`] gives the mount option, topmost first) and reads
//! [`Image::config`] for `Env`, `WorkingDir`, `User` and `Cmd`.
//!
//! Unpacking creates device nodes, sets owners and `trusted.*` xattrs: it needs root.
//!
//! ```no_run
//! # async fn demo() -> kiln_image::Result<()> {
//! use kiln_image::{ImageStore, PullOptions};
//! let store = kiln_image::ImageStore::open(std::path::Path::new("/var/lib/kiln/images"))?;
//! let image = store.pull("127.0.0.1:5000/kiln/python:3.11", &PullOptions::default()).await?;
//! let lowerdir = image.overlay_lowerdir()?; // "…/layers/sha256/<top>:…:<base>"
//! let env = &image.config().env;
//! # let _ = (lowerdir, env); Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod blob_store;
mod compression;
mod digest;
mod docker_archive;
mod error;
mod image;
mod image_index;
mod import;
mod import_source;
mod layer_store;
mod layer_unpack;
mod manifest;
mod progress;
mod pull;
mod reference;
mod registry_client;
mod store;
mod store_lock;

pub use compression::Compression;
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use image::{Image, ImageConfig, LayerInfo};
pub use import::ImportOptions;
pub use layer_unpack::{unpack_layer, UnpackStats, OVERLAY_OPAQUE_XATTR};
pub use progress::{Progress, ProgressEvent};
pub use pull::PullOptions;
pub use reference::Reference;
pub use registry_client::{RegistryConfig, RegistryCredentials};
pub use store::{GcStats, ImageStore, LayerUser, LayerUsers};
