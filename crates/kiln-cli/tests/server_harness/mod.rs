//! What the tests that drive the real `kiln` binary share: root and tool checks, running
//! `kiln` on a data directory, a `kiln serve` that stops when dropped, a small API client,
//! and what a sandbox leaves on the host (its processes, mounts). Each test binary uses a
//! part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn prerequisites() -> bool {
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

pub fn kiln(data: &Path, args: &[&str]) -> Output {
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

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kiln serve`; stopped gracefully when dropped (a failed assertion must not
/// leave a server and its sandboxes running).
pub struct Server(pub Child);

impl Server {
    /// SIGTERM, then waits for the graceful stop.
    pub fn stop(&mut self) {
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
pub fn serve(data: &Path, port: u16, log: &Path) -> Server {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .env("KILN_BUILD_DEMO_IMAGES", "false")
        // Admission weighs disk limits against the host's free disk: with the default
        // 10 GiB each, 20 sessions need ~10 GiB free and the test would fail on a fuller
        // disk. These sandboxes write a few KiB.
        .env("KILN_RUNTIME__DISK_MIB", "256")
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

pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
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

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Runs `command` to its end and returns the interaction.
    pub async fn run(&self, session: &str, command: &str) -> Value {
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

    pub async fn start(&self, session: &str, command: &str) -> String {
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
pub fn sandbox_processes(sandbox: &str) -> BTreeSet<(u32, String)> {
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
pub fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    (fields.first() != Some(&"Z")).then(|| fields.get(19).map(|s| s.to_string()))?
}

pub fn alive(processes: &BTreeSet<(u32, String)>) -> Vec<u32> {
    processes
        .iter()
        .filter(|(pid, start)| start_time(*pid).as_ref() == Some(start))
        .map(|(pid, _)| *pid)
        .collect()
}

pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// `kiln serve` listening on `listen` with extra environment (`KILN_DATABASE_URL`,
/// `KILN_CLUSTER__…`), once it says it serves: a node of a cluster test.
pub fn serve_node(data: &Path, listen: &str, env: &[(&str, &str)], log: &Path) -> Server {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", listen])
        .arg("--data-dir")
        .arg(data)
        .env("KILN_LOAD_DEMO_DATASET", "false")
        .env("KILN_BUILD_DEMO_IMAGES", "false")
        // Admission weighs disk limits against the host's free disk: with the default
        // 10 GiB each, 20 sessions need ~10 GiB free and the test would fail on a fuller
        // disk. These sandboxes write a few KiB.
        .env("KILN_RUNTIME__DISK_MIB", "256")
        .envs(env.iter().copied())
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

/// A busybox image with `/testbed/hello.txt` as the image of sample `test/test-1`, and
/// that sample's record, imported with `run` (`kiln` with the caller's data directory,
/// database and image store).
pub fn install_busybox_sample(run: &dyn Fn(&[&str]) -> Output, work: &Path) -> String {
    use kiln_envimage::{LayerCompression, LayerTarOptions, OciLayout};
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
    let reference = kiln_services::sessions::sample_image_reference("test", "test-1");
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
    layout
        .finish(&config, std::slice::from_ref(&layer), &reference)
        .unwrap();
    let out = run(&[
        "images",
        "import",
        layout.dir().to_str().unwrap(),
        "--reference",
        &reference,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record = json!({"instance_id": "test-1", "repo": "test/hello",
        "base_commit": "0000000000000000000000000000000000000000",
        "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": [], "test_patch": "", "test_cmd": "true"});
    let records = work.join("records.jsonl");
    std::fs::write(&records, format!("{record}\n")).unwrap();
    let out = run(&[
        "datasets",
        "import",
        records.to_str().unwrap(),
        "--name",
        "test",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    reference
}
