//! Base images and their pipeline over real HTTP (`/v1/base-images`, `/v1/images/*`):
//! versions prepared in the background from an OCI layout or tar under the import directory
//! or from an image in the store, promoted, rolled back, aborted and deleted, with the
//! image store checked after each; admins only for changes. On SQLite, or PostgreSQL with
//! `KILN_TEST_DATABASE_URL` (scripts/test.sh runs both). Unpacking layers needs root.
use crate::{common, sandbox};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_error, assert_validation, TestServer};
use kiln_envimage::{LayerCompression, LayerTarOptions, OciLayout};
use reqwest::Method;
use serde_json::{json, Value};

/// A one-layer image holding `/hello.txt` with `text`, as an OCI layout in `dir`.
fn write_layout(dir: &Path, text: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("rootfs");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("hello.txt"), text).expect("hello");
    write_root(dir, &root);
}

/// A busybox root with `/hello.txt` holding `text`, as an OCI layout in `dir`: an image
/// an instance can run on, with layers of its own.
fn write_busybox_layout(dir: &Path, text: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("rootfs");
    for sub in ["bin", "etc", "tmp", "root", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("hello.txt"), text).expect("hello");
    write_root(dir, &root);
}

fn write_root(dir: &Path, root: &Path) {
    let layout = OciLayout::create(dir).expect("layout");
    let (layer, _) = layout
        .write_layer(
            root,
            &LayerTarOptions::default(),
            LayerCompression::Gzip,
            |_, _| {},
        )
        .expect("layer");
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    });
    layout
        .finish(&config, std::slice::from_ref(&layer), "test/hello:1")
        .expect("finish");
}

/// The same layout as a tar file `tar` (what `docker save` or skopeo would hand over).
fn tar_of(layout: &Path, tar: &Path) {
    let status = Command::new("tar")
        .arg("-cf")
        .arg(tar)
        .arg("-C")
        .arg(layout)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
}

struct Setup {
    s: TestServer,
    import_dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let import_dir = tempfile::tempdir().expect("tempdir");
    let dir = import_dir.path().to_path_buf();
    let s = TestServer::start_with(move |c| {
        c.base_images.import_dir = Some(dir);
        c.base_images.default_family = Some("python".into());
    })
    .await;
    Setup { s, import_dir }
}

async fn call(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    s.v1_as(&s.admin_key, method, path, body.as_ref()).await
}

async fn prepare(s: &TestServer, family: &str, source: Value) -> Value {
    let body = json!({"family": family, "source": source});
    let (status, image) = call(s, Method::POST, "/images/prepare", Some(body)).await;
    assert_eq!(status, 202, "{image}");
    assert_eq!(image["status"], "preparing", "{image}");
    image
}

