//! Exec in an instance over real HTTP on real sandboxes (`/v1/instances/{id}/exec…`):
//! synchronous execs with stdin, cwd, env and timeouts; history; Server-Sent Events that
//! carry 50 MB in order and resume after a dropped connection; kill of a process group;
//! ownership and validation. Runs on PostgreSQL too (`scripts/test.sh`).
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use common::{assert_error, assert_validation, bearer, TestServer};
use reqwest::Method;
use sandbox::create_ready;
use serde_json::{json, Value};

async fn exec(s: &TestServer, key: &str, id: &str, body: Value) -> (u16, Value) {
    s.v1_as(
        key,
        Method::POST,
        &format!("/instances/{id}/exec"),
        Some(&body),
    )
    .await
}

/// A synchronous exec that must answer 200.
async fn run(s: &TestServer, key: &str, id: &str, body: Value) -> Value {
    let (status, done) = exec(s, key, id, body).await;
    assert_eq!(status, 200, "{done}");
    done
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Frame {
    event: String,
    id: u64,
    data: Value,
}

/// Reads SSE frames off a response as they come.
struct SseReader {
    response: reqwest::Response,
    buf: Vec<u8>,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Self {
            response,
            buf: Vec::new(),
        }
    }

    /// The next frame (keep-alive comments skipped); `None` when the server ends the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("SSE is UTF-8");
                let (mut event, mut id, mut data) = (None, None, String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse::<u64>().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if let Some(event) = event {
                    return Some(Frame {
                        event,
                        id: id.expect("every frame has an id"),
                        data: serde_json::from_str(&data).expect("JSON data"),
                    });
                }
                continue;
            }
            match self.response.chunk().await.expect("stream") {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return None,
            }
        }
    }
}

