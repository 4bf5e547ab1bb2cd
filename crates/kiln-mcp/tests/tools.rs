//! The tools' logic in-process, driven by rmcp's own client over an in-memory pipe: a Kiln
//! over `FakeRuntime` (no root, no processes), a SQLite store in a temporary directory and
//! one sample, `test/test-1`. The real thing (sandboxes, grading, HTTP, stdio) is
//! `tests/mcp/test_mcp.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kiln_config::Config;
use kiln_mcp::KilnMcp;
use kiln_services::datasets::ImportRequest;
use kiln_services::Kiln;
use kiln_test_support::fake::ECHO_PORT;
use kiln_test_support::{FakeRuntime, Reply};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

struct Harness {
    kiln: Arc<Kiln>,
    fake: Arc<FakeRuntime>,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        load_demo_dataset: false,
        build_demo_images: false,
        ..Config::default()
    };
    let fake = FakeRuntime::new();
    let kiln = Kiln::open_with_runtime(config, fake.clone(), "fake")
        .await
        .unwrap();
    kiln.bootstrap().await.unwrap();
    let admin = kiln
        .auth
        .create_user("ada", "ada@example.com", false)
        .await
        .unwrap();
    let record = json!({"instance_id": "test-1", "repo": "test/hello",
        "base_commit": "0000000000000000000000000000000000000000",
        "problem_statement": "Say hello.\nPolitely.",
        "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": []})
    .to_string();
    kiln.datasets
        .import(ImportRequest {
            dataset: "test",
            description: None,
            version_description: None,
            text: &record,
            repos_dir: None,
        })
        .await
        .unwrap();
    Harness {
        kiln: Arc::new(kiln),
        fake,
        admin: admin.user_id,
        _dir: dir,
    }
}

/// An MCP client connected to a server acting for `user`.
async fn connect(kiln: &Arc<Kiln>, user: &str) -> RunningService<RoleClient, ClientConfig> {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = KilnMcp::for_user(kiln.clone(), user);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    ClientConfig::default().serve(client_io).await.unwrap()
}

/// Calls a tool: its structured answer and whether it is a tool error.
async fn call(
    client: &RunningService<RoleClient, ClientConfig>,
    tool: &str,
    args: Value,
) -> (Value, bool) {
    let args = args.as_object().cloned().unwrap_or_default();
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap();
    (
        result.structured_content.clone().unwrap_or(Value::Null),
        result.is_error == Some(true),
    )
}

async fn ok(client: &RunningService<RoleClient, ClientConfig>, tool: &str, args: Value) -> Value {
    let (body, is_error) = call(client, tool, args).await;
    assert!(!is_error, "{tool} failed: {body}");
    body
}

async fn refused(
    client: &RunningService<RoleClient, ClientConfig>,
    tool: &str,
    args: Value,
) -> Value {
    let (body, is_error) = call(client, tool, args).await;
    assert!(is_error, "{tool} should have failed: {body}");
    body
}

#[tokio::test]
async fn every_tool_is_listed_with_an_object_schema() {
    let h = harness().await;
    let client = connect(&h.kiln, &h.admin).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for want in [
        "list_datasets",
        "list_samples",
        "get_sample",
        "create_session",
        "list_sessions",
        "exec",
        "read_file",
        "write_file",
        "str_replace",
        "list_files",
        "git_diff",
        "snapshot",
        "rollback",
        "fork",
        "verify",
        "close_session",
        "exec_status",
        "kill_exec",
        "expose_port",
        "close_port",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let exec = tools.iter().find(|t| t.name == "exec").unwrap();
    let required = exec.input_schema.get("required").unwrap();
    assert_eq!(required, &json!(["session_id", "command"]));
}

#[tokio::test]
async fn datasets_and_samples_are_browsed_without_the_solution() {
    let h = harness().await;
    let client = connect(&h.kiln, &h.admin).await;
    let datasets = ok(&client, "list_datasets", json!({})).await;
    assert_eq!(datasets["datasets"][0]["name"], "test");
    let page = ok(
        &client,
        "list_samples",
        json!({"dataset": "test", "search": "TEST"}),
    )
    .await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["samples"][0]["summary"], "Say hello.");
    let bad = refused(&client, "list_samples", json!({"limit": 101})).await;
    assert_eq!(bad["code"], "validation_error");
    let sample = ok(
        &client,
        "get_sample",
        json!({"dataset": "test", "sample_id": "test-1"}),
    )
    .await;
    assert_eq!(sample["problem_statement"], "Say hello.\nPolitely.");
    assert!(sample.get("patch").is_none() && sample.get("test_patch").is_none());
    let missing = refused(
        &client,
        "get_sample",
        json!({"dataset": "test", "sample_id": "nope"}),
    )
    .await;
    assert_eq!(missing["code"], "not_found");
}

