//! A real Kiln server on 127.0.0.1:0 over a real SQLite file, for tests that speak HTTP to
//! it, or over a fresh PostgreSQL database dropped with the server: explicitly
//! ([`TestServer::start_on`], [`on_both_backends!`]), or for the one-server suites with
//! `KILN_TEST_DATABASE_URL` set to a PostgreSQL admin URL (such as `KILN_TEST_POSTGRES_URL`).
#![allow(dead_code, unused_macros)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kiln_config::Config;
use kiln_services::Kiln;
use kiln_test_support::postgres::{Locale, TestDatabase};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use tokio::sync::oneshot;

pub struct TestServer {
    pub base: String,
    pub admin_key: String,
    pub kiln: Arc<Kiln>,
    pub client: Client,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    /// Cleared when a restart hands the sandboxes over to the next server.
    shutdown_on_drop: bool,
    /// The PostgreSQL test database, dropped with the last server using it.
    database: Option<TestDatabase>,
}

/// Which store a scenario runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test server stores: a SQLite file in its data directory, or a fresh database
/// on the PostgreSQL server of an admin URL, made for that server and dropped with it.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite,
    Postgres { admin_url: String },
}

impl Database {
    /// PostgreSQL when `KILN_TEST_DATABASE_URL` names a server, else SQLite: how the
    /// one-server suites are moved to PostgreSQL.
    pub fn from_env() -> Self {
        match std::env::var("KILN_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => Database::Postgres { admin_url },
            _ => Database::Sqlite,
        }
    }

    /// `backend`, PostgreSQL on the server of `KILN_TEST_POSTGRES_URL`. `None` (skip) when
    /// that is not set; under `CI` it must be, so CI cannot pass without the PostgreSQL half.
    pub fn of(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Database::Sqlite),
            Backend::Postgres => kiln_test_support::postgres::admin_url()
                .map(|admin_url| Database::Postgres { admin_url }),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite => Backend::Sqlite,
            Database::Postgres { .. } => Backend::Postgres,
        }
    }
}

