//! The instance API's commands as a user runs them against a real `kiln serve` with real
//! sandboxes: `instances`, `exec --stream`, `files`, `snapshot`, `fork`, `ports` and
//! `webhooks`, each checked by what it did (files read back, a server inside reached
//! through the forward, a signed delivery received), not by its exit code alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_harness;

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::Value;
use server_harness::{
    free_port, install_busybox_sample, kiln, prerequisites, serve_node, text, Api,
};

/// `kiln ARGS` against the server, as the admin; stdout, or the failure's stderr as a panic.
fn ok(data: &Path, url: &str, args: &[&str]) -> String {
    let out = run(data, url, args);
    assert!(
        out.status.success(),
        "kiln {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The server and the data directory (its admin key) are named by the environment:
/// flags after `exec … --` would be the command's.
fn run(data: &Path, url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_DATA_DIR", data)
        .env("KILN_URL", url)
        .env_remove("KILN_DATABASE_URL")
        .env_remove("KILN_API_KEY")
        .output()
        .expect("run kiln")
}

/// What a webhook receiver on this machine got: (signature header, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = Arc::clone(&received);
            move |headers: HeaderMap, body: Bytes| async move {
                let signature = headers
                    .get("kiln-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                received.lock().unwrap().push((signature, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/hook"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_commands_do_what_they_say() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    install_busybox_sample(&|args| kiln(&data, args), dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = serve_node(
        &data,
        &listen,
        &[("KILN_WEBHOOKS__ALLOWED_INTERNAL_HOSTS", "[\"127.0.0.1\"]")],
        &dir.path().join("serve.log"),
    );
    let url = format!("http://{listen}/api/v1");
    let key = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let api = Api {
        base: url.clone(),
        key: key.clone(),
        http: reqwest::Client::new(),
    };
    let kiln_ok = |args: &[&str]| ok(&data, &url, args);

    // Webhooks: created with its secret shown once, listed, and a test event delivered.
    let (hook_url, received) = receiver().await;
    let created = kiln_ok(&["webhooks", "create", &hook_url, "--event", "*"]);
    let mut lines = created.lines();
    let hook = lines.next().unwrap().split(' ').next().unwrap().to_string();
    assert!(hook.starts_with("wh"), "{created}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("secret ")),
        "{created}"
    );
    let listed = kiln_ok(&["webhooks", "list"]);
    assert!(
        listed.contains(&hook) && listed.contains(" active "),
        "{listed}"
    );

    // Instances: created from the sample and ready when the command returns.
    let created = kiln_ok(&[
        "instances",
        "create",
        "--dataset",
        "test",
        "--sample",
        "test-1",
    ]);
    let id = created.split_whitespace().next().unwrap().to_string();
    assert_eq!(api.get(&format!("/sessions/{id}")).await["status"], "ready");

    // exec --stream: the output as the command wrote it, and its exit code.
    let out = run(
        &data,
        &url,
        &["exec", "--stream", &id, "--", "echo streamed; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "streamed\n");

    // files: a local file's bytes go in and come back.
    let local = dir.path().join("notes.txt");
    std::fs::write(&local, "first draft\n").unwrap();
    kiln_ok(&["files", "put", &id, "notes.txt", local.to_str().unwrap()]);
    assert_eq!(
        kiln_ok(&["files", "get", &id, "notes.txt"]),
        "first draft\n"
    );

    // snapshot + rollback: a checkpoint, a change, and the checkpoint's bytes again.
    let checkpoint = kiln_ok(&["snapshot", "create", &id, "--checkpoint", "--name", "cp"]);
    let checkpoint = checkpoint.trim().to_string();
    assert!(!checkpoint.is_empty());
    let done = api.run(&id, "echo ruined > notes.txt").await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let listed = kiln_ok(&["snapshot", "list", &id]);
    assert!(
        listed.contains(&checkpoint) && listed.contains("checkpoint"),
        "{listed}"
    );
    let rolled = kiln_ok(&["snapshot", "rollback", &id]);
    assert!(rolled.contains(&checkpoint), "{rolled}");
    assert_eq!(
        kiln_ok(&["files", "get", &id, "notes.txt"]),
        "first draft\n"
    );

    // fork: two ready copies with the instance's files, each changed on its own.
    let forked = kiln_ok(&["fork", &id, "--count", "2"]);
    let copies: Vec<&str> = forked.lines().collect();
    assert_eq!(copies.len(), 2, "{forked}");
    for (i, copy) in copies.iter().enumerate() {
        assert_eq!(
            kiln_ok(&["files", "get", copy, "notes.txt"]),
            "first draft\n"
        );
        let done = api.run(copy, &format!("echo copy{i} > notes.txt")).await;
        assert_eq!(done["exit_code"], 0, "{done}");
    }
    assert_eq!(
        kiln_ok(&["files", "get", copies[1], "notes.txt"]),
        "copy1\n"
    );
    assert_eq!(
        kiln_ok(&["files", "get", &id, "notes.txt"]),
        "first draft\n"
    );

    // ports: a server started inside answers through the host port, until closed.
    api.start(
        &id,
        "mkdir -p /srv && echo hello > /srv/hello.txt && httpd -f -p 127.0.0.1:8080 -h /srv",
    )
    .await;
    let opened = kiln_ok(&["ports", "open", &id, "8080"]);
    let fields: Vec<&str> = opened.split_whitespace().collect();
    let (forward, address) = (fields[0].to_string(), fields[2].to_string());
    let page = fetch(&format!("http://{address}/hello.txt")).await;
    assert_eq!(page.as_deref(), Some("hello\n"));
    let path_mode = kiln_ok(&["ports", "open", &id, "8080", "--mode", "path"]);
    assert!(path_mode.contains("/v1/instances/"), "{path_mode}");
    let listed = kiln_ok(&["ports", "list", &id]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains(&forward), "{listed}");
    kiln_ok(&["ports", "close", &id, &forward]);
    assert_eq!(fetch(&format!("http://{address}/hello.txt")).await, None);
    let closed_again = run(&data, &url, &["ports", "close", &id, &forward]);
    assert!(!closed_again.status.success());
    assert!(
        text(&closed_again.stderr).contains("404"),
        "{}",
        text(&closed_again.stderr)
    );

    // The webhook got this instance's events, signed; a test event shows as delivered.
    let delivery = kiln_ok(&["webhooks", "test", &hook]).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = kiln_ok(&["webhooks", "deliveries", &hook, "--status", "delivered"]);
        if deliveries.contains(&delivery) {
            assert!(deliveries.contains("webhook.test"), "{deliveries}");
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {deliveries}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let got = received.lock().unwrap();
        assert!(
            got.iter().all(|(signature, _)| signature.contains("v1=")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|(_, body)| body["type"] == "session.ready"
                && body["data"]["session_id"] == id.as_str()),
            "{got:?}"
        );
    }
    let paused = kiln_ok(&["webhooks", "update", &hook, "--active", "false"]);
    assert!(paused.contains(" paused "), "{paused}");
    kiln_ok(&["webhooks", "delete", &hook]);
    assert!(!kiln_ok(&["webhooks", "list"]).contains(&hook));

    kiln_ok(&["instances", "delete", &id]);
    let gone = api.get(&format!("/sessions/{id}")).await;
    assert_eq!(gone["status"], "closed", "{gone}");
}

/// The body of a GET, or `None` when nothing answers (a closed forward).
async fn fetch(url: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}
