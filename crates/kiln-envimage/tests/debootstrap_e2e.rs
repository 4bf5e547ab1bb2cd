//! End to end: debootstrap the python demo image, add a sample layer, and run python, pytest
//! and git inside the stacked layers (overlayfs in a private mount namespace, then chroot).
//!
//! Needs root, `debootstrap`, overlayfs and the Debian mirror, and takes about a minute cold,
//! so it runs only when `KILN_TEST_DEBOOTSTRAP=1` or `CI` is set. The debootstrapped tree is
//! kept in `$KILN_ENVIMAGE_TEST_CACHE` (default: `<tmp>/kiln-envimage-test-cache`) so later
//! runs skip the download; delete it to measure a cold build.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_envimage::{
    build_base_image, build_sample_layer, bundle_path, read_samples, sample_reference, BuildEvent,
    BuildOptions, BuildProgress, ImageSpec,
};
use kiln_image::{Image, ImageStore};

fn enabled() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0");
    set("KILN_TEST_DEBOOTSTRAP") || set("CI")
}

fn dataset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/kiln-demo")
}

/// Runs `script` with `sh` inside the image: its layers as overlay lower dirs under a
/// scratch upper dir, /dev bound in, all in a private mount namespace that vanishes with
/// the command.
fn run_inside(image: &Image, scratch: &Path, script: &str) -> (bool, String) {
    let (upper, work, merged) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mount = format!(
        "set -e; mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {m}; \
         mount --rbind /dev {m}/dev; mount -t proc proc {m}/proc; \
         exec chroot {m} /bin/sh -c \"$0\"",
        image.overlay_lowerdir().unwrap(),
        upper.display(),
        work.display(),
        m = merged.display(),
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "sh",
            "-c",
            &mount,
            script,
        ])
        .env_clear()
        .envs(
            image
                .config()
                .env
                .iter()
                .filter_map(|kv| kv.split_once('=')),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn python_image_and_sample_layer_work_inside_a_sandbox_root() {
    if !enabled() {
        eprintln!("skipped: set KILN_TEST_DEBOOTSTRAP=1 (needs root, debootstrap, network)");
        return;
    }
    let cache = std::env::var_os("KILN_ENVIMAGE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-envimage-test-cache"));
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let progress = BuildProgress::new(move |e| {
        if let BuildEvent::Log { line, .. } = e {
            eprintln!("  | {line}");
        }
        sink.lock().unwrap().push(e.clone());
    });
    let mut options = BuildOptions::new(&cache);
    let spec = ImageSpec::demo_python();

    let t = Instant::now();
    let base = build_base_image(&spec, &store, &options, &progress).unwrap();
    let rootfs_was_cached = events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, BuildEvent::RootfsCached { .. }));
    eprintln!(
        "python base: {:.1}s ({}), layer blob {} bytes",
        t.elapsed().as_secs_f64(),
        if rootfs_was_cached {
            "rootfs cached"
        } else {
            "cold debootstrap"
        },
        base.layers()[0].size
    );
    assert_eq!(base.layers().len(), 1);
    assert_eq!(base.config().working_dir.as_deref(), Some("/testbed"));
    assert_eq!(base.config().env_var("TZ"), Some("UTC"));

    // Rebuilding from the cached tree gives the same layer, byte for byte.
    options.force = true;
    let t = Instant::now();
    let rebuilt = build_base_image(&spec, &store, &options, &progress).unwrap();
    eprintln!(
        "python base, forced rebuild from cache: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rebuilt.layers()[0].diff_id, base.layers()[0].diff_id);
    options.force = false;

    let records = read_samples(&dataset_dir()).unwrap();
    let record = records
        .iter()
        .find(|r| r.image == spec.reference)
        .expect("a python sample in the demo dataset");
    let reference = sample_reference("kiln-demo", &record.instance_id).unwrap();
    let t = Instant::now();
    let sample = build_sample_layer(
        &base,
        &bundle_path(&dataset_dir(), record).unwrap(),
        &record.base_commit,
        &reference,
        &store,
        &options,
        &progress,
    )
    .unwrap();
    eprintln!(
        "sample {}: {:.2}s, layer blob {} bytes",
        record.instance_id,
        t.elapsed().as_secs_f64(),
        sample.layers()[1].size
    );

    let scratch = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let t = Instant::now();
    let (ok, out) = run_inside(
        &sample,
        scratch.path(),
        "python3 -m pytest --version 2>&1 && git -C /testbed rev-parse HEAD && \
         cd /testbed && git status --porcelain && echo STATUS-DONE && ls",
    );
    eprintln!("checks inside the image: {:.2}s", t.elapsed().as_secs_f64());
    assert!(ok, "inside the image:\n{out}");
    assert!(out.contains("pytest 7."), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&record.base_commit.as_str()), "{out}");
    // A clean work tree: nothing between the commit hash and the marker.
    let head_at = lines.iter().position(|l| *l == record.base_commit).unwrap();
    assert_eq!(lines.get(head_at + 1), Some(&"STATUS-DONE"), "{out}");
    assert!(lines.contains(&"tests"), "{out}");

    // The sample's own test command passes at base_commit (its PASS_TO_PASS tests exist).
    let scratch = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let test_cmd = sample_test_cmd(&record.instance_id);
    let t = Instant::now();
    let (ok, out) = run_inside(
        &sample,
        scratch.path(),
        &format!("cd /testbed && {test_cmd}"),
    );
    eprintln!("{test_cmd}: {:.2}s", t.elapsed().as_secs_f64());
    assert!(ok, "{test_cmd}:\n{out}");
    assert!(out.contains(" passed"), "{out}");
}

/// `test_cmd` of a record (not part of [`kiln_envimage::SampleRecord`], which holds only
/// what images depend on).
fn sample_test_cmd(instance_id: &str) -> String {
    let text = std::fs::read_to_string(dataset_dir().join("samples.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["instance_id"] == instance_id)
        .and_then(|r| r["test_cmd"].as_str().map(str::to_owned))
        .unwrap()
}
