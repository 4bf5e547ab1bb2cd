//! Pulls from a real registry (Debian's `docker-registry`, see `scripts/start-registry.sh`)
//! at `KILN_TEST_REGISTRY` (default 127.0.0.1:5000). The test images are pushed over the
//! distribution API first. Without a registry these tests skip, except under `CI`, where
//! they fail.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod support;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_image::{ImageError, ImageStore, Progress, ProgressEvent, PullOptions};
use serde_json::json;
use support::{digest, layer_tar, Entry, TestImage};

fn registry() -> Option<String> {
    let addr = std::env::var("KILN_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    match (registry_answers(&addr), std::env::var_os("CI").is_some()) {
        (true, _) => Some(addr),
        (false, true) => panic!("CI: no registry at {addr}; run scripts/start-registry.sh"),
        (false, false) => {
            eprintln!("SKIP: no registry at {addr} (run scripts/start-registry.sh)");
            None
        }
    }
}

/// `/v2/` answering 200 (or 401 with auth on) means a registry is there.
fn registry_answers(addr: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(2);
    let Some(sock) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sock, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut status = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok()
        && s.read_exact(&mut status).is_ok()
        && (status.ends_with(b"200") || status.ends_with(b"401"))
}

fn unique_repo(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kiln-test/{name}-{}-{nanos}", std::process::id())
}

struct Pusher {
    http: reqwest::Client,
    base: String,
    repo: String,
}

impl Pusher {
    async fn blob(&self, bytes: &[u8]) {
        let resp = self
            .http
            .post(format!("{}/v2/{}/blobs/uploads/", self.base, self.repo))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "start upload");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .http
            .put(format!("{location}{sep}digest={}", digest(bytes)))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "put blob: {}",
            resp.text().await.unwrap()
        );
    }

    async fn manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) {
        let resp = self
            .http
            .put(format!(
                "{}/v2/{}/manifests/{reference}",
                self.base, self.repo
            ))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "put manifest: {}",
            resp.text().await.unwrap()
        );
    }

    async fn image(&self, img: &TestImage, tag: &str, media_type: &str) {
        self.blob(&img.config).await;
        for l in &img.layer_blobs {
            self.blob(l).await;
        }
        self.manifest(tag, media_type, &img.manifest).await;
    }
}

fn pusher(addr: &str, repo: &str) -> Pusher {
    Pusher {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
        repo: repo.to_owned(),
    }
}

fn base_layer() -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/os-release", b"ID=kiln\n", 0o644),
        Entry::File("etc/gone", b"x", 0o644),
    ])
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn pulls_an_oci_image_and_reuses_shared_layers() {
    let Some(addr) = registry() else { return };
    let repo = unique_repo("oci");
    let push = pusher(&addr, &repo);
    let top = layer_tar(&[
        Entry::File("etc/.wh.gone", b"", 0o644),
        Entry::File("app", b"one", 0o755),
    ]);
    let one = TestImage::new(&[base_layer(), top], true, &["PYTHONPATH=/src"], "/src");
    push.image(&one, "one", OCI_MANIFEST).await;
    let other_top = layer_tar(&[Entry::File("app", b"two", 0o755)]);
    let two = TestImage::new(&[base_layer(), other_top], true, &[], "/");
    push.image(&two, "two", OCI_MANIFEST).await;

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let options = PullOptions {
        progress: Progress::new(move |e| sink.lock().unwrap().push(e.clone())),
        ..Default::default()
    };
    let reference = format!("{addr}/{repo}:one");
    let image = store.pull(&reference, &options).await.unwrap();
    assert_eq!(image.reference(), reference);
    assert_eq!(image.manifest_digest().to_string(), one.manifest_digest());
    assert_eq!(image.config().env_var("PYTHONPATH"), Some("/src"));
    assert_eq!(image.config().working_dir.as_deref(), Some("/src"));
    let dirs = image.layer_dirs();
    assert_eq!(
        std::fs::read(dirs[0].join("etc/os-release")).unwrap(),
        b"ID=kiln\n"
    );
    assert_eq!(std::fs::read(dirs[1].join("app")).unwrap(), b"one");
    let whiteout = std::fs::symlink_metadata(dirs[1].join("etc/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(store.get(&reference).unwrap(), image);
    {
        let events = events.lock().unwrap();
        // Every layer's byte count reaches its full size.
        for (i, blob) in one.layer_blobs.iter().enumerate() {
            let last = events.iter().rev().find_map(|e| match e {
                ProgressEvent::LayerBytes {
                    index, done, total, ..
                } if *index == i => Some((*done, *total)),
                _ => None,
            });
            assert_eq!(
                last,
                Some((blob.len() as u64, blob.len() as u64)),
                "layer {i}"
            );
        }
    }

    events.lock().unwrap().clear();
    let image_two = store
        .pull(&format!("{addr}/{repo}:two"), &options)
        .await
        .unwrap();
    assert_eq!(image_two.layer_dirs()[0], dirs[0], "base layer shared");
    let seen = events.lock().unwrap().clone();
    assert!(seen
        .iter()
        .any(|e| matches!(e, ProgressEvent::LayerCached { index: 0, .. })));
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ProgressEvent::LayerBytes { index: 0, .. })),
        "base not downloaded again"
    );

    // By digest, too.
    let pinned = format!("{addr}/{repo}@{}", one.manifest_digest());
    let by_digest = store.pull(&pinned, &PullOptions::default()).await.unwrap();
    assert_eq!(by_digest.layer_dirs(), dirs);
}

#[tokio::test]
async fn picks_amd64_from_a_docker_manifest_list() {
    let Some(addr) = registry() else { return };
    let repo = unique_repo("list");
    let push = pusher(&addr, &repo);
    let docker_manifest = "application/vnd.docker.distribution.manifest.v2+json";
    let amd = TestImage::with_media_types(
        &[layer_tar(&[Entry::File("arch", b"amd64", 0o644)])],
        true,
        &[],
        "/",
        true,
    );
    let arm = TestImage::with_media_types(
        &[layer_tar(&[Entry::File("arch", b"arm64", 0o644)])],
        true,
        &[],
        "/",
        true,
    );
    push.image(&amd, &amd.manifest_digest(), docker_manifest)
        .await;
    push.image(&arm, &arm.manifest_digest(), docker_manifest)
        .await;
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            { "mediaType": docker_manifest, "digest": arm.manifest_digest(), "size": arm.manifest.len(),
              "platform": { "architecture": "arm64", "os": "linux", "variant": "v8" } },
            { "mediaType": docker_manifest, "digest": amd.manifest_digest(), "size": amd.manifest.len(),
              "platform": { "architecture": "amd64", "os": "linux" } },
        ],
    }))
    .unwrap();
    push.manifest(
        "multi",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &list,
    )
    .await;

    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let image = store
        .pull(&format!("{addr}/{repo}:multi"), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(image.manifest_digest().to_string(), amd.manifest_digest());
    assert_eq!(
        std::fs::read(image.layer_dirs()[0].join("arch")).unwrap(),
        b"amd64"
    );
    assert_eq!(
        image.layers()[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
}

#[tokio::test]
async fn missing_tags_are_registry_errors_and_store_nothing() {
    let Some(addr) = registry() else { return };
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let err = store
        .pull(
            &format!("{addr}/{}:nope", unique_repo("missing")),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::RegistryStatus { status: 404, .. }),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
}
