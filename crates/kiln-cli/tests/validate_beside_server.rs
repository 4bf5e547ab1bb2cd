//! `kiln datasets validate` beside a live `kiln serve` on the same data directory
//! (issue 14): the real binary, two processes. Validate runs on a node of its own, so the
//! server's session, its running verification and its sandbox come through untouched;
//! SIGINT makes validate close what it started; what a `kill -9`'d validate left is
//! reclaimed by the next process to start (its session `terminated`, `node_lost`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;
use server_harness::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_envimage::{LayerCompression, LayerTarOptions, OciLayout};
use kiln_store::SessionStatus;
use serde_json::json;

/// A busybox image with `/testbed/hello.txt` as the image of samples `test/fast` (its
/// tests sleep 20 s in a session that has `/root/slow`) and `test/slow` (always 30 s).
fn install_samples(data: &Path, work: &Path) {
    let root = work.join("rootfs");
    for dir in ["bin", "etc", "tmp", "root", "proc", "dev", "sys", "testbed"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in text(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("testbed/hello.txt"), "hello from the image\n").unwrap();
    let layout = OciLayout::create(&work.join("layout")).unwrap();
    let (layer, _) = layout
        .write_layer(
            &root,
            &LayerTarOptions::default(),
            LayerCompression::None,
            |_, _| {},
        )
        .unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "WorkingDir": "/testbed"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    });
    let mut records = String::new();
    for (sample, test_cmd) in [
        (
            "fast",
            "if [ -f /root/slow ]; then sleep 20; fi; echo PASSED t1",
        ),
        ("slow", "sleep 30; echo PASSED t1"),
    ] {
        let reference = kiln_services::sessions::sample_image_reference("test", sample);
        layout
            .finish(&config, std::slice::from_ref(&layer), &reference)
            .unwrap();
        let out = kiln(
            data,
            &[
                "images",
                "import",
                layout.dir().to_str().unwrap(),
                "--reference",
                &reference,
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let record = json!({"instance_id": sample, "repo": "test/hello",
            "base_commit": "0000000000000000000000000000000000000000",
            "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": [], "test_patch": "", "patch": "",
            "test_cmd": test_cmd, "log_parser": "pytest", "verify_timeout_secs": 60});
        records.push_str(&format!("{record}\n"));
    }
    let file = work.join("records.jsonl");
    std::fs::write(&file, records).unwrap();
    let out = kiln(
        data,
        &[
            "datasets",
            "import",
            file.to_str().unwrap(),
            "--name",
            "test",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `kiln datasets validate test --sample SAMPLE` in the background (output to `log`).
fn spawn_validate(data: &Path, sample: &str, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["datasets", "validate", "test", "--sample", sample])
        .arg("--data-dir")
        .arg(data)
        .env_remove("KILN_DATABASE_URL")
        .env_remove("KILN_IMAGES_DIR")
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// The ephemeral nodes' directories under `data/nodes`.
fn nodes(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Waits for a validate node's sandbox to run `sleep`; returns its sandbox (session) id
/// and processes.
async fn sleeping_validate_sandbox(data: &Path) -> (String, BTreeSet<(u32, String)>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for node in nodes(data) {
            for sandbox in std::fs::read_dir(node.join("runtime/sandboxes"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let id = sandbox.file_name().to_string_lossy().into_owned();
                let found = sandbox_processes(&id);
                let sleeping = found.iter().any(|(pid, _)| {
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.starts_with("sleep\0"))
                });
                if sleeping {
                    return (id, found);
                }
            }
        }
        assert!(Instant::now() < deadline, "validate's tests never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_beside_a_server_touches_nothing_of_it() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_samples(&data, dir.path());
    let port = free_port();
    let mut server = serve(&data, port, &dir.path().join("server.log"));
    let api = Api {
        base: format!("http://127.0.0.1:{port}/api/v1"),
        key: std::fs::read_to_string(data.join("admin.key"))
            .unwrap()
            .trim()
            .to_string(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };

    // The server's session, with a verification running (its tests sleep 20 s).
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/sessions",
            Some(json!({"dataset": "test", "sample_id": "fast"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let session = created["session_id"].as_str().unwrap().to_string();
    let ready = api.get(&format!("/sessions/{session}")).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let done = api.run(&session, "touch /root/slow; echo up").await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let (status, job) = api
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{session}/verify"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job = job["job_id"].as_str().unwrap().to_string();
    let server_processes = sandbox_processes(&session);
    assert!(!server_processes.is_empty());

    // 1. A whole validate beside it, to its end.
    let mut validate = spawn_validate(&data, "fast", &dir.path().join("validate1.log"));
    let status = wait_exit(&mut validate, Duration::from_secs(120));
    let said = std::fs::read_to_string(dir.path().join("validate1.log")).unwrap();
    assert!(said.contains("1 samples"), "{status}: {said}");
    // Its tests pass without the fix, so it says which expected test did otherwise.
    assert!(
        said.contains("without the patch: FAIL_TO_PASS passed already: t1"),
        "{said}"
    );
    assert_eq!(
        nodes(&data),
        Vec::<PathBuf>::new(),
        "validate removes its node"
    );

    // The server's sandbox, its running verification and its session are untouched.
    assert_eq!(
        alive(&server_processes).len(),
        server_processes.len(),
        "the server's sandbox lost processes"
    );
    let view = api.get(&format!("/sessions/{session}")).await;
    assert_eq!(view["status"], "ready", "{view}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let j = api.get(&format!("/sessions/{session}/verify/{job}")).await;
        if j["status"] != "pending" && j["status"] != "starting" && j["status"] != "running" {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "the verification never ended: {j}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["status"], "completed", "{job}");
    let done = api.run(&session, "cat /testbed/hello.txt").await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(done["stdout"], "hello from the image\n", "{done}");

    // 2. SIGINT while its tests run: it closes its session and removes its sandbox.
    let mut validate = spawn_validate(&data, "slow", &dir.path().join("validate2.log"));
    let (sandbox, processes) = sleeping_validate_sandbox(&data).await;
    Command::new("kill")
        .args(["-INT", &validate.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut validate, Duration::from_secs(30));
    let said = std::fs::read_to_string(dir.path().join("validate2.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    assert_eq!(alive(&processes), Vec::<u32>::new(), "{sandbox} still runs");
    assert_eq!(nodes(&data), Vec::<PathBuf>::new(), "{said}");
    assert_eq!(mounts_under(&data.join("nodes")), Vec::<String>::new());
    let store = kiln_store::connect(&format!("sqlite://{}", data.join("kiln.db").display()))
        .await
        .unwrap();
    let closed = store.get_session(&sandbox).await.unwrap().unwrap();
    assert_eq!(closed.status, SessionStatus::Closed, "{closed:?}");

    // 3. kill -9 while its tests run: the next validate reclaims what it left.
    let mut validate = spawn_validate(&data, "slow", &dir.path().join("validate3.log"));
    let (sandbox, processes) = sleeping_validate_sandbox(&data).await;
    validate.kill().unwrap();
    validate.wait().unwrap();
    assert!(
        !alive(&processes).is_empty(),
        "the sandbox outlives its process"
    );
    assert_eq!(nodes(&data).len(), 1);
    let mut again = spawn_validate(&data, "fast", &dir.path().join("validate4.log"));
    wait_exit(&mut again, Duration::from_secs(120));
    assert_eq!(
        alive(&processes),
        Vec::<u32>::new(),
        "{sandbox} was not reclaimed"
    );
    assert_eq!(nodes(&data), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&data.join("nodes")), Vec::<String>::new());
    let lost = store.get_session(&sandbox).await.unwrap().unwrap();
    assert_eq!(lost.status, SessionStatus::Terminated, "{lost:?}");
    assert_eq!(lost.error_code.as_deref(), Some("node_lost"), "{lost:?}");

    // Through all of it, the server's session kept working.
    let done = api.run(&session, "echo still").await;
    assert_eq!(done["exit_code"], 0, "{done}");
    server.stop();
    assert_eq!(mounts_under(&data), Vec::<String>::new());
    eprintln!("validate beside a server: {:?}", started.elapsed());
}
