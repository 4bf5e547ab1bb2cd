//! What the agent-job scenarios share: running a scenario on a backend, a server with the
//! `script` agent, git repositories made here, the job endpoints, and a stand-in git host
//! for private repositories.
#![allow(dead_code)]

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{bearer, git, Backend, Database, TestServer};
use crate::sandbox;

/// Runs `scenario` on `backend` (see [`Database::of`]), when sandboxes can run here.
pub async fn run<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(Database) -> Fut,
    Fut: Future<Output = ()>,
{
    if !sandbox::prerequisites() {
        return;
    }
    if let Some(db) = Database::of(backend) {
        scenario(db).await;
    }
}

/// A server whose `script` agent runs the repository's `.kiln/agent.sh` in the busybox
/// test image, with local repositories allowed under `repos`.
pub async fn start(db: Database, repos: &Path) -> TestServer {
    start_with(db, repos, |_| {}).await
}

/// [`start`], with `tweak` applied to the configuration last.
pub async fn start_with(
    db: Database,
    repos: &Path,
    tweak: impl FnOnce(&mut kiln_config::Config),
) -> TestServer {
    let root = repos.to_path_buf();
    sandbox::start_on(&db, move |c| {
        script_agent(c);
        c.agent_jobs.local_repo_root = Some(root);
        c.agent_jobs.max_concurrent = 2;
        tweak(c);
    })
    .await
}

/// The `script` agent in the busybox test image, and a `sleepy` one that times out.
pub fn script_agent(c: &mut kiln_config::Config) {
    let agent = c
        .agent_jobs
        .agents
        .get_mut("script")
        .expect("built-in script agent");
    agent.image =
        kiln_services::sessions::sample_image_reference(sandbox::DATASET, sandbox::SAMPLE);
    agent.timeout_secs = 120;
    let mut sleepy = agent.clone();
    sleepy.command = "echo going to sleep; sleep 100".into();
    sleepy.timeout_secs = 2;
    c.agent_jobs.agents.insert("sleepy".into(), sleepy);
}

/// A repository whose first commit holds `lib.py` and the agent script; a second commit
/// on `main` changes `lib.py` again, so a job at the first commit shows which it saw.
/// Returns (first, second) commit ids.
pub fn make_repo(dir: &Path, script: &str) -> (String, String) {
    std::fs::create_dir_all(dir.join(".kiln")).expect("mkdir");
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("lib.py"), "def add(a, b):\n    return a - b\n").expect("write");
    std::fs::write(dir.join(".kiln/agent.sh"), script).expect("write");
    std::fs::write(dir.join("NOTES"), "to be removed\n").expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "first"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["tag", "v1"]);
    std::fs::write(dir.join("lib.py"), "def add(a, b):\n    return b - a\n").expect("write");
    git(dir, &["commit", "-qam", "second"]);
    (first, git(dir, &["rev-parse", "HEAD"]))
}

/// An agent script that leaves its secret in `.secret`, where the test can read it (see
/// [`live_workspace`]), and waits for the test's `.go` (a minute at most) before running `then`.
pub fn script_awaiting_go(then: &str) -> String {
    format!(
        "printf %s \"$KILN_JOB_SECRET\" > .secret.tmp && mv .secret.tmp .secret\n\
         i=0; while [ ! -e .go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n{then}"
    )
}

/// The workspace of job `id` on the host (the agent's working directory).
pub fn workspace(s: &TestServer, id: &str) -> PathBuf {
    s.kiln
        .config
        .data_dir
        .join("agent-jobs")
        .join(id)
        .join("work/workspace")
}

/// The running sandbox's copy of job `id`'s workspace, as the host reaches it (the local
/// backend copies a workspace onto the sandbox's own filesystem and back at destroy:
/// `kiln-runtime/src/local/workspace.rs`): the tests' channel to a running agent.
pub fn live_workspace(s: &TestServer, id: &str) -> PathBuf {
    let limited = s
        .kiln
        .sandboxes
        .available()
        .map(|a| a.limits.disk_bytes.is_some())
        .expect("sandboxes are available");
    let sandbox = s.kiln.config.data_dir.join("runtime/sandboxes").join(id);
    if limited {
        sandbox.join("disk/workspaces/0")
    } else {
        sandbox.join("workspaces/0")
    }
}

