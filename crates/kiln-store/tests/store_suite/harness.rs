//! Runs one scenario against a fresh database of either backend, and the fixtures the
//! scenarios share.
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kiln_store::{
    InteractionKind, Labels, NewInteraction, NewSample, NewSession, NewUser, SampleImport,
    SampleRecord, SessionLimits, SessionRecord, SessionSource, Store, User,
};
use kiln_test_support::postgres::{self, Locale, TestDatabase};

/// What a scenario gets: a migrated, empty store, and the URL it was opened with (so that a
/// scenario can open the same database again).
pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub url: String,
    /// `"sqlite"` or `"postgres"`: what `Store::backend` must say.
    pub backend: &'static str,
}

/// Runs the scenario on its own task so that a failed assertion still lets the harness clean
/// up, then re-raises it.
async fn run_scenario<F, Fut>(scenario: F, db: TestDb) -> std::thread::Result<()>
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(scenario(db)).await.map_err(|e| e.into_panic())
}

pub async fn run_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
    let store = kiln_store::connect(&url).await.expect("open sqlite store");
    let outcome = run_scenario(
        scenario,
        TestDb {
            store,
            url,
            backend: "sqlite",
        },
    )
    .await;
    drop(dir);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

pub async fn run_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin_url) = postgres::admin_url() else {
        return;
    };
    // A linguistic locale (ICU en-US, as production databases often have) rather than the
    // server's default, which is often C: the store must give byte order whatever the locale.
    let database = TestDatabase::create(&admin_url, "kiln_test", Locale::IcuEnUs).await;
    let url = database.url.clone();
    let outcome = match kiln_store::connect(&url).await {
        Ok(store) => {
            run_scenario(
                scenario,
                TestDb {
                    store,
                    url,
                    backend: "postgres",
                },
            )
            .await
        }
        Err(e) => {
            Err(Box::new(format!("open postgres store: {e}")) as Box<dyn std::any::Any + Send>)
        }
    };
    database.drop_now().await.expect("drop test database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// An instant with non-zero microseconds, so that any precision loss shows.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap() + Duration::microseconds(535_897)
}

pub fn new_user(user_id: &str, github_id: Option<&str>) -> NewUser {
    NewUser {
        user_id: user_id.to_string(),
        name: format!("{user_id} name"),
        email: format!("{user_id}@example.test"),
        github_id: github_id.map(str::to_string),
        github_login: github_id.map(|id| format!("login-{id}")),
        is_admin: false,
        created_at: base_time(),
    }
}

pub async fn create_user(store: &dyn Store, user_id: &str) -> User {
    store
        .create_user(&new_user(user_id, None))
        .await
        .expect("create user")
}

/// A record whose every field depends on `instance_id` and `revision`, so that two versions
/// of one sample differ everywhere and a mix-up shows.
pub fn record(instance_id: &str, revision: u32) -> SampleRecord {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "created_by".into(),
        serde_json::json!({ "tool": "suite", "revision": revision }),
    );
    SampleRecord {
        instance_id: instance_id.to_string(),
        repo: format!(
            "org/{}",
            instance_id.split("__").next().unwrap_or(instance_id)
        ),
        base_commit: format!("{revision:040x}"),
        patch: format!("diff --git a/x b/x\n+rev {revision}\n"),
        test_patch: "diff --git a/t b/t\n".into(),
        problem_statement: format!("Fix {instance_id} (ünïcödé, \"quotes\", \\backslash)"),
        fail_to_pass: vec![format!("tests/test_x.py::test_{revision}")],
        pass_to_pass: vec!["tests/test_x.py::test_ok".into()],
        language: "python".into(),
        verifier: "test_suite".into(),
        swebench_version: Some("3.0".into()),
        extra,
        ..SampleRecord::default()
    }
}

/// An import of samples whose sample_id is also their instance_id.
pub fn import(
    dataset: &str,
    instance_ids: &[&str],
    revision: u32,
    now: DateTime<Utc>,
) -> SampleImport {
    SampleImport {
        dataset: dataset.to_string(),
        description: None,
        version_description: Some(format!("revision {revision}")),
        samples: instance_ids
            .iter()
            .map(|id| NewSample {
                sample_id: id.to_string(),
                record: record(id, revision),
            })
            .collect(),
        now,
    }
}

/// The dataset and sample every session fixture runs.
pub const SESSION_DATASET: &str = "agents";
pub const SESSION_SAMPLE: &str = "org__repo-1";

/// Creates `user_id` and the sample that [`new_session`] refers to (version 1).
pub async fn prepare_sessions(store: &dyn Store, user_id: &str) {
    create_user(store, user_id).await;
    if store
        .get_sample(SESSION_DATASET, SESSION_SAMPLE, Some(1))
        .await
        .unwrap()
        .is_none()
    {
        store
            .import_samples(&import(SESSION_DATASET, &[SESSION_SAMPLE], 1, base_time()))
            .await
            .unwrap();
    }
}

pub fn new_session(session_id: &str, user_id: &str, requested_at: DateTime<Utc>) -> NewSession {
    NewSession {
        session_id: session_id.to_string(),
        user_id: user_id.to_string(),
        source: SessionSource::Sample {
            dataset: SESSION_DATASET.to_string(),
            sample_id: SESSION_SAMPLE.to_string(),
            version: 1,
        },
        name: None,
        labels: Labels::new(),
        limits: SessionLimits::default(),
        requested_at,
        expires_at: requested_at + Duration::minutes(30),
    }
}

/// A session in `Creating`, with its user and sample created first.
pub async fn creating_session(store: &dyn Store, session_id: &str, user_id: &str) -> SessionRecord {
    if store.get_user(user_id).await.unwrap().is_none() {
        prepare_sessions(store, user_id).await;
    }
    store
        .insert_session(&new_session(session_id, user_id, base_time()), None)
        .await
        .unwrap()
}

pub fn exec_request(command: &str) -> NewInteractionRequest {
    NewInteractionRequest {
        kind: InteractionKind::ExecCommand,
        request: serde_json::json!({ "command": command, "command_timeout": 30 }),
    }
}

/// What differs between interactions in the scenarios.
pub struct NewInteractionRequest {
    pub kind: InteractionKind,
    pub request: serde_json::Value,
}

pub fn new_interaction(
    interaction_id: &str,
    session_id: &str,
    what: NewInteractionRequest,
    created_at: DateTime<Utc>,
) -> NewInteraction {
    NewInteraction {
        interaction_id: interaction_id.to_string(),
        session_id: session_id.to_string(),
        kind: what.kind,
        created_at,
        request: what.request,
    }
}
