//! Verification jobs over the fake backend: the fake answers the harness's steps, and
//! writes the test command's output in the SWE-bench log format where the test step
//! sends it; the grade comes from that log.
use kiln_store::{JobStatus, VerificationJobRecord};
use kiln_test_support::{ExecCall, Reply};
use kiln_verify::log_eval::{END_TEST_OUTPUT, START_TEST_OUTPUT};

use crate::harness::{start, Env};

/// Answers the verification steps: the test step writes `test_output` between the
/// harness's markers into its log file (or gets `test_step` instead); preparing and
/// restoring succeed.
fn harness_script(
    test_output: &'static str,
    test_step: Option<Reply>,
) -> impl Fn(&mut ExecCall<'_>) -> Option<Reply> + Send + Sync + 'static {
    move |call| {
        if !call.command.contains("/tmp/.kiln-verify/") && !call.command.contains("$V") {
            return None;
        }
        if !call.request.env.contains_key("KILN_TEST_CMD") {
            return Some(Reply::exit(0));
        }
        if let Some(reply) = &test_step {
            return Some(reply.clone());
        }
        let log = call
            .command
            .split_whitespace()
            .find(|w| w.starts_with("/tmp/.kiln-verify/") && w.ends_with("/log"))
            .expect("the test step writes its log to a file")
            .to_string();
        assert_eq!(
            call.request.env["KILN_TEST_CMD"],
            "sh /testbed/run-tests.sh"
        );
        call.files.put(
            &log,
            format!("{START_TEST_OUTPUT}\n{test_output}{END_TEST_OUTPUT}\n"),
        );
        Some(Reply::exit(0))
    }
}

async fn verify(env: &Env) -> VerificationJobRecord {
    let session = env.ready().await;
    let job = env
        .kiln
        .sessions
        .start_verification(&env.user, &session.session_id)
        .await
        .unwrap();
    let mut job = job;
    for _ in 0..100 {
        job = env
            .kiln
            .sessions
            .verification_job(&env.user, &session.session_id, &job.job_id, true)
            .await
            .unwrap();
        if job.status.is_finished() {
            return job;
        }
    }
    panic!("the verification job did not finish: {job:?}");
}

#[tokio::test]
async fn passing_tests_grade_as_resolved() {
    let env = start(|_| {}).await;
    env.fake
        .on_exec(harness_script("PASSED t1\nPASSED t2\n", None));
    let job = verify(&env).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let result = serde_json::to_value(job.result.expect("a completed job has a result")).unwrap();
    assert_eq!(result["is_success"], true, "{result}");
    assert_eq!(result["grading"]["resolution"], "RESOLVED_FULL", "{result}");
    assert_eq!(result["passed"], 2, "{result}");
}

#[tokio::test]
async fn a_failing_fail_to_pass_test_grades_as_not_resolved() {
    let env = start(|_| {}).await;
    env.fake
        .on_exec(harness_script("FAILED t1\nPASSED t2\n", None));
    let job = verify(&env).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let result = serde_json::to_value(job.result.expect("a completed job has a result")).unwrap();
    assert_eq!(result["is_success"], false, "{result}");
    assert_eq!(result["grading"]["resolution"], "RESOLVED_NO", "{result}");
}

#[tokio::test]
async fn a_test_step_that_cannot_run_ends_the_job_in_error() {
    let env = start(|_| {}).await;
    env.fake.on_exec(harness_script(
        "",
        Some(Reply::infra("the agent went away")),
    ));
    let job = verify(&env).await;
    assert_eq!(job.status, JobStatus::Error, "{job:?}");
    assert_eq!(
        job.error_code.as_deref(),
        Some("verifier_failed"),
        "{job:?}"
    );
    assert!(
        job.error_message
            .unwrap_or_default()
            .contains("the agent went away"),
        "the cause is kept"
    );
}
