//! The agent loop over real HTTP with real sandboxes: sessions, commands, edits,
//! uploads, ownership, limits, expiry and restarts.
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use base64::Engine;
use common::{assert_error, assert_validation, bearer, json, TestServer};
use sandbox::{create_ready, DATASET, SAMPLE};
use serde_json::{json, Value};

/// Runs a command and waits (long-poll) for its result.
async fn run(s: &TestServer, key: &str, id: &str, command: &str, timeout: Option<i64>) -> Value {
    let mut body = json!({"command": command});
    if let Some(t) = timeout {
        body["command_timeout"] = json!(t);
    }
    let (status, started) = s.post_as(key, &format!("/sessions/{id}/exec"), &body).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "pending");
    let iid = started["interaction_id"].as_str().expect("iid");
    let (status, done) = s
        .get_as(key, &format!("/sessions/{id}/interactions/{iid}"))
        .await;
    assert_eq!(status, 200);
    assert!(
        !done["exit_code"].is_null(),
        "the GET waits until the command finished: {done}"
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_agent_loop() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;

    let (_, session) = s.get_as(&key, &format!("/sessions/{id}")).await;
    let info = &session["container_info"];
    assert_eq!(info["container_name"], id.as_str());
    assert_eq!(info["status"], "running");
    assert!(
        info["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("local:")),
        "{session}"
    );
    assert!(session["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let done = run(&s, &key, &id, "cat hello.txt; echo err >&2; exit 3", None).await;
    assert_eq!(
        (done["exit_code"].as_i64(), done["success"].as_bool()),
        (Some(3), Some(false))
    );
    assert_eq!(done["stdout"], "hello from the image\n");
    assert_eq!(done["stderr"], "err\n");
    assert_eq!(done["interaction_type"], "exec_command");
    assert_eq!(done["command_timeout"], 300);

    // Commands of one session run in the order received.
    let mut ids = Vec::new();
    for i in 0..15 {
        let (status, started) = s
            .post_as(
                &key,
                &format!("/sessions/{id}/exec"),
                &json!({"command": format!("echo {i} >> /tmp/order")}),
            )
            .await;
        assert_eq!(status, 202);
        ids.push(started["interaction_id"].as_str().expect("iid").to_string());
    }
    let order = run(&s, &key, &id, "cat /tmp/order", None).await;
    let expected: String = (0..15).map(|i| format!("{i}\n")).collect();
    assert_eq!(order["stdout"], expected.as_str());

    // A timeout is exit code 124 and says so; the background process dies with it.
    let start = Instant::now();
    let timed = run(
        &s,
        &key,
        &id,
        "sleep 1000 & echo started; sleep 1000",
        Some(1),
    )
    .await;
    assert_eq!(timed["exit_code"], 124, "{timed}");
    assert!(
        timed["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{timed}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    // Count processes whose whole command line is `sleep N` (this shell's and grep's own
    // command lines contain the text too, but are longer). The count sees a background
    // process of its own command; once a command is over, the agent kills what it left.
    let count = |n: u32| {
        format!(
            r"for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -cx 'sleep {n} ' || true"
        )
    };
    // The background shell needs a moment to exec `sleep`: look until it shows (bounded).
    let started = format!(
        "sleep 999 > /dev/null 2>&1 & i=0; while [ $i -lt 100 ]; do c=$({}); [ \"$c\" = 1 ] && break; sleep 0.05; i=$((i+1)); done; echo $c",
        count(999)
    );
    let ps = run(&s, &key, &id, &started, None).await;
    assert_eq!(ps["stdout"].as_str().map(str::trim), Some("1"), "{ps}");
    let ps = run(&s, &key, &id, &count(999), None).await;
    assert_eq!(ps["stdout"].as_str().map(str::trim), Some("0"), "{ps}");
    let ps = run(&s, &key, &id, &count(1000), None).await;
    assert_eq!(
        ps["stdout"].as_str().map(str::trim),
        Some("0"),
        "the background sleep survived the timeout: {ps}"
    );

    // Upload, then run what was uploaded.
    let script = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho uploaded $1\n");
    let (status, up) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/upload"),
            &json!({"file_path": "bin/tool.sh", "content_base64": script, "make_executable": true}),
        )
        .await;
    assert_eq!(status, 200, "{up}");
    assert_eq!(
        (up["success"].as_bool(), up["file_path"].as_str()),
        (Some(true), Some("/testbed/bin/tool.sh"))
    );
    let ran = run(&s, &key, &id, "./bin/tool.sh ok", None).await;
    assert_eq!(ran["stdout"], "uploaded ok\n");

    // str_replace: exactly one occurrence, else nothing changes and it says how many.
    let replace = |old: &str, new: &str| {
        s.post(&format!("/sessions/{id}/str_replace"))
            .header("Authorization", bearer(&key))
            .json(&json!({"file_path": "hello.txt", "str_to_replace": old, "str_to_insert": new}))
    };
    let (_, none) = json(replace("absent", "x").send().await.expect("send")).await;
    assert_eq!(none["success"], false);
    assert!(
        none["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not appear verbatim")),
        "{none}"
    );
    run(&s, &key, &id, "echo 'hello again' >> hello.txt", None).await;
    let (_, many) = json(replace("hello", "x").send().await.expect("send")).await;
    assert_eq!(many["success"], false);
    assert!(
        many["message"]
            .as_str()
            .is_some_and(|m| m.contains("Multiple occurrences")),
        "{many}"
    );
    let (_, one) = json(
        replace("hello from", "greetings from")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(one["success"], true, "{one}");
    let cat = run(&s, &key, &id, "cat hello.txt", None).await;
    assert_eq!(cat["stdout"], "greetings from the image\nhello again\n");

    // Paths with .. stay inside the sandbox.
    let marker = format!("/tmp/kiln-escape-{}", std::process::id());
    let (_, up) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/upload"),
            &json!({"file_path": format!("../../../../..{marker}"), "content_base64": "aGk="}),
        )
        .await;
    assert_eq!(up["success"], true, "{up}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "an upload escaped to the host"
    );
    let inside = run(&s, &key, &id, &format!("cat {marker}"), None).await;
    assert_eq!(inside["stdout"], "hi");

    // Close: the sandbox goes, and the session cannot be used or closed again.
    let (status, closed) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{closed}");
    assert!(closed["duration_seconds"].as_f64().is_some_and(|d| d > 0.0));
    let (status, body) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "true"}),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
    let (_, session) = s.get_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "closed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&id),
        "nothing of the session stays mounted"
    );

    // Earlier interactions are still readable, with their output.
    let (status, first) = s
        .get_as(&key, &format!("/sessions/{id}/interactions/{}", ids[0]))
        .await;
    assert_eq!((status, first["exit_code"].as_i64()), (200, Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_and_other_users() {
    let Some(s) = sandbox::start_if_possible(|c| c.sessions.max_upload_bytes = 1024).await else {
        return;
    };
    let key = s.admin_key.clone();
    let create = |body: Value| {
        s.post("/sessions")
            .header("Authorization", bearer(&key))
            .json(&body)
    };
    let (status, body) = json(
        create(json!({"dataset": "nope", "sample_id": SAMPLE}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = json(
        create(json!({"dataset": DATASET, "sample_id": "nope"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
    for (body, loc) in [
        (
            json!({"dataset": DATASET, "sample_id": SAMPLE, "ttl_minutes": 0}),
            "ttl_minutes",
        ),
        (
            json!({"dataset": DATASET, "sample_id": SAMPLE, "ttl_minutes": 100000}),
            "ttl_minutes",
        ),
        (
            json!({"dataset": DATASET, "sample_id": SAMPLE, "ttl_minutes": "x"}),
            "ttl_minutes",
        ),
        (json!({"dataset": DATASET}), "sample_id"),
        (json!({"dataset": "", "sample_id": SAMPLE}), "dataset"),
    ] {
        let (status, got) = json(create(body).send().await.expect("send")).await;
        assert_validation(status, &got, &["body", loc]);
    }

    let id = create_ready(&s, &key).await;
    let exec = |body: Value| {
        s.post(&format!("/sessions/{id}/exec"))
            .header("Authorization", bearer(&key))
            .json(&body)
    };
    for (body, loc) in [
        (json!({"command": ""}), "command"),
        (json!({"command": "   "}), "command"),
        (json!({}), "command"),
        (
            json!({"command": "true", "command_timeout": 0}),
            "command_timeout",
        ),
        (
            json!({"command": "true", "command_timeout": 999999}),
            "command_timeout",
        ),
    ] {
        let (status, got) = json(exec(body).send().await.expect("send")).await;
        assert_validation(status, &got, &["body", loc]);
    }
    let upload = |body: Value| {
        s.post(&format!("/sessions/{id}/upload"))
            .header("Authorization", bearer(&key))
            .json(&body)
    };
    let (status, got) = json(
        upload(json!({"file_path": "a", "content_base64": "not base64!"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &got, &["body", "content_base64"]);
    let (status, got) = json(
        upload(json!({"file_path": "", "content_base64": "aGk="}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &got, &["body", "file_path"]);
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 2048]);
    let (status, got) = json(
        upload(json!({"file_path": "a", "content_base64": big}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &got, 413, "payload_too_large");
    let (status, got) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/str_replace"),
            &json!({"file_path": "hello.txt", "str_to_replace": "", "str_to_insert": "x"}),
        )
        .await;
    assert_validation(status, &got, &["body", "str_to_replace"]);
    // An upload onto a directory fails as the caller's mistake, not the server's.
    let (status, got) = json(
        upload(json!({"file_path": "/testbed", "content_base64": "aGk="}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (status, got["success"].as_bool()),
        (200, Some(false)),
        "{got}"
    );

    // Another user sees none of it.
    let (_, other) = s.user("mallory").await;
    let done = run(&s, &key, &id, "true", None).await;
    let iid = done["interaction_id"].as_str().expect("iid").to_string();
    for (method, path) in [
        ("GET", format!("/sessions/{id}")),
        ("DELETE", format!("/sessions/{id}")),
        ("POST", format!("/sessions/{id}/exec")),
        ("GET", format!("/sessions/{id}/interactions/{iid}")),
        ("POST", format!("/sessions/{id}/str_replace")),
        ("POST", format!("/sessions/{id}/upload")),
    ] {
        let url = format!("{}{path}", s.base);
        let req = match method {
            "GET" => s.client.get(url),
            "DELETE" => s.client.delete(url),
            _ => s.client.post(url).json(&json!({"command": "true", "file_path": "a", "str_to_replace": "a", "str_to_insert": "b", "content_base64": "aGk="})),
        };
        let (status, body) = json(
            req.header("Authorization", bearer(&other))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_error(status, &body, 404, "not_found");
    }
    let (_, listing) = s.get_as(&other, "/sessions").await;
    assert_eq!(listing["total_count"], 0);
    let (status, body) = s
        .get_as(&key, &format!("/sessions/{id}/interactions/int_nope"))
        .await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_listing_and_expiry() {
    let Some(s) = sandbox::start_if_possible(|c| c.sessions.max_live_sessions_per_user = 2).await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let a = create_ready(&s, &key).await;
    let b = create_ready(&s, &key).await;
    let (status, body, retry_after) = s
        .post_retry_after(
            &key,
            "/sessions",
            &json!({"dataset": DATASET, "sample_id": SAMPLE}),
        )
        .await;
    assert!(retry_after.is_some());
    assert_error(status, &body, 429, "too_many_requests");

    let (_, listing) = s.get_as(&key, "/sessions").await;
    let ids: Vec<&str> = listing["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x["session_id"].as_str())
        .collect();
    assert_eq!(ids, [b.as_str(), a.as_str()], "newest first");
    assert_eq!(
        (
            listing["total_count"].as_u64(),
            listing["has_more"].as_bool()
        ),
        (Some(2), Some(false))
    );
    let (_, page) = s.get_as(&key, "/sessions?page=1&page_size=1").await;
    assert_eq!(page["has_more"], true);
    let (status, body) = s.get_as(&key, "/sessions?page_size=0").await;
    assert_validation(status, &body, &["query", "page_size"]);

    // Expiry: the reaper terminates both; a command on an expired session is a 409.
    let ended = s
        .kiln
        .sessions
        .reap_expired(chrono::Utc::now() + chrono::Duration::minutes(31))
        .await;
    assert_eq!(ended, 2);
    let (_, session) = s.get_as(&key, &format!("/sessions/{a}")).await;
    assert_eq!(session["status"], "terminated");
    let (status, body) = s
        .post_as(
            &key,
            &format!("/sessions/{a}/exec"),
            &json!({"command": "true"}),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s.delete_as(&key, &format!("/sessions/{a}")).await;
    assert_error(status, &body, 409, "conflict");
    // The limit counts live sessions only: a new one can start now.
    create_ready(&s, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_resume_or_end_sessions_and_fail_cut_off_commands() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    run(&s, &key, &id, "echo kept > /tmp/state", None).await;
    let (status, started) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "sleep 30"}),
        )
        .await;
    assert_eq!(status, 202);
    let cut = started["interaction_id"].as_str().expect("iid").to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // After a crash, the sandbox is still running: the session resumes where it was,
    // and the command the crash cut off fails as an infrastructure failure (-1000).
    let s = s.restart(false).await;
    let (_, interaction) = s
        .get_as(&key, &format!("/sessions/{id}/interactions/{cut}"))
        .await;
    assert_eq!(interaction["exit_code"], -1000, "{interaction}");
    assert!(
        interaction["message"]
            .as_str()
            .is_some_and(|m| m.contains("restarted")),
        "{interaction}"
    );
    let (_, session) = s.get_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "ready");
    let state = run(&s, &key, &id, "cat /tmp/state", None).await;
    assert_eq!(
        state["stdout"], "kept\n",
        "the same sandbox, with its changes"
    );

    // A graceful stop stops the sandboxes: the next start terminates their sessions.
    let s = s.restart(true).await;
    let (_, session) = s.get_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["status"], "terminated", "{session}");
    let (status, body) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "true"}),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
}

async fn verify(s: &TestServer, key: &str, id: &str) -> Value {
    let response = s
        .post(&format!("/sessions/{id}/verify"))
        .header("Authorization", bearer(key))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("send");
    let (status, started) = json(response).await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "pending");
    let job = started["job_id"].as_str().expect("job").to_string();
    loop {
        let (status, body) = s.get_as(key, &format!("/sessions/{id}/verify/{job}")).await;
        assert_eq!(status, 200, "{body}");
        if ["completed", "error", "cancelled"]
            .contains(&body["status"].as_str().unwrap_or_default())
        {
            return body;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_passes_fails_times_out_and_is_cancelled() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let script = |body: &str| {
        s.post(&format!("/sessions/{id}/upload")).header("Authorization", bearer(&key)).json(
            &json!({"file_path": "run-tests.sh", "content_base64": base64::engine::general_purpose::STANDARD.encode(body)}),
        )
    };

    script("echo 'PASSED t1'\n").send().await.expect("send");
    let job = verify(&s, &key, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let result = &job["result"];
    assert_eq!(
        (
            result["is_success"].as_bool(),
            result["passed"].as_i64(),
            result["total"].as_i64()
        ),
        (Some(true), Some(1), Some(1)),
        "{result}"
    );
    assert!(job["started_at"].is_string() && job["completed_at"].is_string());
    assert_eq!(result["grading"]["rules"], "swebench5");

    script("echo 'FAILED t1'\nexit 1\n")
        .send()
        .await
        .expect("send");
    let job = verify(&s, &key, &id).await;
    assert_eq!(
        (
            job["status"].as_str(),
            job["result"]["is_success"].as_bool()
        ),
        (Some("completed"), Some(false)),
        "{job}"
    );
    assert_eq!(job["result"]["failures"][0]["name"], "t1");
    // Each outcome counted once in /metrics.
    let text = s.kiln.sessions.render_metrics().await.expect("metrics");
    for line in [
        "kiln_verifications_total{outcome=\"resolved\"} 1",
        "kiln_verifications_total{outcome=\"unresolved\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }

    // A run that hangs is killed (with everything it started) at the sample's timeout.
    script("echo 'PASSED t1'\nsleep 1000 &\nsleep 1000\n")
        .send()
        .await
        .expect("send");
    let started = Instant::now();
    let job = verify(&s, &key, &id).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 3 s verification timeout was not enforced"
    );
    assert_eq!(
        (
            job["status"].as_str(),
            job["result"]["is_success"].as_bool()
        ),
        (Some("completed"), Some(false)),
        "{job}"
    );
    assert!(
        job["result"]["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("Tests Timed Out")),
        "{job}"
    );
    let count = r"for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -cx 'sleep 1000 ' || true";
    let left = run(&s, &key, &id, count, None).await;
    assert_eq!(
        left["stdout"].as_str().map(str::trim),
        Some("0"),
        "the hung test run left processes: {left}"
    );

    // Closing the session under a running verification cancels it.
    script("sleep 1000\n").send().await.expect("send");
    let (_, started) = json(
        s.post(&format!("/sessions/{id}/verify"))
            .header("Authorization", bearer(&key))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let job_id = started["job_id"].as_str().expect("job").to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200);
    let (_, job) = s
        .get_as(&key, &format!("/sessions/{id}/verify/{job_id}"))
        .await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let (status, body) = json(
        s.post(&format!("/sessions/{id}/verify"))
            .header("Authorization", bearer(&key))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s
        .get_as(&key, &format!("/sessions/{id}/verify/job_nope"))
        .await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codeset_grading_reads_junit_and_wants_the_exact_sets() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready_sample(&s, &key, sandbox::CODESET_SAMPLE).await;
    let verifier = |t3: &str| {
        let script = format!(
            "#!/bin/sh\ncat > /testbed/report.xml <<'XML'\n<testsuite name=\"s\" tests=\"3\">\n<testcase classname=\"suite\" name=\"t1\"/>\n<testcase classname=\"suite\" name=\"t2\"/>\n<testcase classname=\"suite\" name=\"t3\">{t3}</testcase>\n</testsuite>\nXML\n"
        );
        s.post(&format!("/sessions/{id}/upload"))
            .header("Authorization", bearer(&key))
            .json(&json!({
                "file_path": "/verifier.sh", "make_executable": true,
                "content_base64": base64::engine::general_purpose::STANDARD.encode(script),
            }))
    };

    verifier("<failure message=\"expected\"/>")
        .send()
        .await
        .expect("send");
    let job = verify(&s, &key, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"]["is_success"], true, "{job}");
    assert_eq!(job["result"]["grading"]["rules"], "codeset_gym");

    // t3 is expected to fail: an unexpected pass breaks the exact-set rule.
    verifier("").send().await.expect("send");
    let job = verify(&s, &key, &id).await;
    assert_eq!(job["result"]["is_success"], false, "{job}");

    // A report left from before does not grade a verifier that writes none.
    run(
        &s,
        &key,
        &id,
        "printf '<testsuite><testcase classname=\"suite\" name=\"t1\"/></testsuite>' > report.xml",
        None,
    )
    .await;
    s.post(&format!("/sessions/{id}/upload"))
        .header("Authorization", bearer(&key))
        .json(&json!({"file_path": "/verifier.sh", "make_executable": true, "content_base64": base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\ntrue\n")}))
        .send()
        .await
        .expect("send");
    let job = verify(&s, &key, &id).await;
    assert_eq!(
        (
            job["status"].as_str(),
            job["result"]["is_success"].as_bool()
        ),
        (Some("completed"), Some(false)),
        "{job}"
    );
    assert_eq!(
        job["result"]["passed"], 0,
        "the stale report was read: {job}"
    );
}
