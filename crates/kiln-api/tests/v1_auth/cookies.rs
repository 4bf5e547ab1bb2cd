//! Browser sign-ins in cookies (`X-Kiln-Session: cookie`): the tokens only in `HttpOnly`,
//! `SameSite=Strict` cookies; a request by cookie that changes something needs the CSRF
//! token, and a planted `kiln_csrf` cookie does not stand in for it; refresh and sign-out
//! by cookie; a deleted account's cookie stops at once.
use reqwest::Method;
use serde_json::{json, Value};

use super::common::TestServer;
use super::{signup, start};

/// A sign-in's cookies, as the server set them.
struct Jar {
    session: String,
    csrf: String,
    refresh: String,
    /// Each `Set-Cookie` line.
    lines: Vec<String>,
}

impl Jar {
    fn of(response: &reqwest::Response) -> Self {
        let lines: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let value = |name: &str| {
            lines
                .iter()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .and_then(|rest| rest.split(';').next())
                .unwrap_or_default()
                .to_string()
        };
        Self {
            session: value("kiln_session"),
            csrf: value("kiln_csrf"),
            refresh: value("kiln_refresh"),
            lines,
        }
    }

    fn line(&self, name: &str) -> &str {
        self.lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie in {:?}", self.lines))
    }
}

/// A request to `/v1{path}` carrying `cookie` (and `X-CSRF-Token: csrf` if given).
async fn by_cookie(
    s: &TestServer,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = s.v1(method, path).header("Cookie", cookie);
    if let Some(csrf) = csrf {
        request = request.header("X-CSRF-Token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("send")
}

async fn cookie_login(s: &TestServer, email: &str, password: &str) -> (Jar, Value) {
    let response = s
        .v1(Method::POST, "/auth/login")
        .header("X-Kiln-Session", "cookie")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200);
    let jar = Jar::of(&response);
    (jar, response.json().await.expect("json"))
}

async fn status_and_code(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["detail"]["code"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_sign_in_is_used_refreshed_and_ended_with_csrf_checked() {
    let (s, _smtp) = start(|_| {}).await;
    signup(&s, "cora@example.com", "cora's password").await;
    let (jar, body) = cookie_login(&s, "cora@example.com", "cora's password").await;
    assert_eq!(
        body["access_token"], "",
        "tokens stay out of the body: {body}"
    );
    assert_eq!(body["refresh_token"], "", "{body}");
    assert_eq!(body["user"]["email"], "cora@example.com");
    for (name, path, http_only) in [
        ("kiln_session", "Path=/;", true),
        ("kiln_csrf", "Path=/;", false),
        ("kiln_refresh", "Path=/v1/auth/refresh;", true),
    ] {
        let line = jar.line(name);
        assert!(line.contains(path), "{line}");
        assert!(line.contains("SameSite=Strict"), "{line}");
        // The test server is reached on 127.0.0.1, where browsers keep Secure cookies.
        assert!(line.contains("Secure"), "{line}");
        assert_eq!(line.contains("HttpOnly"), http_only, "{line}");
    }
    let session = format!("kiln_session={}", jar.session);

    // Reading needs only the cookie; on the Codeset routes too.
    let me = by_cookie(&s, Method::GET, "/auth/me", &session, None, None).await;
    assert_eq!(me.status(), 200);
    let root = s.base.trim_end_matches("/api/v1");
    let codeset = s
        .client
        .get(format!("{root}/api/v1/users/me"))
        .header("Cookie", &session)
        .send()
        .await
        .expect("send");
    assert_eq!(codeset.status(), 200);

    // Changing something needs the CSRF token, which a planted cookie does not replace.
    let rename = || Some(json!({"name": "Cora B."}));
    let refused = by_cookie(&s, Method::PATCH, "/auth/me", &session, None, rename()).await;
    assert_eq!(status_and_code(refused).await, (403, json!("csrf_failed")));
    let planted = format!("{session}; kiln_csrf=planted");
    let refused = by_cookie(
        &s,
        Method::PATCH,
        "/auth/me",
        &planted,
        Some("planted"),
        rename(),
    )
    .await;
    assert_eq!(status_and_code(refused).await, (403, json!("csrf_failed")));
    let renamed = by_cookie(
        &s,
        Method::PATCH,
        "/auth/me",
        &session,
        Some(&jar.csrf),
        rename(),
    )
    .await;
    assert_eq!(renamed.status(), 200);

    // Refresh by the refresh cookie: new cookies, tokens still out of the body; the spent
    // refresh token is refused.
    let refresh_cookie = format!("kiln_refresh={}", jar.refresh);
    let refresh = || {
        s.v1(Method::POST, "/auth/refresh")
            .header("X-Kiln-Session", "cookie")
            .header("Cookie", &refresh_cookie)
            .json(&json!({}))
            .send()
    };
    let refreshed = refresh().await.expect("refresh");
    assert_eq!(refreshed.status(), 200);
    let fresh = Jar::of(&refreshed);
    let body: Value = refreshed.json().await.expect("json");
    assert_eq!(body["access_token"], "", "{body}");
    assert!(!fresh.session.is_empty() && fresh.refresh != jar.refresh);
    let again = refresh().await.expect("refresh");
    assert_eq!(again.status(), 401);
    // Without a token in the body or a cookie sign-in, the refresh token is missing.
    let missing = s
        .v1(Method::POST, "/auth/refresh")
        .json(&json!({}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(missing.status(), 422);

    // Reuse of a spent refresh token ended the sign-in: sign in again, then sign out by
    // cookie: the cookies are removed and the old one no longer works.
    let (jar, _) = cookie_login(&s, "cora@example.com", "cora's password").await;
    let session = format!("kiln_session={}", jar.session);
    let out = by_cookie(&s, Method::POST, "/auth/logout", &session, None, None).await;
    assert_eq!(status_and_code(out).await, (403, json!("csrf_failed")));
    let out = by_cookie(
        &s,
        Method::POST,
        "/auth/logout",
        &session,
        Some(&jar.csrf),
        None,
    )
    .await;
    assert_eq!(out.status(), 204);
    let removed = Jar::of(&out);
    for name in ["kiln_session", "kiln_csrf", "kiln_refresh"] {
        assert!(
            removed.line(name).contains("Max-Age=0"),
            "{:?}",
            removed.lines
        );
    }
    let after = by_cookie(&s, Method::GET, "/auth/me", &session, None, None).await;
    assert_eq!(after.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_cookie_stops_at_once() {
    let (s, _smtp) = start(|_| {}).await;
    signup(&s, "dora@example.com", "dora's password").await;
    let (jar, _) = cookie_login(&s, "dora@example.com", "dora's password").await;
    let session = format!("kiln_session={}", jar.session);
    let csrf = Some(jar.csrf.as_str());
    let sudo = json!({"password": "dora's password"});
    let granted = by_cookie(&s, Method::POST, "/auth/sudo", &session, csrf, Some(sudo)).await;
    assert_eq!(granted.status(), 200);
    let deleted = by_cookie(
        &s,
        Method::DELETE,
        "/auth/me",
        &session,
        csrf,
        Some(json!({"password": "dora's password"})),
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let removed = Jar::of(&deleted);
    assert!(
        removed.line("kiln_session").contains("Max-Age=0"),
        "{:?}",
        removed.lines
    );
    let after = by_cookie(&s, Method::GET, "/auth/me", &session, None, None).await;
    assert_eq!(after.status(), 401);
}
