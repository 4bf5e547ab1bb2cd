//! A stand-in for GitHub on 127.0.0.1:0, speaking the real protocol of the four endpoints
//! Kiln uses, and checking what Kiln sends: the app's client id and secret on the code
//! exchange, `Accept: application/json` there, and on the API a known bearer token, a
//! `User-Agent` and GitHub's media type. Every request is counted, so a test can prove
//! GitHub was never called.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;

pub const CLIENT_ID: &str = "Iv1.kilntestclient";
pub const CLIENT_SECRET: &str = "kiln-test-client-secret";

#[derive(Clone, Debug)]
pub struct Account {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    /// What `/user` shows (GitHub's public email; often null).
    pub email: Option<String>,
    /// What `/user/emails` lists: (address, primary, verified).
    pub emails: Vec<(String, bool, bool)>,
    /// Whether the token may read `/user/emails` (the `user:email` scope); GitHub answers
    /// 404 otherwise.
    pub email_scope: bool,
    pub repos: usize,
}

impl Account {
    pub fn new(id: u64, login: &str) -> Self {
        Self {
            id,
            login: login.to_string(),
            name: Some(format!("{login} (name)")),
            email: Some(format!("{login}@example.com")),
            emails: Vec::new(),
            email_scope: true,
            repos: 3,
        }
    }
}

#[derive(Default)]
pub struct FakeState {
    /// One-time codes GitHub would hand the browser, and whose they are.
    codes: Mutex<HashMap<String, Account>>,
    /// Access tokens issued, and whose they are.
    tokens: Mutex<HashMap<String, Account>>,
    pub calls: AtomicUsize,
    /// Redirect URIs received on the code exchange.
    pub redirect_uris: Mutex<Vec<Option<String>>>,
    /// When set, the code exchange never answers (a hung GitHub).
    pub stall: AtomicBool,
}

pub struct FakeGithub {
    pub base: String,
    pub state: Arc<FakeState>,
}

impl FakeGithub {
    pub async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/login/oauth/access_token", post(access_token))
            .route("/user", get(user))
            .route("/user/emails", get(emails))
            .route("/user/repos", get(repos))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake GitHub");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, state }
    }

    /// A code the browser would bring back for `account`.
    pub fn code_for(&self, account: &Account) -> String {
        let code = format!("code-{}-{}", account.id, uuid());
        self.state
            .codes
            .lock()
            .expect("lock")
            .insert(code.clone(), account.clone());
        code
    }

    /// Makes `token` a valid token of `account` (as if issued long ago).
    pub fn add_token(&self, token: &str, account: &Account) {
        self.state
            .tokens
            .lock()
            .expect("lock")
            .insert(token.to_string(), account.clone());
    }

    pub fn issued_tokens(&self) -> Vec<String> {
        self.state
            .tokens
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

fn uuid() -> String {
    kiln_services::new_id("x")
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    code: String,
    redirect_uri: Option<String>,
}

async fn access_token(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    if s.stall.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    assert_eq!(
        headers.get("accept").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "Kiln must ask for JSON, or GitHub answers form-encoded"
    );
    s.redirect_uris
        .lock()
        .expect("lock")
        .push(form.redirect_uri.clone());
    // GitHub answers 200 with an error object, not an HTTP error.
    if form.client_id != CLIENT_ID || form.client_secret != CLIENT_SECRET {
        return Json(json!({
            "error": "incorrect_client_credentials",
            "error_description": "The client_id and/or client_secret passed are incorrect.",
        }))
        .into_response();
    }
    let Some(account) = s.codes.lock().expect("lock").remove(&form.code) else {
        return Json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
            "error_uri": "https://docs.github.com/apps/troubleshooting",
        }))
        .into_response();
    };
    let token = format!("gho_{}", uuid().replace('_', ""));
    s.tokens
        .lock()
        .expect("lock")
        .insert(token.clone(), account);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": "read:user,repo,user:email"}))
        .into_response()
}

/// The account of the request's bearer token, after checking the headers GitHub requires.
type Refusal = (StatusCode, Json<serde_json::Value>);

fn authorized(s: &FakeState, headers: &HeaderMap) -> Result<Account, Refusal> {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("user-agent").is_none_or(str::is_empty) {
        // GitHub rejects requests without a User-Agent.
        return Err((
            StatusCode::FORBIDDEN,
            Json(json!({"message": "User-Agent required"})),
        ));
    }
    assert_eq!(header("accept"), Some("application/vnd.github+json"));
    let token = header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    s.tokens
        .lock()
        .expect("lock")
        .get(token)
        .cloned()
        .ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials", "status": "401"})),
            )
        })
}

async fn user(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    match authorized(&s, &headers) {
        Ok(a) => Json(json!({
            "login": a.login, "id": a.id, "node_id": "MDQ6VXNlcjE=", "type": "User",
            "site_admin": false, "name": a.name, "company": null, "email": a.email,
            "html_url": format!("https://github.com/{}", a.login),
        }))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn emails(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    match authorized(&s, &headers) {
        Ok(a) if !a.email_scope => {
            (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response()
        }
        Ok(a) => Json(
            a.emails
                .iter()
                .map(|(email, primary, verified)| {
                    json!({"email": email, "primary": primary, "verified": verified, "visibility": null})
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct Page {
    per_page: usize,
    page: usize,
}

async fn repos(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(q): Query<Page>,
) -> Response {
    let a = match authorized(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    assert!(q.page >= 1 && (1..=100).contains(&q.per_page), "bad paging");
    let start = (q.page - 1) * q.per_page;
    let rows: Vec<_> = (start..a.repos.min(start + q.per_page))
        .map(|i| {
            let full_name = format!("{}/repo-{i:04}", a.login);
            json!({
                "id": i, "name": format!("repo-{i:04}"), "full_name": full_name,
                "private": i % 2 == 1, "owner": {"login": a.login, "id": a.id},
                "html_url": format!("https://github.com/{full_name}"),
                "default_branch": "main",
            })
        })
        .collect();
    Json(rows).into_response()
}
