//! Nodes on one PostgreSQL (issue 12), as CI proves it: two real `kiln serve`, each on
//! its own loopback address (127.0.0.2, 127.0.0.3) and data directory, share a database
//! and an image store. Both register and heartbeat (the admin API and `kiln nodes list`
//! show them, with each node's figures and images); `kiln nodes drain` drains one; an
//! agent job's result is read through the node that did not run it; a node holding a
//! session in the middle of a
//! command is killed with SIGKILL, and within the heartbeat window the other marks it
//! down and ends its session `terminated`/`node_lost`, the command -1000, billed once.
//! Restarted, the killed node leaves nothing of that sandbox running or mounted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;
use server_harness::*;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln_test_support::postgres::{admin_url, Locale, TestDatabase};
use serde_json::{json, Value};

/// Heartbeats every 100 ms; down after 1.5 s without one (a loaded CI machine stalls
/// for less than that). Usage sampled every second, for the nodes' figures.
const CLUSTER_ENV: [(&str, &str); 4] = [
    ("KILN_CLUSTER__HEARTBEAT_INTERVAL_MS", "100"),
    ("KILN_CLUSTER__DOWN_AFTER_MS", "1500"),
    ("KILN_CLUSTER__SECRET", "a-cluster-secret-for-tests"),
    ("KILN_BILLING__HEARTBEAT_SECS", "1"),
];

struct Node {
    data: std::path::PathBuf,
    listen: String,
    /// Where agent jobs may clone local repositories from.
    repos: String,
}

/// The `script` agent runs in the busybox sample's image.
const AGENT_IMAGE: &str = "test/sample/test-1:1";

impl Node {
    fn env<'a>(&'a self, db: &'a str, images: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("KILN_DATABASE_URL", db),
            ("KILN_IMAGES_DIR", images),
            ("KILN_AGENT_JOBS__LOCAL_REPO_ROOT", self.repos.as_str()),
            ("KILN_AGENT_JOBS__AGENTS__SCRIPT__IMAGE", AGENT_IMAGE),
        ];
        env.extend(CLUSTER_ENV);
        env
    }

    fn serve(&self, db: &str, images: &str, log: &Path) -> Server {
        serve_node(&self.data, &self.listen, &self.env(db, images), log)
    }

    fn kiln(&self, db: &str, images: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .envs(self.env(db, images))
            .env("KILN_LOAD_DEMO_DATASET", "false")
            .output()
            .expect("run kiln")
    }
}