pub async fn create(s: &TestServer, key: &str, body: Value) -> (u16, Value) {
    s.post_as(key, "/agent-jobs", &body).await
}

pub async fn get_job(s: &TestServer, key: &str, id: &str) -> (u16, Value) {
    s.get_as(key, &format!("/agent-jobs/{id}")).await
}

/// Polls the job until `done` holds (generous deadline: CI machines are loaded).
pub async fn wait_for(s: &TestServer, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, job) = get_job(s, key, id).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job never got there: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("completed" | "error" | "cancelled")
    )
}

pub async fn start_job(s: &TestServer, key: &str, repo: &Path, git_ref: Option<&str>) -> String {
    let (status, job) = create(
        s,
        key,
        json!({"repo": repo.to_str().expect("utf8"), "ref": git_ref, "agent_id": "script"}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "pending", "{job}");
    assert_eq!(job["result_available"], false);
    assert!(
        job.get("secret").is_none() && !job.to_string().contains("secret"),
        "{job}"
    );
    job["job_id"].as_str().expect("job_id").to_string()
}

/// The result archive's files, by name.
pub async fn result_files(
    s: &TestServer,
    key: &str,
    id: &str,
) -> std::collections::BTreeMap<String, String> {
    let response = s
        .get(&format!("/agent-jobs/{id}/result"))
        .header("Authorization", bearer(key))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let bytes = response.bytes().await.expect("body");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_ref()));
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("utf8 entry");
        files.insert(name, text);
    }
    files
}

pub async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lets the server clone from the stand-in git host at `base` (`http://127.0.0.1:PORT`),
/// also under the name `localhost`: the server refuses internal addresses otherwise.
pub fn allow_git_host(c: &mut kiln_config::Config, base: &str) {
    let authority = base.trim_start_matches("http://").to_string();
    let localhost = authority.replace("127.0.0.1", "localhost");
    c.agent_jobs
        .allowed_internal_hosts
        .extend([authority, localhost]);
}

/// Requests a stand-in host received: (path, Authorization header).
pub type SeenRequests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The header git sends for `token` (as GitHub expects it).
pub fn basic_auth(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    )
}

/// A stand-in git host (see [`private_git_host`]).
pub struct GitHost {
    pub base: String,
    /// Every request: (path, Authorization header).
    pub seen: SeenRequests,
    accepted: Arc<Mutex<String>>,
}

impl GitHost {
    /// From now on, the token the host lets in.
    pub fn accept(&self, token: &str) {
        *self.accepted.lock().expect("lock") = token.to_string();
    }
}

/// A stand-in git host serving a bare repository over git's "dumb" HTTP protocol under
/// `/org/private.git`, only to requests carrying `Authorization: Basic x-access-token:<token>`;
/// `/moved/…` redirects there.
pub async fn private_git_host(bare: PathBuf, token: &str) -> GitHost {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    let seen: SeenRequests = Arc::default();
    let accepted = Arc::new(Mutex::new(token.to_string()));
    let expected = accepted.clone();
    let handler = move |State((bare, seen)): State<(PathBuf, SeenRequests)>,
                        UrlPath(path): UrlPath<String>,
                        headers: HeaderMap| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        seen.lock()
            .expect("lock")
            .push((path.clone(), auth.clone()));
        if let Some(rest) = path.strip_prefix("moved/private.git/") {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header("location", format!("/org/private.git/{rest}"))
                .body(axum::body::Body::empty())
                .expect("response");
        }
        let wanted = basic_auth(&expected.lock().expect("lock"));
        if auth.as_deref() != Some(wanted.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"git\"")],
                "",
            )
                .into_response();
        }
        let Some(rest) = path.strip_prefix("org/private.git/") else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if rest.contains("..") {
            return StatusCode::NOT_FOUND.into_response();
        }
        match std::fs::read(bare.join(rest)) {
            Ok(bytes) => bytes.into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    };
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::get(handler))
        .with_state((bare, seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    GitHost {
        base,
        seen,
        accepted,
    }
}
