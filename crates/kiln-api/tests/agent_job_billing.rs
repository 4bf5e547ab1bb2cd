//! Agent jobs paid from the real ledger, over real HTTP with real sandboxes: refused with
//! 402 without the balance for one, charged `agent_job_cost_cents` once when accepted, and
//! refunded once when the job ends in error, however many times it is ended. Every
//! scenario runs on SQLite, and on PostgreSQL when `KILN_TEST_POSTGRES_URL` is set.
use crate::{agent_job_support, common};

use agent_job_support::{
    create, finished, live_workspace, make_repo, script_awaiting_go, start_with, wait_for,
    wait_for_file,
};
use common::{assert_error, json, Database, TestServer};
use serde_json::{json, Value};

/// An odd price, so that no other amount is mistaken for it.
const COST: i64 = 137;

on_both_backends!(
    crate::agent_job_support::run;
    without_the_price_a_job_is_refused_and_a_completed_job_is_charged_once,
    a_job_ending_in_error_is_refunded_once,
);

async fn priced_server(db: Database, repos: &std::path::Path) -> TestServer {
    start_with(db, repos, |c| {
        c.billing.enabled = true;
        c.billing.agent_job_cost_cents = COST;
    })
    .await
}

/// The caller's whole ledger, as `GET /billing/usage` shows it.
async fn usage(s: &TestServer, key: &str) -> Value {
    s.get_ok(key, "/billing/usage?limit=100").await
}

/// The transactions of one kind in a usage body, as (amount, job id).
fn of_kind(usage: &Value, kind: &str) -> Vec<(i64, Option<String>)> {
    usage["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .filter(|t| t["type"] == kind)
        .map(|t| {
            (
                t["amount_cents"].as_i64().expect("amount"),
                t["job_id"].as_str().map(str::to_string),
            )
        })
        .collect()
}

async fn balance(s: &TestServer, key: &str) -> i64 {
    s.get_ok(key, "/billing/balance").await["balance"]
        .as_i64()
        .expect("balance")
}

async fn listed_jobs(s: &TestServer, key: &str) -> Value {
    s.get_ok(key, "/agent-jobs").await["jobs"].clone()
}

async fn without_the_price_a_job_is_refused_and_a_completed_job_is_charged_once(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("good");
    make_repo(&repo, "echo ok > ok.txt\n");
    let s = priced_server(db, repos.path()).await;
    let (user, key) = s.user("payer").await;
    let request = json!({"repo": repo.to_str().expect("utf8"), "agent_id": "script"});

    let (status, body) = create(&s, &key, request.clone()).await;
    assert_error(status, &body, 402, "insufficient_balance");
    // One cent short is still short.
    s.kiln
        .billing
        .grant(&user, COST - 1, None)
        .await
        .expect("grant");
    let (status, body) = create(&s, &key, request.clone()).await;
    assert_error(status, &body, 402, "insufficient_balance");
    assert_eq!(
        listed_jobs(&s, &key).await,
        json!([]),
        "refused jobs are not stored"
    );
    let ledger = usage(&s, &key).await;
    assert_eq!(
        of_kind(&ledger, "deposit"),
        vec![(COST - 1, None)],
        "refusals write nothing: {ledger}"
    );
    assert_eq!(ledger["transactions"].as_array().map(Vec::len), Some(1));

    // Exactly the price: accepted, and charged when accepted.
    s.kiln.billing.grant(&user, 1, None).await.expect("grant");
    let (status, job) = create(&s, &key, request.clone()).await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().expect("job_id").to_string();
    let job = wait_for(&s, &key, &id, finished).await;
    assert_eq!(job["status"], "completed", "{job}");

    let ledger = usage(&s, &key).await;
    assert_eq!(
        of_kind(&ledger, "agent_job_usage"),
        vec![(-COST, Some(id.clone()))],
        "{ledger}"
    );
    assert!(of_kind(&ledger, "agent_job_refund").is_empty(), "{ledger}");
    assert_eq!(balance(&s, &key).await, 0);
    assert_eq!(ledger["current_balance_cents"], 0, "{ledger}");
    assert_eq!(ledger["summary"]["usage_cents"], COST, "{ledger}");

    // The balance is spent: the next job is refused again, and the ledger is unchanged.
    let (status, body) = create(&s, &key, request).await;
    assert_error(status, &body, 402, "insufficient_balance");
    assert_eq!(
        listed_jobs(&s, &key).await.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        usage(&s, &key).await["transactions"],
        ledger["transactions"]
    );
}

async fn a_job_ending_in_error_is_refunded_once(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("broken");
    // The agent leaves its secret for the test, waits for the test's go, then fails.
    make_repo(&repo, &script_awaiting_go("echo 'it broke' >&2\nexit 3\n"));
    let s = priced_server(db, repos.path()).await;
    let (user, key) = s.user("payer").await;
    s.kiln
        .billing
        .grant(&user, 2 * COST, None)
        .await
        .expect("grant");
    let (status, job) = create(
        &s,
        &key,
        json!({"repo": repo.to_str().expect("utf8"), "agent_id": "script"}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().expect("job_id").to_string();
    let workspace = live_workspace(&s, &id);
    let secret = wait_for_file(&workspace.join(".secret")).await;

    // Running: charged, not refunded.
    let ledger = usage(&s, &key).await;
    assert_eq!(
        of_kind(&ledger, "agent_job_usage"),
        vec![(-COST, Some(id.clone()))],
        "{ledger}"
    );
    assert!(of_kind(&ledger, "agent_job_refund").is_empty(), "{ledger}");
    assert_eq!(balance(&s, &key).await, COST);

    std::fs::write(workspace.join(".go"), "").expect("go");
    let job = wait_for(&s, &key, &id, finished).await;
    assert_eq!(job["status"], "error", "{job}");
    let ledger = usage(&s, &key).await;
    assert_eq!(
        of_kind(&ledger, "agent_job_usage"),
        vec![(-COST, Some(id.clone()))],
        "the charge stays: {ledger}"
    );
    assert_eq!(
        of_kind(&ledger, "agent_job_refund"),
        vec![(COST, Some(id.clone()))],
        "{ledger}"
    );
    assert_eq!(balance(&s, &key).await, 2 * COST, "the balance is back");

    // Ending it again, as its agent could, changes neither the job nor the ledger.
    for outcome in ["error", "completed", "error"] {
        let (status, again) = json(
            s.post(&format!("/agent-jobs/{id}/completion"))
                .json(&json!({"secret": secret, "outcome": outcome, "error_message": "again"}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(
            (status, again["status"].as_str()),
            (200, Some("error")),
            "{again}"
        );
    }
    let after = usage(&s, &key).await;
    assert_eq!(
        after["transactions"], ledger["transactions"],
        "refunded once"
    );
    assert_eq!(after["summary"]["by_type"]["agent_job_refund"]["count"], 1);
    assert_eq!(balance(&s, &key).await, 2 * COST);
}
