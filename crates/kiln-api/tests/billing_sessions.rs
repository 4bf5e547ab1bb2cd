//! Sessions' billing with real sandboxes over real HTTP: refused without balance, billed
//! once from ready to the end (whatever ends it, across restarts and races), stopped when
//! the balance runs out, and billed only up to the last heartbeat when the sandbox was lost
//! while the server was down.
use crate::{common, sandbox};

use std::time::{Duration, Instant};

use common::{assert_error, TestServer};
use sandbox::{create_ready, create_session, session_usage_charges as charges, SAMPLE};
use serde_json::Value;

async fn session(s: &TestServer, key: &str, id: &str) -> Value {
    s.get_ok(key, &format!("/sessions/{id}")).await
}

async fn close(s: &TestServer, key: &str, id: &str) -> (u16, Value) {
    s.delete_as(key, &format!("/sessions/{id}")).await
}

/// The one charge of a session, checked against the session's own duration and the price.
async fn the_charge(s: &TestServer, key: &str, id: &str, per_minute: f64) -> Value {
    let found = charges(s, key, id).await;
    assert_eq!(found.len(), 1, "billed exactly once: {found:?}");
    let charge = found[0].clone();
    let ended = session(s, key, id).await;
    let seconds = ended["duration_seconds"].as_f64().expect("duration");
    let minutes = charge["duration_minutes"].as_f64().expect("minutes");
    assert!(
        (minutes * 60.0 - seconds).abs() < 1e-3,
        "billed from ready to the end: {charge} vs {ended}"
    );
    let cents = (minutes * per_minute - 1e-9).ceil().max(0.0) as i64;
    assert_eq!(charge["amount_cents"].as_i64(), Some(-cents), "{charge}");
    charge
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_balance_a_session_is_refused_with_402() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.enabled = true).await else {
        return;
    };
    let (user, key) = s.user("broke").await;
    let (status, body) = create_session(&s, &key, SAMPLE).await;
    assert_error(status, &body, 402, "insufficient_balance");
    assert!(
        body["detail"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("balance"),
        "{body}"
    );
    s.kiln.billing.grant(&user, 4, None).await.expect("grant");
    let (status, body) = create_session(&s, &key, SAMPLE).await;
    assert_error(status, &body, 402, "insufficient_balance");
    s.kiln.billing.grant(&user, 1, None).await.expect("grant");
    let id = create_ready(&s, &key).await;
    let (status, _) = close(&s, &key, &id).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_is_billed_once_with_its_minutes_even_without_billing() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.cost_per_minute_cents = 600).await
    else {
        return;
    };
    let (_, key) = s.user("user").await;
    let id = create_ready(&s, &key).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = close(&s, &key, &id).await;
    assert_eq!(status, 200, "{body}");
    let charge = the_charge(&s, &key, &id, 600.0).await;
    let minutes = charge["duration_minutes"].as_f64().expect("minutes");
    assert!(
        minutes > 1.4 / 60.0 && minutes.fract() != 0.0,
        "fractional minutes: {charge}"
    );
    assert!(
        charge["amount_cents"].as_i64().expect("cents") <= -15,
        "{charge}"
    );
    // Closing again changes nothing.
    let (status, _) = close(&s, &key, &id).await;
    assert_eq!(status, 409);
    assert_eq!(charges(&s, &key, &id).await.len(), 1);
    let (_, usage) = s.get_as(&key, "/billing/usage").await;
    assert_eq!(
        usage["current_balance_cents"], charge["amount_cents"],
        "{usage}"
    );
    assert_eq!(usage["summary"]["session_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_ready_and_close_bills_once() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.cost_per_minute_cents = 60).await else {
        return;
    };
    let (_, key) = s.user("user").await;
    let id = create_ready(&s, &key).await;
    // A crash: the sandbox survives and the next server adopts it.
    let s = s.restart(false).await;
    assert_eq!(session(&s, &key, &id).await["status"], "ready");
    assert!(
        charges(&s, &key, &id).await.is_empty(),
        "not billed while it runs"
    );
    let (status, body) = close(&s, &key, &id).await;
    assert_eq!(status, 200, "{body}");
    the_charge(&s, &key, &id, 60.0).await;
    // Another restart finds nothing more to bill.
    let s = s.restart(true).await;
    the_charge(&s, &key, &id, 60.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_racing_expiry_bills_once() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let (_, key) = s.user("user").await;
    for _ in 0..3 {
        let id = create_ready(&s, &key).await;
        let later = chrono::Utc::now() + chrono::Duration::hours(2);
        let (closed, expired) =
            tokio::join!(close(&s, &key, &id), s.kiln.sessions.reap_expired(later));
        let winners = usize::from(closed.0 == 200) + expired;
        assert_eq!(
            winners, 1,
            "one of close and expiry ends it: {closed:?}, expired {expired}"
        );
        the_charge(&s, &key, &id, 5.0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stop_when_the_balance_is_used_up() {
    // 60 cents a second per session: once the balance is down to 150 cents, two sessions
    // use it up in about 1.25 s.
    let Some(s) = sandbox::start_if_possible(|c| {
        c.billing.enabled = true;
        c.billing.cost_per_minute_cents = 3600;
        c.billing.balance_check_secs = 1;
    })
    .await
    else {
        return;
    };
    let (poor, poor_key) = s.user("poor").await;
    let (rich, rich_key) = s.user("rich").await;
    s.kiln
        .billing
        .grant(&poor, 3700, None)
        .await
        .expect("grant");
    s.kiln
        .billing
        .grant(&rich, 10_000_000, None)
        .await
        .expect("grant");
    let a = create_ready(&s, &poor_key).await;
    let b = create_ready(&s, &poor_key).await;
    let other = create_ready(&s, &rich_key).await;
    use kiln_domain::TransactionKind::AgentJobUsage;
    s.kiln
        .billing
        .record(
            &poor,
            AgentJobUsage,
            -3550,
            "spent elsewhere".into(),
            Some("job-1".into()),
        )
        .await
        .expect("charge");

    let deadline = Instant::now() + Duration::from_secs(120);
    let stopped = loop {
        let (sa, sb) = (
            session(&s, &poor_key, &a).await,
            session(&s, &poor_key, &b).await,
        );
        if sa["status"] == "terminated" && sb["status"] == "terminated" {
            break [sa, sb];
        }
        assert!(Instant::now() < deadline, "still running: {sa} {sb}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for ended in &stopped {
        assert_eq!(ended["error"]["code"], "insufficient_balance", "{ended}");
        assert!(
            ended["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("terminated: the balance ran out")),
            "{ended}"
        );
    }
    the_charge(&s, &poor_key, &a, 3600.0).await;
    the_charge(&s, &poor_key, &b, 3600.0).await;
    assert_eq!(
        session(&s, &rich_key, &other).await["status"],
        "ready",
        "other users run on"
    );
    let (status, body) = create_session(&s, &poor_key, SAMPLE).await;
    assert_error(status, &body, 402, "insufficient_balance");
    let (status, _) = close(&s, &rich_key, &other).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_lost_while_down_is_billed_to_its_last_heartbeat() {
    let Some(s) = sandbox::start_if_possible(|c| {
        c.billing.heartbeat_secs = 1;
        c.billing.cost_per_minute_cents = 6000;
    })
    .await
    else {
        return;
    };
    let (_, key) = s.user("user").await;
    let id = create_ready(&s, &key).await;
    let store = s.store().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let beat = loop {
        let beat = store.session_heartbeat(&id).await.expect("heartbeat");
        if let Some(beat) = beat {
            break beat;
        }
        assert!(Instant::now() < deadline, "no heartbeat recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The server stops (its sandboxes with it) and stays down a while.
    s.kiln.shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last = store
        .session_heartbeat(&id)
        .await
        .expect("heartbeat")
        .expect("beat");
    assert!(last >= beat);
    drop(store);
    let down_until = chrono::Utc::now();
    let s = s.restart(false).await;

    let ended = session(&s, &key, &id).await;
    assert_eq!(ended["status"], "terminated", "{ended}");
    let charge = the_charge(&s, &key, &id, 6000.0).await;
    let stored = s
        .store()
        .await
        .get_session(&id)
        .await
        .expect("get")
        .expect("session");
    assert_eq!(stored.ended_at, Some(last), "ended at its last heartbeat");
    let ready_at = stored.ready_at.expect("ready_at");
    let billed = charge["duration_minutes"].as_f64().expect("minutes") * 60.0;
    let downtime_included = (down_until - ready_at).num_milliseconds() as f64 / 1000.0;
    assert!(
        billed + 2.5 < downtime_included,
        "the downtime is not billed: {billed} s billed, {downtime_included} s until the restart"
    );
}