fn output_bytes(frame: &Frame) -> Vec<u8> {
    use base64::Engine;
    match (frame.data["text"].as_str(), frame.data["base64"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64"),
        _ => panic!("output frame without text or base64: {frame:?}"),
    }
}

async fn open_stream(s: &TestServer, key: &str, id: &str, body: Value) -> (String, SseReader) {
    let response = s
        .v1(Method::POST, &format!("/instances/{id}/exec/stream"))
        .header("Authorization", bearer(key))
        .json(&body)
        .send()
        .await
        .expect("send");
    let exec_id = response.headers()["x-kiln-exec-id"]
        .to_str()
        .expect("header")
        .to_string();
    (exec_id, SseReader::new(response))
}

/// The exec once it is no longer running (fails after 30 s).
async fn ended(s: &TestServer, key: &str, id: &str, exec_id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, got) = s
            .v1_as(
                key,
                Method::GET,
                &format!("/instances/{id}/exec/{exec_id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{got}");
        if got["status"] != "running" {
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_exec_runs_with_stdin_cwd_env_and_timeout_and_is_listed() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;

    let done = run(
        &s,
        &key,
        &id,
        json!({"command": "echo out; echo err >&2; exit 3"}),
    )
    .await;
    assert_eq!(
        (&done["status"], &done["exit_code"]),
        (&json!("exited"), &json!(3)),
        "{done}"
    );
    assert_eq!(
        (&done["stdout"], &done["stderr"]),
        (&json!("out\n"), &json!("err\n"))
    );
    assert_eq!(done["truncated"], false);
    assert!(done["duration_ms"].is_u64(), "{done}");
    assert!(done["exec_id"]
        .as_str()
        .is_some_and(|e| e.starts_with("exec_")));

    let piped = run(
        &s,
        &key,
        &id,
        json!({"command": "cat; echo", "stdin": "to stdin"}),
    )
    .await;
    assert_eq!(piped["stdout"], "to stdin\n", "{piped}");
    let binary = run(
        &s,
        &key,
        &id,
        json!({"argv": ["od", "-An", "-tx1"], "stdin_base64": "AP8K"}),
    )
    .await;
    assert_eq!(
        binary["stdout"].as_str().map(str::trim),
        Some("00 ff 0a"),
        "{binary}"
    );
    let placed = run(
        &s,
        &key,
        &id,
        json!({"command": "pwd; echo \"$GREETING\"", "cwd": "/tmp", "env": {"GREETING": "hi there"}}),
    )
    .await;
    assert_eq!(placed["stdout"], "/tmp\nhi there\n", "{placed}");
    let argv = run(
        &s,
        &key,
        &id,
        json!({"argv": ["printf", "[%s]", "a b", "c"]}),
    )
    .await;
    assert_eq!(argv["stdout"], "[a b][c]");
    assert_eq!(argv["argv"], json!(["printf", "[%s]", "a b", "c"]));

    let started = Instant::now();
    let slow = run(
        &s,
        &key,
        &id,
        json!({"command": "sleep 30", "timeout_secs": 1}),
    )
    .await;
    assert_eq!(
        (&slow["status"], &slow["exit_code"]),
        (&json!("timed_out"), &json!(124)),
        "{slow}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let missing = run(
        &s,
        &key,
        &id,
        json!({"command": "true", "cwd": "/no/such/dir"}),
    )
    .await;
    assert_eq!(missing["status"], "failed", "{missing}");
    assert!(missing["error"].as_str().is_some_and(|e| !e.is_empty()));

    // History: newest first, by pages, each exec as GET shows it.
    let (status, page) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec?limit=3"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["exec_id"], missing["exec_id"]);
    assert_eq!(items[1]["exec_id"], slow["exec_id"]);
    let after = page["next_after"].as_str().expect("a next page");
    let (_, rest) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec?limit=100&after={after}"),
            None,
        )
        .await;
    let rest = rest["items"].as_array().expect("items").clone();
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert_eq!(rest[3]["exec_id"], done["exec_id"]);
    assert_eq!(rest[3]["command"], "echo out; echo err >&2; exit 3");
    let exec_id = done["exec_id"].as_str().expect("id");
    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec/{exec_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["stdout"], "out\n");
    assert_eq!(got["instance_id"], id.as_str());

    // Someone else sees none of it.
    let (_, bob) = s.user("bob").await;
    let (status, body) = exec(&s, &bob, &id, json!({"command": "true"})).await;
    assert_error(status, &body, 404, "not_found");
    for path in [
        format!("/instances/{id}/exec"),
        format!("/instances/{id}/exec/{exec_id}"),
        format!("/instances/{id}/exec/{exec_id}/stream"),
    ] {
        let (status, body) = s.v1_as(&bob, Method::GET, &path, None).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, body) = s
        .v1_as(
            &bob,
            Method::POST,
            &format!("/instances/{id}/exec/{exec_id}/kill"),
            Some(&json!({})),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec/exec_nope"),
            None,
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    // Validation.
    for (body, loc) in [
        (json!({}), vec!["body", "command"]),
        (
            json!({"command": "x", "argv": ["x"]}),
            vec!["body", "command"],
        ),
        (json!({"command": ""}), vec!["body", "command"]),
        (json!({"argv": []}), vec!["body", "argv"]),
        (
            json!({"command": "x", "timeout_secs": 0}),
            vec!["body", "timeout_secs"],
        ),
        (
            json!({"command": "x", "timeout_secs": 1_000_000}),
            vec!["body", "timeout_secs"],
        ),
        (
            json!({"command": "x", "env": {"A=B": "c"}}),
            vec!["body", "env", "A=B"],
        ),
        (
            json!({"command": "x", "stdin": "a", "stdin_base64": "YQ=="}),
            vec!["body", "stdin"],
        ),
        (
            json!({"command": "x", "stdin_base64": "%%%"}),
            vec!["body", "stdin_base64"],
        ),
        (
            json!({"command": "x", "cwd": "a\u{0}b"}),
            vec!["body", "cwd"],
        ),
    ] {
        let (status, got) = exec(&s, &key, &id, body).await;
        assert_validation(status, &got, &loc.iter().map(|s| &**s).collect::<Vec<_>>());
    }
    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec?limit=0"),
            None,
        )
        .await;
    assert_validation(status, &got, &["query", "limit"]);
    let (status, got) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/exec/{exec_id}/kill"),
            Some(&json!({"signal": "NOPE"})),
        )
        .await;
    assert_validation(status, &got, &["body", "signal"]);
    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec/{exec_id}/stream"),
            None,
        )
        .await;
    assert_error(status, &got, 409, "conflict");
    let response = s
        .v1(
            Method::GET,
            &format!("/instances/{id}/exec/{exec_id}/stream"),
        )
        .header("Authorization", bearer(&key))
        .header("Last-Event-ID", "x")
        .send()
        .await
        .expect("send");
    let (status, got) = common::json(response).await;
    assert_validation(status, &got, &["header", "Last-Event-ID"]);

    // The document describes every route with its shapes.
    let (status, doc) = s.v1_as(&key, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    for (path, method) in [
        ("/instances/{id}/exec", "post"),
        ("/instances/{id}/exec", "get"),
        ("/instances/{id}/exec/stream", "post"),
        ("/instances/{id}/exec/{exec_id}", "get"),
        ("/instances/{id}/exec/{exec_id}/stream", "get"),
        ("/instances/{id}/exec/{exec_id}/kill", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} documented"
        );
    }
    for schema in [
        "ExecBody",
        "ExecView",
        "ExecListView",
        "KillBody",
        "ExecStartedView",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let (status, got) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/exec/{exec_id}/kill"),
            Some(&json!({"signal": "KILL"})),
        )
        .await;
    assert_error(status, &got, 409, "conflict");
}

