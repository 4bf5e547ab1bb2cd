//! `GET /v1/instances?q=…` (the server-side search of the dashboard's session list) and
//! `GET /v1/instances/{id}/verifications`, over real HTTP on SQLite and on PostgreSQL
//! (when `KILN_TEST_POSTGRES_URL` is set). Sessions and jobs are rows put in the store:
//! no sandbox is needed to list them.
use crate::common;

use chrono::{Duration, Utc};
use common::{assert_error, assert_validation, Backend, Database, TestServer};
use kiln_domain::{
    JobStatus, JobUpdate, Labels, NewSession, NewVerificationJob, SessionLimits, SessionSource,
    VerificationResult,
};
use kiln_verify::{
    grade_swebench, EvalType, ExitCodeSource, ExpectedTests, GradeRequest, GradingRules, Parser,
};
use reqwest::Method;
use serde_json::Value;

on_both_backends!(super::run; search_finds_the_callers_sessions_only, verifications_are_listed_per_instance,
    instances_are_paged_by_cursor);

async fn run<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(TestServer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Some(db) = Database::of(backend) {
        scenario(TestServer::start_on(&db, |_| {}).await).await;
    }
}

/// An image session row of `user`, made now.
async fn session(s: &TestServer, id: &str, user: &str, name: &str, labels: &[(&str, &str)]) {
    session_at(s, id, user, name, labels, Utc::now()).await;
}

/// An image session row of `user`, made at `now`.
async fn session_at(
    s: &TestServer,
    id: &str,
    user: &str,
    name: &str,
    labels: &[(&str, &str)],
    now: chrono::DateTime<Utc>,
) {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.store()
        .await
        .insert_session(
            &NewSession {
                session_id: id.into(),
                user_id: user.into(),
                source: SessionSource::Image {
                    reference: "base/search:1".into(),
                },
                name: Some(name.into()),
                labels,
                limits: SessionLimits::default(),
                requested_at: now,
                expires_at: now + Duration::hours(1),
            },
            None,
        )
        .await
        .expect("insert session");
}

