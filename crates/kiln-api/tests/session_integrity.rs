//! A session never lies about its sandbox, and a user's mistake or a race is never a 500:
//! a sandbox killed from outside terminates its session at once (`sandbox_lost`, billed
//! once, later calls 409); work queued behind a command when the session is closed gets a
//! 409; NUL characters are a 422; old output is trimmed and marked `output_expired`.
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use base64::Engine;
use common::{assert_error, assert_validation, TestServer};
use sandbox::{
    create_ready, finished, init_pid, kill, once_not_ready, session_usage_charges, start_exec,
};
use serde_json::{json, Value};

/// A str_replace and an upload sent together: they queue behind whatever runs.
async fn edit_and_upload(s: &TestServer, key: &str, id: &str) -> [(u16, Value); 2] {
    let replace_path = format!("/sessions/{id}/str_replace");
    let replace_body =
        json!({"file_path": "hello.txt", "str_to_replace": "hello", "str_to_insert": "bye"});
    let upload_path = format!("/sessions/{id}/upload");
    let content = base64::engine::general_purpose::STANDARD.encode("queued\n");
    let upload_body = json!({"file_path": "queued.txt", "content_base64": content});
    let (replaced, uploaded) = tokio::join!(
        s.post_as(key, &replace_path, &replace_body),
        s.post_as(key, &upload_path, &upload_body)
    );
    [replaced, uploaded]
}

/// Every call that needs the session's sandbox, as (method, path, body).
fn calls(id: &str) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "POST",
            format!("/sessions/{id}/exec"),
            json!({"command": "true"}),
        ),
        (
            "POST",
            format!("/sessions/{id}/str_replace"),
            json!({"file_path": "hello.txt", "str_to_replace": "hello", "str_to_insert": "bye"}),
        ),
        (
            "POST",
            format!("/sessions/{id}/upload"),
            json!({"file_path": "a.txt", "content_base64": "aGk="}),
        ),
        ("POST", format!("/sessions/{id}/verify"), json!({})),
        ("DELETE", format!("/sessions/{id}"), Value::Null),
    ]
}

