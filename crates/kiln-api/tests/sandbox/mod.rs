//! Set-up for tests that need real sandboxes: root, bubblewrap, a static agent, and a
//! small busybox image registered as the sample `test/test-1`.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_envimage::{LayerCompression, LayerTarOptions, OciLayout};
use kiln_services::datasets::ImportRequest;
use serde_json::{json, Value};

use crate::common::{Database, TestServer};

pub const DATASET: &str = "test";
pub const SAMPLE: &str = "test-1";
/// The same image, graded the codeset-gym way (`/verifier.sh` writes JUnit XML).
pub const CODESET_SAMPLE: &str = "test-2";
/// The same image with a 64 MiB disk of its own (`disk_mib` in the record).
pub const SMALL_DISK_SAMPLE: &str = "test-3";
/// Asks for a disk past any `runtime.max_disk_mib`.
pub const HUGE_DISK_SAMPLE: &str = "test-4";

/// Whether sandbox tests can run here. Under `CI` a missing prerequisite fails the test
/// instead of skipping it, so CI cannot pass without running them.
pub fn prerequisites() -> bool {
    let missing = if !nix_is_root() {
        Some("these tests need root")
    } else if !Path::new("/usr/bin/bwrap").exists() {
        Some("bubblewrap is not installed (apt-get install bubblewrap)")
    } else if !Path::new("/bin/busybox").exists() {
        Some("busybox is not installed (apt-get install busybox-static)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("cannot run sandbox tests: {why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The static agent: `KILN_AGENT_BIN`, or built once with `scripts/build-agent.sh`.
pub use kiln_test_support::agent_binary;

/// A busybox root with `/testbed/hello.txt`, written as an OCI layout and imported into
/// the server's image store as the image of `test/test-1`; the sample is imported too.
pub async fn install_test_sample(server: &TestServer) {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("rootfs");
    for dir in ["bin", "etc", "tmp", "root", "proc", "dev", "sys", "testbed"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("testbed/hello.txt"), "hello from the image\n").expect("hello");

    let reference = kiln_services::sessions::sample_image_reference(DATASET, SAMPLE);
    let layout = OciLayout::create(&work.path().join("layout")).expect("layout");
    let (layer, _) = layout
        .write_layer(
            &root,
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
        .finish(&config, std::slice::from_ref(&layer), &reference)
        .expect("finish");
    let store =
        kiln_image::ImageStore::open(&server.kiln.config.images_dir()).expect("image store");
    store
        .import(
            layout.dir(),
            &kiln_image::ImportOptions {
                reference: Some(reference.clone()),
                ..Default::default()
            },
        )
        .expect("import image");
    let codeset_reference =
        kiln_services::sessions::sample_image_reference(DATASET, CODESET_SAMPLE);
    store
        .tag(&reference, &codeset_reference)
        .expect("tag image");
    for sample in [SMALL_DISK_SAMPLE, HUGE_DISK_SAMPLE] {
        let tag = kiln_services::sessions::sample_image_reference(DATASET, sample);
        store.tag(&reference, &tag).expect("tag image");
    }

    // Verification runs the script the test writes, parsed as pytest output, with a
    // short timeout: one sample can pass, fail or hang as a test needs.
    let record = json!({"instance_id": SAMPLE, "repo": "test/hello", "base_commit": "0000000000000000000000000000000000000000",
                        "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": [], "test_patch": "",
                        "test_cmd": "sh /testbed/run-tests.sh", "log_parser": "pytest", "verify_timeout_secs": 3})
    .to_string()
        + "\n"
        + &json!({"instance_id": CODESET_SAMPLE, "repo": "test/hello", "base_commit": "0000000000000000000000000000000000000000",
                  "language": "python", "grading": "codeset", "verify_timeout_secs": 10,
                  "FAIL_TO_PASS": ["suite::t1"], "PASS_TO_PASS": ["suite::t2"], "FAIL_TO_FAIL": ["suite::t3"]})
        .to_string()
        + "\n"
        + &json!({"instance_id": SMALL_DISK_SAMPLE, "repo": "test/hello", "base_commit": "0000000000000000000000000000000000000000",
                  "disk_mib": 64})
        .to_string()
        + "\n"
        + &json!({"instance_id": HUGE_DISK_SAMPLE, "repo": "test/hello", "base_commit": "0000000000000000000000000000000000000000",
                  "disk_mib": 1u64 << 40})
        .to_string();
    server
        .kiln
        .datasets
        .import(ImportRequest {
            dataset: DATASET,
            description: None,
            version_description: None,
            text: &record,
            repos_dir: None,
        })
        .await
        .expect("import sample");
}

/// A server that can run sessions of `test/test-1`, on [`Database::from_env`].
pub async fn start(tweak: impl FnOnce(&mut kiln_config::Config)) -> TestServer {
    start_on(&Database::from_env(), tweak).await
}

/// [`start`] where sandboxes can run; `None` (the test skips) where [`prerequisites`]
/// are missing.
pub async fn start_if_possible(tweak: impl FnOnce(&mut kiln_config::Config)) -> Option<TestServer> {
    if !prerequisites() {
        return None;
    }
    Some(start(tweak).await)
}

/// [`start`], storing in `database`.
pub async fn start_on(
    database: &Database,
    tweak: impl FnOnce(&mut kiln_config::Config),
) -> TestServer {
    let agent = agent_binary();
    let server = TestServer::start_on(database, |c| {
        c.runtime.agent_binary = Some(agent);
        tweak(c);
    })
    .await;
    assert_eq!(
        server.kiln.sessions.unavailable_reason(),
        None,
        "sessions must be available"
    );
    install_test_sample(&server).await;
    server
}

/// `POST /sessions` of `test/<sample>` as the holder of `key`: (status, JSON body).
pub async fn create_session(s: &TestServer, key: &str, sample: &str) -> (u16, Value) {
    s.post_as(
        key,
        "/sessions",
        &json!({"dataset": DATASET, "sample_id": sample}),
    )
    .await
}

/// Creates a session of `test/<sample>` as the holder of `key` and waits (a GET on a
/// creating session waits) until it is ready: its id.
pub async fn create_ready_sample(s: &TestServer, key: &str, sample: &str) -> String {
    let (status, created) = create_session(s, key, sample).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "creating", "{created}");
    let id = created["session_id"].as_str().expect("id").to_string();
    let session = s.get_ok(key, &format!("/sessions/{id}")).await;
    assert_eq!(
        session["status"], "ready",
        "a GET on a creating session waits for ready: {session}"
    );
    id
}

/// [`create_ready_sample`] of `test/test-1`.
pub async fn create_ready(s: &TestServer, key: &str) -> String {
    create_ready_sample(s, key, SAMPLE).await
}

/// Starts `command` in session `id`: its interaction id.
pub async fn start_exec(s: &TestServer, key: &str, id: &str, command: &str) -> String {
    let (status, started) = s
        .post_as(
            key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": command}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    started["interaction_id"].as_str().expect("iid").to_string()
}

/// Waits (long-poll) for an interaction to finish.
pub async fn finished(s: &TestServer, key: &str, id: &str, iid: &str) -> Value {
    loop {
        let done = s
            .get_ok(key, &format!("/sessions/{id}/interactions/{iid}"))
            .await;
        if !done["exit_code"].is_null() {
            return done;
        }
    }
}

/// Session `id` once it is no longer `ready`, or as it is 5 s after `since`.
pub async fn once_not_ready(s: &TestServer, key: &str, id: &str, since: Instant) -> Value {
    loop {
        let session = s.get_ok(key, &format!("/sessions/{id}")).await;
        if session["status"] != "ready" || since.elapsed() > Duration::from_secs(5) {
            return session;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The session usage charges of `id` in the caller's ledger.
pub async fn session_usage_charges(s: &TestServer, key: &str, id: &str) -> Vec<Value> {
    let body = s
        .get_ok(
            key,
            "/billing/usage?transaction_types=session_usage&limit=100",
        )
        .await;
    body["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .filter(|t| t["session_id"] == id)
        .cloned()
        .collect()
}

/// The host pid of the sandbox's init (its agent), as the local runtime recorded it.
pub fn init_pid(s: &TestServer, id: &str) -> u32 {
    let state = s
        .kiln
        .config
        .data_dir
        .join("runtime/sandboxes")
        .join(id)
        .join("state.json");
    let text = std::fs::read_to_string(&state).expect("sandbox state");
    let state: Value = serde_json::from_str(&text).expect("state JSON");
    state["init_pid"].as_u64().expect("init_pid") as u32
}

pub fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}
