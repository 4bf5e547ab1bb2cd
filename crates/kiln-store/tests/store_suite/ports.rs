//! Port forwards: recorded open, listed per session and per user, closed exactly once.
use chrono::Duration;
use kiln_store::{NewPortForward, PortForwardMode, StoreError};

use crate::harness::{base_time, creating_session, TestDb};

fn forward(
    id: &str,
    session: &str,
    user: &str,
    port: u16,
    mode: PortForwardMode,
) -> NewPortForward {
    NewPortForward {
        forward_id: id.to_string(),
        session_id: session.to_string(),
        user_id: user.to_string(),
        port,
        mode,
        host_address: (mode == PortForwardMode::HostPort).then(|| "127.0.0.1:20001".to_string()),
        created_at: base_time(),
    }
}

pub async fn port_forwards_are_listed_counted_and_closed_once(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "s1", "alice").await;
    creating_session(store, "s2", "alice").await;
    let host = store
        .insert_port_forward(&forward(
            "f1",
            "s1",
            "alice",
            8000,
            PortForwardMode::HostPort,
        ))
        .await
        .unwrap();
    assert_eq!(host.port, 8000);
    assert_eq!(host.mode, PortForwardMode::HostPort);
    assert_eq!(host.host_address.as_deref(), Some("127.0.0.1:20001"));
    assert_eq!((host.closed_at, host.close_reason.as_deref()), (None, None));
    let mut later = forward("f2", "s2", "alice", 65535, PortForwardMode::Path);
    later.created_at = base_time() + Duration::seconds(1);
    store.insert_port_forward(&later).await.unwrap();

    let ids = |list: Vec<kiln_store::PortForwardRecord>| {
        list.into_iter().map(|f| f.forward_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.list_open_port_forwards(Some("s1")).await.unwrap()),
        ["f1"]
    );
    assert_eq!(
        ids(store.list_open_port_forwards(None).await.unwrap()),
        ["f1", "f2"]
    );
    assert_eq!(store.count_open_port_forwards("alice").await.unwrap(), 2);

    let at = base_time() + Duration::minutes(1);
    let closed = store
        .close_port_forward("f1", "instance ended", at)
        .await
        .unwrap()
        .expect("open");
    assert_eq!(closed.closed_at, Some(at));
    assert_eq!(closed.close_reason.as_deref(), Some("instance ended"));
    assert_eq!(
        store.close_port_forward("f1", "again", at).await.unwrap(),
        None,
        "a forward is closed once"
    );
    assert_eq!(store.get_port_forward("f1").await.unwrap(), Some(closed));
    assert_eq!(
        ids(store.list_open_port_forwards(None).await.unwrap()),
        ["f2"]
    );
    assert_eq!(store.count_open_port_forwards("alice").await.unwrap(), 1);
    assert_eq!(store.get_port_forward("nope").await.unwrap(), None);
}

pub async fn port_forward_ids_and_references_are_checked(db: TestDb) {
    let store = db.store.as_ref();
    creating_session(store, "s1", "alice").await;
    store
        .insert_port_forward(&forward("f1", "s1", "alice", 80, PortForwardMode::Path))
        .await
        .unwrap();
    let err = store
        .insert_port_forward(&forward("f1", "s1", "alice", 81, PortForwardMode::Path))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(f) if f == "forward_id"),
        "{err:?}"
    );
    let err = store
        .insert_port_forward(&forward("f2", "nope", "alice", 81, PortForwardMode::Path))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Missing(_)), "{err:?}");
}