/// Every byte of a 50 MB output reaches the client in order; a dropped connection does
/// not stop the command, and a reconnect with `Last-Event-ID` gets the rest exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_carries_50_mb_in_order_and_resumes_after_a_drop() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let count = 6_500_000u64;
    let expected: Vec<u8> = (1..=count)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    assert!(expected.len() > 50_000_000);

    let (exec_id, mut reader) =
        open_stream(&s, &key, &id, json!({"command": format!("seq 1 {count}")})).await;
    let first = reader.next().await.expect("a start frame");
    assert_eq!(first.event, "start");
    assert_eq!(first.data["exec_id"], exec_id.as_str());
    let mut got = Vec::new();
    let mut last_id = first.id;
    while got.len() < 10_000_000 {
        let frame = reader.next().await.expect("more frames");
        assert_eq!(frame.event, "stdout", "{frame:?}");
        assert!(frame.id > last_id, "ids grow");
        got.extend_from_slice(&output_bytes(&frame));
        last_id = frame.id;
    }
    drop(reader);

    let response = s
        .v1(
            Method::GET,
            &format!("/instances/{id}/exec/{exec_id}/stream"),
        )
        .header("Authorization", bearer(&key))
        .header("Last-Event-ID", last_id.to_string())
        .send()
        .await
        .expect("send");
    let mut reader = SseReader::new(response);
    let (status, body) = common::json(
        s.v1(
            Method::GET,
            &format!(
                "/instances/{id}/exec/{exec_id}/stream?last_event_id={}",
                last_id - 1
            ),
        )
        .header("Authorization", bearer(&key))
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_validation(status, &body, &["query", "last_event_id"]);
    let exit = loop {
        let frame = reader.next().await.expect("frames up to the exit");
        assert!(frame.id > last_id, "each frame once, in order");
        last_id = frame.id;
        match frame.event.as_str() {
            "stdout" => got.extend_from_slice(&output_bytes(&frame)),
            "exit" => break frame,
            other => panic!("unexpected {other}: {frame:?}"),
        }
    };
    assert!(reader.next().await.is_none(), "the stream ends after exit");
    assert_eq!(exit.data["exit_code"], 0, "{exit:?}");
    assert_eq!(exit.data["status"], "exited");
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the output arrives byte for byte, in order"
    );

    // The whole stream is there again from the start, and the exec ended as the exit said.
    let done = ended(&s, &key, &id, &exec_id).await;
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["mode"], "stream");
    assert_eq!(done["truncated"], true, "the stored output is bounded");
}

