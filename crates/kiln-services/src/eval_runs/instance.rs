//! One instance of an eval run: a fresh session on the sample, the prediction applied with
//! the harness's apply chain, a verification, and the harness's `report.json` entry.
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_store::{JobStatus, SessionStatus};
use kiln_verify::{GradingRules, InstanceReport, Resolution, VerificationResult};
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::sessions::{Action, CreateSession, SessionService};

/// Why an instance ended without a report: a service call that failed, or one of the
/// harness's own verdicts (the patch did not apply, a timeout), said as the harness logs it
/// (not as a server fault: a prediction whose patch does not apply is the model's).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{0}")]
    Failed(String),
}

/// The harness's `GIT_APPLY_CMDS`, tried in order until one succeeds.
pub const APPLY_CHAIN: [&str; 3] = [
    "git apply --verbose",
    "git apply --verbose --reject",
    "patch --batch --fuzz=5 -p1 -i",
];
/// Where the harness puts the prediction in its container.
const PATCH_PATH: &str = "/tmp/patch.diff";
const APPLY_TIMEOUT_SECS: u32 = 120;

/// Where an instance's time went, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// From asking for the session to its sandbox being ready.
    pub create: f64,
    /// Uploading the patch and the apply chain.
    pub apply: f64,
    /// The test command itself.
    pub tests: f64,
    /// The rest of the verification (test-file reset, log read-back, grading, restore).
    pub grade: f64,
    pub total: f64,
}

/// What running one instance produced.
#[derive(Debug, Clone)]
pub struct InstanceRun {
    /// The `report.json` entry; `None` when the harness would write none (the patch did
    /// not apply, the tests timed out, the infrastructure failed).
    pub report: Option<InstanceReport>,
    /// The test log (its tail past 64 KiB, as the verification keeps it).
    pub test_output: Option<String>,
    /// Why there is no report.
    pub error: Option<String>,
    /// `run_instance.log`'s lines.
    pub log: Vec<String>,
    pub timing: Timing,
}

pub struct InstanceInput<'a> {
    pub user_id: &'a str,
    pub dataset: &'a str,
    pub instance_id: &'a str,
    pub patch: &'a str,
    pub timeout: Duration,
}

/// Runs one instance to its end, whatever happens: the session is closed on every path,
/// including a timeout and `cancel` turning true.
pub async fn run_instance(
    sessions: &Arc<SessionService>,
    input: InstanceInput<'_>,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> InstanceRun {
    let started = Instant::now();
    let mut run = InstanceRun {
        report: None,
        test_output: None,
        error: None,
        log: Vec::new(),
        timing: Timing::default(),
    };
    // Room for the whole timeout plus cleanup, in whole minutes.
    let ttl = i64::try_from(input.timeout.as_secs() / 60 + 10).unwrap_or(i64::MAX);
    let created = sessions
        .create(CreateSession::sample(
            input.user_id,
            input.dataset,
            input.instance_id,
            Some(ttl),
        ))
        .await;
    let session_id = match created {
        Ok(session) => session.session_id,
        Err(e) => {
            run.error = Some(format!("cannot create a session: {e}"));
            run.log.push(format!("Error: {}", e));
            run.timing.total = started.elapsed().as_secs_f64();
            return run;
        }
    };
    run.log.push(format!(
        "Session {session_id} created for {}/{}",
        input.dataset, input.instance_id
    ));
    let steps = steps(sessions, &input, &session_id, &mut run);
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(input.timeout, steps) => match outcome {
            Ok(result) => result,
            Err(_) => Err(StepError::Failed(format!(
                "Timeout error: {} seconds exceeded.", input.timeout.as_secs()
            ))),
        },
        _ = cancelled(&mut cancel) => Err(StepError::Failed("cancelled".into())),
    };
    if let Err(e) = outcome {
        run.log.push(format!("Error: {e}"));
        run.error = Some(e.to_string());
        run.report = None;
    }
    if let Err(e) = sessions.close(input.user_id, &session_id).await {
        // Already ended (lost sandbox, expiry) is the usual reason; nothing is left to do.
        run.log.push(format!("Closing session {session_id}: {e}"));
    }
    run.timing.total = started.elapsed().as_secs_f64();
    run
}