/// Polls the version until it is no longer preparing.
async fn settled(s: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, image) = call(s, Method::GET, &format!("/base-images/{id}"), None).await;
        assert_eq!(status, 200, "{image}");
        if image["status"] != "preparing" {
            return image;
        }
        assert!(Instant::now() < deadline, "still preparing: {image}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn prepared(s: &TestServer, family: &str, source: Value) -> Value {
    let image = prepare(s, family, source).await;
    let done = settled(s, image["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "prepared", "{done}");
    done
}

async fn promote(s: &TestServer, id: &Value) -> Value {
    let (status, image) = call(s, Method::POST, "/images/promote", Some(json!({"id": id}))).await;
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["status"], "promoted", "{image}");
    assert_eq!(image["current"], true, "{image}");
    image
}

fn in_store(s: &TestServer, reference: &Value) -> bool {
    let store = kiln_image::ImageStore::open(&s.kiln.config.images_dir()).expect("image store");
    store.get(reference.as_str().expect("reference")).is_ok()
}

async fn current_id(s: &TestServer, family: &str) -> Value {
    let (status, image) = call(
        s,
        Method::GET,
        &format!("/base-images/family/{family}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{image}");
    image["id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_prepared_promoted_rolled_back_and_deleted() {
    let Setup { s, import_dir } = start().await;
    write_layout(&import_dir.path().join("v1"), "one\n");
    tar_of(
        &import_dir.path().join("v1"),
        &import_dir.path().join("v1.tar"),
    );
    let (status, body) = call(&s, Method::GET, "/base-images/default", None).await;
    assert_error(status, &body, 404, "not_found");

    // Version 1, imported from a tar: progress counted, then prepared with its digest.
    let v1 = prepared(&s, "python", json!({"import": "v1.tar"})).await;
    assert_eq!(v1["version"], 1, "{v1}");
    assert_eq!(v1["reference"], "base/python:1", "{v1}");
    assert_eq!(v1["progress"]["layers_total"], 1, "{v1}");
    assert_eq!(v1["progress"]["layers_done"], 1, "{v1}");
    assert!(v1["size_bytes"].as_u64().is_some_and(|n| n > 0), "{v1}");
    assert!(
        v1["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{v1}"
    );
    assert_eq!(v1["source"], "import:v1.tar", "{v1}");
    assert_eq!(v1["current"], false, "{v1}");
    assert!(in_store(&s, &v1["reference"]));
    let (status, body) = call(&s, Method::GET, "/base-images/family/python", None).await;
    assert_error(status, &body, 404, "not_found");

    promote(&s, &v1["id"]).await;
    assert_eq!(current_id(&s, "python").await, v1["id"]);
    let (status, default) = call(&s, Method::GET, "/base-images/default", None).await;
    assert_eq!((status, &default["id"]), (200, &v1["id"]), "{default}");

    // Version 2, copied from version 1's image: promoted, it is current.
    let v2 = prepared(&s, "python", json!({"from": "base/python:1"})).await;
    assert_eq!(v2["version"], 2, "{v2}");
    assert_eq!(v2["digest"], v1["digest"], "{v2}");
    promote(&s, &v2["id"]).await;
    assert_eq!(current_id(&s, "python").await, v2["id"]);
    let (status, versions) =
        call(&s, Method::GET, "/base-images/family/python/versions", None).await;
    assert_eq!(status, 200, "{versions}");
    let listed: Vec<(Value, Value)> = versions["base_images"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| (v["version"].clone(), v["current"].clone()))
        .collect();
    assert_eq!(listed, [(json!(2), json!(true)), (json!(1), json!(false))]);

    // The current version cannot be deleted; a promoted version cannot be promoted again.
    let path2 = format!("/base-images/{}", v2["id"].as_str().expect("id"));
    let (status, body) = call(&s, Method::DELETE, &path2, None).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = call(
        &s,
        Method::POST,
        "/images/promote",
        Some(json!({"id": v2["id"]})),
    )
    .await;
    assert_error(status, &body, 409, "conflict");

    // Rollback goes back to version 1, and no further.
    let (status, back) = call(
        &s,
        Method::POST,
        "/base-images/family/python/rollback",
        None,
    )
    .await;
    assert_eq!((status, &back["id"]), (200, &v1["id"]), "{back}");
    assert_eq!(current_id(&s, "python").await, v1["id"]);
    let (status, body) = call(
        &s,
        Method::POST,
        "/base-images/family/python/rollback",
        None,
    )
    .await;
    assert_error(status, &body, 409, "conflict");

    // Version 2 is not current any more: it can go, with its image.
    let (status, body) = call(&s, Method::DELETE, &path2, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!in_store(&s, &v2["reference"]));
    assert!(in_store(&s, &v1["reference"]));
    let (status, body) = call(&s, Method::GET, &path2, None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, list) = call(&s, Method::GET, "/base-images", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["base_images"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );

    // Version 3, imported from the layout directory, prepared then discarded.
    write_layout(&import_dir.path().join("v3"), "three\n");
    let v3 = prepared(&s, "python", json!({"import": "v3"})).await;
    assert_eq!(v3["version"], 3, "{v3}");
    assert!(in_store(&s, &v3["reference"]));
    let (status, aborted) = call(
        &s,
        Method::POST,
        "/images/abort",
        Some(json!({"id": v3["id"]})),
    )
    .await;
    assert_eq!(
        (status, &aborted["status"]),
        (200, &json!("aborted")),
        "{aborted}"
    );
    assert!(!in_store(&s, &v3["reference"]));
    for route in ["/images/abort", "/images/promote"] {
        let (status, body) = call(&s, Method::POST, route, Some(json!({"id": v3["id"]}))).await;
        assert_error(status, &body, 409, "conflict");
    }
    assert_eq!(current_id(&s, "python").await, v1["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_no_image_fails_with_the_reason() {
    let Setup { s, import_dir } = start().await;
    std::fs::write(import_dir.path().join("junk.tar"), b"this is not a tar").expect("junk");
    let image = prepare(&s, "node", json!({"import": "junk.tar"})).await;
    let done = settled(&s, image["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{done}"
    );
    assert!(!in_store(&s, &done["reference"]));
    let (status, body) = call(
        &s,
        Method::POST,
        "/images/promote",
        Some(json!({"id": done["id"]})),
    )
    .await;
    assert_error(status, &body, 409, "conflict");
    // A failed version is not current: it can be deleted.
    let path = format!("/base-images/{}", done["id"].as_str().expect("id"));
    let (status, body) = call(&s, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&s, Method::GET, "/base-images/family/node/versions", None).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn prepare_checks_family_and_source() {
    let Setup { s, import_dir } = start().await;
    write_layout(&import_dir.path().join("v1"), "one\n");
    let outside = tempfile::tempdir().expect("tempdir");
    write_layout(&outside.path().join("v1"), "one\n");
    std::os::unix::fs::symlink(outside.path(), import_dir.path().join("link")).expect("symlink");
    let cases: [(Value, &[&str]); 9] = [
        (
            json!({"family": "Py thon", "source": {"import": "v1"}}),
            &["body", "family"],
        ),
        (
            json!({"family": "-python", "source": {"import": "v1"}}),
            &["body", "family"],
        ),
        (
            json!({"family": "x".repeat(65), "source": {"import": "v1"}}),
            &["body", "family"],
        ),
        (
            json!({"family": "python", "source": {"import": "../x"}}),
            &["body", "source", "import"],
        ),
        (
            json!({"family": "python", "source": {"import": outside.path().join("v1")}}),
            &["body", "source", "import"],
        ),
        (
            json!({"family": "python", "source": {"import": "link/v1"}}),
            &["body", "source", "import"],
        ),
        (
            json!({"family": "python", "source": {"import": "missing"}}),
            &["body", "source", "import"],
        ),
        (
            json!({"family": "python", "source": {"from": "no/such:image"}}),
            &["body", "source", "from"],
        ),
        (
            json!({"family": "python", "source": {"pull": "registry.example.com/kiln/python:3"}}),
            &["body", "source", "pull"],
        ),
    ];
    for (body, loc) in cases {
        let (status, answer) = call(&s, Method::POST, "/images/prepare", Some(body.clone())).await;
        assert_validation(status, &answer, loc);
    }
    // An unknown kind of source, or two at once.
    for source in [
        json!({"ftp": "x"}),
        json!({"import": "v1", "from": "x"}),
        json!("v1"),
    ] {
        let body = json!({"family": "python", "source": source});
        let (status, answer) = call(&s, Method::POST, "/images/prepare", Some(body)).await;
        assert_eq!(status, 422, "{answer}");
    }
    let (status, list) = call(&s, Method::GET, "/base-images", None).await;
    assert_eq!((status, &list["base_images"]), (200, &json!([])), "{list}");
}

#[tokio::test]
async fn imports_by_path_need_an_import_dir() {
    let s = TestServer::start().await;
    let body = json!({"family": "python", "source": {"import": "/etc/passwd"}});
    let (status, answer) = call(&s, Method::POST, "/images/prepare", Some(body)).await;
    assert_validation(status, &answer, &["body", "source", "import"]);
    let (status, answer) = call(&s, Method::GET, "/base-images/default", None).await;
    assert_error(status, &answer, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_change_base_images() {
    let Setup { s, import_dir } = start().await;
    write_layout(&import_dir.path().join("v1"), "one\n");
    let v1 = prepared(&s, "python", json!({"import": "v1"})).await;
    let (_, key) = s.user("alice").await;
    let id = json!({"id": v1["id"]});
    let path = format!("/base-images/{}", v1["id"].as_str().expect("id"));
    let prepare = json!({"family": "python", "source": {"import": "v1"}});
    let mutations = [
        (Method::POST, "/images/prepare".to_string(), Some(&prepare)),
        (Method::POST, "/images/promote".to_string(), Some(&id)),
        (Method::POST, "/images/abort".to_string(), Some(&id)),
        (
            Method::POST,
            "/base-images/family/python/rollback".to_string(),
            None,
        ),
        (Method::DELETE, path.clone(), None),
    ];
    for (method, route, body) in mutations {
        let (status, answer) = s.v1_as(&key, method, &route, body).await;
        assert_error(status, &answer, 403, "forbidden");
    }
    // Everyone signed in reads.
    let (status, image) = s.v1_as(&key, Method::GET, &path, None).await;
    assert_eq!(
        (status, &image["status"]),
        (200, &json!("prepared")),
        "{image}"
    );
    let (status, list) = s.v1_as(&key, Method::GET, "/base-images", None).await;
    assert_eq!(status, 200, "{list}");
    let (status, _) = s
        .v1(Method::GET, "/base-images")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .expect("send");
    assert_eq!(status, 401);
    // Nothing changed.
    promote(&s, &v1["id"]).await;
}

#[tokio::test]
async fn the_v1_document_describes_the_base_image_routes() {
    let s = TestServer::start().await;
    let doc: Value = s
        .v1(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/base-images", &["get"][..]),
        ("/base-images/default", &["get"][..]),
        ("/base-images/{id}", &["get", "delete"][..]),
        ("/base-images/family/{family}", &["get"][..]),
        ("/base-images/family/{family}/versions", &["get"][..]),
        ("/base-images/family/{family}/rollback", &["post"][..]),
        ("/images/prepare", &["post"][..]),
        ("/images/promote", &["post"][..]),
        ("/images/abort", &["post"][..]),
    ] {
        for method in methods {
            assert!(
                paths[path][method]["responses"].is_object(),
                "{path} {method}"
            );
        }
    }
    for schema in [
        "BaseImageView",
        "PrepareRequest",
        "SourceRequest",
        "BaseImageList",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_on_the_current_version_which_cannot_be_deleted_under_them() {
    let import_dir = tempfile::tempdir().expect("tempdir");
    let dir = import_dir.path().to_path_buf();
    let Some(s) = sandbox::start_if_possible(move |c| {
        c.base_images.import_dir = Some(dir);
        c.runtime.memory_mib = 128;
        c.runtime.disk_mib = 256;
    })
    .await
    else {
        return;
    };
    write_busybox_layout(&import_dir.path().join("busy"), "from the base image\n");
    let v1 = prepared(&s, "busy", json!({"import": "busy"})).await;
    promote(&s, &v1["id"]).await;

    let (_, key) = s.user("alice").await;
    let body = json!({"base_image": "busy"});
    let (status, created) = s.v1_as(&key, Method::POST, "/instances", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "ready", "{session}");
    let iid = sandbox::start_exec(&s, &key, &id, "cat /hello.txt").await;
    let done = sandbox::finished(&s, &key, &id, &iid).await;
    assert_eq!(done["stdout"], "from the base image\n", "{done}");

    // Version 2 (the sample's image) becomes current; version 1 still runs the instance.
    let sample = kiln_services::sessions::sample_image_reference(sandbox::DATASET, sandbox::SAMPLE);
    let v2 = prepared(&s, "busy", json!({"from": sample})).await;
    promote(&s, &v2["id"]).await;
    let path1 = format!("/base-images/{}", v1["id"].as_str().expect("id"));
    let (status, body) = call(&s, Method::DELETE, &path1, None).await;
    assert_error(status, &body, 409, "conflict");
    let message = body["detail"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("in use"), "{body}");
    assert!(in_store(&s, &v1["reference"]));

    // Neither both sources, nor a family without a current version.
    let both = json!({"base_image": "busy", "image": sample});
    let (status, body) = s.v1_as(&key, Method::POST, "/instances", Some(&both)).await;
    assert_validation(status, &body, &["body", "base_image"]);
    let none = json!({"base_image": "nothing"});
    let (status, body) = s.v1_as(&key, Method::POST, "/instances", Some(&none)).await;
    assert_error(status, &body, 404, "not_found");

    // Once the instance is gone, version 1 can go.
    let (status, body) = s
        .v1_as(&key, Method::DELETE, &format!("/instances/{id}"), None)
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(&s, Method::DELETE, &path1, None).await;
        if status == 200 {
            break;
        }
        assert_error(status, &body, 409, "conflict");
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!in_store(&s, &v1["reference"]));
}

/// The test registry (`scripts/start-registry.sh`), if one answers.
async fn registry() -> Option<String> {
    let addr = std::env::var("KILN_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let answer = reqwest::Client::new()
        .get(format!("http://{addr}/v2/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().as_u16() == 200 => Some(addr),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI: no registry at {addr}; run scripts/start-registry.sh")
        }
        _ => {
            eprintln!("SKIPPED: no registry at {addr} (run scripts/start-registry.sh)");
            None
        }
    }
}

/// Pushes the OCI layout in `layout` to `http://{addr}/v2/{repo}` under `tag`.
async fn push(addr: &str, repo: &str, tag: &str, layout: &Path) {
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/v2/{repo}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("index json");
    let manifest = &index["manifests"][0];
    let manifest_digest = manifest["digest"].as_str().expect("digest");
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).expect("blobs") {
        let path = entry.expect("entry").path();
        let hex = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let digest = format!("sha256:{hex}");
        if digest == manifest_digest {
            continue;
        }
        let started = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .expect("upload");
        assert_eq!(started.status().as_u16(), 202);
        let location = started.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let location = if location.starts_with('/') {
            format!("http://{addr}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(&path).expect("blob"))
            .send()
            .await
            .expect("put blob");
        assert_eq!(put.status().as_u16(), 201);
    }
    let hex = manifest_digest.trim_start_matches("sha256:");
    let put = http
        .put(format!("{base}/manifests/{tag}"))
        .header(
            "content-type",
            manifest["mediaType"].as_str().expect("media type"),
        )
        .body(std::fs::read(layout.join("blobs/sha256").join(hex)).expect("manifest"))
        .send()
        .await
        .expect("put manifest");
    assert_eq!(
        put.status().as_u16(),
        201,
        "{}",
        put.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_pulled_from_an_allowed_registry() {
    let Some(addr) = registry().await else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    write_layout(&work.path().join("layout"), "pulled\n");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let repo = format!("kiln-test/base-{}-{nanos}", std::process::id());
    push(&addr, &repo, "1", &work.path().join("layout")).await;
    let allowed = addr.clone();
    let s = TestServer::start_with(move |c| c.base_images.allowed_registries = vec![allowed]).await;

    let source = format!("{addr}/{repo}:1");
    let v1 = prepared(&s, "pulled", json!({"pull": source})).await;
    assert_eq!(v1["source"], format!("pull:{source}"), "{v1}");
    let progress = &v1["progress"];
    assert_eq!(progress["layers_done"], 1, "{v1}");
    assert!(
        progress["bytes_total"].as_u64().is_some_and(|n| n > 0),
        "{v1}"
    );
    assert_eq!(progress["bytes_done"], progress["bytes_total"], "{v1}");
    assert!(in_store(&s, &v1["reference"]));
    // Only the base image's own reference stays in the store.
    assert!(!in_store(&s, &json!(source)));

    // A tag the registry does not have: the version fails, saying why.
    let missing = format!("{addr}/{repo}:nope");
    let image = prepare(&s, "pulled", json!({"pull": missing})).await;
    let failed = settled(&s, image["id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_racing_the_preparation_leaves_no_image() {
    let Setup { s, import_dir } = start().await;
    // Big enough (64 MiB to hash and unpack) that the abort comes while it is preparing.
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("rootfs");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("big"), vec![7u8; 64 << 20]).expect("big");
    write_root(&import_dir.path().join("v1"), &root);
    for _ in 0..3 {
        let image = prepare(&s, "python", json!({"import": "v1"})).await;
        // Preparing or already prepared: either way it ends aborted, without its image.
        let (status, aborted) = call(
            &s,
            Method::POST,
            "/images/abort",
            Some(json!({"id": image["id"]})),
        )
        .await;
        assert_eq!(
            (status, &aborted["status"]),
            (200, &json!("aborted")),
            "{aborted}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.kiln.base_images.preparing_here() > 0 {
            assert!(Instant::now() < deadline, "{image} is still being prepared");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while in_store(&s, &image["reference"]) {
            assert!(Instant::now() < deadline, "the image of {image} stays");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = settled(&s, image["id"].as_str().expect("id")).await;
        assert_eq!(after["status"], "aborted", "{after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_versions_left_preparing() {
    let Setup { s, import_dir } = start().await;
    write_layout(&import_dir.path().join("v1"), "one\n");
    let v1 = prepared(&s, "python", json!({"import": "v1"})).await;
    // A version whose preparation died with a previous run of the server.
    let new = kiln_store::NewBaseImage {
        image_id: "bim_cut_off".into(),
        family: "python".into(),
        source: "import:v1".into(),
        created_by: v1["created_by"].as_str().expect("creator").into(),
        created_at: chrono::Utc::now(),
        node_id: None,
    };
    let limits = kiln_store::BaseImageLimits {
        max_versions_per_family: 100,
        max_preparing: 100,
    };
    s.store()
        .await
        .insert_base_image(&new, limits)
        .await
        .expect("insert");
    // Its import had committed the image before the stop.
    let store = kiln_image::ImageStore::open(&s.kiln.config.images_dir()).expect("image store");
    store.tag("base/python:1", "base/python:2").expect("tag");
    let s = s.restart(true).await;
    assert!(!in_store(&s, &json!("base/python:2")));
    assert!(in_store(&s, &v1["reference"]));
    let (status, cut) = call(&s, Method::GET, "/base-images/bim_cut_off", None).await;
    assert_eq!((status, &cut["status"]), (200, &json!("failed")), "{cut}");
    assert!(
        cut["error"].as_str().is_some_and(|e| e.contains("restart")),
        "{cut}"
    );
    let (status, kept) = call(
        &s,
        Method::GET,
        &format!("/base-images/{}", v1["id"].as_str().expect("id")),
        None,
    )
    .await;
    assert_eq!(
        (status, &kept["status"]),
        (200, &json!("prepared")),
        "{kept}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_preparations_are_limited() {
    let import_dir = tempfile::tempdir().expect("tempdir");
    let dir = import_dir.path().to_path_buf();
    let s = TestServer::start_with(move |c| {
        c.base_images.import_dir = Some(dir);
        c.base_images.max_versions_per_family = 2;
    })
    .await;
    write_layout(&import_dir.path().join("v1"), "one\n");
    let body = json!({"import": "v1"});
    prepared(&s, "python", body.clone()).await;
    prepared(&s, "python", body.clone()).await;
    let third = json!({"family": "python", "source": body.clone()});
    let (status, answer) = call(&s, Method::POST, "/images/prepare", Some(third)).await;
    assert_error(status, &answer, 409, "conflict");
    // Another family has room.
    prepared(&s, "node", body).await;
    let long = json!({"family": "python", "source": {"from": "x".repeat(1025)}});
    let (status, answer) = call(&s, Method::POST, "/images/prepare", Some(long)).await;
    assert_validation(status, &answer, &["body", "source", "from"]);
    let (status, answer) = call(&s, Method::POST, "/base-images/family/ruby/rollback", None).await;
    assert_error(status, &answer, 404, "not_found");

    // At most `max_preparing` at once, over all families (checked where they are recorded).
    let store = s.store().await;
    let limits = kiln_store::BaseImageLimits {
        max_versions_per_family: 100,
        max_preparing: 1,
    };
    let admin = s
        .kiln
        .base_images
        .list(100, None)
        .await
        .expect("list")
        .base_images[0]
        .created_by
        .clone();
    let new = |id: &str, family: &str| kiln_store::NewBaseImage {
        image_id: id.into(),
        family: family.into(),
        source: "from:x".into(),
        created_by: admin.clone(),
        created_at: chrono::Utc::now(),
        node_id: None,
    };
    let first = store.insert_base_image(&new("bim_a", "go"), limits).await;
    assert!(
        matches!(first, Ok(kiln_store::BaseImageInsert::Inserted(_))),
        "{first:?}"
    );
    let second = store.insert_base_image(&new("bim_b", "java"), limits).await;
    assert!(
        matches!(second, Ok(kiln_store::BaseImageInsert::TooManyPreparing)),
        "{second:?}"
    );
}

/// `GET /v1/base-images` a page at a time: `next_cursor` walks every version once, by
/// family then newest version first; the page size is bounded and a cursor not given out
/// is a 422.
#[tokio::test]
async fn base_images_are_paged_by_cursor() {
    let s = TestServer::start_with(|_| {}).await;
    let (maker, key) = s.user("maker").await;
    let store = s.store().await;
    let limits = kiln_store::BaseImageLimits {
        max_versions_per_family: 100,
        max_preparing: 100,
    };
    for (id, family) in [
        ("b1", "b"),
        ("a1", "a"),
        ("a2", "a"),
        ("b2", "b"),
        ("a3", "a"),
    ] {
        let new = kiln_store::NewBaseImage {
            image_id: id.into(),
            family: family.into(),
            source: "from:x".into(),
            created_by: maker.clone(),
            created_at: chrono::Utc::now(),
            node_id: None,
        };
        store.insert_base_image(&new, limits).await.expect("insert");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..4 {
        let path = match &cursor {
            Some(c) => format!("/base-images?limit=2&cursor={c}"),
            None => "/base-images?limit=2".into(),
        };
        let (status, body) = s.v1_as(&key, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        for v in body["base_images"].as_array().expect("list") {
            seen.push(format!(
                "{}:{}",
                v["family"].as_str().expect("family"),
                v["version"]
            ));
        }
        cursor = body["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["a:3", "a:2", "a:1", "b:2", "b:1"]);
    let (status, all) = s.v1_as(&key, Method::GET, "/base-images", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["base_images"].as_array().map(Vec::len), Some(5));
    assert_eq!(all["next_cursor"], Value::Null);

    // "0:a" and "x:a" in base64url: well formed, but never given out.
    for bad in ["nope", "MDph", "eDph", &"A".repeat(300)] {
        let (status, body) = s
            .v1_as(
                &key,
                Method::GET,
                &format!("/base-images?cursor={bad}"),
                None,
            )
            .await;
        assert_validation(status, &body, &["query", "cursor"]);
    }
    for bad in ["limit=0", "limit=101", "limit=x"] {
        let (status, body) = s
            .v1_as(&key, Method::GET, &format!("/base-images?{bad}"), None)
            .await;
        assert_validation(status, &body, &["query", "limit"]);
    }
}