/// A synchronous exec is in the history while it runs, and a second request can kill it
/// by that id: the caller waiting on it gets its end at once, with the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_exec_can_be_killed_from_another_request() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let waiting = exec(
        &s,
        &key,
        &id,
        json!({"command": "echo before; sleep 1000", "timeout_secs": 120}),
    );
    let killer = async {
        let began = Instant::now();
        let exec_id = loop {
            let (status, page) = s
                .v1_as(&key, Method::GET, &format!("/instances/{id}/exec"), None)
                .await;
            assert_eq!(status, 200, "{page}");
            let running = page["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["status"] == "running")
                .and_then(|e| e["exec_id"].as_str().map(str::to_string));
            if let Some(exec_id) = running {
                break exec_id;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "never listed: {page}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Listed before the agent has started it: a 409 until then.
        let began = Instant::now();
        loop {
            let (status, killed) = s
                .v1_as(
                    &key,
                    Method::POST,
                    &format!("/instances/{id}/exec/{exec_id}/kill"),
                    Some(&json!({"signal": "KILL"})),
                )
                .await;
            if status == 200 {
                assert_eq!(killed["signal"], 9, "{killed}");
                break;
            }
            assert_error(status, &killed, 409, "conflict");
            assert!(began.elapsed() < Duration::from_secs(10), "{killed}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Instant::now()
    };
    let ((status, done), killed_at) = tokio::join!(waiting, killer);
    let answered_after = killed_at.elapsed();
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["signal"], 9, "{done}");
    assert_eq!(done["stdout"], "before\n", "{done}");
    assert!(
        answered_after < Duration::from_secs(2),
        "{answered_after:?}"
    );
    // The sandbox is fine afterwards.
    let after = run(&s, &key, &id, json!({"command": "echo fine"})).await;
    assert_eq!(after["stdout"], "fine\n", "{after}");
}

/// Kill signals the whole process group (a child of the shell sees the signal too); a
/// stream asked to `kill_on_disconnect` kills its command when dropped; background execs
/// answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_a_process_group_and_background_execs_run_on() {
    let Some(s) = sandbox::start_if_possible(|c| c.exec.stream_retention_secs = 1).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;

    let script = "(trap 'echo child-got-term > /tmp/marker; exit 0' TERM; sleep 1000 & wait) & \
                  sleep 1000 & echo up; wait";
    let (status, started) = exec(
        &s,
        &key,
        &id,
        json!({"command": script, "background": true}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "running");
    let exec_id = started["exec_id"].as_str().expect("id").to_string();
    // Its stream shows it is up before we signal it.
    let response = s
        .v1(
            Method::GET,
            &format!("/instances/{id}/exec/{exec_id}/stream"),
        )
        .header("Authorization", bearer(&key))
        .send()
        .await
        .expect("send");
    let mut reader = SseReader::new(response);
    loop {
        let frame = reader.next().await.expect("frames");
        if frame.event == "stdout" {
            assert_eq!(output_bytes(&frame), b"up\n");
            break;
        }
    }
    // `up` is printed before the forked shells have exec'd `sleep`; wait (≤ 5 s) for both.
    let waiting = Instant::now();
    loop {
        let ps = run(
            &s,
            &key,
            &id,
            json!({"command": "ps -o args | grep -c '^sleep 1000'"}),
        )
        .await;
        if ps["stdout"] == "2\n" {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "both sleeps run: {ps}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, killed) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/exec/{exec_id}/kill"),
            Some(&json!({"signal": "TERM"})),
        )
        .await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["signal"], 15);
    let done = ended(&s, &key, &id, &exec_id).await;
    assert_eq!(done["status"], "exited", "{done}");
    assert_eq!(done["signal"], 15, "{done}");
    let after = run(
        &s,
        &key,
        &id,
        json!({"command": "cat /tmp/marker; ps -o args | grep -c '^sleep 1000'"}),
    )
    .await;
    assert_eq!(
        after["stdout"], "child-got-term\n0\n",
        "the subshell got TERM itself, and no sleep survived: {after}"
    );

    let (exec_id, mut reader) = open_stream(
        &s,
        &key,
        &id,
        json!({"command": "echo go; sleep 1000", "kill_on_disconnect": true}),
    )
    .await;
    while reader.next().await.expect("frames").event != "stdout" {}
    drop(reader);
    let done = ended(&s, &key, &id, &exec_id).await;
    assert_eq!(done["signal"], 9, "{done}");

    // Streams are kept `stream_retention_secs` after their exec ended, then removed.
    let path = format!("/instances/{id}/exec/{exec_id}/stream");
    let started = Instant::now();
    loop {
        let response = s
            .v1(Method::GET, &path)
            .header("Authorization", bearer(&key))
            .send()
            .await
            .expect("send");
        if response.status() == 409 {
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stream is still kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Execs running at once in an instance are bounded (429); an instance closed under a
/// stream ends it with an `error` frame and the exec `failed`; a closed instance runs
/// nothing more but keeps its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_execs_are_bounded_and_a_closed_instance_ends_its_streams() {
    let Some(s) = sandbox::start_if_possible(|c| c.exec.max_running_per_instance = 1).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;

    let (exec_id, mut reader) =
        open_stream(&s, &key, &id, json!({"command": "echo up; sleep 1000"})).await;
    while reader.next().await.expect("frames").event != "stdout" {}
    let (status, body) = exec(&s, &key, &id, json!({"command": "true"})).await;
    assert_error(status, &body, 429, "too_many_requests");

    let (status, closed) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{closed}");
    let last = reader.next().await.expect("a final frame");
    assert_eq!(last.event, "error", "{last:?}");
    assert!(last.data["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(reader.next().await.is_none(), "the stream ends after it");
    let done = ended(&s, &key, &id, &exec_id).await;
    assert_eq!(done["status"], "failed", "{done}");

    let (status, body) = exec(&s, &key, &id, json!({"command": "true"})).await;
    assert_error(status, &body, 409, "conflict");
    let (status, page) = s
        .v1_as(&key, Method::GET, &format!("/instances/{id}/exec"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["exec_id"], exec_id.as_str());
}

/// Spools count against their user's quota (another user is not refused), and go with
/// their instance at once, not after the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spools_count_against_their_user_and_go_with_their_instance() {
    let Some(s) = sandbox::start_if_possible(|c| {
        c.exec.max_stream_disk_bytes_per_user = 64 * 1024;
    })
    .await
    else {
        return;
    };
    let spools = s.kiln.config.data_dir.join("exec-streams");
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let flood = json!({"command": "head -c 100000 /dev/zero | tr '\\0' x", "background": true});
    let (status, started) = exec(&s, &key, &id, flood.clone()).await;
    assert_eq!(status, 202, "{started}");
    let exec_id = started["exec_id"].as_str().expect("id").to_string();
    let done = ended(&s, &key, &id, &exec_id).await;
    assert_eq!(done["status"], "exited", "{done}");
    let spool = spools.join(format!("{exec_id}.spool"));
    let size = std::fs::metadata(&spool).expect("the spool is kept").len();
    assert!(size > 100_000, "{size} bytes");

    // Over this user's quota: refused, saying which limit; another user is not.
    let (status, body) = exec(&s, &key, &id, flood.clone()).await;
    assert_error(status, &body, 429, "too_many_requests");
    assert!(
        body["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_stream_disk_bytes_per_user")),
        "{body}"
    );
    let (_, bob) = s.user("bob").await;
    let bobs = create_ready(&s, &bob).await;
    let (status, body) = exec(
        &s,
        &bob,
        &bobs,
        json!({"command": "echo hi", "background": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");

    // The instance ends: its spool goes now (the retention is an hour).
    let (status, body) = s
        .v1_as(&key, Method::DELETE, &format!("/instances/{id}"), None)
        .await;
    assert!(status < 300, "{status} {body}");
    let began = Instant::now();
    while spool.exists() {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the spool outlived its instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the quota is free again.
    let again = create_ready(&s, &key).await;
    let (status, body) = exec(&s, &key, &again, flood).await;
    assert_eq!(status, 202, "{body}");
}

/// A restart cuts off what the server was running: such execs are `failed`, with why;
/// the instance (adopted) runs new ones. (Also: spools beyond `max_stream_disk_bytes`
/// refuse new streams.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_the_execs_it_cut_off() {
    let Some(s) = sandbox::start_if_possible(|c| c.exec.max_stream_disk_bytes = 1).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let (status, started) = exec(
        &s,
        &key,
        &id,
        json!({"command": "sleep 1000", "background": true}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let exec_id = started["exec_id"].as_str().expect("id").to_string();
    // Its spool (1 byte allowed for all) leaves no room for another stream.
    let started = Instant::now();
    loop {
        let (status, body) = exec(
            &s,
            &key,
            &id,
            json!({"command": "true", "background": true}),
        )
        .await;
        if status == 503 {
            assert_error(status, &body, 503, "unavailable");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
    }

    let s = s.restart(false).await;
    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/exec/{exec_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], "failed", "{got}");
    assert_eq!(got["error"], "cut off by a server restart");
    let done = run(&s, &key, &id, json!({"command": "echo again"})).await;
    assert_eq!(done["stdout"], "again\n", "{done}");
}