async fn call(s: &TestServer, key: &str, method: &str, path: &str, body: &Value) -> (u16, Value) {
    match method {
        "DELETE" => s.delete_as(key, path).await,
        _ => s.post_as(key, path, body).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_killed_from_outside_terminates_its_session_at_once() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.cost_per_minute_cents = 60).await else {
        return;
    };
    let (_, key) = s.user("user").await;
    let id = create_ready(&s, &key).await;
    let running = start_exec(&s, &key, &id, "sleep 30").await;
    let queued = start_exec(&s, &key, &id, "echo never").await;
    // A str_replace and an upload wait behind the running command when the init dies.
    let killed_at = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        kill("-KILL", init_pid(&s, &id));
        Instant::now()
    };
    let (answers, killed_at) = tokio::join!(edit_and_upload(&s, &key, &id), killed_at);
    for (status, body) in answers {
        assert_error(status, &body, 409, "sandbox_lost");
    }

    // The session is terminated with the code at once, not left `ready` until its TTL.
    let session = once_not_ready(&s, &key, &id, killed_at).await;
    let noticed = killed_at.elapsed();
    eprintln!("sandbox death noticed after {noticed:?}");
    assert_eq!(session["status"], "terminated", "{session}");
    assert!(noticed < Duration::from_secs(1), "took {noticed:?}");
    assert_eq!(session["error"]["code"], "sandbox_lost", "{session}");
    assert!(
        session["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopped unexpectedly")),
        "{session}"
    );
    assert_eq!(session["container_info"]["status"], "stopped");

    // The running and the queued command end as infrastructure failures, saying why.
    for iid in [&running, &queued] {
        let done = finished(&s, &key, &id, iid).await;
        assert_eq!(done["exit_code"], -1000, "{done}");
        assert!(
            done["message"]
                .as_str()
                .is_some_and(|m| m.contains("sandbox")),
            "{done}"
        );
    }

    // Every later call says what happened: 409 sandbox_lost, never a 500.
    for (method, path, body) in calls(&id) {
        let (status, got) = call(&s, &key, method, &path, &body).await;
        assert_error(status, &got, 409, "sandbox_lost");
    }
    assert_eq!(
        session_usage_charges(&s, &key, &id).await.len(),
        1,
        "billed once"
    );
    // The session ends first (stored, announced), its sandbox's teardown follows: bounded wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        if !mounts.contains(&id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead sandbox was not cleaned up within 15 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A restart finds nothing more to end or bill.
    let s = s.restart(false).await;
    assert_eq!(session_usage_charges(&s, &key, &id).await.len(), 1);
    let session = s.get_ok(&key, &format!("/sessions/{id}")).await;
    assert_eq!(session["error"]["code"], "sandbox_lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_learns_at_once_that_its_sandbox_died() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    // Nothing runs in it: only the runtime's notice can tell the session.
    kill("-KILL", init_pid(&s, &id));
    let killed_at = Instant::now();
    let session = once_not_ready(&s, &key, &id, killed_at).await;
    let noticed = killed_at.elapsed();
    eprintln!("idle sandbox death noticed after {noticed:?}");
    assert_eq!(
        (
            session["status"].as_str(),
            session["error"]["code"].as_str()
        ),
        (Some("terminated"), Some("sandbox_lost")),
        "{session}"
    );
    assert!(noticed < Duration::from_secs(1), "took {noticed:?}");
    let (status, body) = s
        .post_as(
            &key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "true"}),
        )
        .await;
    assert_error(status, &body, 409, "sandbox_lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_adopted_after_a_restart_is_watched_too() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    // A crash: the sandbox survives, not a child of the next server.
    let s = s.restart(false).await;
    assert_eq!(
        s.get_ok(&key, &format!("/sessions/{id}")).await["status"],
        "ready"
    );
    kill("-KILL", init_pid(&s, &id));
    let killed_at = Instant::now();
    let session = once_not_ready(&s, &key, &id, killed_at).await;
    assert_eq!(
        (
            session["status"].as_str(),
            session["error"]["code"].as_str()
        ),
        (Some("terminated"), Some("sandbox_lost")),
        "{session}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_with_work_queued_is_never_a_500() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    for round in 0..3 {
        let id = create_ready(&s, &key).await;
        let sleeping = start_exec(&s, &key, &id, "sleep 2").await;
        let close = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.delete_as(&key, &format!("/sessions/{id}")).await
        };
        let (answers, closed) = tokio::join!(edit_and_upload(&s, &key, &id), close);
        assert_eq!(closed.0, 200, "round {round}: {closed:?}");
        for (what, (status, body)) in ["str_replace", "upload"].into_iter().zip(answers) {
            assert!(
                status == 409 || status == 404,
                "round {round}: a queued {what} cut off by the close answered {status}: {body}"
            );
            assert!(body["detail"]["code"].is_string(), "{body}");
        }
        let cut = finished(&s, &key, &id, &sleeping).await;
        assert_eq!(cut["exit_code"], -1000, "{cut}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_a_validation_error_on_every_route() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let cases = [
        ("exec", json!({"command": "echo a\u{0}b"}), "command"),
        (
            "str_replace",
            json!({"file_path": "hello\u{0}.txt", "str_to_replace": "a", "str_to_insert": "b"}),
            "file_path",
        ),
        (
            "upload",
            json!({"file_path": "a\u{0}b", "content_base64": "aGk="}),
            "file_path",
        ),
    ];
    for (route, body, field) in cases {
        let (status, got) = s
            .post_as(&key, &format!("/sessions/{id}/{route}"), &body)
            .await;
        assert_validation(status, &got, &["body", field]);
    }
    // Nothing was queued: the next command is the session's first interaction to run.
    let first = start_exec(&s, &key, &id, "echo fine").await;
    let done = finished(&s, &key, &id, &first).await;
    assert_eq!(done["exit_code"], 0, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_output_is_trimmed_and_marked_expired() {
    let Some(s) = sandbox::start_if_possible(|c| c.sessions.output_retention_days = 7).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = create_ready(&s, &key).await;
    let iid = start_exec(&s, &key, &id, "echo out; echo err >&2").await;
    let done = finished(&s, &key, &id, &iid).await;
    assert_eq!(
        (done["stdout"].as_str(), done["output_expired"].as_bool()),
        (Some("out\n"), Some(false))
    );

    let now = chrono::Utc::now();
    let trimmed = s.kiln.sessions.expire_output(now).await.expect("retention");
    assert_eq!(trimmed, 0, "younger than 7 days: kept");
    let later = now + chrono::Duration::days(8);
    let trimmed = s
        .kiln
        .sessions
        .expire_output(later)
        .await
        .expect("retention");
    assert_eq!(trimmed, 1);
    let expired = s
        .get_ok(&key, &format!("/sessions/{id}/interactions/{iid}"))
        .await;
    assert_eq!(expired["output_expired"], true, "{expired}");
    assert!(
        expired["stdout"].is_null() && expired["stderr"].is_null(),
        "{expired}"
    );
    assert_eq!(
        (expired["exit_code"].as_i64(), expired["command"].as_str()),
        (Some(0), Some("echo out; echo err >&2")),
        "the rest of the interaction stays"
    );
    assert_eq!(
        s.kiln
            .sessions
            .expire_output(later)
            .await
            .expect("retention"),
        0,
        "trimmed once"
    );
}
