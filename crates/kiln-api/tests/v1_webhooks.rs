//! Webhooks over real HTTP: CRUD, validation and isolation; signed deliveries that a
//! receiver in this test (an axum server on 127.0.0.1) verifies by recomputing the HMAC;
//! retries past a receiver that is down or failing, the dead-letter list and its retry, a
//! delivery in flight when the server crashes, and a real session's lifecycle events.
use crate::{common, sandbox};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use common::{assert_error, assert_validation, bearer, TestServer};

/// What the receiver answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answer {
    Ok,
    Fail,
    /// Never answers (an attempt that the server's crash cuts off).
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
    at: Instant,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers for the next requests in order; `fallback` after them.
    script: Arc<Mutex<Vec<Answer>>>,
    fallback: Arc<Mutex<Answer>>,
    url: String,
}

impl Receiver {
    async fn start(fallback: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, fallback)
    }

    fn serve(listener: tokio::net::TcpListener, fallback: Answer) -> Self {
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let receiver = Receiver {
            got: Arc::default(),
            script: Arc::default(),
            fallback: Arc::new(Mutex::new(fallback)),
            url,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn set(&self, answer: Answer) {
        *self.fallback.lock().expect("lock") = answer;
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// The requests received, once there are at least `n` (within 20 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the receiver got {} requests, not {n}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    r.got.lock().expect("lock").push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    let answer = {
        let mut script = r.script.lock().expect("lock");
        if script.is_empty() {
            *r.fallback.lock().expect("lock")
        } else {
            script.remove(0)
        }
    };
    match answer {
        Answer::Ok => StatusCode::OK,
        Answer::Fail => StatusCode::SERVICE_UNAVAILABLE,
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

/// Checks `Kiln-Signature` as a receiver would: HMAC-SHA256 of `"<t>.<body>"` with the
/// secret, and `t` within 5 minutes of now.
fn assert_signed(secret: &str, r: &Received) {
    let header = r.headers.get("kiln-signature").expect("a signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("malformed signature {header}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{}", r.body).as_bytes());
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "{header}");
    let t: i64 = t.parse().expect("t");
    let now = chrono::Utc::now().timestamp();
    assert!((now - t).abs() <= 300, "t={t} now={now}");
    let body: Value = serde_json::from_str(&r.body).expect("a JSON body");
    assert_eq!(
        r.headers.get("kiln-webhook-id").map(String::as_str),
        body["id"].as_str(),
        "the id header is the event's id"
    );
    assert_eq!(r.headers["content-type"], "application/json");
}

/// Webhooks may reach this machine's loopback (tests only); retries are quick.
fn fast(c: &mut kiln_config::Config) {
    c.webhooks.allowed_internal_hosts = vec!["127.0.0.1".into()];
    c.webhooks.backoff_base_ms = 100;
    c.webhooks.backoff_cap_secs = 1;
    c.webhooks.attempt_timeout_secs = 2;
    c.webhooks.poll_interval_ms = 50;
    c.webhooks.max_attempts = 3;
}

async fn create_hook(s: &TestServer, key: &str, url: &str, events: Value) -> (String, String) {
    let (status, body) = s
        .v1_as(
            key,
            Method::POST,
            "/webhooks",
            Some(&json!({"url": url, "events": events})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["webhook_id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

/// The webhook's deliveries once `done` holds for them (within 20 s).
async fn deliveries_when(
    s: &TestServer,
    key: &str,
    hook: &str,
    query: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (status, body) = s
            .v1_as(
                key,
                Method::GET,
                &format!("/webhooks/{hook}/deliveries{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let list = body["deliveries"].as_array().expect("list").clone();
        if done(&list) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "deliveries never got there: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_are_validated_owned_and_limited() {
    let s = TestServer::start_with(|c| {
        fast(c);
        c.webhooks.max_per_user = 2;
        c.webhooks.max_events_per_hook = 3;
        c.webhooks.max_pending_for_test = 2;
        // Failed deliveries stay pending for the whole test.
        c.webhooks.backoff_base_ms = 120_000;
        c.webhooks.max_attempts = 50;
    })
    .await;
    let key = s.admin_key.clone();
    let post = |body: Value| {
        let s = &s;
        let key = key.clone();
        async move { s.v1_as(&key, Method::POST, "/webhooks", Some(&body)).await }
    };

    for (body, loc) in [
        (
            json!({"url": "not a url", "events": ["*"]}),
            vec!["body", "url"],
        ),
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            vec!["body", "url"],
        ),
        (
            json!({"url": format!("https://example.com/{}", "x".repeat(3000)), "events": ["*"]}),
            vec!["body", "url"],
        ),
        // Internal addresses, unless allowed (only 127.0.0.1 is, here).
        (
            json!({"url": "http://169.254.169.254/latest", "events": ["*"]}),
            vec!["body", "url"],
        ),
        (
            json!({"url": "http://10.1.2.3/hook", "events": ["*"]}),
            vec!["body", "url"],
        ),
        (
            json!({"url": "http://[::1]:9/hook", "events": ["*"]}),
            vec!["body", "url"],
        ),
        // A name is checked by what it resolves to: 127.0.0.1 is allowed, `localhost` not.
        (
            json!({"url": "http://localhost:9/hook", "events": ["*"]}),
            vec!["body", "url"],
        ),
        (
            json!({"url": "http://user:pw@127.0.0.1/hook", "events": ["*"]}),
            vec!["body", "url"],
        ),
        (
            json!({"url": "http://127.0.0.1/hook", "events": ["session.exploded"]}),
            vec!["body", "events", "0"],
        ),
        (
            json!({"url": "http://127.0.0.1/hook", "events": ["session.ready", "nope"]}),
            vec!["body", "events", "1"],
        ),
        (
            json!({"url": "http://127.0.0.1/hook", "events": []}),
            vec!["body", "events"],
        ),
        (
            json!({"url": "http://127.0.0.1/hook", "events": ["*", "session.ready", "session.error", "session.closed"]}),
            vec!["body", "events"],
        ),
        (
            json!({"url": "http://127.0.0.1/hook"}),
            vec!["body", "events"],
        ),
        (
            json!({"url": "http://127.0.0.1/hook", "events": ["*"], "description": "d".repeat(501)}),
            vec!["body", "description"],
        ),
    ] {
        let (status, got) = post(body.clone()).await;
        assert_validation(status, &got, &loc);
    }

    let (status, made) = post(json!({"url": "http://127.0.0.1:9/hook", "events": ["session.ready", "session.ready"], "description": "mine"})).await;
    assert_eq!(status, 201, "{made}");
    let id = made["webhook_id"].as_str().expect("id").to_string();
    let secret = made["secret"].as_str().expect("secret").to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 30,
        "{secret}"
    );
    assert_eq!(made["events"], json!(["session.ready"]), "duplicates go");
    assert_eq!(made["active"], true);

    // The secret is shown once, and stored sealed.
    let (status, got) = s
        .v1_as(&key, Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 200, "{got}");
    assert!(got.get("secret").is_none(), "{got}");
    let stored = s
        .store()
        .await
        .get_webhook(&id)
        .await
        .expect("read")
        .expect("stored");
    assert!(
        !stored.secret_sealed.contains(&secret[6..]),
        "the secret is not stored in clear"
    );

    let (status, changed) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(&json!({"events": ["*"], "active": false, "rotate_secret": true})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["events"].clone(), changed["active"].clone()),
        (json!(["*"]), json!(false))
    );
    let rotated = changed["secret"].as_str().expect("a new secret");
    assert_ne!(rotated, secret);
    assert_eq!(changed["description"], "mine", "untouched fields stay");
    let (status, got) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(&json!({"url": "gopher://x"})),
        )
        .await;
    assert_validation(status, &got, &["body", "url"]);
    let (status, got) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/webhooks/{id}"),
            Some(&json!({"colour": "red"})),
        )
        .await;
    assert_eq!(status, 422, "unknown fields are refused: {got}");

    // Test events are limited by what is still pending.
    for expected in [202, 202, 429] {
        let (status, got) = s
            .v1_as(&key, Method::POST, &format!("/webhooks/{id}/test"), None)
            .await;
        assert_eq!(status, expected, "{got}");
    }

    // Another user sees none of it.
    let (_, other) = s.user("mallory").await;
    for (method, path, body) in [
        (Method::GET, format!("/webhooks/{id}"), None),
        (
            Method::PATCH,
            format!("/webhooks/{id}"),
            Some(json!({"active": true})),
        ),
        (Method::DELETE, format!("/webhooks/{id}"), None),
        (Method::GET, format!("/webhooks/{id}/deliveries"), None),
        (Method::POST, format!("/webhooks/{id}/test"), None),
        (
            Method::POST,
            format!("/webhooks/{id}/deliveries/dlv_x/retry"),
            None,
        ),
    ] {
        let (status, got) = s.v1_as(&other, method.clone(), &path, body.as_ref()).await;
        assert_error(status, &got, 404, "not_found");
    }
    let (_, list) = s.v1_as(&other, Method::GET, "/webhooks", None).await;
    assert_eq!(list["webhooks"], json!([]));

    // The limit per user.
    let (status, _) = post(json!({"url": "http://127.0.0.1:9/b", "events": ["*"]})).await;
    assert_eq!(status, 201);
    let (status, got) = post(json!({"url": "http://127.0.0.1:9/c", "events": ["*"]})).await;
    assert_eq!(status, 429, "{got}");

    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/webhooks/{id}/deliveries?limit=0"),
            None,
        )
        .await;
    assert_validation(status, &got, &["query", "limit"]);
    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/webhooks/{id}/deliveries?status=lost"),
            None,
        )
        .await;
    assert_eq!(status, 422, "{got}");

    let (status, _) = s
        .v1_as(&key, Method::DELETE, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, got) = s
        .v1_as(&key, Method::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_error(status, &got, 404, "not_found");
    let (_, list) = s.v1_as(&key, Method::GET, "/webhooks", None).await;
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1));

    // The document describes the routes.
    let doc: Value = s
        .v1(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    for path in [
        "/webhooks",
        "/webhooks/{webhook_id}",
        "/webhooks/{webhook_id}/deliveries",
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        "/webhooks/{webhook_id}/test",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
}

#[tokio::test]
async fn a_test_event_arrives_signed() {
    let s = TestServer::start_with(fast).await;
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Ok).await;
    let (hook, secret) = create_hook(&s, &key, &receiver.url, json!(["session.ready"])).await;

    let (status, queued) = s
        .v1_as(&key, Method::POST, &format!("/webhooks/{hook}/test"), None)
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["event_type"], "webhook.test");
    let got = receiver.wait_for(1).await;
    assert_signed(&secret, &got[0]);
    let body: Value = serde_json::from_str(&got[0].body).expect("json");
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["data"]["webhook_id"], hook.as_str());
    assert_eq!(body["id"], queued["event_id"]);
    let list = deliveries_when(&s, &key, &hook, "", |l| {
        l.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(list[0]["last_status_code"], 200, "{list:?}");
    assert_eq!(list[0]["attempts"], 1);

    // A rotated secret signs what follows; a disabled webhook still gets test events.
    let (_, changed) = s
        .v1_as(
            &key,
            Method::PATCH,
            &format!("/webhooks/{hook}"),
            Some(&json!({"rotate_secret": true, "active": false})),
        )
        .await;
    assert_eq!(changed["active"], false, "{changed}");
    let rotated = changed["secret"].as_str().expect("secret").to_string();
    s.v1_as(&key, Method::POST, &format!("/webhooks/{hook}/test"), None)
        .await;
    let got = receiver.wait_for(2).await;
    assert_signed(&rotated, &got[1]);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_it_after_retries() {
    let s = TestServer::start_with(|c| {
        fast(c);
        c.webhooks.max_attempts = 50;
    })
    .await;
    let key = s.admin_key.clone();
    // A port nobody listens on (yet).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("http://{addr}/hook");
    let (hook, secret) = create_hook(&s, &key, &url, json!(["*"])).await;
    s.v1_as(&key, Method::POST, &format!("/webhooks/{hook}/test"), None)
        .await;
    let failing = deliveries_when(&s, &key, &hook, "", |l| {
        l.first().is_some_and(|d| d["attempts"].as_u64() >= Some(2))
    })
    .await;
    assert_eq!(failing[0]["status"], "pending", "{failing:?}");
    assert!(
        failing[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{failing:?}"
    );

    // The receiver comes up on that port, failing twice more before it answers 200.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let receiver = Receiver::serve(listener, Answer::Ok);
    receiver
        .script
        .lock()
        .expect("lock")
        .extend([Answer::Fail, Answer::Fail]);
    let got = receiver.wait_for(3).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["kiln-webhook-id"].as_str())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one event: {ids:?}");
    for r in &got {
        assert_signed(&secret, r);
    }
    let done = deliveries_when(&s, &key, &hook, "", |l| {
        l.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    // At least one refused connection, then the receiver's three (an attempt that was
    // in flight while the port came up may be among those three).
    assert!(done[0]["attempts"].as_u64() >= Some(4), "{done:?}");
}

#[tokio::test]
async fn dead_letters_are_listed_and_retried() {
    let s = TestServer::start_with(fast).await;
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Fail).await;
    let (hook, secret) = create_hook(&s, &key, &receiver.url, json!(["*"])).await;
    s.v1_as(&key, Method::POST, &format!("/webhooks/{hook}/test"), None)
        .await;
    let dead = deliveries_when(&s, &key, &hook, "?status=dead", |l| !l.is_empty()).await;
    assert_eq!(dead[0]["attempts"], 3, "max_attempts: {dead:?}");
    assert_eq!(dead[0]["last_status_code"], 503);
    assert_eq!(receiver.got().len(), 3);
    let (_, pending) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/webhooks/{hook}/deliveries?status=pending"),
            None,
        )
        .await;
    assert_eq!(pending["deliveries"], json!([]));

    receiver.set(Answer::Ok);
    let delivery = dead[0]["delivery_id"].as_str().expect("id");
    let retry = format!("/webhooks/{hook}/deliveries/{delivery}/retry");
    let (status, retried) = s.v1_as(&key, Method::POST, &retry, None).await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "pending");
    let got = receiver.wait_for(4).await;
    assert_signed(&secret, &got[3]);
    assert_eq!(got[3].body, got[0].body, "the same body is sent again");
    assert_eq!(
        got[3].headers["kiln-webhook-id"],
        got[0].headers["kiln-webhook-id"]
    );
    deliveries_when(&s, &key, &hook, "", |l| {
        l.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    let (status, body) = s.v1_as(&key, Method::POST, &retry, None).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/webhooks/{hook}/deliveries/dlv_nope/retry"),
            None,
        )
        .await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_in_flight_at_a_crash_is_sent_after_the_restart() {
    let s = TestServer::start_with(|c| {
        fast(c);
        c.webhooks.attempt_timeout_secs = 30;
    })
    .await;
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Hang).await;
    let (hook, secret) = create_hook(&s, &key, &receiver.url, json!(["*"])).await;
    s.v1_as(&key, Method::POST, &format!("/webhooks/{hook}/test"), None)
        .await;
    receiver.wait_for(1).await;

    // The crash cuts the attempt off; the next start claims the delivery once its lease
    // (the attempt's timeout and a margin) has run out.
    let mut s = s.restart(false).await;
    let lease = {
        let store = s.store().await;
        let all = store
            .list_webhook_deliveries(&hook, None, 10, 0)
            .await
            .expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].attempts, 1);
        all[0].lease_until.expect("leased")
    };
    assert!(lease > chrono::Utc::now(), "the lease still holds");
    // The receiver answers from now on (before the lease runs out: the next attempt can
    // start within a poll of it, and one sent to a hanging receiver waits its 30 s).
    receiver.set(Answer::Ok);
    // Not waiting out 35 s here: the lease is moved back, as time would.
    sqlx_expire_lease(&mut s, &hook).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(
        got[1].headers["kiln-webhook-id"],
        got[0].headers["kiln-webhook-id"]
    );
    assert_eq!(got[1].body, got[0].body);
    assert_signed(&secret, &got[1]);
    let done = deliveries_when(&s, &key, &hook, "", |l| {
        l.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(done[0]["attempts"], 2, "{done:?}");
}

/// Moves the webhook's delivery leases into the past, as if they had run out.
async fn sqlx_expire_lease(s: &mut TestServer, hook: &str) {
    let url = s.kiln.config.database_url();
    let past = "2000-01-01T00:00:00.000000Z";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
        sqlx::query("UPDATE webhook_deliveries SET lease_until = $1 WHERE webhook_id = $2")
            .bind(past)
            .bind(hook)
            .execute(&pool)
            .await
            .expect("update");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.expect("postgres");
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = TIMESTAMPTZ '2000-01-01 00:00:00+00' \
             WHERE webhook_id = $1",
        )
        .bind(hook)
        .execute(&pool)
        .await
        .expect("update");
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_life_arrives_signed_in_order_of_events() {
    let Some(s) = sandbox::start_if_possible(fast).await else {
        return;
    };
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Ok).await;
    let (_all, secret) = create_hook(&s, &key, &receiver.url, json!(["*"])).await;
    // Another user's hook and a hook for other events get nothing of it.
    let other_receiver = Receiver::start(Answer::Ok).await;
    let (_, other_key) = s.user("other").await;
    create_hook(&s, &other_key, &other_receiver.url, json!(["*"])).await;
    let (_only_errors, _) =
        create_hook(&s, &key, &other_receiver.url, json!(["session.error"])).await;

    let id = sandbox::create_ready(&s, &key).await;
    s.post(&format!("/sessions/{id}/upload"))
        .header("Authorization", bearer(&key))
        .json(&json!({"file_path": "run-tests.sh",
            "content_base64": base64::engine::general_purpose::STANDARD.encode("echo 'PASSED t1'\n")}))
        .send()
        .await
        .expect("upload");
    let (status, started) = s
        .post_as(&key, &format!("/sessions/{id}/verify"), &json!({}))
        .await;
    assert_eq!(status, 202, "{started}");
    receiver.wait_for(2).await;
    // Wait for the verification's event before closing.
    let start = Instant::now();
    while !receiver
        .got()
        .iter()
        .any(|r| r.body.contains("verification.completed"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no verification event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200);
    let got = receiver.wait_for(4).await;

    let mut events: Vec<Value> = got
        .iter()
        .map(|r| {
            assert_signed(&secret, r);
            serde_json::from_str(&r.body).expect("json")
        })
        .collect();
    events.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "session.created",
            "session.ready",
            "verification.completed",
            "session.closed"
        ]
    );
    for e in &events[..2] {
        assert_eq!(e["data"]["session_id"], id.as_str());
    }
    assert_eq!(events[1]["data"]["status"], "ready");
    assert_eq!(events[3]["data"]["status"], "closed");
    let verified = &events[2]["data"];
    assert_eq!(verified["session_id"], id.as_str());
    assert_eq!(verified["status"], "completed");
    assert_eq!(verified["result"]["is_success"], true, "{verified}");
    assert!(
        other_receiver.got().is_empty(),
        "{:?}",
        other_receiver.got()
    );
}

/// A verification whose sandbox dies under it ends as `verification.error` (code
/// `sandbox_lost`), announced with the session's `session.terminated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_whose_sandbox_dies_is_announced_as_an_error() {
    let Some(s) = sandbox::start_if_possible(fast).await else {
        return;
    };
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Ok).await;
    let (_, secret) = create_hook(
        &s,
        &key,
        &receiver.url,
        json!([
            "verification.error",
            "verification.completed",
            "session.terminated"
        ]),
    )
    .await;
    let id = sandbox::create_ready(&s, &key).await;
    s.post(&format!("/sessions/{id}/upload"))
        .header("Authorization", bearer(&key))
        .json(&json!({"file_path": "run-tests.sh",
            "content_base64": base64::engine::general_purpose::STANDARD.encode("sleep 60\n")}))
        .send()
        .await
        .expect("upload");
    let (status, started) = s
        .post_as(&key, &format!("/sessions/{id}/verify"), &json!({}))
        .await;
    assert_eq!(status, 202, "{started}");
    let job = started["job_id"].as_str().expect("job id").to_string();
    // Kill the sandbox while the tests run (the test sample times out after 3 s; if the
    // run has not started yet, the queued job is ended by the session's end: the same
    // event either way).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sandbox::kill("-KILL", sandbox::init_pid(&s, &id));

    let got = receiver.wait_for(2).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| {
            assert_signed(&secret, r);
            serde_json::from_str(&r.body).expect("json")
        })
        .collect();
    let error = events
        .iter()
        .find(|e| e["type"] == "verification.error")
        .unwrap_or_else(|| panic!("no verification.error: {events:?}"));
    assert_eq!(error["data"]["job_id"], job.as_str(), "{error}");
    assert_eq!(error["data"]["session_id"], id.as_str(), "{error}");
    assert_eq!(error["data"]["status"], "error", "{error}");
    assert_eq!(error["data"]["error_code"], "sandbox_lost", "{error}");
    assert!(
        events.iter().any(|e| e["type"] == "session.terminated"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "verification.completed"),
        "{events:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.got().len(),
        2,
        "announced once: {:?}",
        receiver.got()
    );
}

