//! The node registry (`nodes`, migration 0017): registration, heartbeats, and marking
//! stale nodes down exactly once, all on the database's clock.
use std::time::Duration;

use kiln_store::{NodeBeat, NodeRegistration, NodeStatus};

use crate::harness::{base_time, new_session, prepare_sessions, TestDb};

fn registration(id: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: id.into(),
        address: format!("http://{id}:8000"),
        backend: "local".into(),
        version: "0.1.0".into(),
        max_sessions: 10,
        memory_mib: 4096,
        disk_mib: 10240,
    }
}

pub async fn nodes_heartbeat_and_go_down_once(db: TestDb) {
    let store = db.store.as_ref();
    let before = store.database_now().await.unwrap();
    let a = store.register_node(&registration("node-a")).await.unwrap();
    assert_eq!(
        (a.status, a.live_sessions, a.down_at),
        (NodeStatus::Active, 0, None)
    );
    assert!(a.registered_at >= before && a.last_heartbeat_at == a.registered_at);
    store.register_node(&registration("node-b")).await.unwrap();
    // Both rows are stamped by the database: a minute's window finds neither stale.
    assert!(store
        .mark_stale_nodes_down(60_000)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let images: Vec<String> = (0..40).map(|i| format!("kiln/image-{i}:latest")).collect();
    let stats = kiln_store::NodeStats {
        sandbox_cpu_millicores: Some(1500),
        memory_used_bytes: 1 << 30,
        memory_budget_bytes: 8 << 30,
        pids: 12,
        exec_latency: kiln_store::Latency::of(&mut [900, 1200, 50_000]),
        ..Default::default()
    };
    let beat = NodeBeat {
        live_sessions: 3,
        images: images.clone(),
        stats: stats.clone(),
    };
    assert_eq!(
        store.heartbeat_node("node-a", &beat).await.unwrap(),
        Some(NodeStatus::Active)
    );
    assert_eq!(
        store
            .heartbeat_node("nobody", &NodeBeat::default())
            .await
            .unwrap(),
        None
    );
    let a = store.get_node("node-a").await.unwrap().expect("a");
    assert!(a.last_heartbeat_at > a.registered_at, "{a:?}");
    // The beat's images, newest first, at most MAX_NODE_IMAGES of them.
    assert_eq!(a.images, images[..kiln_store::MAX_NODE_IMAGES].to_vec());
    // And its figures, as reported.
    assert_eq!((a.live_sessions, &a.stats), (3, &stats));
    assert!(store
        .get_node("node-b")
        .await
        .unwrap()
        .expect("b")
        .images
        .is_empty());

    // Only b (silent for 300 ms) is stale after 200 ms; of two racing markers exactly
    // one gets it.
    let (one, two) = tokio::join!(
        store.mark_stale_nodes_down(200),
        store.mark_stale_nodes_down(200)
    );
    let mut won: Vec<String> = one.unwrap().into_iter().map(|n| n.node_id).collect();
    won.extend(two.unwrap().into_iter().map(|n| n.node_id));
    assert_eq!(won, vec!["node-b".to_string()]);
    let b = store.get_node("node-b").await.unwrap().expect("b");
    assert_eq!(b.status, NodeStatus::Down);
    let down_at = b.down_at.expect("down_at");
    assert!(down_at >= a.last_heartbeat_at && down_at <= store.database_now().await.unwrap());
    // A down node's heartbeat is refused until it registers again.
    assert_eq!(
        store
            .heartbeat_node("node-b", &NodeBeat::default())
            .await
            .unwrap(),
        None
    );

    // Draining survives a re-registration; down does not.
    let (changed, drained) = store
        .set_node_status("node-a", NodeStatus::Draining)
        .await
        .unwrap()
        .expect("a");
    assert!(changed);
    assert_eq!(
        (drained.status, drained.live_sessions),
        (NodeStatus::Draining, 3)
    );
    let (again, _) = store
        .set_node_status("node-a", NodeStatus::Draining)
        .await
        .unwrap()
        .expect("a");
    assert!(!again, "no change the second time");
    let a = store.register_node(&registration("node-a")).await.unwrap();
    assert_eq!(a.status, NodeStatus::Draining);
    let b = store.register_node(&registration("node-b")).await.unwrap();
    assert_eq!((b.status, b.down_at), (NodeStatus::Active, None));
    let (_, down) = store
        .set_node_status("node-b", NodeStatus::Down)
        .await
        .unwrap()
        .expect("b");
    assert!(
        down.down_at.is_some_and(|t| t >= b.registered_at),
        "{down:?}"
    );
    assert!(store
        .set_node_status("nobody", NodeStatus::Down)
        .await
        .unwrap()
        .is_none());
    // A session's owner and its row in one read; none for a session stored without a
    // node, for a node not in the registry, or for no session.
    prepare_sessions(store, "alice").await;
    let at = base_time();
    store
        .insert_session_on(&new_session("s-b", "alice", at), "node-b", None)
        .await
        .unwrap();
    store
        .insert_session_on(&new_session("s-x", "alice", at), "validate-x", None)
        .await
        .unwrap();
    store
        .insert_session(&new_session("s-old", "alice", at), None)
        .await
        .unwrap();
    let owner = store
        .session_owner("s-b")
        .await
        .unwrap()
        .expect("b runs s-b");
    assert_eq!(
        (owner.node_id.as_str(), owner.status),
        ("node-b", NodeStatus::Down)
    );
    for sid in ["s-x", "s-old", "nope"] {
        assert!(store.session_owner(sid).await.unwrap().is_none(), "{sid}");
    }
    let ids: Vec<String> = store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, vec!["node-a".to_string(), "node-b".to_string()]);
}
