//! [`build_base_image`]: a Debian root filesystem as a one-layer image in the store.

use std::path::Path;
use std::time::Instant;

use kiln_image::{Image, ImageError, ImageStore, ImportOptions};
use serde_json::{json, Value};

use crate::build_progress::{BuildEvent, BuildPhase, BuildProgress};
use crate::debootstrap::ensure_rootfs;
use crate::error::{EnvImageError, Result};
use crate::image_spec::{BuildOptions, ImageSpec, VARIANT};
use crate::layer_tar::LayerTarOptions;
use crate::oci_layout::{LayerBlob, OciLayout};

/// Label on every image this crate builds, so they can be told from pulled ones.
pub const BUILDER_LABEL: &str = "org.kiln.builder";

/// Builds `spec` into `store` and returns the stored image.
///
/// Skipped (returning the stored image) when the reference exists, unless
/// [`BuildOptions::force`]. The debootstrapped tree is cached in
/// [`BuildOptions::cache_dir`], so a forced rebuild only repacks and reimports, and gives the
/// same layer digest. Needs root (debootstrap, device nodes) and the Debian mirror.
pub fn build_base_image(
    spec: &ImageSpec,
    store: &ImageStore,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<Image> {
    if !options.force {
        if let Some(image) = existing(store, &spec.reference)? {
            progress.emit(BuildEvent::AlreadyBuilt {
                reference: spec.reference.clone(),
            });
            return Ok(image);
        }
    }
    let started = Instant::now();
    progress.emit(BuildEvent::Started {
        reference: spec.reference.clone(),
    });
    let rootfs = ensure_rootfs(spec, options, progress)?;
    let work = scratch_dir(options)?;
    let layout = OciLayout::create(work.path())?;
    let tar_options = LayerTarOptions {
        mtime_clamp: options.mtime_clamp,
        owner: None,
    };
    let layer = pack_layer(
        &layout,
        &rootfs,
        &tar_options,
        options,
        &spec.reference,
        progress,
    )?;
    let config = base_config(spec, &layer);
    layout.finish(&config, std::slice::from_ref(&layer), &spec.reference)?;
    let image = import_layout(store, &layout, &spec.reference, progress)?;
    progress.emit(BuildEvent::Finished {
        reference: spec.reference.clone(),
        layer_bytes: layer.size,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(image)
}

/// The OCI config of a base image: one layer, the spec's environment.
fn base_config(spec: &ImageSpec, layer: &LayerBlob) -> Value {
    let packages = spec.sorted_packages().join(" ");
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": spec.env,
            "WorkingDir": spec.working_dir,
            "Cmd": ["/bin/bash"],
            "Labels": {
                BUILDER_LABEL: "kiln-envimage",
                "org.kiln.debian.suite": spec.suite,
                "org.kiln.debian.packages": packages,
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
        "history": [{
            "created_by": format!(
                "debootstrap --variant={VARIANT} --include={} {}",
                packages.replace(' ', ","),
                spec.suite
            ),
        }],
    })
}

/// The stored image under `reference`, if any.
pub(crate) fn existing(store: &ImageStore, reference: &str) -> Result<Option<Image>> {
    match store.get(reference) {
        Ok(image) => Ok(Some(image)),
        Err(ImageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A scratch directory under the cache, removed when dropped.
pub(crate) fn scratch_dir(options: &BuildOptions) -> Result<tempfile::TempDir> {
    let work = options.cache_dir.join("work");
    std::fs::create_dir_all(&work).map_err(EnvImageError::io("create", &work))?;
    tempfile::tempdir_in(&work).map_err(EnvImageError::io("create scratch dir in", &work))
}

/// Packs `root` into a layer of `layout`, reporting bytes at most every 1% of the total.
pub(crate) fn pack_layer(
    layout: &OciLayout,
    root: &Path,
    tar_options: &LayerTarOptions,
    options: &BuildOptions,
    reference: &str,
    progress: &BuildProgress,
) -> Result<LayerBlob> {
    progress.phase(reference, BuildPhase::Packing);
    let mut last_reported = 0u64;
    let (layer, _) =
        layout.write_layer(root, tar_options, options.compression, |done, total| {
            if done == total || done - last_reported >= (total / 100).max(1 << 20) {
                last_reported = done;
                progress.emit(BuildEvent::PackBytes {
                    reference: reference.to_owned(),
                    done,
                    total,
                });
            }
        })?;
    Ok(layer)
}

/// Imports the single image of `layout` under `reference`.
pub(crate) fn import_layout(
    store: &ImageStore,
    layout: &OciLayout,
    reference: &str,
    progress: &BuildProgress,
) -> Result<Image> {
    progress.phase(reference, BuildPhase::Importing);
    let options = ImportOptions {
        reference: Some(reference.to_owned()),
        progress: progress.for_store(),
    };
    store
        .import(layout.dir(), &options)?
        .into_iter()
        .next()
        .ok_or_else(|| EnvImageError::invalid("import", "the store imported no image"))
}