/// A verification still queued or running when its session is closed ends `cancelled`
/// (code `session_ended`), announced as `verification.error` with the `session.closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_ended_by_its_sessions_close_is_announced_as_an_error() {
    let Some(s) = sandbox::start_if_possible(fast).await else {
        return;
    };
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Ok).await;
    let (_, secret) = create_hook(
        &s,
        &key,
        &receiver.url,
        json!([
            "verification.error",
            "verification.completed",
            "session.closed"
        ]),
    )
    .await;
    let id = sandbox::create_ready(&s, &key).await;
    s.post(&format!("/sessions/{id}/upload"))
        .header("Authorization", bearer(&key))
        .json(&json!({"file_path": "run-tests.sh",
            "content_base64": base64::engine::general_purpose::STANDARD.encode("sleep 60\n")}))
        .send()
        .await
        .expect("upload");
    let mut jobs = Vec::new();
    // The first runs, the second waits behind it in the session's queue.
    for _ in 0..2 {
        let (status, started) = s
            .post_as(&key, &format!("/sessions/{id}/verify"), &json!({}))
            .await;
        assert_eq!(status, 202, "{started}");
        jobs.push(started["job_id"].as_str().expect("job id").to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert!(status == 200 || status == 204, "{status}");

    let got = receiver.wait_for(3).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| {
            assert_signed(&secret, r);
            serde_json::from_str(&r.body).expect("json")
        })
        .collect();
    for job in &jobs {
        let error = events
            .iter()
            .find(|e| e["type"] == "verification.error" && e["data"]["job_id"] == job.as_str())
            .unwrap_or_else(|| panic!("no verification.error for {job}: {events:?}"));
        assert_eq!(error["data"]["session_id"], id.as_str(), "{error}");
        assert_eq!(error["data"]["status"], "cancelled", "{error}");
        assert_eq!(error["data"]["error_code"], "session_ended", "{error}");
    }
    assert!(
        events.iter().any(|e| e["type"] == "session.closed"),
        "{events:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.got().len(),
        3,
        "announced once: {:?}",
        receiver.got()
    );
}