/// Declares each scenario as `sqlite::<name>` and `postgres::<name>`, each running
/// `$run(Backend, super::<name>)` (the scenario is a function of the calling test module).
macro_rules! on_both_backends {
    ($run:path; $($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    $run(crate::common::Backend::Sqlite, super::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    $run(crate::common::Backend::Postgres, super::$scenario).await;
                }
            )*
        }
    };
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server on [`Database::from_env`], after `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(&Database::from_env(), tweak).await
    }

    /// A server storing in `database`, after `tweak`.
    pub async fn start_on(database: &Database, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            load_demo_dataset: false,
            ..Config::default()
        };
        let database = match database {
            Database::Sqlite => None,
            Database::Postgres { admin_url } => {
                let db =
                    TestDatabase::create(admin_url, "kiln_api_test", Locale::ServerDefault).await;
                config.database_url = Some(kiln_config::Secret::new(db.url.clone()));
                Some(db)
            }
        };
        tweak(&mut config);
        let kiln = Kiln::open(config).await.expect("open kiln");
        let report = kiln.bootstrap().await.expect("bootstrap");
        let admin_key = report.admin_key.expect("first start creates an admin key");
        let kiln = Arc::new(kiln);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(kiln_api::serve(kiln.clone(), listener, async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            admin_key,
            kiln,
            client: Client::new(),
            _dir: dir,
            stop: Some(stop),
            shutdown_on_drop: true,
            database,
        }
    }

    /// Which backend the server stores in ("sqlite" or "postgres").
    pub fn backend(&self) -> &'static str {
        self.kiln.store_backend()
    }

    /// The server's store, opened anew, for tests that check what was stored: the server
    /// itself shows only services.
    pub async fn store(&self) -> Arc<dyn kiln_store::Store> {
        kiln_store::connect(&self.kiln.config.database_url())
            .await
            .expect("open the server's store")
    }

    /// Stops this server and starts another on the same data directory and store.
    /// `graceful`: as on SIGTERM (sandboxes are stopped); otherwise as after a crash
    /// (sandboxes keep running, and in-flight work is cut off).
    pub async fn restart(mut self, graceful: bool) -> TestServer {
        self.shutdown_on_drop = false;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if graceful {
            self.kiln.shutdown().await;
        }
        let config = self.kiln.config.clone();
        let kiln = Kiln::open(config).await.expect("reopen kiln");
        let report = kiln.bootstrap().await.expect("bootstrap");
        assert!(report.admin_key.is_none(), "a restart keeps the admin");
        let kiln = Arc::new(kiln);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(kiln_api::serve(kiln.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        TestServer {
            base,
            admin_key: self.admin_key.clone(),
            kiln,
            client: Client::new(),
            _dir: dir,
            stop: Some(stop),
            shutdown_on_drop: true,
            database: self.database.take(),
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(format!("{}{path}", self.base))
    }

    /// `GET path` as the holder of `key`: (status, JSON body).
    pub async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        json(
            self.get(path)
                .header("Authorization", bearer(key))
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// `GET path` as the holder of `key`, which must answer 200: the JSON body.
    pub async fn get_ok(&self, key: &str, path: &str) -> Value {
        let (status, body) = self.get_as(key, path).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `POST path` with a JSON `body` as the holder of `key`: (status, JSON body).
    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        json(
            self.post(path)
                .header("Authorization", bearer(key))
                .json(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// `POST path` with a JSON `body` as the holder of `key`: (status, JSON body, the
    /// `Retry-After` header if any), for the answers that tell a client when to come back.
    pub async fn post_retry_after(
        &self,
        key: &str,
        path: &str,
        body: &Value,
    ) -> (u16, Value, Option<String>) {
        let response = self
            .post(path)
            .header("Authorization", bearer(key))
            .json(body)
            .send()
            .await
            .expect("send");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (status, body) = json(response).await;
        (status, body, retry_after)
    }

    /// A request to the instance API: `path` is under `/v1` (not `/api/v1`).
    pub fn v1(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let root = self.base.trim_end_matches("/api/v1");
        self.client.request(method, format!("{root}/v1{path}"))
    }

    /// A request to the instance API as the holder of `key`, with an optional JSON body:
    /// (status, JSON body).
    pub async fn v1_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.v1(method, path).header("Authorization", bearer(key));
        if let Some(body) = body {
            request = request.json(body);
        }
        json(request.send().await.expect("send")).await
    }

    /// A `/v1` request with any of a credential, an organization (`X-Org-Slug`) and a
    /// JSON body: (status, JSON body; `null` for an empty one).
    pub async fn v1_call(
        &self,
        key: Option<&str>,
        org: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.v1(method, path);
        if let Some(key) = key {
            request = request.header("Authorization", bearer(key));
        }
        if let Some(org) = org {
            request = request.header("X-Org-Slug", org);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        if text.is_empty() {
            return (status, Value::Null);
        }
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, value)
    }

    /// `DELETE path` as the holder of `key`: (status, JSON body).
    pub async fn delete_as(&self, key: &str, path: &str) -> (u16, Value) {
        json(
            self.delete(path)
                .header("Authorization", bearer(key))
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// A new non-admin user and an API key for it.
    pub async fn user(&self, name: &str) -> (String, String) {
        let user = self
            .kiln
            .auth
            .create_user(name, &format!("{name}@example.com"), false)
            .await
            .expect("user");
        let key = self
            .kiln
            .auth
            .create_api_key(&user.user_id, None)
            .await
            .expect("key");
        (user.user_id, key.secret)
    }
}

/// Unmounts everything under its directory when dropped (after the rest of `drop`).
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        kiln_test_support::mounts::unmount_all_under(&self.0);
    }
}

impl Drop for TestServer {
    /// Also after a failed assertion: no sandbox may outlive its test. Drop cannot await,
    /// so Kiln is shut down on a thread with a runtime of its own. On PostgreSQL that
    /// shutdown still needs the test's runtime (the pool's sockets are registered there):
    /// tests with sandboxes use the multi-thread runtime, whose other worker keeps it going
    /// (on a current-thread runtime the shutdown waits forever).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if !self.shutdown_on_drop {
            return;
        }
        // Then what the shutdown does not know of: pool disks mounted by a predecessor
        // "crashed" in-process (`restart(false)`), whose refill thread outlived it.
        let _unmount = UnmountOnDrop(self._dir.path().to_path_buf());
        let kiln = self.kiln.clone();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(kiln.shutdown()),
                    Err(e) => eprintln!("cannot shut the test server's sandboxes down: {e}"),
                }
                if let Some(database) = &self.database {
                    database.drop_blocking();
                }
            });
        });
    }
}

/// The `Authorization` header for an API key or access token.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

pub async fn json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, value)
}

/// Asserts a FastAPI validation body naming `loc`.
pub fn assert_validation(status: u16, body: &Value, loc: &[&str]) {
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("detail is not a list: {body}"));
    let locs: Vec<Vec<String>> = detail
        .iter()
        .map(|d| {
            assert!(d["msg"].is_string() && d["type"].is_string(), "{d}");
            d["loc"]
                .as_array()
                .expect("loc")
                .iter()
                .map(|p| p.to_string().trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let want: Vec<String> = loc.iter().map(|s| s.to_string()).collect();
    assert!(locs.contains(&want), "expected loc {want:?} in {body}");
}

/// Asserts a `{"detail":{"code","message"}}` error body.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["detail"]["code"], code, "{body}");
    assert!(
        body["detail"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Runs git in `dir` with a fixed author: its trimmed output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository with two commits in `dir`; returns (first, second) commit ids.
pub fn make_repo(dir: &Path) -> (String, String) {
    let git = |args: &[&str]| self::git(dir, args);
    std::fs::create_dir_all(dir).expect("mkdir");
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("lib.py"), "def add(a, b):\n    return a - b\n").expect("write");
    git(&["add", "."]);
    git(&["commit", "-qm", "first"]);
    let first = git(&["rev-parse", "HEAD"]);
    std::fs::write(dir.join("README"), "second\n").expect("write");
    git(&["add", "."]);
    git(&["commit", "-qm", "second"]);
    (first, git(&["rev-parse", "HEAD"]))
}