/// Resolves when `cancel` turns true; never when nobody can cancel any more.
async fn cancelled(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn steps(
    sessions: &Arc<SessionService>,
    input: &InstanceInput<'_>,
    session_id: &str,
    run: &mut InstanceRun,
) -> Result<(), StepError> {
    let user = input.user_id;
    let t = Instant::now();
    let session = loop {
        let s = sessions.get(user, session_id, true).await?;
        if s.status != SessionStatus::Creating {
            break s;
        }
    };
    run.timing.create = t.elapsed().as_secs_f64();
    if session.status != SessionStatus::Ready {
        return Err(StepError::Failed(format!(
            "the session did not become ready ({}): {}",
            session.status.as_str(),
            session.error_message.unwrap_or_default()
        )));
    }
    run.log.push(format!(
        "Sandbox ready in {:.2} s; applying the prediction",
        run.timing.create
    ));

    let t = Instant::now();
    apply(sessions, user, session_id, input.patch, run).await?;
    run.timing.apply = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let job = sessions.start_verification(user, session_id).await?;
    run.log.push(format!("Verification {} started", job.job_id));
    let job = loop {
        let j = sessions
            .verification_job(user, session_id, &job.job_id, true)
            .await?;
        if j.status.is_finished() {
            break j;
        }
    };
    let verify_seconds = t.elapsed().as_secs_f64();
    let result = match (job.status, job.result) {
        (JobStatus::Completed, Some(result)) => result,
        (status, _) => {
            return Err(StepError::Failed(format!(
                "verification ended {}: {}",
                status.as_str(),
                job.error_message.unwrap_or_default()
            )))
        }
    };
    run.timing.tests = result.execution_duration_seconds;
    run.timing.grade = (verify_seconds - result.execution_duration_seconds).max(0.0);
    let report = report_entry(&result);
    run.log.push(format!(
        "Result for {}: resolved: {}",
        input.instance_id,
        if report.resolved { "True" } else { "False" }
    ));
    run.test_output = Some(result.stdout);
    run.report = Some(report);
    Ok(())
}

/// Uploads the patch and tries the harness's apply commands in order.
async fn apply(
    sessions: &Arc<SessionService>,
    user: &str,
    session_id: &str,
    patch: &str,
    run: &mut InstanceRun,
) -> Result<(), StepError> {
    let upload = Action::Upload {
        path: PATCH_PATH.into(),
        content: patch.as_bytes().to_vec(),
        executable: false,
    };
    sessions.submit_and_wait(user, session_id, upload).await?;
    let mut last_output = String::new();
    for command in APPLY_CHAIN {
        let exec = Action::Exec {
            command: format!("cd /testbed && {command} {PATCH_PATH}"),
            timeout_secs: APPLY_TIMEOUT_SECS,
        };
        let (_, outcome) = sessions.submit_and_wait(user, session_id, exec).await?;
        last_output = format!("{}{}", outcome.stdout, outcome.stderr);
        if outcome.exit_code == 0 {
            run.log
                .push(format!(">>>>> Applied Patch:\n{}", last_output.trim_end()));
            return Ok(());
        }
        run.log
            .push(format!("Failed to apply patch to container: {command}"));
    }
    Err(StepError::Failed(format!(
        ">>>>> Patch Apply Failed:\n{}",
        last_output.trim_end()
    )))
}

/// The harness's `get_eval_report` entry for a prediction that was run: applied and
/// resolved only when the log was valid (the harness's "found"), tests_status then.
pub fn report_entry(result: &VerificationResult) -> InstanceReport {
    let mut report = InstanceReport {
        patch_is_none: false,
        patch_exists: true,
        patch_successfully_applied: false,
        resolved: false,
        infra_failure: None,
        infra_failure_reason: None,
        tests_status: None,
    };
    match &result.grading {
        kiln_verify::Grading::Swebench(g) => {
            report.infra_failure = (g.rules == GradingRules::Swebench5).then_some(false);
            if g.log_valid {
                report.patch_successfully_applied = true;
                report.resolved = g.resolution == Resolution::Full;
                report.tests_status = Some(g.tests_status.clone());
            }
        }
        // codeset-gym has no report.json of its own: its verdict, in the same shape.
        kiln_verify::Grading::Codeset(_) => {
            report.patch_successfully_applied = true;
            report.resolved = result.is_success;
        }
    }
    // The test output as `test_output.txt` holds it.
    report.classify_unfound(&result.stdout);
    report
}
