//! Importing OCI layouts and `docker save` archives into a store; layer sharing and GC.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_image::{ImageError, ImageStore, ImportOptions, LayerUser, Progress, ProgressEvent};
use support::{digest, docker_save_tar, layer_tar, tar_dir, write_oci_layout, Entry, TestImage};

fn base_layer() -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/os-release", b"ID=kiln\n", 0o644),
        Entry::Dir("var/cache/", 0o755),
        Entry::File("var/cache/old", b"stale", 0o644),
        Entry::Dir("tmp/", 0o1777),
        Entry::File("tmp/doomed", b"x", 0o644),
    ])
}

fn top_layer(tag: &[u8]) -> Vec<u8> {
    layer_tar(&[
        Entry::File("tmp/.wh.doomed", b"", 0o644),
        Entry::Dir("var/cache/", 0o755),
        Entry::File("var/cache/.wh..wh..opq", b"", 0o644),
        Entry::File("var/cache/new", b"fresh", 0o644),
        Entry::File("app", tag, 0o755),
    ])
}

fn layer_count(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("layers/sha256"))
        .unwrap()
        .count()
}

fn blob_count(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

fn recorder() -> (Progress, Arc<Mutex<Vec<ProgressEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        Progress::new(move |e| sink.lock().unwrap().push(e.clone())),
        events,
    )
}

#[test]
fn imports_oci_layout_directory_with_whiteouts_applied_by_overlayfs() {
    let img = TestImage::new(
        &[base_layer(), top_layer(b"v1")],
        true,
        &["PATH=/usr/bin", "LANG=C.UTF-8"],
        "/work",
    );
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&img, "example.com/kiln/base:1")]);
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();

    let (progress, events) = recorder();
    let images = store
        .import(
            layout.path(),
            &ImportOptions {
                reference: None,
                progress,
            },
        )
        .unwrap();
    assert_eq!(images.len(), 1);
    let image = store.get("example.com/kiln/base:1").unwrap();
    assert_eq!(image, images[0]);
    assert_eq!(image.manifest_digest().to_string(), img.manifest_digest());
    assert_eq!(image.config_digest().to_string(), digest(&img.config));
    assert_eq!(image.config().env_var("LANG"), Some("C.UTF-8"));
    assert_eq!(image.config().working_dir.as_deref(), Some("/work"));
    assert_eq!(image.config().user.as_deref(), Some("1000:1000"));
    assert_eq!(image.config().cmd, vec!["/bin/sh"]);
    let diff_ids: Vec<String> = image
        .layers()
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect();
    assert_eq!(diff_ids, img.diff_ids);

    // Base first; overlay order is the reverse.
    let dirs = image.layer_dirs();
    assert_eq!(dirs.len(), 2);
    assert!(dirs[0].join("etc/os-release").is_file());
    assert!(dirs[1].join("app").is_file());
    let lower = image.overlay_lowerdir().unwrap();
    assert_eq!(
        lower,
        format!("{}:{}", dirs[1].display(), dirs[0].display())
    );

    let events = events.lock().unwrap();
    assert!(matches!(
        events.first(),
        Some(ProgressEvent::Resolved { layers: 2, .. })
    ));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ProgressEvent::LayerDone { .. }))
            .count(),
        2
    );
    assert!(matches!(
        events.last(),
        Some(ProgressEvent::Committed { .. })
    ));

    // The point of the store: overlayfs stacks the layers and sees the whiteouts.
    let mnt = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("lowerdir={lower}"),
        ])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(status.success(), "overlay mount failed");
    let merged = |p: &str| mnt.path().join(p);
    let seen = (
        fs::read_to_string(merged("etc/os-release")).ok(),
        merged("tmp/doomed").exists(),
        merged("tmp").is_dir(),
        merged("var/cache/old").exists(),
        fs::read_to_string(merged("var/cache/new")).ok(),
    );
    let _ = std::process::Command::new("umount")
        .arg(mnt.path())
        .status();
    assert_eq!(
        seen,
        (
            Some("ID=kiln\n".into()),
            false,
            true,
            false,
            Some("fresh".into())
        ),
        "(os-release, whited-out file visible, tmp dir, opaque-hidden file visible, new file)"
    );
}

