//! A `Kiln` over a fake runtime in a temporary data directory, with one user and the
//! sample `test/test-1` whose image is in the image store.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kiln_config::Config;
use kiln_services::datasets::ImportRequest;
use kiln_services::sessions::{Action, CreateSession};
use kiln_services::Kiln;
use kiln_store::{InteractionOutcome, SessionRecord, SessionStatus};
use kiln_test_support::FakeRuntime;
use serde_json::json;

pub const DATASET: &str = "test";
pub const SAMPLE: &str = "test-1";

pub struct Env {
    pub kiln: Arc<Kiln>,
    pub fake: Arc<FakeRuntime>,
    pub user: String,
    pub config: Config,
    pub _dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.join("data"),
        load_demo_dataset: false,
        build_demo_images: false,
        ..Config::default()
    }
}

/// A bootstrapped Kiln over a fresh fake runtime, after `tweak`.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Env {
    start_with(tweak, false).await
}

/// [`start`] as its data directory's node (one of several on PostgreSQL).
pub async fn start_as_node(tweak: impl FnOnce(&mut Config)) -> Env {
    start_with(tweak, true).await
}

async fn start_with(tweak: impl FnOnce(&mut Config), as_node: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    tweak(&mut config);
    let fake = FakeRuntime::new();
    let kiln = Arc::new(if as_node {
        open_as_node(&config, &fake).await
    } else {
        open(&config, &fake).await
    });
    let user = kiln
        .auth
        .create_user("tester", "tester@example.test", false)
        .await
        .unwrap()
        .user_id;
    let record = json!({
        "instance_id": SAMPLE, "repo": "test/hello",
        "base_commit": "0000000000000000000000000000000000000000",
        "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": ["t2"], "test_patch": "",
        "test_cmd": "sh /testbed/run-tests.sh", "log_parser": "pytest", "verify_timeout_secs": 30,
    })
    .to_string();
    kiln.datasets
        .import(ImportRequest {
            dataset: DATASET,
            description: None,
            version_description: None,
            text: &record,
            repos_dir: None,
        })
        .await
        .unwrap();
    Env {
        kiln,
        fake,
        user,
        config,
        _dir: dir,
    }
}

/// [`open`] as the data directory's node.
pub async fn open_as_node(config: &Config, fake: &Arc<FakeRuntime>) -> Kiln {
    let kiln = Kiln::open_with_runtime_as_node(config.clone(), fake.clone(), "fake")
        .await
        .unwrap();
    kiln.bootstrap().await.unwrap();
    kiln
}

/// Opens and bootstraps a Kiln on `config`'s data directory over `fake`.
pub async fn open(config: &Config, fake: &Arc<FakeRuntime>) -> Kiln {
    let kiln = Kiln::open_with_runtime(config.clone(), fake.clone(), "fake")
        .await
        .unwrap();
    kiln.bootstrap().await.unwrap();
    kiln
}

impl Env {
    pub async fn create(&self) -> SessionRecord {
        self.create_with_ttl(None).await
    }

    pub async fn create_with_ttl(&self, ttl_minutes: Option<i64>) -> SessionRecord {
        self.kiln
            .sessions
            .create(CreateSession::sample(
                &self.user,
                DATASET,
                SAMPLE,
                ttl_minutes,
            ))
            .await
            .unwrap()
    }

    /// A session, once it left `creating`.
    pub async fn settled(&self, session_id: &str) -> SessionRecord {
        self.kiln
            .sessions
            .get(&self.user, session_id, true)
            .await
            .unwrap()
    }

    pub async fn ready(&self) -> SessionRecord {
        let created = self.create().await;
        let session = self.settled(&created.session_id).await;
        assert_eq!(session.status, SessionStatus::Ready, "{session:?}");
        session
    }

    pub async fn run(&self, session_id: &str, action: Action) -> InteractionOutcome {
        let (_, outcome) = self
            .kiln
            .sessions
            .submit_and_wait(&self.user, session_id, action)
            .await
            .unwrap();
        outcome
    }

    pub async fn exec(&self, session_id: &str, command: &str) -> InteractionOutcome {
        let action = Action::Exec {
            command: command.into(),
            timeout_secs: 30,
        };
        self.run(session_id, action).await
    }

    pub async fn session(&self, session_id: &str) -> SessionRecord {
        self.kiln
            .sessions
            .get(&self.user, session_id, false)
            .await
            .unwrap()
    }
}

/// Polls `probe` until it gives `Some` (bounded: a stuck service fails the test, it does
/// not hang it).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    // 30 s: far more than any of these takes, but a loaded CI machine (other test
    // binaries, a build) has stretched a 1 s wait past 10 s.
    for _ in 0..1500 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 30 s");
}