#[tokio::test]
async fn a_session_is_created_worked_on_and_closed() {
    let h = harness().await;
    let client = connect(&h.kiln, &h.admin).await;
    let both = refused(
        &client,
        "create_session",
        json!({"dataset": "test", "sample_id": "test-1", "image": "x"}),
    )
    .await;
    assert_eq!(both["code"], "validation_error");
    let session = ok(
        &client,
        "create_session",
        json!({"dataset": "test", "sample_id": "test-1"}),
    )
    .await;
    assert_eq!(session["status"], "ready");
    let sid = session["session_id"].as_str().unwrap().to_string();
    assert_eq!(h.fake.running().len(), 1);

    let echoed = ok(
        &client,
        "exec",
        json!({"session_id": sid, "command": "echo hi"}),
    )
    .await;
    assert_eq!(
        (echoed["exit_code"].clone(), echoed["stdout"].clone()),
        (json!(0), json!("hi\n"))
    );

    ok(
        &client,
        "write_file",
        json!({"session_id": sid, "path": "a.txt", "content": "one two\n"}),
    )
    .await;
    let edit = ok(
        &client,
        "str_replace",
        json!({"session_id": sid, "path": "a.txt", "old_str": "two", "new_str": "2"}),
    )
    .await;
    assert_eq!(edit["line"], 1);
    let nomatch = refused(
        &client,
        "str_replace",
        json!({"session_id": sid, "path": "a.txt", "old_str": "zzz", "new_str": ""}),
    )
    .await;
    assert_eq!(nomatch["code"], "no_unique_match");
    let read = ok(
        &client,
        "read_file",
        json!({"session_id": sid, "path": "a.txt"}),
    )
    .await;
    assert_eq!(read["content"], "one 2\n");
    let part = ok(
        &client,
        "read_file",
        json!({"session_id": sid, "path": "a.txt", "offset": 4, "length": 1}),
    )
    .await;
    assert_eq!(part["content"], "2");
    let listed = ok(&client, "list_files", json!({"session_id": sid})).await;
    assert!(
        listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "/testbed/a.txt"),
        "{listed}"
    );

    ok(
        &client,
        "snapshot",
        json!({"session_id": sid, "name": "one"}),
    )
    .await;
    ok(
        &client,
        "write_file",
        json!({"session_id": sid, "path": "a.txt", "content": "changed\n"}),
    )
    .await;
    ok(
        &client,
        "rollback",
        json!({"session_id": sid, "name": "one"}),
    )
    .await;
    let back = ok(
        &client,
        "read_file",
        json!({"session_id": sid, "path": "a.txt"}),
    )
    .await;
    assert_eq!(back["content"], "one 2\n");

    let max = h.kiln.config.snapshots.max_fork_count;
    let too_many = refused(
        &client,
        "fork",
        json!({"session_id": sid, "count": max + 1}),
    )
    .await;
    assert_eq!(too_many["code"], "validation_error");
    let forks = ok(&client, "fork", json!({"session_id": sid, "count": 2})).await;
    let forks = forks["sessions"].as_array().unwrap().clone();
    assert_eq!(forks.len(), 2);
    assert!(forks.iter().all(|f| f["status"] == "ready"), "{forks:?}");
    let live = ok(&client, "list_sessions", json!({})).await;
    assert_eq!(live["total"], 3);

    for f in &forks {
        ok(
            &client,
            "close_session",
            json!({"session_id": f["session_id"]}),
        )
        .await;
    }
    let closed = ok(&client, "close_session", json!({"session_id": sid})).await;
    assert_eq!(closed["status"], "closed");
    assert!(
        h.fake.running().is_empty(),
        "sandboxes left: {:?}",
        h.fake.running()
    );
    let after = refused(
        &client,
        "exec",
        json!({"session_id": sid, "command": "echo hi"}),
    )
    .await;
    assert_eq!(after["code"], "conflict");
}

#[tokio::test]
async fn sessions_default_to_the_mcp_ttl() {
    let h = harness().await;
    let client = connect(&h.kiln, &h.admin).await;
    let session = ok(
        &client,
        "create_session",
        json!({"dataset": "test", "sample_id": "test-1"}),
    )
    .await;
    let record = h
        .kiln
        .instances
        .get(&h.admin, session["session_id"].as_str().unwrap(), false)
        .await
        .unwrap();
    let ttl = record.expires_at - record.requested_at;
    assert_eq!(ttl.num_minutes(), h.kiln.config.mcp.default_ttl_minutes);
}