#[test]
fn imports_oci_layout_tar_under_given_reference() {
    let img = TestImage::new(&[base_layer()], false, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&img, "latest")]);
    let tar = tempfile::NamedTempFile::new().unwrap();
    tar_dir(layout.path(), tar.path());

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    // A bare tag names no repository.
    let err = store
        .import(tar.path(), &ImportOptions::default())
        .unwrap_err();
    assert!(matches!(err, ImageError::NoReference(_)), "{err}");

    let opts = ImportOptions {
        reference: Some("kiln/plain".into()),
        ..Default::default()
    };
    let images = store.import(tar.path(), &opts).unwrap();
    assert_eq!(images[0].reference(), "kiln/plain:latest");
    assert_eq!(
        store
            .get("kiln/plain")
            .unwrap()
            .manifest_digest()
            .to_string(),
        img.manifest_digest()
    );
    assert_eq!(
        images[0].layers()[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    // Only the image's own blobs stay: the tar's other files were collected.
    assert_eq!(blob_count(&store), 3);
}

#[test]
fn picks_linux_amd64_from_a_nested_index() {
    let amd = TestImage::new(&[top_layer(b"amd64")], true, &[], "/");
    let arm = TestImage::new(&[top_layer(b"arm64")], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&amd, "unused"), (&arm, "unused")]);
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm.manifest_digest(),
              "size": arm.manifest.len(), "platform": { "architecture": "arm64", "os": "linux" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd.manifest_digest(),
              "size": amd.manifest.len(), "platform": { "architecture": "amd64", "os": "linux" } },
        ],
    }))
    .unwrap();
    fs::write(
        layout
            .path()
            .join("blobs/sha256")
            .join(support::sha256_hex(&nested)),
        &nested,
    )
    .unwrap();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest(&nested), "size": nested.len(),
        "annotations": { "io.containerd.image.name": "example.com/multi:1" } }] });
    fs::write(
        layout.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let images = store
        .import(layout.path(), &ImportOptions::default())
        .unwrap();
    assert_eq!(
        images[0].manifest_digest().to_string(),
        amd.manifest_digest()
    );
    assert_eq!(
        fs::read(images[0].layer_dirs()[0].join("app")).unwrap(),
        b"amd64"
    );
}