fn api(base: &str, key: &str) -> Api {
    Api {
        base: base.to_string(),
        key: key.to_string(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    }
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<Value>,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_drain_and_a_killed_node_loses_its_sessions() {
    if !prerequisites() {
        return;
    }
    let Some(admin) = admin_url() else { return };
    let db = TestDatabase::create(&admin, "kiln_nodes", Locale::ServerDefault).await;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let images = root.join("images");
    let images = images.to_str().unwrap();
    let nodes: Vec<Node> = ["127.0.0.2", "127.0.0.3"]
        .iter()
        .enumerate()
        .map(|(i, ip)| Node {
            data: root.join(format!("node{i}")),
            listen: format!("{ip}:{}", free_port()),
            repos: root.join("repos").to_string_lossy().into_owned(),
        })
        .collect();
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut server_a = a.serve(&db.url, images, &root.join("a.log"));
    let key = std::fs::read_to_string(a.data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    install_busybox_sample(&|args| a.kiln(&db.url, images, args), &root);
    let mut server_b = b.serve(&db.url, images, &root.join("b.log"));
    let via_a = api(&format!("http://{}/api/v1", a.listen), &key);
    let via_b = api(&format!("http://{}/api/v1", b.listen), &key);
    let admin_a = api(&format!("http://{}/v1", a.listen), &key);

    // Both registered, active, heartbeating, at their own addresses.
    let servers = admin_a.get("/admin/servers").await;
    let list = servers["servers"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{servers}");
    for node in list {
        assert_eq!(node["status"], "active", "{node}");
    }
    let id_of = |node: &Node| -> String {
        std::fs::read_to_string(node.data.join("node-id"))
            .unwrap()
            .trim()
            .to_string()
    };
    let (id_a, id_b) = (id_of(a), id_of(b));
    let b_row = admin_a.get(&format!("/admin/servers/{id_b}")).await;
    assert_eq!(b_row["address"], format!("http://{}", b.listen), "{b_row}");
    let first_beat = b_row["last_heartbeat_at"].clone();
    let beat = wait_for("a heartbeat of b", Duration::from_secs(5), async || {
        let row = admin_a.get(&format!("/admin/servers/{id_b}")).await;
        (row["last_heartbeat_at"] != first_beat).then_some(row)
    })
    .await;
    assert_eq!(beat["status"], "active");
    let metrics = admin_a.get(&format!("/admin/servers/{id_b}/metrics")).await;
    assert!(
        metrics["heartbeat_age_ms"].as_i64().unwrap() < 1500,
        "{metrics}"
    );

    // Only admins; unknown servers are 404.
    let (status, _) = admin_a
        .call(reqwest::Method::GET, "/admin/servers/node-nope", None)
        .await;
    assert_eq!(status, 404);

    // `kiln nodes list` and `kiln nodes drain` through the binary.
    let url = format!("http://{}/api/v1", a.listen);
    let out = a.kiln(&db.url, images, &["nodes", "list", "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains(&id_a) && listed.contains(&id_b), "{listed}");
    let out = a.kiln(&db.url, images, &["nodes", "drain", &id_a, "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drained = admin_a.get(&format!("/admin/servers/{id_a}")).await;
    assert_eq!(drained["status"], "draining", "{drained}");

    // With a draining, every create lands on b, whichever node it is sent to; the agent
    // loop works through either node (requests for b's sessions sent to a are forwarded).
    let on_b = |sid: &str| b.data.join("runtime/sandboxes").join(sid).exists();
    let mut placed = Vec::new();
    for (i, via) in [&via_a, &via_b, &via_a, &via_a].into_iter().enumerate() {
        let (status, created) = via
            .call(
                reqwest::Method::POST,
                "/sessions",
                Some(json!({"dataset": "test", "sample_id": "test-1"})),
            )
            .await;
        assert_eq!(status, 201, "create {i}: {created}");
        let sid = created["session_id"].as_str().unwrap().to_string();
        let other = if i % 2 == 0 { &via_b } else { &via_a };
        let session = other.get(&format!("/sessions/{sid}")).await;
        assert_eq!(session["status"], "ready", "{session}");
        assert!(on_b(&sid), "session {i} was placed on the draining node");
        let done = via_a.run(&sid, &format!("echo {sid} > /root/state")).await;
        assert_eq!(done["exit_code"], 0, "{done}");
        let done = via_b.run(&sid, "cat /root/state /testbed/hello.txt").await;
        assert_eq!(
            done["stdout"],
            format!("{sid}\nhello from the image\n"),
            "{done}"
        );
        placed.push(sid);
    }
    let (status, body) = via_a
        .call(
            reqwest::Method::DELETE,
            &format!("/sessions/{}", placed[3]),
            None,
        )
        .await;
    assert!(
        status == 200 || status == 204,
        "close through a: {status} {body}"
    );
    let (status, back) = admin_a
        .call(
            reqwest::Method::PATCH,
            &format!("/admin/servers/{id_a}/status"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!((status, &back["status"]), (200, &json!("active")), "{back}");

    // b's figures, as its heartbeats report them: its creates and commands (those sent
    // to a included), its sandboxes' memory and processes as sampled (every second), and
    // the CPU a busy command used between two samples.
    let busy = via_a
        .run(
            &placed[1],
            "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done; echo $i",
        )
        .await;
    assert_eq!(busy["exit_code"], 0, "{busy}");
    let figures = wait_for("b's figures", Duration::from_secs(15), async || {
        let m = admin_a.get(&format!("/admin/servers/{id_b}/metrics")).await;
        let count = |kind: &str| m[kind]["count"].as_u64().unwrap_or(0);
        let sampled = m["pids"].as_u64() > Some(0) && m["memory"]["used_bytes"].as_u64() > Some(0);
        let busy = m["cpu_cores"].as_f64().is_some_and(|cores| cores > 0.05);
        (count("create_latency") >= 4 && count("exec_latency") >= 9 && sampled && busy).then_some(m)
    })
    .await;
    let execs = &figures["exec_latency"];
    let (p50, p99) = (
        execs["p50_ms"].as_f64().unwrap(),
        execs["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{figures}");
    let memory = &figures["memory"];
    assert!(
        memory["reserved_bytes"].as_u64() > Some(0) && memory["budget_bytes"].as_u64() > Some(0),
        "{figures}"
    );
    let b_row = admin_a.get(&format!("/admin/servers/{id_b}")).await;
    assert!(b_row["capacity"]["cpus"].as_u64() >= Some(1), "{b_row}");
    let b_images = b_row["images"].as_array().unwrap();
    assert!(
        b_images
            .iter()
            .any(|i| i.as_str().unwrap().contains("test-1")),
        "{b_row}"
    );

    // An agent job accepted by b runs on b, whose disk keeps its result: read through a,
    // the result is relayed from b.
    let repo = make_agent_repo(&root.join("repos"));
    let (status, job) = via_b
        .call(
            reqwest::Method::POST,
            "/agent-jobs",
            Some(json!({"repo": repo, "agent_id": "script"})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let done = wait_for("b's agent job", Duration::from_secs(60), async || {
        let job = via_a.get(&format!("/agent-jobs/{job_id}")).await;
        (job["status"] == "completed" || job["status"] == "error").then_some(job)
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let result = |via: &Api| {
        via.http
            .get(format!("{}/agent-jobs/{job_id}/result", via.base))
            .bearer_auth(&via.key)
            .send()
    };
    let relayed = result(&via_a).await.unwrap();
    assert_eq!(relayed.status(), 200);
    let archive = relayed.bytes().await.unwrap();
    assert!(archive.starts_with(&[0x1f, 0x8b]), "not a gzip archive");

    // A session on b, in the middle of a command (started through a), when b is killed.
    let sid = placed[0].clone();
    let cut = via_a.start(&sid, "sleep 30").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox_processes(&sid).iter().any(|(pid, _)| {
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.starts_with("sleep\0"))
    }) {
        assert!(Instant::now() < deadline, "sleep 30 never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let processes = sandbox_processes(&sid);
    server_b.0.kill().unwrap();
    server_b.0.wait().unwrap();
    let killed = Instant::now();

    // a marks b down and ends its session, within the window (plus a beat or two).
    let ended = wait_for("b's session to end", Duration::from_secs(10), async || {
        let (_, s) = via_a
            .call(reqwest::Method::GET, &format!("/sessions/{sid}"), None)
            .await;
        (s["status"] == "terminated").then_some(s)
    })
    .await;
    let took = killed.elapsed();
    assert!(ended.to_string().contains("node_lost"), "{ended}");
    let row = admin_a.get(&format!("/admin/servers/{id_b}")).await;
    assert_eq!(row["status"], "down", "{row}");
    let interaction = via_a
        .get(&format!("/sessions/{sid}/interactions/{cut}"))
        .await;
    assert_eq!(interaction["exit_code"], -1000, "{interaction}");
    // b's agent job result is on b's disk: a says so (503), not a 500 or a hang.
    let (status, body) = via_a
        .call(
            reqwest::Method::GET,
            &format!("/agent-jobs/{job_id}/result"),
            None,
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("cannot be reached"), "{body}");
    let usage = via_a.get("/billing/usage?limit=100").await;
    let transactions = usage["transactions"].as_array().unwrap();
    for id in &placed {
        let charges = transactions
            .iter()
            .filter(|t| t["type"] == "session_usage" && t["session_id"] == json!(id))
            .count();
        let ended = via_a.get(&format!("/sessions/{id}")).await;
        assert_eq!(charges, 1, "{id} ({}): {usage}", ended["status"]);
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

    // b comes back: registered again, and nothing of the lost session is left.
    let mut server_b = b.serve(&db.url, images, &root.join("b2.log"));
    let row = admin_a.get(&format!("/admin/servers/{id_b}")).await;
    assert_eq!(row["status"], "active", "{row}");
    assert_eq!(
        alive(&processes),
        Vec::<u32>::new(),
        "the lost sandbox still runs"
    );
    assert_eq!(
        mounts_under(&b.data.join("runtime/sandboxes").join(&sid)),
        Vec::<String>::new()
    );
    let session = via_b.get(&format!("/sessions/{sid}")).await;
    assert_eq!(session["status"], "terminated", "{session}");

    server_b.stop();
    server_a.stop();
    assert_eq!(mounts_under(&root), Vec::<String>::new());
    db.drop_now().await.unwrap();
    eprintln!(
        "nodes: session ended node_lost {:.2}s after the kill; whole test {:.1}s",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// A git repository under `repos` whose `.kiln/agent.sh` (what the `script` agent runs)
/// writes a file; its path.
fn make_agent_repo(repos: &Path) -> String {
    let repo = repos.join("calc");
    std::fs::create_dir_all(repo.join(".kiln")).unwrap();
    std::fs::write(
        repo.join(".kiln/agent.sh"),
        "echo agent was here > out.txt\n",
    )
    .unwrap();
    std::fs::write(repo.join("lib.py"), "x = 1\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.test",
            "commit",
            "-qm",
            "first",
        ],
    ] {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    }
    repo.to_string_lossy().into_owned()
}
