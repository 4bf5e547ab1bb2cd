//! What the GitHub scenarios share: servers wired to the fake GitHub on the scenario's
//! backend (each with a database of its own on PostgreSQL, dropped with it), and
//! the browser's side of a sign-in.
#![allow(dead_code)]

use std::future::Future;

use kiln_config::{Config, GithubConfig, Secret};
use serde_json::{json, Value};

use crate::common::{json, Backend, Database, TestServer};
use crate::github_fake::{Account, FakeGithub, CLIENT_ID, CLIENT_SECRET};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// What a scenario gets: the fake GitHub and how to start Kiln servers on the chosen backend.
pub struct Ctx {
    pub backend: Backend,
    pub gh: FakeGithub,
    /// Where each server stores (on PostgreSQL, a database of its own, dropped with it).
    pub database: Database,
}

impl Ctx {
    pub fn github_config(&self) -> GithubConfig {
        GithubConfig {
            client_id: Some(CLIENT_ID.into()),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            oauth_base: self.gh.base.clone(),
            api_base: self.gh.base.clone(),
            timeout_secs: 5,
            ..GithubConfig::default()
        }
    }

    /// A server of its own (own data directory, own database) whose GitHub is the fake,
    /// after `tweak`.
    pub async fn server_with(&self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let github = self.github_config();
        TestServer::start_on(&self.database, move |c| {
            c.github = github;
            tweak(c);
        })
        .await
    }

    pub async fn server(&self) -> TestServer {
        self.server_with(|_| {}).await
    }
}

/// Runs `scenario` on `backend` (see [`Database::of`]) with a fresh fake GitHub.
pub async fn run<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let gh = FakeGithub::start().await;
    let Some(database) = Database::of(backend) else {
        return;
    };
    scenario(Ctx {
        backend,
        gh,
        database,
    })
    .await;
}

/// A state from the server's authorize step for `redirect_uri`.
pub async fn state(s: &TestServer, redirect_uri: &str) -> String {
    let (status, body) = json(
        s.get("/auth/github/authorize")
            .query(&[("redirect_uri", redirect_uri)])
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state = body["state"].as_str().expect("state").to_string();
    let url = body["authorize_url"].as_str().expect("url");
    assert!(
        url.contains("/login/oauth/authorize?client_id=Iv1.kilntestclient"),
        "{url}"
    );
    assert!(url.contains(&format!("state={state}")), "{url}");
    state
}

pub async fn post_sign_in(s: &TestServer, body: Value) -> (u16, Value) {
    json(
        s.post("/auth/github")
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await
}

/// The whole browser round trip: authorize, GitHub's code, POST /auth/github.
pub async fn sign_in(s: &TestServer, gh: &FakeGithub, account: &Account) -> (u16, Value) {
    let state = state(s, REDIRECT).await;
    let code = gh.code_for(account);
    post_sign_in(
        s,
        json!({"code": code, "state": state, "redirect_uri": REDIRECT}),
    )
    .await
}

pub async fn me(s: &TestServer, token: &str) -> (u16, Value) {
    s.get_as(token, "/users/me").await
}

pub async fn repos(s: &TestServer, token: &str) -> (u16, Value) {
    s.get_as(token, "/repos").await
}
