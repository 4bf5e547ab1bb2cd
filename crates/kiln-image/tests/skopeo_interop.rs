//! Archives written by a real tool: `skopeo copy` turns an OCI layout built here into a
//! `docker-archive` tar and an `oci-archive` tar, which we then import. Skips (with a note)
//! when `skopeo` is not installed (`apt-get install skopeo`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::process::Command;

use kiln_image::{ImageStore, ImportOptions};
use support::{layer_tar, write_oci_layout, Entry, TestImage};

fn skopeo_copy(from: &str, to: &str) -> bool {
    match Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", from, to])
        .status()
    {
        Ok(s) => {
            assert!(s.success(), "skopeo copy {from} {to} failed");
            true
        }
        Err(_) => {
            eprintln!("SKIP: skopeo not installed");
            false
        }
    }
}

#[test]
fn imports_what_skopeo_writes() {
    let base = layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/gone", b"x", 0o644),
    ]);
    let top = layer_tar(&[
        Entry::File("etc/.wh.gone", b"", 0o644),
        Entry::File("bin", b"b", 0o755),
    ]);
    let img = TestImage::new(&[base, top], true, &["K=v"], "/w");
    let src = tempfile::tempdir().unwrap();
    write_oci_layout(src.path(), &[(&img, "latest")]);
    let out = tempfile::tempdir().unwrap();
    let docker_tar = out.path().join("docker.tar");
    let oci_tar = out.path().join("oci.tar");
    let from = format!("oci:{}:latest", src.path().display());
    if !skopeo_copy(
        &from,
        &format!("docker-archive:{}:kiln/skopeo:d", docker_tar.display()),
    ) {
        return;
    }
    skopeo_copy(&from, &format!("oci-archive:{}:latest", oci_tar.display()));

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let from_docker = store
        .import(&docker_tar, &ImportOptions::default())
        .unwrap();
    assert_eq!(from_docker[0].reference(), "kiln/skopeo:d");
    let opts = ImportOptions {
        reference: Some("kiln/skopeo:oci".into()),
        ..Default::default()
    };
    let from_oci = store.import(&oci_tar, &opts).unwrap();
    for image in [&from_docker[0], &from_oci[0]] {
        assert_eq!(image.config().env_var("K"), Some("v"));
        let diff_ids: Vec<String> = image
            .layers()
            .iter()
            .map(|l| l.diff_id.to_string())
            .collect();
        assert_eq!(diff_ids, img.diff_ids, "{}", image.reference());
    }
    // Same diff_ids: the second import found both layers already unpacked.
    assert_eq!(from_docker[0].layer_dirs(), from_oci[0].layer_dirs());
    assert_eq!(
        std::fs::read_dir(root.path().join("layers/sha256"))
            .unwrap()
            .count(),
        2
    );
}
