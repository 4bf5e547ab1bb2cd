//! Migration 0008 (instances) over a database that already holds sessions, their
//! interactions and verification jobs: applied up to 0007 with sqlx's own migrator, filled
//! with plain SQL, then opened by the store, which applies 0008. Every row must read back,
//! and the references to `sessions` (which SQLite's migration rebuilds) still hold.
use kiln_store::prelude::*;
use kiln_store::{SessionSource, SessionStatus, StoreError};

use crate::harness::{base_time, exec_request, new_interaction};
use crate::upgrade;

/// Rows as 0007 knew them; `at` is a timestamp literal the backend accepts.
fn fill(at: &str) -> Vec<String> {
    let record = r#"{"instance_id":"org__repo-1","repo":"org/repo","base_commit":"abc"}"#;
    vec![
        format!("INSERT INTO users (user_id, name, email, created_at) VALUES ('alice', 'A', 'a@x.test', '{at}')"),
        format!("INSERT INTO datasets (name, description, created_at) VALUES ('agents', NULL, '{at}')"),
        format!(
            "INSERT INTO samples (dataset, sample_id, version, latest, created_at, instance_id, repo, \
             base_commit, record) VALUES ('agents', 'org__repo-1', 1, TRUE, '{at}', 'org__repo-1', \
             'org/repo', 'abc', '{record}')"
        ),
        format!(
            "INSERT INTO sessions (session_id, user_id, dataset, sample_id, sample_version, status, \
             requested_at, ready_at, expires_at, sandbox_id, location, last_interaction_seq, \
             usage_cpu_micros, usage_at) VALUES ('old-1', 'alice', 'agents', 'org__repo-1', 1, \
             'ready', '{at}', '{at}', '{at}', 'old-1', 'local:test', 1, 1234, '{at}')"
        ),
        format!(
            "INSERT INTO sessions (session_id, user_id, dataset, sample_id, sample_version, status, \
             requested_at, expires_at, ended_at, error_code, error_message) VALUES ('old-2', \
             'alice', 'agents', 'org__repo-1', 1, 'error', '{at}', '{at}', '{at}', 'boom', 'it broke')"
        ),
        format!(
            "INSERT INTO interactions (interaction_id, session_id, seq, kind, created_at, request) \
             VALUES ('int-1', 'old-1', 1, 'exec_command', '{at}', '{{\"command\":\"ls\"}}')"
        ),
        format!(
            "INSERT INTO verification_jobs (job_id, session_id, user_id, sample_id, status, created_at) \
             VALUES ('job-1', 'old-1', 'alice', 'org__repo-1', 'pending', '{at}')"
        ),
    ]
}

/// What the migrated store must show.
async fn check_migrated(store: &dyn Store) {
    let old = store.get_session("old-1").await.unwrap().unwrap();
    assert_eq!(
        old.source,
        SessionSource::Sample {
            dataset: "agents".into(),
            sample_id: "org__repo-1".into(),
            version: 1
        }
    );
    assert_eq!(old.status, SessionStatus::Ready);
    assert_eq!((old.name.clone(), old.labels.len()), (None, 0));
    assert_eq!(old.location.as_deref(), Some("local:test"));
    assert_eq!(old.usage.and_then(|u| u.cpu_micros), Some(1234));
    let failed = store.get_session("old-2").await.unwrap().unwrap();
    assert_eq!(failed.error_message.as_deref(), Some("it broke"));
    let (listed, total) = store.list_sessions("alice", 10, 0).await.unwrap();
    assert_eq!((listed.len(), total), (2, 2));

    let interaction = store.get_interaction("old-1", "int-1").await.unwrap();
    assert_eq!(interaction.unwrap().seq, 1);
    assert!(store
        .get_verification_job("old-1", "job-1")
        .await
        .unwrap()
        .is_some());
    // The sequence goes on from the copied counter; the references still hold.
    let next = store
        .insert_interaction(&new_interaction(
            "int-2",
            "old-1",
            exec_request("pwd"),
            base_time(),
        ))
        .await
        .unwrap();
    assert_eq!(next.seq, 2);
    let dangling = store
        .insert_interaction(&new_interaction(
            "int-3",
            "nope",
            exec_request("pwd"),
            base_time(),
        ))
        .await;
    assert!(
        matches!(dangling, Err(StoreError::Missing(_))),
        "{dangling:?}"
    );
}

#[tokio::test]
async fn sqlite_migration_0008_keeps_existing_sessions() {
    upgrade::sqlite(8, fill("2025-03-14T15:09:26.535897Z"), |store| async move {
        check_migrated(store.as_ref()).await
    })
    .await;
}

#[tokio::test]
async fn postgres_migration_0008_keeps_existing_sessions() {
    upgrade::postgres(8, fill("2025-03-14T15:09:26.535897Z"), |store| async move {
        check_migrated(store.as_ref()).await
    })
    .await;
}
