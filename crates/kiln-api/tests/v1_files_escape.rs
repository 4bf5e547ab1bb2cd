//! The instance file routes never reach a host file, whatever path they are given:
//! `..` chains, absolute symlinks made inside the sandbox, `/proc/*/root`, `/proc/*/cwd`;
//! NUL bytes and overlong paths are refused. Real HTTP, real sandboxes.
use crate::{common, files_support, sandbox};

use common::assert_validation;
use files_support::{files, get_raw, q, run};
use reqwest::Method;
use sandbox::create_ready;
use serde_json::json;

/// A random marker on the host, in the test's temporary directory and in /tmp: no route
/// may ever return it, or change it, whatever path it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_reaches_a_host_file() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    // The content, unlike the file names, appears in no path (error messages echo paths).
    let marker = format!("host-secret-{}", uuid::Uuid::new_v4());
    let dir = tempfile::tempdir().expect("tempdir");
    let in_temp = dir.path().join("marker.txt");
    let in_tmp = std::path::PathBuf::from(format!(
        "/tmp/kiln-files-marker-{}.txt",
        uuid::Uuid::new_v4()
    ));
    for file in [&in_temp, &in_tmp] {
        std::fs::write(file, &marker).expect("marker");
    }
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(in_tmp.clone());

    // Symlinks made by the instance's own commands, absolute ones included.
    let mut links = String::from("cd /testbed && ln -s / rootlink && ln -s /proc/1/root p1root");
    for (i, file) in [&in_temp, &in_tmp].iter().enumerate() {
        links.push_str(&format!(" && ln -s {} hostlink{i}", file.display()));
    }
    let (code, out) = run(&s, &key, &id, &links).await;
    assert_eq!(code, 0, "{out}");

    let ups = "../".repeat(20);
    let candidates = |i: usize, host: &str| {
        vec![
            host.to_string(),
            format!("{ups}{host}"),
            format!("/testbed/{ups}{host}"),
            format!("rootlink{host}"),
            format!("rootlink/../..{host}"),
            format!("hostlink{i}"),
            format!("p1root{host}"),
            format!("/proc/self/root{host}"),
            format!("/proc/1/root{host}"),
            format!("/proc/self/cwd/{ups}{host}"),
            format!("/proc/1/cwd/{ups}{host}"),
            format!("/proc/self/root/proc/1/root{host}"),
        ]
    };
    let hosts: Vec<String> = [&in_temp, &in_tmp]
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let mut tried = 0;
    // Reads first (a write below may create the path inside the sandbox).
    for (i, host) in hosts.iter().enumerate() {
        for path in candidates(i, host) {
            tried += 1;
            for format in ["", "&format=json"] {
                let (status, _, body) =
                    get_raw(&s, &key, &id, &format!("path={}{format}", q(&path)), None).await;
                let text = String::from_utf8_lossy(&body);
                assert!(
                    !text.contains(&marker),
                    "GET {path} returned the host's file ({status}): {text}"
                );
                assert_ne!(status, 200, "{path}: {text}");
            }
            let (status, stat) = s
                .v1_as(
                    &key,
                    Method::GET,
                    &files(&id, &format!("/stat?path={}", q(&path))),
                    None,
                )
                .await;
            assert!(
                status != 200 || stat["type"] == "symlink",
                "stat {path}: {status} {stat}"
            );
            let (status, body) = s
                .v1_as(
                    &key,
                    Method::GET,
                    &files(&id, &format!("/list?path={}", q(&path))),
                    None,
                )
                .await;
            assert_ne!(status, 200, "list {path}: {body}");
            let (status, body) = s
                .v1_as(
                    &key,
                    Method::POST,
                    &files(&id, "/edit"),
                    Some(&json!({"path": path, "old_str": marker, "new_str": "owned"})),
                )
                .await;
            assert!(
                status != 200 || body["success"] == false,
                "edit {path}: {status} {body}"
            );
        }
        // The host directory's listing never shows up either.
        let dir_of = host.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        for path in [dir_of.to_string(), format!("/proc/1/root{dir_of}")] {
            let (status, body) = s
                .v1_as(
                    &key,
                    Method::GET,
                    &files(&id, &format!("/list?path={}", q(&path))),
                    None,
                )
                .await;
            assert!(
                !body.to_string().contains("marker"),
                "{path}: {status} {body}"
            );
        }
    }
    // Writes through the same paths land in the sandbox, if anywhere.
    for (i, host) in hosts.iter().enumerate() {
        for path in candidates(i, host) {
            let (status, body) = s
                .v1_as(
                    &key,
                    Method::POST,
                    &files(&id, ""),
                    Some(&json!({"path": path, "content": "owned", "create_parents": true})),
                )
                .await;
            assert!(
                [200, 403, 404, 422].contains(&status),
                "{path}: {status} {body}"
            );
            for file in [&in_temp, &in_tmp] {
                assert_eq!(
                    std::fs::read_to_string(file).expect("marker still there"),
                    marker,
                    "a write to {path} changed the host's file"
                );
            }
        }
    }
    assert!(tried >= 24);
    assert!(!dir.path().join("owned").exists());

    // NUL bytes and overlong paths are refused before reaching the sandbox.
    let long = "a/".repeat(2100);
    for bad in ["a\0b".to_string(), long.clone()] {
        let (status, body) = s
            .v1_as(
                &key,
                Method::GET,
                &files(&id, &format!("?path={}&format=json", q(&bad))),
                None,
            )
            .await;
        assert_validation(status, &body, &["query", "path"]);
        let (status, body) = s
            .v1_as(
                &key,
                Method::GET,
                &files(&id, &format!("/list?path={}", q(&bad))),
                None,
            )
            .await;
        assert_validation(status, &body, &["query", "path"]);
        let (status, body) = s
            .v1_as(
                &key,
                Method::POST,
                &files(&id, ""),
                Some(&json!({"path": bad, "content": "x"})),
            )
            .await;
        assert_validation(status, &body, &["body", "path"]);
        let (status, body) = s
            .v1_as(
                &key,
                Method::POST,
                &files(&id, "/edit"),
                Some(&json!({"path": bad, "old_str": "a", "new_str": "b"})),
            )
            .await;
        assert_validation(status, &body, &["body", "path"]);
    }
}