fn import_docker_save(legacy: bool) {
    // The same layer twice (Docker writes the second as a symlink in the legacy layout).
    let shared = layer_tar(&[Entry::File("marker", b"same", 0o644)]);
    let img = TestImage::new(
        &[base_layer(), shared.clone(), top_layer(b"d"), shared],
        false,
        &["A=1"],
        "/srv",
    );
    let tar = tempfile::NamedTempFile::new().unwrap();
    docker_save_tar(
        tar.path(),
        &[(&img, &["kiln/docker:1", "kiln/docker:latest"])],
        legacy,
    );

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let images = store.import(tar.path(), &ImportOptions::default()).unwrap();
    let refs: Vec<&str> = images.iter().map(|i| i.reference()).collect();
    assert_eq!(refs, ["kiln/docker:1", "kiln/docker:latest"]);
    let image = store.get("kiln/docker").unwrap();
    assert_eq!(image.config_digest().to_string(), digest(&img.config));
    assert_eq!(image.config().env_var("A"), Some("1"));
    assert_eq!(image.layers().len(), 4);
    // The repeated layer is listed once, at its upper position.
    assert_eq!(image.layer_dirs().len(), 3);
    assert_eq!(layer_count(&store), 3);
    assert!(image.layer_dirs()[2].join("marker").is_file());
    // docker save has no manifest; the one we wrote is stored and named by its digest.
    let manifest = fs::read(
        store
            .root()
            .join("blobs/sha256")
            .join(image.manifest_digest().hex()),
    )
    .unwrap();
    assert_eq!(digest(&manifest), image.manifest_digest().to_string());
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn imports_legacy_docker_save_tar() {
    import_docker_save(true);
}

#[test]
fn imports_docker_25_save_tar() {
    import_docker_save(false);
}

#[test]
fn shares_layers_between_images_and_collects_them_on_removal() {
    let base = base_layer();
    let a = TestImage::new(&[base.clone(), top_layer(b"a")], true, &[], "/");
    let b = TestImage::new(&[base, top_layer(b"b")], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&a, "kiln/a:1")]);
    let layout_b = tempfile::tempdir().unwrap();
    write_oci_layout(layout_b.path(), &[(&b, "kiln/b:1")]);

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    store
        .import(layout.path(), &ImportOptions::default())
        .unwrap();
    let base_dir = store.get("kiln/a:1").unwrap().layer_dirs()[0].clone();
    let base_inode = fs::metadata(&base_dir).unwrap().ino();

    let (progress, events) = recorder();
    store
        .import(
            layout_b.path(),
            &ImportOptions {
                reference: None,
                progress,
            },
        )
        .unwrap();
    let image_b = store.get("kiln/b:1").unwrap();
    assert_eq!(image_b.layer_dirs()[0], base_dir);
    assert_eq!(
        fs::metadata(&base_dir).unwrap().ino(),
        base_inode,
        "base not re-unpacked"
    );
    let events = events.lock().unwrap();
    assert!(
        matches!(events[1], ProgressEvent::LayerCached { index: 0, .. }),
        "{events:?}"
    );
    assert!(
        matches!(events[2], ProgressEvent::LayerUnpacking { index: 1, .. }),
        "{events:?}"
    );
    assert_eq!(layer_count(&store), 3);

    let gc = store.remove("kiln/a:1").unwrap();
    assert_eq!(
        (gc.layers_removed, gc.blobs_removed),
        (1, 3),
        "a's top layer; its manifest, config, top blob"
    );
    assert!(matches!(
        store.get("kiln/a:1"),
        Err(ImageError::NotFound(_))
    ));
    assert!(
        base_dir.join("etc/os-release").is_file(),
        "b still uses the base layer"
    );
    assert_eq!(layer_count(&store), 2);
    assert!(matches!(
        store.remove("kiln/a:1"),
        Err(ImageError::NotFound(_))
    ));

    store.remove("kiln/b:1").unwrap();
    assert_eq!(layer_count(&store), 0);
    assert_eq!(blob_count(&store), 0);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn layers_a_sandbox_uses_are_not_deleted_under_it() {
    let base = base_layer();
    let a = TestImage::new(&[base.clone(), top_layer(b"a")], true, &[], "/");
    let b = TestImage::new(&[base, top_layer(b"b")], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&a, "kiln/a:1"), (&b, "kiln/b:1")]);
    let root = tempfile::tempdir().unwrap();
    // What the runtime would report: one live sandbox on image a.
    let users = Arc::new(Mutex::new(Vec::new()));
    let seen = users.clone();
    let store = ImageStore::open(root.path())
        .unwrap()
        .with_layer_users(Arc::new(move || seen.lock().unwrap().clone()));
    store
        .import(layout.path(), &ImportOptions::default())
        .unwrap();
    let a_dirs = store.get("kiln/a:1").unwrap().layer_dirs();
    *users.lock().unwrap() = vec![LayerUser {
        name: "sandbox sess_1".into(),
        layers: a_dirs.clone(),
    }];

    // Refused, naming the sandbox; nothing changes.
    match store.remove("kiln/a:1") {
        Err(ImageError::InUse { reference, users }) => {
            assert_eq!(reference, "kiln/a:1");
            assert_eq!(users, ["sandbox sess_1"]);
        }
        other => panic!("removed under a live sandbox: {other:?}"),
    }
    assert!(store.get("kiln/a:1").is_ok());
    assert_eq!(layer_count(&store), 3);
    // An image sharing only the base layer with the sandbox can go: b's top layer is
    // deleted, the shared base stays for a.
    let gc = store.remove("kiln/b:1").unwrap();
    assert_eq!((gc.layers_removed, gc.layers_kept), (1, 0));

    // Forced: the image goes, its layers stay while the sandbox lives …
    let gc = store.remove_forced("kiln/a:1").unwrap();
    assert_eq!((gc.layers_removed, gc.layers_kept), (0, 2));
    assert!(matches!(
        store.get("kiln/a:1"),
        Err(ImageError::NotFound(_))
    ));
    assert!(a_dirs.iter().all(|d| d.is_dir()));
    // … and a later collection deletes them once it has ended.
    users.lock().unwrap().clear();
    let gc = store.gc().unwrap();
    assert_eq!((gc.layers_removed, gc.layers_kept), (2, 0));
    assert_eq!(layer_count(&store), 0);
}

#[test]
fn tag_shares_everything() {
    let img = TestImage::new(&[base_layer()], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&img, "kiln/t:1")]);
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    store
        .import(layout.path(), &ImportOptions::default())
        .unwrap();
    store.tag("kiln/t:1", "kiln/t:2").unwrap();
    store.remove("kiln/t:1").unwrap();
    assert!(store.get("kiln/t:2").unwrap().layer_dirs()[0]
        .join("etc")
        .is_dir());
}