#[tokio::test]
async fn another_user_finds_nothing_of_a_session() {
    let h = harness().await;
    let owner = connect(&h.kiln, &h.admin).await;
    let session = ok(
        &owner,
        "create_session",
        json!({"dataset": "test", "sample_id": "test-1"}),
    )
    .await;
    let sid = session["session_id"].as_str().unwrap();
    let eve = h
        .kiln
        .auth
        .create_user("eve", "eve@example.com", false)
        .await
        .unwrap();
    let intruder = connect(&h.kiln, &eve.user_id).await;
    for (tool, args) in [
        ("exec", json!({"session_id": sid, "command": "echo hi"})),
        ("read_file", json!({"session_id": sid, "path": "a"})),
        (
            "write_file",
            json!({"session_id": sid, "path": "a", "content": "x"}),
        ),
        (
            "str_replace",
            json!({"session_id": sid, "path": "a", "old_str": "a", "new_str": "b"}),
        ),
        ("list_files", json!({"session_id": sid})),
        ("snapshot", json!({"session_id": sid})),
        ("rollback", json!({"session_id": sid})),
        ("fork", json!({"session_id": sid, "count": 1})),
        ("verify", json!({"session_id": sid})),
        (
            "expose_port",
            json!({"session_id": sid, "port": ECHO_PORT, "mode": "host_port"}),
        ),
        (
            "exec",
            json!({"session_id": sid, "command": "serve", "background": true}),
        ),
        ("close_session", json!({"session_id": sid})),
    ] {
        let body = refused(&intruder, tool, args).await;
        assert_eq!(body["code"], "not_found", "{tool}: {body}");
    }
    assert_eq!(ok(&intruder, "list_sessions", json!({})).await["total"], 0);
    assert_eq!(h.fake.running().len(), 1);
}

#[tokio::test]
async fn problem_statements_are_resources() {
    let h = harness().await;
    let client = connect(&h.kiln, &h.admin).await;
    let listed = client.list_resources(None).await.unwrap();
    let uris: Vec<&str> = listed.resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["kiln://samples/test/test-1"]);
    let read = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "kiln://samples/test/test-1",
        ))
        .await
        .unwrap();
    let read = serde_json::to_value(&read).unwrap();
    assert_eq!(read["contents"][0]["text"], "Say hello.\nPolitely.");
    let missing = client
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "kiln://samples/test/nope",
        ))
        .await;
    assert!(missing.is_err());
}

#[tokio::test]
async fn a_background_server_is_exposed_then_stopped() {
    let h = harness().await;
    // "serve" prints a line at once, then runs for a minute unless killed.
    h.fake.respond(
        "serve",
        Reply {
            delay: std::time::Duration::from_secs(60),
            ..Reply::ok("listening on 7\n")
        },
    );
    let client = connect(&h.kiln, &h.admin).await;
    let session = ok(
        &client,
        "create_session",
        json!({"dataset": "test", "sample_id": "test-1"}),
    )
    .await;
    let sid = session["session_id"].as_str().unwrap().to_string();

    let started = ok(
        &client,
        "exec",
        json!({"session_id": sid, "command": "serve", "background": true}),
    )
    .await;
    assert_eq!(started["status"], "running", "{started}");
    let exec_id = started["exec_id"].as_str().unwrap().to_string();
    let status = ok(
        &client,
        "exec_status",
        json!({"session_id": sid, "exec_id": exec_id}),
    )
    .await;
    assert_eq!(status["status"], "running", "{status}");
    assert_eq!(status["stdout"], "listening on 7\n", "{status}");

    for port in [0, 70000] {
        let bad = refused(
            &client,
            "expose_port",
            json!({"session_id": sid, "port": port}),
        )
        .await;
        assert_eq!(bad["code"], "validation_error", "{bad}");
    }
    let path = ok(
        &client,
        "expose_port",
        json!({"session_id": sid, "port": ECHO_PORT}),
    )
    .await;
    assert_eq!(path["mode"], "path");
    assert_eq!(
        path["url"],
        format!("/v1/instances/{sid}/ports/{ECHO_PORT}/"),
        "in-process there is no Host to make it absolute: {path}"
    );
    let host = ok(
        &client,
        "expose_port",
        json!({"session_id": sid, "port": ECHO_PORT, "mode": "host_port"}),
    )
    .await;
    let address = host["host_address"].as_str().unwrap().to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    socket.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    let forward_id = host["forward_id"].as_str().unwrap();
    let closed = ok(
        &client,
        "close_port",
        json!({"session_id": sid, "forward_id": forward_id}),
    )
    .await;
    assert_eq!(closed["closed"], true);
    let again = refused(
        &client,
        "close_port",
        json!({"session_id": sid, "forward_id": forward_id}),
    )
    .await;
    assert_eq!(again["code"], "not_found");

    ok(
        &client,
        "kill_exec",
        json!({"session_id": sid, "exec_id": exec_id}),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ended = loop {
        let status = ok(
            &client,
            "exec_status",
            json!({"session_id": sid, "exec_id": exec_id}),
        )
        .await;
        if status["status"] != "running" || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_ne!(ended["status"], "running", "{ended}");
    assert_eq!(ended["stdout"], "listening on 7\n", "{ended}");
    let not_running = refused(
        &client,
        "kill_exec",
        json!({"session_id": sid, "exec_id": exec_id}),
    )
    .await;
    assert_eq!(not_running["code"], "conflict");
}