/// Snapshots and forks are announced too: `snapshot.created`, `session.forked` (with the
/// forks' ids), a `session.created` per fork, `snapshot.restored` and `snapshot.deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_forks_are_announced() {
    let Some(s) = sandbox::start_if_possible(fast).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    let receiver = Receiver::start(Answer::Ok).await;
    let events = json!([
        "snapshot.created",
        "snapshot.restored",
        "snapshot.deleted",
        "session.forked",
        "session.created"
    ]);
    let (_hook, secret) = create_hook(&s, &key, &receiver.url, events).await;

    let (status, snap) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/snapshots"),
            Some(&json!({"name": "before"})),
        )
        .await;
    assert_eq!(status, 201, "{snap}");
    let snapshot_id = snap["snapshot_id"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    let (status, forked) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/fork"),
            Some(&json!({"count": 2})),
        )
        .await;
    assert_eq!(status, 201, "{forked}");
    let (status, restored) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/snapshots/{snapshot_id}/restore"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{restored}");
    let (status, copy) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/snapshots/{snapshot_id}/restore"),
            Some(&json!({"new_instance": true})),
        )
        .await;
    assert_eq!(status, 201, "{copy}");
    let copy_id = copy["instance"]["instance_id"]
        .as_str()
        .expect("new instance id");
    let (status, deleted) = s
        .v1_as(
            &key,
            Method::DELETE,
            &format!("/instances/{id}/snapshots/{snapshot_id}"),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {deleted}");

    // created, forked, 3 × session.created (2 forks, 1 copy), 2 × restored, deleted
    let got = receiver.wait_for(8).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| {
            assert_signed(&secret, r);
            serde_json::from_str(&r.body).expect("json")
        })
        .collect();
    let of = |t: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["type"] == t)
            .map(|e| &e["data"])
            .collect()
    };
    let created = of("snapshot.created");
    assert_eq!(created.len(), 1, "{events:?}");
    assert_eq!(created[0]["snapshot_id"], snapshot_id.as_str());
    assert_eq!(created[0]["instance_id"], id.as_str());
    assert_eq!(created[0]["name"], "before");
    let forked_events = of("session.forked");
    assert_eq!(forked_events.len(), 1, "{events:?}");
    assert_eq!(forked_events[0]["session_id"], id.as_str());
    let fork_ids: Vec<&str> = forked_events[0]["forks"]
        .as_array()
        .expect("forks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(fork_ids.len(), 2, "{events:?}");
    let new_sessions: Vec<&str> = of("session.created")
        .iter()
        .filter_map(|d| d["session_id"].as_str())
        .collect();
    for fork in &fork_ids {
        assert!(
            new_sessions.contains(fork),
            "no session.created for {fork}: {events:?}"
        );
    }
    let restored_events = of("snapshot.restored");
    assert_eq!(restored_events.len(), 2, "{events:?}");
    let into = |at: &str| {
        restored_events
            .iter()
            .find(|e| e["restored_into"] == at)
            .unwrap_or_else(|| panic!("no snapshot.restored into {at}: {events:?}"))
    };
    assert_eq!(into(&id)["new_instance"], false);
    assert_eq!(into(copy_id)["new_instance"], true);
    assert_eq!(into(copy_id)["snapshot_id"], snapshot_id.as_str());
    assert!(
        new_sessions.contains(&copy_id),
        "no session.created for {copy_id}"
    );
    assert_eq!(of("snapshot.deleted").len(), 1, "{events:?}");
}