/// The ids `GET /v1/instances?{query}` answers to `key`, and its total.
async fn found(s: &TestServer, key: &str, query: &str) -> (Vec<String>, u64) {
    let (status, body) = s
        .v1_as(key, Method::GET, &format!("/instances?{query}"), None)
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    let ids = body["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect();
    (ids, body["total"].as_u64().expect("total"))
}

async fn search_finds_the_callers_sessions_only(s: TestServer) {
    let (alice, key) = s.user("alice").await;
    let (bob, bob_key) = s.user("bob").await;
    session(&s, "i-half", &alice, "50% done", &[("team", "RL-Gym")]).await;
    session(&s, "i-five", &alice, "500 done", &[]).await;
    session(&s, "i-under", &alice, "a_b", &[("stage", "eval")]).await;
    session(&s, "i-bob", &bob, "secret of bob", &[("team", "rl-gym")]).await;
    let store = s.store().await;
    store
        .mark_session_ready("i-five", "i-five", "local:test", Utc::now(), None)
        .await
        .expect("ready");

    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The name, the id, a label's value, any case; never another user's.
    assert_eq!(
        found(&s, &key, "q=DONE").await,
        (ids(&["i-five", "i-half"]), 2)
    );
    assert_eq!(found(&s, &key, "q=i-UNDER").await, (ids(&["i-under"]), 1));
    assert_eq!(found(&s, &key, "q=rl-gym").await, (ids(&["i-half"]), 1));
    assert_eq!(found(&s, &key, "q=secret").await, (vec![], 0));
    assert_eq!(found(&s, &bob_key, "q=secret").await, (ids(&["i-bob"]), 1));
    assert_eq!(found(&s, &key, "q=nothing%20like%20it").await, (vec![], 0));
    // `%` and `_` are themselves, not wildcards.
    assert_eq!(found(&s, &key, "q=50%25").await, (ids(&["i-half"]), 1));
    assert_eq!(found(&s, &key, "q=a_b").await, (ids(&["i-under"]), 1));
    // With the status filter and a page.
    let ready = found(&s, &key, "q=done&status=ready").await;
    assert_eq!(ready, (ids(&["i-five"]), 1));
    assert_eq!(
        found(&s, &key, "q=done&limit=1&offset=1").await,
        (ids(&["i-half"]), 2)
    );
    // A NUL is in no stored text (and PostgreSQL would refuse it as a parameter).
    assert_eq!(found(&s, &key, "q=a%00b").await, (vec![], 0));
    // An empty q is no filter; 200 characters is the most.
    assert_eq!(found(&s, &key, "q=").await.1, 3);
    let longest = "é".repeat(200);
    assert_eq!(found(&s, &key, &format!("q={longest}")).await.1, 0);
    let (status, body) = s
        .v1_as(&key, Method::GET, &format!("/instances?q={longest}x"), None)
        .await;
    assert_validation(status, &body, &["query", "q"]);
    assert_eq!(body["detail"][0]["type"], "string_too_long", "{body}");
}

/// A SWE-bench result: FAIL_TO_PASS one passed and one failed, PASS_TO_PASS one passed.
fn graded() -> VerificationResult {
    let log = ">>>>> Start Test Output\nPASSED t.py::a\nFAILED t.py::b\nPASSED t.py::c\n\
               >>>>> End Test Output\n";
    let expected = ExpectedTests {
        fail_to_pass: vec!["t.py::a".into(), "t.py::b".into()],
        pass_to_pass: vec!["t.py::c".into()],
        ..ExpectedTests::default()
    };
    let grade = grade_swebench(&GradeRequest {
        parser: Parser::Pytest,
        log,
        expected: &expected,
        eval_type: EvalType::PassAndFail,
        rules: GradingRules::Swebench5,
        exit_code: ExitCodeSource::Trusted(1),
    });
    VerificationResult::swebench(&grade, 1.0, log.into())
}

async fn verifications_are_listed_per_instance(s: TestServer) {
    let (alice, key) = s.user("alice").await;
    let (_, bob_key) = s.user("bob").await;
    session(&s, "i-v", &alice, "verified", &[]).await;
    let list = |key: String, query: &'static str| {
        let s = &s;
        async move {
            s.v1_as(
                &key,
                Method::GET,
                &format!("/instances/i-v/verifications{query}"),
                None,
            )
            .await
        }
    };
    let (status, empty) = list(key.clone(), "").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty, serde_json::json!({"items": [], "next_after": null}));

    let store = s.store().await;
    let start = Utc::now();
    for (n, job_id) in ["job-old", "job-new"].into_iter().enumerate() {
        store
            .insert_verification_job(&NewVerificationJob {
                job_id: job_id.into(),
                session_id: "i-v".into(),
                user_id: alice.clone(),
                sample_id: "demo-1".into(),
                created_at: start + Duration::seconds(n as i64),
            })
            .await
            .expect("job");
    }
    let finished = start + Duration::seconds(9);
    store
        .update_verification_job(
            "job-new",
            &JobUpdate {
                status: JobStatus::Completed,
                at: finished,
                result: Some(graded()),
                error_code: None,
                error_message: None,
            },
            None,
        )
        .await
        .expect("update")
        .expect("unfinished");

    let (status, page) = list(key.clone(), "").await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    let ids: Vec<&str> = items.iter().filter_map(|j| j["job_id"].as_str()).collect();
    assert_eq!(ids, ["job-new", "job-old"], "newest first");
    let new = &items[0];
    assert_eq!(new["status"], "completed");
    assert_eq!(new["resolved"], false);
    assert_eq!(
        new["fail_to_pass"],
        serde_json::json!({"passed": 1, "failed": 1})
    );
    assert_eq!(
        new["pass_to_pass"],
        serde_json::json!({"passed": 1, "failed": 0})
    );
    assert!(new["finished_at"].is_string(), "{new}");
    let old = &items[1];
    assert_eq!(old["status"], "pending");
    for field in ["resolved", "fail_to_pass", "pass_to_pass", "finished_at"] {
        assert_eq!(old[field], Value::Null, "{field}: {old}");
    }
    // A page of one goes on from its last job.
    let (_, first) = list(key.clone(), "?limit=1").await;
    assert_eq!(first["next_after"], "job-new", "{first}");
    let (_, rest) = list(key.clone(), "?limit=1&after=job-new").await;
    assert_eq!(rest["items"][0]["job_id"], "job-old", "{rest}");
    // An id holding a NUL is no job (PostgreSQL would refuse it as a parameter).
    for after in ["?after=no-such-job", "?after=a%00b"] {
        let (status, body) = list(key.clone(), after).await;
        assert_validation(status, &body, &["query", "after"]);
    }

    // Another user sees no such instance, and no instance is no list.
    let (status, body) = list(bob_key, "").await;
    assert_error(status, &body, 404, "not_found");
    for path in [
        "/instances/nope/verifications",
        "/instances/a%00b/verifications",
    ] {
        let (status, body) = s.v1_as(&key, Method::GET, path, None).await;
        assert_error(status, &body, 404, "not_found");
    }
}

