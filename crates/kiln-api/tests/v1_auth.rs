//! Password accounts over real HTTP (SQLite; PostgreSQL in scripts/test.sh's second pass): sign-up → the verification
//! mail read from an SMTP server this test runs (on 127.0.0.1) → verify; sign-in, device
//! sessions listed and revoked (their tokens stop at once); password reset and e-mail change
//! by mailed single-use links; deletion's cascade; the sign-in rate limit; validation;
//! browser sign-ins in cookies with CSRF (`cookies`).
use crate::common;
#[path = "v1_auth/cookies.rs"]
mod cookies;
#[path = "v1_auth/recovery.rs"]
mod recovery;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use common::{assert_error, assert_validation, bearer, TestServer};

/// One mail as the SMTP server received it.
#[derive(Clone, Debug)]
struct Mail {
    to: String,
    data: String,
}

/// A minimal SMTP server (RFC 5321's commands lettre uses, no TLS, no auth): it accepts
/// every mail and keeps it.
#[derive(Clone)]
struct SmtpSink {
    port: u16,
    got: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        let port = listener.local_addr().expect("addr").port();
        let got: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let store = got.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = serve_smtp(socket, store).await;
                });
            }
        });
        Self { port, got }
    }

    /// The mails to `to` so far.
    fn to(&self, to: &str) -> Vec<Mail> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m.to.eq_ignore_ascii_case(to))
            .cloned()
            .collect()
    }

    /// Waits for the `n`th mail to `to` (1-based) and returns its link's token.
    async fn token(&self, to: &str, n: usize) -> String {
        for _ in 0..200 {
            if let Some(mail) = self.to(to).get(n - 1) {
                return token_of(&mail.data);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no mail #{n} to {to}; got {:?}",
            self.got.lock().expect("lock")
        );
    }
}

async fn serve_smtp(
    socket: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut to = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to = line[8..].trim().trim_matches(['<', '>']).to_string();
            write.write_all(b"250 ok\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            store.lock().expect("lock").push(Mail {
                to: to.clone(),
                data,
            });
            write.write_all(b"250 queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
}