#[test]
fn rejects_corrupt_blobs_and_wrong_diff_ids_without_publishing() {
    let img = TestImage::new(&[base_layer()], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&img, "kiln/bad:1")]);
    let blob = layout
        .path()
        .join("blobs/sha256")
        .join(support::sha256_hex(&img.layer_blobs[0]));
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let err = store
        .import(layout.path(), &ImportOptions::default())
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");

    // A config whose diff_id does not match the layer's content.
    let mut wrong = TestImage::new(&[base_layer()], true, &[], "/");
    wrong.diff_ids = vec![digest(b"something else")];
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": wrong.diff_ids },
    }))
    .unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&wrong.manifest).unwrap();
    manifest["config"]["digest"] = digest(&config).into();
    manifest["config"]["size"] = config.len().into();
    wrong.config = config;
    wrong.manifest = serde_json::to_vec(&manifest).unwrap();
    let layout2 = tempfile::tempdir().unwrap();
    write_oci_layout(layout2.path(), &[(&wrong, "kiln/bad:2")]);
    let err = store
        .import(layout2.path(), &ImportOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, ImageError::DigestMismatch { ref what, .. } if what.contains("diff_id")),
        "{err}"
    );

    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        layer_count(&store),
        0,
        "a layer that failed verification is never published"
    );
    assert_eq!(
        fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0,
        "temp dirs cleaned"
    );
}

#[test]
fn concurrent_imports_of_the_same_layers_unpack_each_once() {
    let img = TestImage::new(&[base_layer(), top_layer(b"c")], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&img, "kiln/c:1")]);
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let unpacked = Arc::new(Mutex::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (store, path, unpacked) =
                (store.clone(), layout.path().to_owned(), unpacked.clone());
            std::thread::spawn(move || {
                let progress = Progress::new(move |e| {
                    if matches!(e, ProgressEvent::LayerDone { .. }) {
                        *unpacked.lock().unwrap() += 1;
                    }
                });
                let reference = Some(format!("kiln/c:{i}"));
                store
                    .import(
                        &path,
                        &ImportOptions {
                            reference,
                            progress,
                        },
                    )
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.list().unwrap().len(), 6);
    assert_eq!(layer_count(&store), 2);
    // LayerDone is reported by whoever waited on the lock too, so count directories instead:
    // what matters is that each layer exists once and is complete.
    assert!(*unpacked.lock().unwrap() >= 2);
    for i in 0..6 {
        let image = store.get(&format!("kiln/c:{i}")).unwrap();
        assert_eq!(fs::read(image.layer_dirs()[1].join("app")).unwrap(), b"c");
    }
    // A second store handle on the same root (another process, in effect) sees it all.
    let again = ImageStore::open(Path::new(root.path())).unwrap();
    assert_eq!(again.list().unwrap().len(), 6);
}

/// An import given up mid-way (`Progress::cancelled_by`) stops at its next check: while
/// the first layer unpacks, or while the archive is read, nothing is published or recorded.
#[test]
fn a_cancelled_import_stops_and_records_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let img = TestImage::new(&[base_layer(), top_layer(b"v1")], true, &[], "/");
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), &[(&img, "kiln/cancel:1")]);
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();

    // Given up as the first layer starts unpacking: that layer is not published.
    let flag = Arc::new(AtomicBool::new(false));
    let (seen, stop) = (Arc::new(Mutex::new(Vec::new())), flag.clone());
    let sink = seen.clone();
    let progress = Progress::new(move |e| {
        if matches!(e, ProgressEvent::LayerUnpacking { .. }) {
            stop.store(true, Ordering::SeqCst);
        }
        sink.lock().unwrap().push(e.clone());
    })
    .cancelled_by(flag);
    let options = ImportOptions {
        reference: None,
        progress,
    };
    let got = store.import(layout.path(), &options);
    assert!(matches!(got, Err(ImageError::Cancelled)), "{got:?}");
    assert!(matches!(
        store.get("kiln/cancel:1"),
        Err(ImageError::NotFound(_))
    ));
    assert_eq!(layer_count(&store), 0, "the cut-off layer was published");
    let unpacked = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, ProgressEvent::LayerUnpacking { .. }))
        .count();
    assert_eq!(unpacked, 1, "went on past the first layer");

    // A tar given up before it is read: the read stops; the same import, not given up,
    // succeeds.
    let tarball = root.path().join("layout.tar");
    tar_dir(layout.path(), &tarball);
    let given_up = ImportOptions {
        reference: None,
        progress: Progress::none().cancelled_by(Arc::new(AtomicBool::new(true))),
    };
    let got = store.import(&tarball, &given_up);
    assert!(matches!(got, Err(ImageError::Cancelled)), "{got:?}");
    store.import(&tarball, &ImportOptions::default()).unwrap();
    assert!(store.get("kiln/cancel:1").is_ok());
}
