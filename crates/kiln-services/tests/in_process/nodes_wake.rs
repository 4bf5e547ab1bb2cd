//! Long-polls wake across nodes (issue 12): two Kilns on one PostgreSQL database, each
//! with its own data directory (two nodes). A long-poll on node B for an interaction of
//! a session node A runs wakes within milliseconds of A storing the outcome, through
//! LISTEN/NOTIFY, well before B's own deadline; and still does after PostgreSQL dropped
//! the listeners' connections. Skipped without KILN_TEST_POSTGRES_URL (not under CI).
use std::time::{Duration, Instant};

use kiln_config::Secret;
use kiln_services::sessions::Action;
use kiln_services::Kiln;
use kiln_test_support::postgres::{admin_url, Locale, TestDatabase};
use kiln_test_support::{FakeRuntime, Reply};
use sqlx::{Connection, PgConnection};

use crate::harness::{config, open, start, Env};

/// B's long-poll deadline: a wake-up through the feed comes far earlier.
const LONG_POLL_SECS: u64 = 10;
/// How long the fake command runs before A stores its outcome.
const COMMAND: Duration = Duration::from_millis(300);

/// Waits on `kiln` for the interaction; when it answered, and whether it had finished.
async fn wait_on(kiln: &Kiln, env: &Env, sid: &str, iid: &str) -> (Instant, bool) {
    let record = kiln
        .sessions
        .interaction(&env.user, sid, iid, true)
        .await
        .unwrap();
    (Instant::now(), record.outcome.is_some())
}

/// One command on A, waited for on A and on B at once: how much later B woke than A.
async fn cross_node_wake(a: &Env, b: &Kiln, sid: &str) -> Duration {
    let action = Action::Exec {
        command: "sleep 1".into(),
        timeout_secs: 30,
    };
    let record = a.kiln.sessions.submit(&a.user, sid, action).await.unwrap();
    let iid = record.interaction_id.as_str();
    let started = Instant::now();
    let ((on_a, done_a), (on_b, done_b)) =
        tokio::join!(wait_on(&a.kiln, a, sid, iid), wait_on(b, a, sid, iid));
    assert!(done_a && done_b, "a: {done_a}, b: {done_b}");
    assert!(
        on_b - started < Duration::from_secs(LONG_POLL_SECS / 2),
        "b woke after {:?}: by its deadline, not by the change",
        on_b - started
    );
    on_b.saturating_duration_since(on_a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_wakes_on_a_change_stored_by_another() {
    let Some(admin) = admin_url() else { return };
    let db = TestDatabase::create(&admin, "kiln_wake", Locale::ServerDefault).await;
    let on_db = |c: &mut kiln_config::Config| {
        c.database_url = Some(Secret::new(db.url.clone()));
        c.sessions.long_poll_secs = LONG_POLL_SECS;
    };
    let a = start(on_db).await;
    let dir_b = tempfile::tempdir().unwrap();
    let mut config_b = config(dir_b.path());
    on_db(&mut config_b);
    let b = open(&config_b, &FakeRuntime::new()).await;
    assert!(a.kiln.sessions.long_polls_wake_across_nodes());
    assert!(a.kiln.cluster.answers_long_polls_here());

    let session = a.ready().await;
    let sid = session.session_id.as_str();
    a.fake.respond("sleep", Reply::ok("slept\n").after(COMMAND));
    let mut late = Vec::new();
    for _ in 0..3 {
        late.push(cross_node_wake(&a, &b, sid).await);
    }

    // PostgreSQL drops every listener (a restart, a failover, an idle-session kill):
    // they reconnect and look again, and the next change still wakes B at once.
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let dropped: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(kiln_store::change_feed::LISTENER_NAME)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(dropped.len(), 2, "one listener per node: {dropped:?}");
    for _ in 0..2 {
        late.push(cross_node_wake(&a, &b, sid).await);
    }
    conn.close().await.unwrap();
    late.sort();
    eprintln!("cross-node wake-up after the owner's own waiter: {late:?}");
    assert!(
        late[late.len() / 2] < Duration::from_millis(500),
        "{late:?}"
    );

    a.kiln.shutdown().await;
    b.shutdown().await;
    drop((a, b));
    db.drop_now().await.unwrap();
}

/// Placement's rule over the real registry table: of two open nodes, the one whose
/// heartbeat listed the image wins whichever is sampled first and whoever asks, though
/// the other has more room; without the image, room decides.
#[tokio::test]
async fn placement_on_the_registry_prefers_the_node_that_has_the_image() {
    let Some(admin) = admin_url() else { return };
    let db = TestDatabase::create(&admin, "kiln_place", Locale::ServerDefault).await;
    let store = kiln_store::connect(&db.url).await.unwrap();
    for id in ["node-a", "node-b"] {
        let node = kiln_store::NodeRegistration {
            node_id: id.into(),
            address: format!("http://{id}:8000"),
            backend: "local".into(),
            version: "0".into(),
            max_sessions: 10,
            memory_mib: 0,
            disk_mib: 0,
        };
        store.register_node(&node).await.unwrap();
    }
    let image = "kiln/python:3.12".to_string();
    let beat = kiln_store::NodeBeat {
        live_sessions: 6,
        images: vec![image.clone()],
        ..Default::default()
    };
    store.heartbeat_node("node-a", &beat).await.unwrap();
    store
        .heartbeat_node("node-b", &kiln_store::NodeBeat::default())
        .await
        .unwrap();
    let nodes = store.list_nodes().await.unwrap();
    let fresh = store.database_now().await.unwrap() - chrono::Duration::seconds(10);
    for first in 0..2 {
        for me in ["node-a", "node-b"] {
            let mut picks = [first, 0].into_iter();
            let chosen =
                kiln_services::cluster::place(&nodes, Some(me), fresh, Some(&image), |_| {
                    picks.next().unwrap_or(0)
                });
            assert_eq!(
                chosen.map(|n| n.node_id.as_str()),
                Some("node-a"),
                "{nodes:?}"
            );
            let mut picks = [first, 0].into_iter();
            let chosen = kiln_services::cluster::place(&nodes, Some(me), fresh, None, |_| {
                picks.next().unwrap_or(0)
            });
            assert_eq!(chosen.map(|n| n.node_id.as_str()), Some("node-b"));
        }
    }
    db.drop_now().await.unwrap();
}
