//! The OCI layouts this crate writes are importable by `kiln-image`, and sample layers stack
//! on a base image. Fast: a tiny hand-made root filesystem stands in for debootstrap's.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use kiln_envimage::{
    build_sample_layer, BuildEvent, BuildOptions, BuildProgress, LayerCompression, LayerTarOptions,
    OciLayout, BASE_COMMIT_LABEL,
};
use kiln_image::{Image, ImageStore};
use serde_json::json;

fn tiny_rootfs(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("testbed")).unwrap();
    fs::write(root.join("etc/os-release"), "ID=tiny\n").unwrap();
    fs::write(root.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/hello"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
}

/// Writes `root` as a one-layer image layout and imports it under `reference`.
fn import_tiny(store: &ImageStore, work: &Path, compression: LayerCompression) -> Image {
    let rootfs = work.join("rootfs");
    tiny_rootfs(&rootfs);
    let layout = OciLayout::create(&work.join("layout")).unwrap();
    let (layer, stats) = layout
        .write_layer(&rootfs, &LayerTarOptions::default(), compression, |_, _| {})
        .unwrap();
    assert_eq!(
        stats.content_bytes,
        ("ID=tiny\n".len() + "#!/bin/sh\necho hello\n".len()) as u64
    );
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "TZ=UTC"],
            "WorkingDir": "/testbed",
            "Labels": { "org.kiln.test": "yes" },
        },
        "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
    });
    layout
        .finish(&config, std::slice::from_ref(&layer), "tiny/base:1")
        .unwrap();
    let images = store
        .import(
            layout.dir(),
            &kiln_image::ImportOptions {
                reference: Some("tiny/base:1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(images.len(), 1);
    let image = images.into_iter().next().unwrap();
    assert_eq!(image.layers()[0].diff_id.to_string(), layer.diff_id);
    assert_eq!(image.layers()[0].digest.to_string(), layer.digest);
    image
}

#[test]
fn a_written_layout_imports_with_its_files_and_config() {
    for compression in [
        LayerCompression::Zstd,
        LayerCompression::Gzip,
        LayerCompression::None,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&tmp.path().join("store")).unwrap();
        let image = import_tiny(&store, tmp.path(), compression);
        assert_eq!(image.layers()[0].media_type, compression.media_type());
        let again = store.get("tiny/base:1").unwrap();
        assert_eq!(again.manifest_digest(), image.manifest_digest());
        assert_eq!(image.config().working_dir.as_deref(), Some("/testbed"));
        assert_eq!(image.config().env_var("TZ"), Some("UTC"));
        let dir = &image.layer_dirs()[0];
        assert_eq!(
            fs::read_to_string(dir.join("etc/os-release")).unwrap(),
            "ID=tiny\n"
        );
        let mode = fs::metadata(dir.join("usr/bin/hello"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(
            fs::read_link(dir.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(dir.join("testbed").is_dir());
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bundle with two commits; returns (bundle, first commit, second commit).
fn two_commit_bundle(work: &Path) -> (std::path::PathBuf, String, String) {
    let repo = work.join("repo");
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    fs::write(repo.join("lib.py"), "VERSION = 1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    fs::write(repo.join("lib.py"), "VERSION = 2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    let bundle = work.join("repo.bundle");
    git(
        &repo,
        &["bundle", "create", "-q", bundle.to_str().unwrap(), "--all"],
    );
    (bundle, first, second)
}

#[test]
fn a_sample_layer_stacks_the_checkout_on_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let base = import_tiny(&store, tmp.path(), LayerCompression::Zstd);
    let (bundle, first, second) = two_commit_bundle(tmp.path());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let progress = BuildProgress::new(move |e| sink.lock().unwrap().push(e.clone()));
    let mut options = BuildOptions::new(&tmp.path().join("cache"));

    let reference = "tiny/sample/one:1";
    let image = build_sample_layer(
        &base, &bundle, &first, reference, &store, &options, &progress,
    )
    .unwrap();
    assert_eq!(image.layers().len(), 2);
    assert_eq!(image.layers()[0], base.layers()[0]);
    assert_eq!(image.config().labels.get(BASE_COMMIT_LABEL), Some(&first));
    assert_eq!(
        image
            .config()
            .labels
            .get("org.kiln.test")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(image.config().env_var("TZ"), Some("UTC"));
    let testbed = image.layer_dirs()[1].join("testbed");
    assert_eq!(
        fs::read_to_string(testbed.join("lib.py")).unwrap(),
        "VERSION = 1\n"
    );
    assert_eq!(git(&testbed, &["rev-parse", "HEAD"]), first);
    // The whole history is there, the remote pointing at the build host is not.
    assert_eq!(
        git(
            &testbed,
            &["rev-parse", "--verify", &format!("{second}^{{commit}}")]
        ),
        second
    );
    assert_eq!(git(&testbed, &["remote"]), "");
    let meta = fs::metadata(testbed.join("lib.py")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    // Asked again: recognised as built.
    events.lock().unwrap().clear();
    let again = build_sample_layer(
        &base, &bundle, &first, reference, &store, &options, &progress,
    )
    .unwrap();
    assert_eq!(again.manifest_digest(), image.manifest_digest());
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, BuildEvent::AlreadyBuilt { .. })));

    // Forced: a fresh clone, yet the very same layer.
    options.force = true;
    let rebuilt = build_sample_layer(
        &base, &bundle, &first, reference, &store, &options, &progress,
    )
    .unwrap();
    assert_eq!(rebuilt.layers()[1].diff_id, image.layers()[1].diff_id);
    assert_eq!(rebuilt.manifest_digest(), image.manifest_digest());

    // Another commit under the same reference is not mistaken for the built one.
    options.force = false;
    let moved = build_sample_layer(
        &base, &bundle, &second, reference, &store, &options, &progress,
    )
    .unwrap();
    assert_ne!(moved.layers()[1].diff_id, image.layers()[1].diff_id);
    let testbed = moved.layer_dirs()[1].join("testbed");
    assert_eq!(
        fs::read_to_string(testbed.join("lib.py")).unwrap(),
        "VERSION = 2\n"
    );
}

#[test]
fn a_commit_missing_from_the_bundle_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let base = import_tiny(&store, tmp.path(), LayerCompression::Zstd);
    let (bundle, _, _) = two_commit_bundle(tmp.path());
    let options = BuildOptions::new(&tmp.path().join("cache"));
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = build_sample_layer(
        &base,
        &bundle,
        missing,
        "tiny/sample/x:1",
        &store,
        &options,
        &BuildProgress::none(),
    )
    .unwrap_err();
    assert!(err.to_string().contains(missing), "{err}");
    assert!(store.get("tiny/sample/x:1").is_err());
}
