//! A tiny image in an image store: enough for services that look an image up before they
//! ask a runtime for a sandbox, with nothing in it that needs root to unpack.
use std::path::Path;

use kiln_envimage::{LayerCompression, LayerTarOptions, OciLayout};
use kiln_image::{ImageStore, ImportOptions};
use serde_json::json;

/// Imports an image named `reference` (one layer: `/testbed/hello.txt`; `PATH=/bin`,
/// working directory `/testbed`) into the image store at `images_dir`, creating the store
/// if needed. More names for it: [`ImageStore::tag`].
///
/// # Panics
/// When the image cannot be written or imported: the test cannot run.
pub fn install_tiny_image(images_dir: &Path, reference: &str) -> ImageStore {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("rootfs");
    std::fs::create_dir_all(root.join("testbed")).expect("mkdir");
    std::fs::write(root.join("testbed/hello.txt"), "hello from the image\n").expect("write");
    let layout = OciLayout::create(&work.path().join("layout")).expect("layout");
    let (layer, _) = layout
        .write_layer(
            &root,
            // Owned by whoever runs the test, so that unpacking needs no root.
            &LayerTarOptions::default(),
            LayerCompression::None,
            |_, _| {},
        )
        .expect("layer");
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "TZ=UTC"], "WorkingDir": "/testbed"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    });
    layout
        .finish(&config, std::slice::from_ref(&layer), reference)
        .expect("finish");
    let store = ImageStore::open(images_dir).expect("image store");
    store
        .import(
            layout.dir(),
            &ImportOptions {
                reference: Some(reference.to_string()),
                ..Default::default()
            },
        )
        .expect("import image");
    store
}
