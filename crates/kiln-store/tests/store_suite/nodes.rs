//! Which node runs each session (`sessions.node_id`, migration 0015).
use chrono::Duration;
use kiln_store::SessionStatus;

use crate::harness::{base_time, new_session, prepare_sessions, TestDb};

pub async fn live_sessions_name_their_node(db: TestDb) {
    let store = db.store.as_ref();
    prepare_sessions(store, "alice").await;
    let at = base_time();
    store
        .insert_session(&new_session("s-old", "alice", at), None)
        .await
        .unwrap();
    let created = store
        .insert_session_on(&new_session("s-a", "alice", at), "node-a", None)
        .await
        .unwrap();
    assert_eq!(created.status, SessionStatus::Creating);
    store
        .insert_session_on(&new_session("s-b", "alice", at), "validate-b", None)
        .await
        .unwrap();
    store
        .insert_session_on(&new_session("s-ended", "alice", at), "node-a", None)
        .await
        .unwrap();
    store
        .end_session("s-ended", SessionStatus::Closed, at + Duration::seconds(1))
        .await
        .unwrap()
        .expect("creating → closed");
    assert_eq!(
        store.live_session_nodes().await.unwrap(),
        vec![
            ("s-a".to_string(), Some("node-a".to_string())),
            ("s-b".to_string(), Some("validate-b".to_string())),
            ("s-old".to_string(), None),
        ],
        "live sessions only, NULL for a session stored without a node"
    );
}
