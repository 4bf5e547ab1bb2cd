//! One build step on top of a stored image, stored as that image plus one layer: the files
//! the step wrote (overlayfs's upper directory, whiteouts turned into OCI `.wh.` entries).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Instant;

use kiln_image::{Image, ImageStore};
use serde_json::{json, Value};

use super::chroot::{run_step, Step, HOST_CA};
use crate::base_image::{import_layout, pack_layer, scratch_dir};
use crate::build_progress::{BuildEvent, BuildPhase, BuildProgress};
use crate::error::{EnvImageError, Result};
use crate::image_spec::BuildOptions;
use crate::layer_tar::LayerTarOptions;
use crate::oci_layout::{LayerBlob, OciLayout};

/// overlayfs marks an opaque directory (its lower contents hidden) with this xattr.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What to run on top of `parent`, and how the result is described.
pub(crate) struct LayerStep<'a> {
    pub parent: &'a Image,
    pub reference: &'a str,
    /// Fills the upper directory before the step runs (a checkout), if anything.
    pub prepare: &'a dyn Fn(&Path) -> Result<()>,
    pub script: &'a str,
    pub cwd: &'a str,
    /// The environment of the step; with `image_env`, also the image's `Env`.
    pub env: &'a [(String, String)],
    /// The image config's `Env` (replaces the parent's).
    pub image_env: Vec<String>,
    pub working_dir: Option<&'a str>,
    pub labels: BTreeMap<String, String>,
    /// The history entry of the new layer.
    pub created_by: String,
}

/// Runs `step` and stores `parent` + the layer it wrote under `step.reference`.
pub(crate) fn build_layer(
    step: &LayerStep<'_>,
    store: &ImageStore,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<Image> {
    let started = Instant::now();
    let reference = step.reference;
    progress.emit(BuildEvent::Started {
        reference: reference.to_owned(),
    });
    let scratch = scratch_dir(options)?;
    let upper = scratch.path().join("upper");
    fs::create_dir_all(&upper).map_err(EnvImageError::io("create", &upper))?;
    progress.phase(reference, BuildPhase::Checkout);
    (step.prepare)(&upper)?;
    progress.phase(reference, BuildPhase::Installing);
    let pip_cache = options.cache_dir.join("pip");
    let lowerdir = step.parent.overlay_lowerdir()?;
    run_step(
        &Step {
            lowerdir: &lowerdir,
            upper: &upper,
            work: &scratch.path().join("work"),
            merged: &scratch.path().join("merged"),
            pip_cache: &pip_cache,
            host_ca: Some(Path::new(HOST_CA)).filter(|p| p.is_file()),
            env: step.env,
            cwd: step.cwd,
            script: step.script,
        },
        |line| {
            progress.emit(BuildEvent::Log {
                reference: reference.to_owned(),
                line: line.to_owned(),
            })
        },
    )?;
    convert_whiteouts(&upper)?;

    let layout = OciLayout::create(&scratch.path().join("layout"))?;
    let blobs_dir = store.root().join("blobs/sha256");
    for layer in step.parent.layers() {
        layout.link_blob(
            &blobs_dir.join(layer.digest.hex()),
            &layer.digest.to_string(),
        )?;
    }
    let tar_options = LayerTarOptions {
        mtime_clamp: options.mtime_clamp,
        owner: None,
    };
    let layer = pack_layer(&layout, &upper, &tar_options, options, reference, progress)?;
    let config = child_config(read_config(store, step.parent)?, step, &layer)?;
    let mut layers: Vec<LayerBlob> = step
        .parent
        .layers()
        .iter()
        .map(|l| LayerBlob {
            digest: l.digest.to_string(),
            diff_id: l.diff_id.to_string(),
            size: l.size,
            media_type: l.media_type.clone(),
        })
        .collect();
    layers.push(layer.clone());
    layout.finish(&config, &layers, reference)?;
    let image = import_layout(store, &layout, reference, progress)?;
    progress.emit(BuildEvent::Finished {
        reference: reference.to_owned(),
        layer_bytes: layer.size,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(image)
}

fn read_config(store: &ImageStore, image: &Image) -> Result<Value> {
    let path = store
        .root()
        .join("blobs/sha256")
        .join(image.config_digest().hex());
    let bytes = fs::read(&path).map_err(EnvImageError::io("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| EnvImageError::Json {
        what: format!("config of {}", image.reference()),
        source,
    })
}

/// The parent's config plus the layer's diff_id, a history entry, the step's `Env`,
/// working directory and labels.
fn child_config(mut config: Value, step: &LayerStep<'_>, layer: &LayerBlob) -> Result<Value> {
    let malformed = |what: &str| {
        EnvImageError::invalid(
            "parent image config",
            format!("{}: {what}", step.parent.reference()),
        )
    };
    let obj = config
        .as_object_mut()
        .ok_or_else(|| malformed("not an object"))?;
    obj.get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or_else(|| malformed("no rootfs.diff_ids"))?
        .push(json!(layer.diff_id));
    if let Some(history) = obj
        .entry("history")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        history.push(json!({ "created_by": step.created_by }));
    }
    let inner = obj
        .entry("config")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| malformed("config is not an object"))?;
    inner.insert("Env".into(), json!(step.image_env));
    if let Some(dir) = step.working_dir {
        inner.insert("WorkingDir".into(), json!(dir));
    }
    let labels = inner.entry("Labels").or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    let labels = labels
        .as_object_mut()
        .ok_or_else(|| malformed("Labels is not an object"))?;
    for (key, value) in &step.labels {
        labels.insert(key.clone(), json!(value));
    }
    Ok(config)
}

/// Rewrites overlayfs's whiteouts in `upper` as OCI ones: a 0:0 character device `name`
/// becomes an empty file `.wh.name`; an opaque directory gets a `.wh..wh..opq` file (its
/// `trusted.overlay.*` xattrs are not packed).
pub(crate) fn convert_whiteouts(upper: &Path) -> Result<()> {
    let entries = fs::read_dir(upper).map_err(EnvImageError::io("list", upper))?;
    for entry in entries {
        let entry = entry.map_err(EnvImageError::io("list", upper))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(EnvImageError::io("stat", &path))?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            fs::remove_file(&path).map_err(EnvImageError::io("remove", &path))?;
            let mut name = std::ffi::OsString::from(".wh.");
            name.push(entry.file_name());
            let marker = upper.join(name);
            fs::write(&marker, b"").map_err(EnvImageError::io("write", &marker))?;
        } else if kind.is_dir() {
            if matches!(xattr::get(&path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y") {
                let marker = path.join(".wh..wh..opq");
                fs::write(&marker, b"").map_err(EnvImageError::io("write", &marker))?;
            }
            convert_whiteouts(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_devices_become_wh_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("kept"), b"x").unwrap();
        // mknod needs root; without it there is nothing to convert and the test checks
        // only that ordinary files are left alone.
        let made = std::process::Command::new("mknod")
            .arg(sub.join("gone"))
            .args(["c", "0", "0"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        convert_whiteouts(dir.path()).unwrap();
        assert_eq!(fs::read(sub.join("kept")).unwrap(), b"x");
        if made {
            assert!(!sub.join("gone").exists());
            assert_eq!(fs::read(sub.join(".wh.gone")).unwrap(), b"");
        }
    }
}
