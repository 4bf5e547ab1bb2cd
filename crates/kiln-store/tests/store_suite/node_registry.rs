//! The node registry (`nodes`, migration 0017): registration, heartbeats, and marking
//! stale nodes down exactly once.
use chrono::Duration;
use kiln_store::{NodeRegistration, NodeStatus};

use crate::harness::{base_time, TestDb};

fn registration(id: &str, at: chrono::DateTime<chrono::Utc>) -> NodeRegistration {
    NodeRegistration {
        node_id: id.into(),
        address: format!("http://{id}:8000"),
        backend: "local".into(),
        version: "0.1.0".into(),
        max_sessions: 10,
        memory_mib: 4096,
        disk_mib: 10240,
        at,
    }
}

pub async fn nodes_heartbeat_and_go_down_once(db: TestDb) {
    let store = db.store.as_ref();
    let at = base_time();
    let a = store
        .register_node(&registration("node-a", at))
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.live_sessions, a.down_at),
        (NodeStatus::Active, 0, None)
    );
    store
        .register_node(&registration("node-b", at))
        .await
        .unwrap();
    let later = at + Duration::seconds(10);
    assert_eq!(
        store.heartbeat_node("node-a", later, 3).await.unwrap(),
        Some(NodeStatus::Active)
    );
    assert_eq!(
        store.heartbeat_node("nobody", later, 0).await.unwrap(),
        None
    );

    // Only b is stale; of two racing markers exactly one gets it.
    let cutoff = at + Duration::seconds(5);
    let (one, two) = tokio::join!(
        store.mark_stale_nodes_down(cutoff, later),
        store.mark_stale_nodes_down(cutoff, later)
    );
    let mut won: Vec<String> = one.unwrap().into_iter().map(|n| n.node_id).collect();
    won.extend(two.unwrap().into_iter().map(|n| n.node_id));
    assert_eq!(won, vec!["node-b".to_string()]);
    let b = store.get_node("node-b").await.unwrap().expect("b");
    assert_eq!((b.status, b.down_at), (NodeStatus::Down, Some(later)));
    // A down node's heartbeat is refused until it registers again.
    assert_eq!(
        store.heartbeat_node("node-b", later, 0).await.unwrap(),
        None
    );

    // Draining survives a re-registration; down does not.
    let (changed, drained) = store
        .set_node_status("node-a", NodeStatus::Draining, later)
        .await
        .unwrap()
        .expect("a");
    assert!(changed);
    assert_eq!(
        (drained.status, drained.live_sessions),
        (NodeStatus::Draining, 3)
    );
    let (again, _) = store
        .set_node_status("node-a", NodeStatus::Draining, later)
        .await
        .unwrap()
        .expect("a");
    assert!(!again, "no change the second time");
    let a = store
        .register_node(&registration("node-a", later))
        .await
        .unwrap();
    assert_eq!(a.status, NodeStatus::Draining);
    let b = store
        .register_node(&registration("node-b", later))
        .await
        .unwrap();
    assert_eq!((b.status, b.down_at), (NodeStatus::Active, None));
    assert!(store
        .set_node_status("nobody", NodeStatus::Down, later)
        .await
        .unwrap()
        .is_none());
    let ids: Vec<String> = store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, vec!["node-a".to_string(), "node-b".to_string()]);
}
