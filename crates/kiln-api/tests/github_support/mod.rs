//! What the GitHub scenarios share: the backend they run on, servers wired to the fake
//! GitHub (each with a database of its own on PostgreSQL, dropped after the scenario), and
//! the browser's side of a sign-in.
#![allow(dead_code)]

use std::future::Future;

use kiln_config::{Config, GithubConfig, Secret};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

use crate::common::{json, TestServer};
use crate::github_fake::{Account, FakeGithub, CLIENT_ID, CLIENT_SECRET};

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a scenario gets: the fake GitHub and how to start Kiln servers on the chosen backend.
pub struct Ctx {
    pub backend: Backend,
    pub gh: FakeGithub,
    /// The PostgreSQL admin URL, when on PostgreSQL.
    pub pg_admin: Option<String>,
    /// Databases made for this scenario's servers (one each), dropped after it.
    pub databases: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
        let database_url = match &self.pg_admin {
            Some(admin) => {
                let database =
                    format!("kiln_test_{}", kiln_services::new_id("gh").replace('_', ""));
                let mut conn = PgConnection::connect(admin).await.expect("connect");
                conn.execute(format!("CREATE DATABASE {database}").as_str())
                    .await
                    .expect("create database");
                self.databases.lock().expect("lock").push(database.clone());
                Some(with_database(admin, &database))
            }
            None => None,
        };
        TestServer::start_with(move |c| {
            c.github = github;
            c.database_url = database_url.map(Secret::new);
            tweak(c);
        })
        .await
    }

    pub async fn server(&self) -> TestServer {
        self.server_with(|_| {}).await
    }
}

pub async fn run<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let gh = FakeGithub::start().await;
    let pg_admin = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match std::env::var("KILN_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
                panic!("KILN_TEST_POSTGRES_URL is not set, but CI is")
            }
            _ => {
                eprintln!("note: KILN_TEST_POSTGRES_URL is not set; skipping");
                return;
            }
        },
    };
    let databases = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ctx = Ctx {
        backend,
        gh,
        pg_admin: pg_admin.clone(),
        databases: databases.clone(),
    };
    let outcome = tokio::spawn(scenario(ctx)).await;
    if let Some(admin) = pg_admin {
        let mut conn = PgConnection::connect(&admin).await.expect("connect");
        let made = std::mem::take(&mut *databases.lock().expect("lock"));
        for database in made {
            conn.execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
                .await
                .expect("drop database");
        }
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut url = format!("{}/{database}", &base[..path]);
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    url
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
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
    json(
        s.get("/users/me")
            .header("Authorization", bearer(token))
            .send()
            .await
            .expect("send"),
    )
    .await
}

pub async fn repos(s: &TestServer, token: &str) -> (u16, Value) {
    json(
        s.get("/repos")
            .header("Authorization", bearer(token))
            .send()
            .await
            .expect("send"),
    )
    .await
}
