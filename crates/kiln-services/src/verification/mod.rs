//! Verification: grading an agent's work in its session exactly as the SWE-bench harness
//! does (`plan` says what to run, `run` runs it, `kiln-verify` grades). Jobs
//! (`crate::verification_jobs`) run on the session's worker, so they are ordered with the
//! agent's own commands; this module knows nothing of sessions.
pub mod plan;
pub mod run;

use kiln_verify::VerificationResult;

pub use plan::{plan_for, VerifyPlan};

/// The job's result: the contract's `TestSuiteResult` plus Kiln's grading details (see
/// `kiln_verify::VerificationResult`).
pub fn result_of(verified: &run::Verified) -> VerificationResult {
    let stdout = run::log_tail(&verified.log);
    match &verified.grade {
        run::Grade::Swebench(grade) => {
            VerificationResult::swebench(grade, verified.test_seconds, stdout)
        }
        run::Grade::Codeset(grade) => {
            VerificationResult::codeset(grade, verified.test_seconds, stdout)
        }
    }
}