/// `GET /v1/instances?…` as `key`: the ids, `next_cursor` and `has_more`.
async fn page(s: &TestServer, key: &str, query: &str) -> (Vec<String>, Option<String>, bool) {
    let (status, body) = s
        .v1_as(key, Method::GET, &format!("/instances?{query}"), None)
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    let ids = body["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect();
    let next = body["next_cursor"].as_str().map(str::to_string);
    (ids, next, body["has_more"].as_bool().expect("has_more"))
}

/// Keyset pages (`cursor` = the previous `next_cursor`) walk every instance once, newest
/// first, however many are created meanwhile; ties of `requested_at` are ordered by id;
/// filters apply; a cursor not given out, or one beside an offset, is a 422.
async fn instances_are_paged_by_cursor(s: TestServer) {
    let (alice, key) = s.user("alice").await;
    let (bob, _) = s.user("bob").await;
    let t0 = Utc::now() - Duration::minutes(10);
    // i-3a and i-3b share their instant.
    for (id, minutes) in [("i-1", 1), ("i-2", 2), ("i-3a", 3), ("i-3b", 3), ("i-4", 4)] {
        session_at(
            &s,
            id,
            &alice,
            id,
            &[("set", "a")],
            t0 + Duration::minutes(minutes),
        )
        .await;
    }
    session_at(&s, "i-bob", &bob, "b", &[], t0).await;

    let (first, next, more) = page(&s, &key, "limit=2").await;
    assert_eq!(first, ["i-4", "i-3b"]);
    assert!(more);
    let next = next.expect("a cursor");
    // Created after the first page: on no later page, and the walk goes on where it was.
    session_at(&s, "i-new", &alice, "new", &[("set", "a")], Utc::now()).await;
    let (second, next, more) = page(&s, &key, &format!("limit=2&cursor={next}")).await;
    assert_eq!(second, ["i-3a", "i-2"]);
    assert!(more);
    let (third, next, more) = page(
        &s,
        &key,
        &format!("limit=2&cursor={}", next.expect("cursor")),
    )
    .await;
    assert_eq!((third, next, more), (vec!["i-1".to_string()], None, false));

    // With a filter, and the offset pages as before (now with a cursor to go on).
    let (filtered, next, _) = page(&s, &key, "label=set:a&limit=3&offset=1").await;
    assert_eq!(filtered, ["i-4", "i-3b", "i-3a"]);
    let (rest, none, more) = page(
        &s,
        &key,
        &format!("label=set:a&cursor={}", next.expect("cursor")),
    )
    .await;
    assert_eq!(
        (rest, none, more),
        (vec!["i-2".to_string(), "i-1".to_string()], None, false)
    );

    for bad in [
        "cursor=nope",
        "cursor=",
        "cursor=MTIzOg",
        &format!("cursor={}", "A".repeat(300)),
    ] {
        let (status, body) = s
            .v1_as(&key, Method::GET, &format!("/instances?{bad}"), None)
            .await;
        assert_validation(status, &body, &["query", "cursor"]);
    }
    let (_, next, _) = page(&s, &key, "limit=1").await;
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances?offset=1&cursor={}", next.expect("cursor")),
            None,
        )
        .await;
    assert_validation(status, &body, &["query", "offset"]);
    for bad in ["limit=0", "limit=101"] {
        let (status, body) = s
            .v1_as(&key, Method::GET, &format!("/instances?{bad}"), None)
            .await;
        assert_validation(status, &body, &["query", "limit"]);
    }
}
