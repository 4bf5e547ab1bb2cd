//! `kiln datasets validate` beside a live `kiln serve` on the same data directory
//! (issue 14): the real binary, two processes. Validate runs on a node of its own, so the
//! server's session, its running verification and its sandbox come through untouched;
//! SIGINT makes validate close what it started; what a `kill -9`'d validate left is
//! reclaimed by the next process to start (its session `terminated`, `node_lost`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_envimage::{LayerCompression, LayerTarOptions, OciLayout};
use kiln_store::SessionStatus;
use serde_json::{json, Value};

fn prerequisites() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let missing = if !root {
        Some("the crash test needs root")
    } else if kiln_runtime::local::find_in_path("bwrap").is_none() {
        Some("bubblewrap is not installed (apt-get install bubblewrap)")
    } else if !Path::new("/bin/busybox").is_file() {
        Some("busybox is not installed (apt-get install busybox-static)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("cannot run: {why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

fn kiln(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("KILN_DATABASE_URL")
        .env_remove("KILN_IMAGES_DIR")
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .output()
        .expect("run kiln")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kiln serve`; stopped gracefully when dropped (a failed assertion must not
/// leave a server and its sandboxes running).
struct Server(Child);

impl Server {
    /// SIGTERM, then waits for the graceful stop.
    fn stop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let stop = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() {
            if stop.elapsed() > Duration::from_secs(30) {
                let _ = self.0.kill();
                panic!("kiln serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already waited for (the crash): its pid may belong to someone else by now.
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        if !std::thread::panicking() {
            return self.stop();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `kiln serve` on `data`, once it says it serves (its output goes to `log`).
fn serve(data: &Path, port: u16, log: &Path) -> Server {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .env("KILN_BUILD_DEMO_IMAGES", "false")
        .env_remove("KILN_DATABASE_URL")
        .env_remove("KILN_IMAGES_DIR")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(log).is_ok_and(|l| l.contains("Kiln is serving")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "kiln serve did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Runs `command` to its end and returns the interaction.
    async fn run(&self, session: &str, command: &str) -> Value {
        let iid = self.start(session, command).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = self
                .get(&format!("/sessions/{session}/interactions/{iid}"))
                .await;
            if !done["exit_code"].is_null() {
                return done;
            }
            assert!(Instant::now() < deadline, "{command} never ended: {done}");
        }
    }

    async fn start(&self, session: &str, command: &str) -> String {
        let (status, started) = self
            .call(
                reqwest::Method::POST,
                &format!("/sessions/{session}/exec"),
                Some(json!({ "command": command })),
            )
            .await;
        assert_eq!(status, 202, "{started}");
        started["interaction_id"].as_str().unwrap().to_string()
    }
}

/// Processes of the host whose cgroup path names `sandbox`: (pid, start time).
fn sandbox_processes(sandbox: &str) -> BTreeSet<(u32, String)> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.lines().any(|l| l.ends_with(&format!("/{sandbox}"))) {
            if let Some(start) = start_time(pid) {
                found.insert((pid, start));
            }
        }
    }
    found
}

/// Field 22 of `/proc/<pid>/stat` (start time), unless the process is gone or a zombie.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    (fields.first() != Some(&"Z")).then(|| fields.get(19).map(|s| s.to_string()))?
}

fn alive(processes: &BTreeSet<(u32, String)>) -> Vec<u32> {
    processes
        .iter()
        .filter(|(pid, start)| start_time(*pid).as_ref() == Some(start))
        .map(|(pid, _)| *pid)
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
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