/// Not a check: numbers for the report. `cargo test -p kiln-api --test integration --
/// --ignored --nocapture v1_webhooks::webhook_numbers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn webhook_numbers() {
    let s = TestServer::start_with(fast).await;
    let key = s.admin_key.clone();
    let receiver = Receiver::start(Answer::Ok).await;
    let (hook, _) = create_hook(&s, &key, &receiver.url, json!(["session.ready"])).await;
    let pct = |mut v: Vec<Duration>| {
        v.sort();
        let at = |p: usize| v[(v.len() - 1) * p / 100].as_secs_f64() * 1000.0;
        format!("p50 {:.2} ms, p90 {:.2} ms", at(50), at(90))
    };
    let mut latency = Vec::new();
    for n in 1..=50 {
        let start = Instant::now();
        s.v1_as(&key, Method::POST, &format!("/webhooks/{hook}/test"), None)
            .await;
        let got = receiver.wait_for(n).await;
        latency.push(got[n - 1].at - start);
    }
    eprintln!("POST /test -> received: {}", pct(latency));

    use kiln_services::webhooks::EventType;
    let events = s.kiln.webhooks.events();
    let (bob, _) = s.user("bob").await;
    let me = s
        .kiln
        .auth
        .authenticate(&key)
        .await
        .expect("admin")
        .user
        .user_id;
    for (who, kind, label) in [
        (bob.as_str(), EventType::SessionReady, "no webhook"),
        (
            me.as_str(),
            EventType::SessionClosed,
            "a webhook for another type",
        ),
        (me.as_str(), EventType::SessionReady, "a matching webhook"),
    ] {
        let mut took = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            events
                .publish(who, kind, json!({"session_id": "ses_x"}))
                .await;
            took.push(start.elapsed());
        }
        eprintln!(
            "publish, user with {label}: {} ({})",
            pct(took),
            s.backend()
        );
    }
}
