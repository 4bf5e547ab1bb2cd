//! `kiln images pull --dataset`: a dataset's SWE-bench images, published under the
//! harness's official names in a real registry (Debian's `docker-registry`, pushed with
//! `skopeo`), land in the store under the names its sessions use, and a session runs in
//! one. Skipped without a registry or skopeo, except under `CI`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use server_harness::{free_port, install_busybox_sample, kiln, prerequisites, serve, text, Api};

/// The registry (host:port) the test script started, and skopeo to push to it.
fn registry() -> Option<String> {
    let addr = std::env::var("KILN_TEST_REGISTRY").ok();
    let skopeo = Command::new("skopeo").arg("--version").output().is_ok();
    match (addr, skopeo) {
        (Some(addr), true) => Some(addr),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI: set KILN_TEST_REGISTRY (scripts/start-registry.sh) and install skopeo")
        }
        _ => {
            eprintln!("SKIPPED: no KILN_TEST_REGISTRY, or no skopeo");
            None
        }
    }
}

fn push(layout: &Path, destination: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{destination}"))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy: {}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datasets_images_are_pulled_under_their_session_names() {
    if !prerequisites() {
        return;
    }
    let Some(registry) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = std::fs::canonicalize(dir.path()).unwrap();
    // A busybox image as an OCI layout (imported into a scratch data directory on the way).
    let seed = work.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    install_busybox_sample(&|args| kiln(&seed, args), &work);
    let layout = work.join("layout");
    push(
        &layout,
        &format!("{registry}/swebench/sweb.eval.x86_64.octo_1776_hello-1:latest"),
    );
    push(
        &layout,
        &format!("{registry}/swebench/sweb.eval.x86_64.octo_1776_hello-2:latest"),
    );

    // Three samples: one by the official name, one whose 5.x record names its image, and
    // one whose image was never published.
    let data = work.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let record = |id: &str| {
        json!({"instance_id": id, "repo": "octo/hello",
            "base_commit": "0000000000000000000000000000000000000000",
            "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": [], "test_patch": "", "test_cmd": "true"})
    };
    let mut second = record("octo__hello-2");
    second["image"] = json!("swebench/sweb.eval.x86_64.octo_1776_hello-2:latest");
    let records = [record("octo__hello-1"), second, record("octo__missing-3")];
    let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    let file = work.join("swe.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = kiln(
        &data,
        &[
            "datasets",
            "import",
            file.to_str().unwrap(),
            "--name",
            "swe",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = kiln(
        &data,
        &[
            "images",
            "pull",
            "--dataset",
            "swe",
            "--registry",
            &registry,
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "the missing image fails the command");
    assert!(stdout.contains("swe/sample/octo__hello-1:1 ← "), "{stdout}");
    assert!(stdout.contains("swe/sample/octo__hello-2:1 ← "), "{stdout}");
    assert!(
        stderr.contains("swe/sample/octo__missing-3:1")
            && stderr.contains("sweb.eval.x86_64.octo_1776_missing-3"),
        "{stderr}"
    );
    let listed = text(&kiln(&data, &["images", "list"]).stdout);
    for name in ["swe/sample/octo__hello-1:1", "swe/sample/octo__hello-2:1"] {
        assert!(listed.contains(name), "{listed}");
    }
    assert!(!listed.contains("missing-3:1"), "{listed}");
    // Both images are one layer, stored once.
    let layers = std::fs::read_dir(data.join("images/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 1, "{listed}");

    // Pulling again fetches nothing new and succeeds for what is published.
    let out = kiln(
        &data,
        &[
            "images",
            "pull",
            "--dataset",
            "swe",
            "--registry",
            &registry,
            "--jobs",
            "1",
        ],
    );
    assert!(
        text(&out.stdout).contains("octo__hello-1:1 ← "),
        "{}",
        text(&out.stderr)
    );

    // A session of the dataset runs in the pulled image.
    let port = free_port();
    let _server = serve(&data, port, &work.join("serve.log"));
    let key = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let api = Api {
        base: format!("http://127.0.0.1:{port}/api/v1"),
        key,
        http: reqwest::Client::new(),
    };
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/sessions",
            Some(json!({"dataset": "swe", "sample_id": "octo__hello-2"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["session_id"].as_str().unwrap().to_string();
    let done = api.run(&id, "cat hello.txt").await;
    assert_eq!(done["stdout"], "hello from the image\n", "{done}");
}
