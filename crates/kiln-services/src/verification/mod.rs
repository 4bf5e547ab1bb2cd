//! Verification: grading an agent's work in its session exactly as the SWE-bench harness
//! does (`plan` says what to run, `run` runs it, `kiln-verify` grades). Jobs run on the
//! session's worker, so they are ordered with the agent's own commands.
pub mod plan;
pub mod run;

use serde_json::{json, Value};

pub use plan::{plan_for, VerifyPlan};

/// The contract's `TestSuiteResult`, plus Kiln's grading details under `grading` (the
/// rules used, the SWE-bench `tests_status`, the full status map, scores, resolution), so
/// a SWE-bench `report.json` can be produced unchanged.
pub fn result_json(verified: &run::Verified) -> Value {
    match &verified.grade {
        run::Grade::Swebench(grade) => {
            let lists = &grade.lists;
            json!({
                "tool": "test_suite",
                "is_success": grade.is_success,
                "execution_duration_seconds": verified.test_seconds,
                "total": lists.total, "passed": lists.passed, "failed": lists.failed, "skipped": lists.skipped,
                "passes": lists.passes, "failures": lists.failures, "skips": lists.skips,
                "stdout": run::log_tail(&verified.log),
                "stderr": "",
                "grading": {
                    "rules": grade.rules,
                    "parser": grade.parser.to_string(),
                    "eval_type": grade.eval_type,
                    "resolution": grade.resolution,
                    "fail_to_pass_score": grade.fail_to_pass_score,
                    "pass_to_pass_score": grade.pass_to_pass_score,
                    "log_valid": grade.log.valid,
                    "invalid_reason": grade.log.invalid.as_ref().map(|r| format!("{r:?}")),
                    "tests_status": grade.tests_status,
                    "status_map": grade.log.status_map.to_btree(),
                },
            })
        }
        run::Grade::Codeset(grade) => {
            let lists = &grade.lists;
            json!({
                "tool": "test_suite",
                "is_success": grade.correct,
                "execution_duration_seconds": verified.test_seconds,
                "total": lists.total, "passed": lists.passed, "failed": lists.failed, "skipped": lists.skipped,
                "passes": lists.passes, "failures": lists.failures, "skips": lists.skips,
                "stdout": run::log_tail(&verified.log),
                "stderr": "",
                "grading": {
                    "rules": "codeset_gym",
                    "expected_passes_correct": grade.expected_passes_correct,
                    "expected_failures_correct": grade.expected_failures_correct,
                    "actual_passes": grade.actual_passes,
                    "actual_failures": grade.actual_failures,
                    "actual_skipped": grade.actual_skipped,
                },
            })
        }
    }
}