/// The `token=` of the link in a mail (undoing quoted-printable soft breaks and `=3D`).
fn token_of(data: &str) -> String {
    let text = data.replace("=\r\n", "").replace("=3D", "=");
    let start = text
        .find("token=")
        .unwrap_or_else(|| panic!("no link in {data}"))
        + 6;
    text[start..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

/// A server (on `KILN_TEST_DATABASE_URL`'s PostgreSQL when set, else SQLite) that mails
/// through a fresh SMTP sink.
async fn start(tweak: impl FnOnce(&mut kiln_config::Config)) -> (TestServer, SmtpSink) {
    let smtp = SmtpSink::start().await;
    let port = smtp.port;
    let s = TestServer::start_with(move |c| {
        c.mail.smtp_host = Some("127.0.0.1".into());
        c.mail.smtp_port = port;
        c.mail.smtp_tls = kiln_config::SmtpTls::None;
        c.mail.poll_interval_ms = 50;
        // Cheap hashes: the cost is a configuration value, not what is tested.
        c.accounts.argon2_memory_kib = 256;
        c.accounts.argon2_iterations = 1;
        tweak(c);
    })
    .await;
    (s, smtp)
}

async fn call(
    s: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = s.v1(method, path).header("User-Agent", "v1-auth-test");
    if let Some(token) = token {
        request = request.header("Authorization", bearer(token));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

async fn signup(s: &TestServer, email: &str, password: &str) -> Value {
    let (status, body) = call(
        s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": email, "password": password, "name": "Ada"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn login(s: &TestServer, email: &str, password: &str) -> (u16, Value) {
    call(
        s,
        None,
        Method::POST,
        "/auth/login",
        Some(json!({"email": email, "password": password})),
    )
    .await
}

fn access(body: &Value) -> String {
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_string()
}

/// Sudo for the sign-in of `token` (destructive routes need it).
async fn sudo(s: &TestServer, token: &str, body: Value) -> (u16, Value) {
    call(s, Some(token), Method::POST, "/auth/sudo", Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_verify_and_device_sessions() {
    let (s, smtp) = start(|_| {}).await;
    let first = signup(&s, "Ada@Example.com", "correct horse battery").await;
    assert_eq!(first["token_type"], "bearer");
    assert_eq!(first["user"]["email_verified"], false);
    let a1 = access(&first);

    // The verification link from the mail works once.
    let token = smtp.token("Ada@Example.com", 1).await;
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/verify-email?token={token}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/verify-email?token={token}"),
        None,
    )
    .await;
    assert_error(status, &body, 400, "invalid_token");
    let (status, me) = call(&s, Some(&a1), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["email"], "Ada@Example.com");

    // Two more devices (the address is case-insensitive); three live sessions.
    let (status, second) = login(&s, "ada@example.com", "correct horse battery").await;
    assert_eq!(status, 200, "{second}");
    let (_, third) = login(&s, "ADA@example.com", "correct horse battery").await;
    let (a2, a3) = (access(&second), access(&third));
    let (status, list) = call(&s, Some(&a1), Method::GET, "/auth/me/sessions", None).await;
    assert_eq!(status, 200, "{list}");
    let sessions = list["sessions"].as_array().expect("list");
    assert_eq!(sessions.len(), 3, "{list}");
    assert_eq!(sessions.iter().filter(|x| x["current"] == true).count(), 1);
    assert_eq!(sessions[0]["user_agent"], "v1-auth-test");
    assert!(sessions[0]["ip_address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.")));

    // A revoked session's access and refresh tokens stop at once.
    let second_id = second["session_id"].as_str().expect("id");
    let (status, _) = call(
        &s,
        Some(&a1),
        Method::DELETE,
        &format!("/auth/me/sessions/{second_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(&s, Some(&a2), Method::GET, "/auth/me", None).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/refresh",
        Some(json!({"refresh_token": second["refresh_token"]})),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    // ... on the Codeset API too.
    let (status, _) = s.get_as(&a2, "/users/me").await;
    assert_eq!(status, 401);
    let (status, _) = s.get_as(&a3, "/users/me").await;
    assert_eq!(status, 200, "a live session's token works on /api/v1");
    // Revoking it again, or someone else's, is a 404.
    let (status, _) = call(
        &s,
        Some(&a1),
        Method::DELETE,
        &format!("/auth/me/sessions/{second_id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Refresh rotates within the session; revoke-others keeps only the caller's.
    let (status, pair) = call(
        &s,
        None,
        Method::POST,
        "/auth/refresh",
        Some(json!({"refresh_token": first["refresh_token"]})),
    )
    .await;
    assert_eq!(status, 200, "{pair}");
    let a1 = access(&pair);
    let (status, body) = call(
        &s,
        Some(&a1),
        Method::POST,
        "/auth/me/sessions/revoke-others",
        None,
    )
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)), "{body}");
    let (status, _) = call(&s, Some(&a3), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 401);
    // With an API key, the keep set is empty: every session ends.
    let key = s
        .kiln
        .auth
        .create_api_key(first["user"]["id"].as_str().expect("id"), None)
        .await
        .expect("key");
    let (status, body) = call(
        &s,
        Some(&key.secret),
        Method::POST,
        "/auth/me/sessions/revoke-others",
        None,
    )
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)), "{body}");
    let (status, _) = call(&s, Some(&a1), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 401);

    // Logout ends that sign-in only.
    let (_, fourth) = login(&s, "ada@example.com", "correct horse battery").await;
    let a4 = access(&fourth);
    let (status, _) = call(&s, Some(&a4), Method::POST, "/auth/logout", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&s, Some(&a4), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 401);
    let (status, _) = call(&s, Some(&key.secret), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 200, "API keys are not sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_by_mail() {
    let (s, smtp) = start(|_| {}).await;
    let first = signup(&s, "bob@example.com", "first password!").await;
    let before = access(&first);
    // The same answer for an unknown address, and no mail for it.
    let (s1, unknown) = call(
        &s,
        None,
        Method::POST,
        "/auth/forgot-password",
        Some(json!({"email": "nobody@example.com"})),
    )
    .await;
    let (s2, known) = call(
        &s,
        None,
        Method::POST,
        "/auth/forgot-password",
        Some(json!({"email": "BOB@example.com"})),
    )
    .await;
    assert_eq!((s1, &unknown), (s2, &known));
    assert_eq!(s1, 200);
    let token = smtp.token("bob@example.com", 2).await;
    assert!(smtp.to("nobody@example.com").is_empty());

    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/reset-password",
        Some(json!({"token": token, "new_password": "short"})),
    )
    .await;
    assert_validation(status, &body, &["body", "new_password"]);
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/reset-password",
        Some(json!({"token": token, "new_password": "second password!"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Single use.
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/reset-password",
        Some(json!({"token": token, "new_password": "third password!!"})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_token");
    // Every earlier sign-in ended; only the new password signs in.
    let (status, _) = call(&s, Some(&before), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 401);
    assert_eq!(login(&s, "bob@example.com", "first password!").await.0, 401);
    let (status, second) = login(&s, "bob@example.com", "second password!").await;
    assert_eq!(status, 200, "{second}");

    // Changing the password keeps the caller's session and ends the others.
    let a2 = access(&second);
    let (_, third) = login(&s, "bob@example.com", "second password!").await;
    let (status, body) = call(
        &s,
        Some(&a2),
        Method::POST,
        "/auth/me/password",
        Some(json!({"current_password": "wrong password", "new_password": "fourth password"})),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = call(
        &s,
        Some(&a2),
        Method::POST,
        "/auth/me/password",
        Some(json!({"current_password": "second password!", "new_password": "fourth password"})),
    )
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(
        call(&s, Some(&a2), Method::GET, "/auth/me", None).await.0,
        200
    );
    assert_eq!(
        call(&s, Some(&access(&third)), Method::GET, "/auth/me", None)
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_change_by_mail() {
    let (s, smtp) = start(|_| {}).await;
    let first = signup(&s, "carol@example.com", "carol's password").await;
    signup(&s, "taken@example.com", "another password").await;
    let a = access(&first);
    assert_eq!(
        sudo(&s, &a, json!({"password": "carol's password"}))
            .await
            .0,
        200
    );
    // A taken address gets the same answer and no mail.
    let (s1, b1) = call(
        &s,
        Some(&a),
        Method::POST,
        "/auth/me/email",
        Some(json!({"new_email": "taken@example.com", "password": "carol's password"})),
    )
    .await;
    let (s2, b2) = call(
        &s,
        Some(&a),
        Method::POST,
        "/auth/me/email",
        Some(json!({"new_email": "carol@new.example", "password": "carol's password"})),
    )
    .await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(s1, 200, "{b1}");
    let token = smtp.token("carol@new.example", 1).await;
    assert_eq!(
        smtp.to("taken@example.com").len(),
        1,
        "only its own verification mail"
    );
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/me/email/confirm",
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(
        call(&s, Some(&a), Method::GET, "/auth/me", None).await.0,
        401
    );
    assert_eq!(
        login(&s, "carol@example.com", "carol's password").await.0,
        401
    );
    let (status, again) = login(&s, "carol@new.example", "carol's password").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user"]["email"], "carol@new.example");
    assert_eq!(again["user"]["email_verified"], true);
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/me/email/confirm",
        Some(json!({"token": token})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_cascades() {
    let (s, _smtp) = start(|_| {}).await;
    let first = signup(&s, "dave@example.com", "dave's password").await;
    let a = access(&first);
    let user_id = first["user"]["id"].as_str().expect("id");
    let key = s
        .kiln
        .auth
        .create_api_key(user_id, None)
        .await
        .expect("key");
    assert_eq!(s.get_as(&key.secret, "/users/me").await.0, 200);

    // The export holds the records and none of the secrets.
    let (status, export) = call(&s, Some(&a), Method::POST, "/auth/me/export", None).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["user"]["id"], user_id);
    assert_eq!(export["api_keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(export["device_sessions"].as_array().map(Vec::len), Some(1));
    let text = export.to_string();
    assert!(
        !text.contains("$argon2") && !text.contains(&key.secret),
        "{text}"
    );
    assert!(!text.contains("token="), "mail links are secrets: {text}");

    assert_eq!(
        sudo(&s, &a, json!({"password": "dave's password"})).await.0,
        200
    );
    let (status, body) = call(&s, Some(&a), Method::DELETE, "/auth/me", None).await;
    assert_validation(status, &body, &["body", "password"]);
    let (status, body) = call(
        &s,
        Some(&a),
        Method::DELETE,
        "/auth/me",
        Some(json!({"password": "nope nope nope"})),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, _) = call(
        &s,
        Some(&a),
        Method::DELETE,
        "/auth/me",
        Some(json!({"password": "dave's password"})),
    )
    .await;
    assert_eq!(status, 204);
    // Keys, tokens and the password stop at once; the address is free again.
    assert_eq!(
        call(&s, Some(&a), Method::GET, "/auth/me", None).await.0,
        401
    );
    let (status, body) = s.get_as(&key.secret, "/users/me").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        call(
            &s,
            None,
            Method::POST,
            "/auth/refresh",
            Some(json!({"refresh_token": first["refresh_token"]}))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        login(&s, "dave@example.com", "dave's password").await.0,
        401
    );
    let again = signup(&s, "dave@example.com", "a new password").await;
    assert_ne!(again["user"]["id"], user_id);

    // An account without a password (API keys only) cannot be deleted or re-passworded by
    // its bearer credential alone.
    let (_, plain_key) = s.user("kim").await;
    let (status, body) = call(
        &s,
        Some(&plain_key),
        Method::DELETE,
        "/auth/me",
        Some(json!({"password": "x"})),
    )
    .await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = call(
        &s,
        Some(&plain_key),
        Method::POST,
        "/auth/me/password",
        Some(json!({"current_password": "whatever it is", "new_password": "a new password"})),
    )
    .await;
    assert_error(status, &body, 409, "conflict");
    assert_eq!(s.get_as(&plain_key, "/users/me").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_and_conflicts() {
    let (s, _smtp) = start(|_| {}).await;
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"password": "long enough!"})),
    )
    .await;
    assert_validation(status, &body, &["body", "email"]);
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": "a@b.co", "password": "short"})),
    )
    .await;
    assert_validation(status, &body, &["body", "password"]);
    let long = format!("{}@example.com", "a".repeat(250));
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": long, "password": "long enough!"})),
    )
    .await;
    assert_validation(status, &body, &["body", "email"]);
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": "not-an-address", "password": "long enough!"})),
    )
    .await;
    assert_validation(status, &body, &["body", "email"]);
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(
            json!({"email": "x@example.com", "password": "long enough!", "name": "n".repeat(101)}),
        ),
    )
    .await;
    assert_validation(status, &body, &["body", "name"]);
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": "x@example.com", "password": "long enough!", "admin": true})),
    )
    .await;
    assert_eq!(status, 422, "unknown fields are refused: {body}");
    let (status, body) = call(
        &s,
        None,
        Method::PATCH,
        "/auth/me",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");

    let first = signup(&s, "erin@example.com", "erin's password").await;
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": "ERIN@example.com", "password": "other password"})),
    )
    .await;
    assert_error(status, &body, 409, "conflict");
    let (status, me) = call(
        &s,
        Some(&access(&first)),
        Method::PATCH,
        "/auth/me",
        Some(json!({"name": " Erin E. "})),
    )
    .await;
    assert_eq!(
        (status, me["name"].as_str()),
        (200, Some("Erin E.")),
        "{me}"
    );
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        "/auth/verify-email?token=forged",
        None,
    )
    .await;
    assert_error(status, &body, 400, "invalid_token");
    let (status, body) = call(&s, None, Method::GET, "/auth/verify-email", None).await;
    assert_validation(status, &body, &["query", "token"]);
    // The Codeset API's admin key still works as before.
    assert_eq!(s.get_as(&s.admin_key, "/samples").await.0, 200);
}

/// Password spraying: failures count per account and per address; past either limit the
/// answer is 429 with Retry-After, even for the right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_rate_limited() {
    let (s, _smtp) = start(|c| {
        c.accounts.login_failures_per_account = 3;
        c.accounts.login_failures_per_address = 5;
    })
    .await;
    signup(&s, "fay@example.com", "fay's password!").await;
    signup(&s, "gus@example.com", "gus's password!").await;
    for _ in 0..3 {
        assert_eq!(login(&s, "fay@example.com", "guess guess").await.0, 401);
    }
    let response = s
        .v1(Method::POST, "/auth/login")
        .json(&json!({"email": "fay@example.com", "password": "fay's password!"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    // Another account from the same address: two more failures reach the address limit.
    assert_eq!(login(&s, "gus@example.com", "guess guess").await.0, 401);
    assert_eq!(login(&s, "gus@example.com", "guess guess").await.0, 401);
    assert_eq!(login(&s, "gus@example.com", "gus's password!").await.0, 429);
    assert_eq!(
        login(&s, "unknown@example.com", "anything at all").await.0,
        429
    );
}

fn code_at(uri: &str, offset_secs: i64) -> String {
    let totp = totp_rs::TOTP::from_url(uri).expect("otpauth uri");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp.generate(now.saturating_add_signed(offset_secs))
}

async fn challenge(s: &TestServer, email: &str, password: &str) -> String {
    let (status, body) = login(s, email, password).await;
    assert_eq!(
        (status, &body["mfa_required"]),
        (200, &json!(true)),
        "{body}"
    );
    assert!(
        body.get("access_token").is_none(),
        "no tokens before the factor: {body}"
    );
    body["challenge_token"]
        .as_str()
        .expect("challenge")
        .to_string()
}

async fn second_step(s: &TestServer, challenge: &str, code: &str) -> (u16, Value) {
    call(
        s,
        None,
        Method::POST,
        "/auth/login/mfa",
        Some(json!({"challenge_token": challenge, "code": code})),
    )
    .await
}

/// TOTP enrolment with codes computed from the secret, sign-in in two steps, replayed codes
/// and challenges refused, backup codes used once and regenerated, factor removal, SMS 501.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_and_backup_codes() {
    let (s, _smtp) = start(|_| {}).await;
    let first = signup(&s, "hal@example.com", "hal's password!").await;
    let a = access(&first);
    let (status, begun) = call(
        &s,
        Some(&a),
        Method::POST,
        "/auth/mfa/totp/enroll/begin",
        None,
    )
    .await;
    assert_eq!(status, 200, "{begun}");
    let uri = begun["otpauth_uri"].as_str().expect("uri").to_string();
    assert!(
        uri.starts_with("otpauth://totp/Kiln:hal%40example.com?"),
        "{uri}"
    );
    let factor = begun["factor_id"].as_str().expect("id");
    let (status, body) = call(
        &s,
        Some(&a),
        Method::POST,
        "/auth/mfa/totp/enroll/finish",
        Some(json!({"factor_id": factor, "code": "000000x"})),
    )
    .await;
    assert_validation(status, &body, &["body", "code"]);
    let enrol_code = code_at(&uri, 0);
    let (status, done) = call(
        &s,
        Some(&a),
        Method::POST,
        "/auth/mfa/totp/enroll/finish",
        Some(json!({"factor_id": factor, "code": enrol_code})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let codes: Vec<String> = done["backup_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    let (_, list) = call(&s, Some(&a), Method::GET, "/auth/mfa/factors", None).await;
    assert_eq!(list["factors"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["backup_codes_remaining"], 10);

    // The password alone no longer signs in; the code used at enrolment is spent.
    let c1 = challenge(&s, "hal@example.com", "hal's password!").await;
    let (status, state) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/login/mfa/state?challenge_token={c1}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["factors"], json!(["totp", "backup_code"]));
    assert_eq!(
        second_step(&s, &c1, &enrol_code).await.0,
        401,
        "a TOTP code is accepted once"
    );
    let (status, signed) = second_step(&s, &c1, &codes[0].to_uppercase()).await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(
        call(&s, Some(&access(&signed)), Method::GET, "/auth/me", None)
            .await
            .0,
        200
    );
    assert_eq!(
        second_step(&s, &c1, &codes[1]).await.0,
        401,
        "a challenge is spent once"
    );

    // A backup code works once; five wrong codes kill a challenge.
    let c2 = challenge(&s, "hal@example.com", "hal's password!").await;
    assert_eq!(second_step(&s, &c2, &codes[0]).await.0, 401);
    for _ in 0..4 {
        assert_eq!(second_step(&s, &c2, "123456").await.0, 401);
    }
    assert_eq!(
        second_step(&s, &c2, &codes[1]).await.0,
        401,
        "dead after 5 failures"
    );
    let c3 = challenge(&s, "hal@example.com", "hal's password!").await;
    let next = code_at(&uri, 30);
    assert_eq!(
        second_step(&s, &c3, &next).await.0,
        200,
        "the next step's code is in the window"
    );
    let c4 = challenge(&s, "hal@example.com", "hal's password!").await;
    assert_eq!(
        second_step(&s, &c4, &next).await.0,
        401,
        "and accepted once"
    );

    // Regenerated codes replace the old ones; removing the factor needs the password.
    let (status, body) = call(
        &s,
        Some(&a),
        Method::POST,
        "/auth/mfa/backup-codes/regenerate",
        Some(json!({"password": "hal's password!"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["backup_codes"][0].as_str().expect("code").to_string();
    let spare = body["backup_codes"][1].as_str().expect("code").to_string();
    assert_eq!(
        second_step(&s, &c4, &codes[2]).await.0,
        401,
        "old codes are void"
    );
    assert_eq!(second_step(&s, &c4, &fresh).await.0, 200);
    // Sudo with a second factor enrolled needs a code too.
    let (status, body) = sudo(&s, &a, json!({"password": "hal's password!"})).await;
    assert_validation(status, &body, &["body", "code"]);
    let wrong = json!({"password": "hal's password!", "code": "000000"});
    assert_eq!(sudo(&s, &a, wrong).await.0, 401);
    let right = json!({"password": "hal's password!", "code": spare});
    assert_eq!(sudo(&s, &a, right).await.0, 200);
    let (status, body) = call(
        &s,
        Some(&a),
        Method::POST,
        &format!("/auth/mfa/factors/{factor}/remove"),
        Some(json!({"password": "wrong password"})),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, _) = call(
        &s,
        Some(&a),
        Method::POST,
        &format!("/auth/mfa/factors/{factor}/remove"),
        Some(json!({"password": "hal's password!"})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = login(&s, "hal@example.com", "hal's password!").await;
    assert!(status == 200 && body["access_token"].is_string(), "{body}");

    let (status, body) = call(&s, Some(&a), Method::POST, "/auth/mfa/sms/enroll", None).await;
    assert_error(status, &body, 501, "sms_not_supported");
    // tests/fuzz/schemathesis.toml names these operations as the documented 501s.
    let (_, doc) = call(&s, None, Method::GET, "/openapi.json", None).await;
    for (path, id) in [
        ("/auth/mfa/sms/enroll", "sms_enroll"),
        ("/auth/mfa/sms/verify", "sms_verify"),
        ("/auth/login/mfa/send-code", "send_code"),
        ("/auth/phone/send-code", "phone_send_code"),
    ] {
        assert_eq!(doc["paths"][path]["post"]["operationId"], id, "{path}");
    }
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        "/auth/login/mfa/state?challenge_token=nope",
        None,
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
}

/// Without an SMTP server, mails are logged and their links kept for an admin
/// (`kiln accounts pending-links`); the link works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_links_wait_for_an_admin() {
    let (s, smtp) = start(|c| c.mail.smtp_host = None).await;
    signup(&s, "ivy@example.com", "ivy's password!").await;
    let mut links = Vec::new();
    for _ in 0..200 {
        links = s.kiln.accounts.pending_links(10).await.expect("links");
        if links.first().is_some_and(|l| l.status == "logged") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(
        (links[0].status, links[0].to.as_str()),
        ("logged", "ivy@example.com")
    );
    assert!(smtp.to("ivy@example.com").is_empty());
    let token = token_of(&links[0].link);
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/verify-email?token={token}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
