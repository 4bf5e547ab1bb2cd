//! A crash, as CI proves it: the real `kiln` binary, serving 20 sessions of which some are
//! in the middle of a command, is killed with SIGKILL and started again on the same data
//! directory. Every session must then be adopted (and usable, with its changes) or ended;
//! commands the crash cut off end with -1000; the ledger charges each session at most
//! once; `kiln images rm` refuses to delete the layers live sessions use. After the
//! sessions are closed and the server stopped, nothing is left: no mount under the data
//! directory, no sandbox cgroup, no sandbox process, no loop device, no socket link.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;
use server_harness::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

const SESSIONS: usize = 20;
/// Sessions (by index) left running `sleep 30` when the server is killed.
const CUT_OFF: [usize; 6] = [0, 3, 7, 11, 15, 19];
/// Sessions whose sandbox dies while the server is down (one of them mid-command).
const DIED: [usize; 3] = [1, 5, 7];
/// The whole scenario's bound (CI machines are loaded; it takes ~20 s here).
const DEADLINE: Duration = Duration::from_secs(240);

/// cgroup directories named `name`, in every hierarchy.
fn cgroups_named(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name() == name {
                found.push(entry.path());
            } else if depth < 8 {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    found
}

/// Loop devices backed by files under `dir`, once the kernel has caught up: it detaches
/// an autoclear device in a work item after its last close, so a loaded machine may show
/// one for a moment after the unmount. Waits up to 5 s for none.
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = loop_devices_now_under(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn loop_devices_now_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|backing| backing.starts_with(&dir))
        .collect()
}

fn socket_links_to(dir: &Path) -> Vec<PathBuf> {
    ["/run/kiln", "/tmp/kiln-run"]
        .iter()
        .flat_map(|parent| std::fs::read_dir(parent).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|link| std::fs::read_link(link).is_ok_and(|t| t.starts_with(dir)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_without_leaks() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let reference = install_busybox_sample(&|args| kiln(&data, args), dir.path());

    let port = free_port();
    let mut server = serve(&data, port, &dir.path().join("first.log"));
    let api = Api {
        base: format!("http://127.0.0.1:{port}/api/v1"),
        key: std::fs::read_to_string(data.join("admin.key"))
            .unwrap()
            .trim()
            .to_string(),
        // Long-polls answer within 20 s: a hung server fails the test instead of hanging it.
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };

    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let (status, created) = api
            .call(
                reqwest::Method::POST,
                "/sessions",
                Some(json!({"dataset": "test", "sample_id": "test-1"})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        sessions.push(created["session_id"].as_str().unwrap().to_string());
    }
    let mut processes = BTreeMap::new();
    let mut cut_off = BTreeMap::new();
    for (i, id) in sessions.iter().enumerate() {
        let session = api.get(&format!("/sessions/{id}")).await;
        assert_eq!(session["status"], "ready", "{session}");
        let done = api
            .run(id, &format!("echo {id} > /root/state; echo up"))
            .await;
        assert_eq!(done["exit_code"], 0, "{done}");
        if CUT_OFF.contains(&i) {
            cut_off.insert(id.clone(), api.start(id, "sleep 30").await);
        }
    }
    // The cut-off commands are running in their sandboxes (not merely queued).
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in cut_off.keys() {
        while !sandbox_processes(id).iter().any(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep\0"))
        }) {
            assert!(Instant::now() < deadline, "sleep 30 never ran in {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for id in &sessions {
        let found = sandbox_processes(id);
        assert!(!found.is_empty(), "no processes found for sandbox {id}");
        assert!(!cgroups_named(id).is_empty(), "no cgroup found for {id}");
        processes.insert(id.clone(), found);
    }

    // The crash; some sandboxes die with it (their mounts and cgroups stay behind).
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    for i in DIED {
        let pids: Vec<String> = processes[&sessions[i]]
            .iter()
            .map(|(pid, _)| pid.to_string())
            .collect();
        Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .unwrap();
    }
    let port = free_port();
    let mut server = serve(&data, port, &dir.path().join("second.log"));
    let api = Api {
        base: format!("http://127.0.0.1:{port}/api/v1"),
        ..api
    };

    // Every session is adopted (and has its changes) or ended (and left nothing behind).
    let mut live = Vec::new();
    for (i, id) in sessions.iter().enumerate() {
        let session = api.get(&format!("/sessions/{id}")).await;
        if DIED.contains(&i) {
            assert_eq!(session["status"], "terminated", "{session}");
        }
        match session["status"].as_str() {
            Some("ready") => {
                let done = api.run(id, "cat /root/state").await;
                assert_eq!(done["exit_code"], 0, "{done}");
                assert_eq!(done["stdout"], format!("{id}\n"), "the same sandbox");
                live.push(id.clone());
            }
            Some("terminated" | "closed") => {
                assert_eq!(alive(&processes[id]), Vec::<u32>::new(), "{id}");
                assert_eq!(cgroups_named(id), Vec::<PathBuf>::new(), "{id}");
                let sandbox = data.join("runtime/sandboxes").join(id);
                assert_eq!(mounts_under(&sandbox), Vec::<String>::new(), "{id}");
            }
            other => panic!("session {id} is {other:?} after the restart: {session}"),
        }
    }
    for (id, iid) in &cut_off {
        let cut = api.get(&format!("/sessions/{id}/interactions/{iid}")).await;
        assert_eq!(cut["exit_code"], -1000, "{cut}");
    }

    // Removing the image under live sessions is refused, naming them, and breaks nothing.
    if let Some(first) = live.first() {
        let out = kiln(&data, &["images", "rm", &reference]);
        assert!(!out.status.success(), "removed under live sessions");
        let said = text(&out.stderr);
        assert!(said.contains(first.as_str()), "{said}");
        let done = api.run(first, "cat /testbed/hello.txt").await;
        assert_eq!(done["stdout"], "hello from the image\n", "{done}");
    }

    for id in &live {
        let (status, body) = api
            .call(reqwest::Method::DELETE, &format!("/sessions/{id}"), None)
            .await;
        assert!(status == 200 || status == 204, "{status} {body}");
    }
    // Every session ended, and was charged once (at most once for any session, ever);
    // the balance is the sum of the ledger.
    let usage = api.get("/billing/usage?limit=100").await;
    let transactions = usage["transactions"].as_array().unwrap();
    let mut charged: BTreeMap<String, usize> = BTreeMap::new();
    for t in transactions {
        if t["type"] == "session_usage" {
            *charged
                .entry(t["session_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in &sessions {
        assert_eq!(charged.get(id), Some(&1), "{id}: {usage}");
    }
    let sum: i64 = transactions
        .iter()
        .map(|t| t["amount_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(
        usage["current_balance_cents"].as_i64(),
        Some(sum),
        "{usage}"
    );

    server.stop();

    // Nothing is left of any sandbox.
    for (id, found) in &processes {
        assert_eq!(alive(found), Vec::<u32>::new(), "{id}");
        assert_eq!(cgroups_named(id), Vec::<PathBuf>::new(), "{id}");
    }
    assert_eq!(mounts_under(&data), Vec::<String>::new());
    assert_eq!(loop_devices_under(&data), Vec::<String>::new());
    assert_eq!(socket_links_to(&data), Vec::<PathBuf>::new());
    let out = kiln(&data, &["images", "rm", &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < DEADLINE,
        "the scenario took {:?}",
        started.elapsed()
    );
    eprintln!(
        "crash scenario: {SESSIONS} sessions, {} adopted, {:?}",
        live.len(),
        started.elapsed()
    );
    assert_eq!(live.len(), SESSIONS - DIED.len(), "the others are adopted");
}
