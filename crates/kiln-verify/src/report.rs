//! Putting it together: one grading of one log, the SWE-bench `report.json` entry, and
//! the pass/fail/skip lists Kiln's API returns.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::grading::{
    classify, fail_to_pass_score, pass_to_pass_score, resolution, tests_status, ExpectedKind,
    ExpectedTests, Outcome, Resolution, TestsStatus,
};
use crate::log_eval::{evaluate_log_with, ExitCodeSource, LogEvaluation};
use crate::parsers::Parser;
use crate::rules::{EvalType, GradingRules};
use crate::status::{StatusMap, TestStatus};

/// Why an expected test is listed among the failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCause {
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "ERROR")]
    Error,
    /// Not in the status map (or a truncated id whose matches disagree).
    #[serde(rename = "missing")]
    Missing,
    /// Skipped where it had to pass (FAIL_TO_PASS, 5.x rules).
    #[serde(rename = "SKIPPED")]
    Skipped,
    /// codeset-gym only: passed although expected to fail or not expected at all.
    #[serde(rename = "unexpected_pass")]
    UnexpectedPass,
    /// codeset-gym only: failed although not expected to.
    #[serde(rename = "unexpected_failure")]
    UnexpectedFailure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestEntry {
    pub name: String,
    /// The status the test resolved to; `None` when missing.
    pub status: Option<TestStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
}

/// The test lists behind Kiln's `TestSuiteResult`.
///
/// Counted over the expected tests (FAIL_TO_PASS then PASS_TO_PASS, each name once):
/// `passes` are successes, `failures` failures (with the cause), `skips` are skipped
/// tests that did not fail the grade (PASS_TO_PASS under 5.x rules) and tests the
/// reference leaves uncounted. `total = passed + failed + skipped`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestLists {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub passes: Vec<TestEntry>,
    pub failures: Vec<TestEntry>,
    pub skips: Vec<TestEntry>,
}

impl TestLists {
    pub(crate) fn push_pass(&mut self, entry: TestEntry) {
        self.passed += 1;
        self.total += 1;
        self.passes.push(entry);
    }

    pub(crate) fn push_failure(&mut self, entry: TestEntry) {
        self.failed += 1;
        self.total += 1;
        self.failures.push(entry);
    }

    pub(crate) fn push_skip(&mut self, entry: TestEntry) {
        self.skipped += 1;
        self.total += 1;
        self.skips.push(entry);
    }
}

fn failure_cause(status: Option<&TestStatus>) -> FailureCause {
    match status {
        Some(TestStatus::Failed) => FailureCause::Failed,
        Some(TestStatus::Error) => FailureCause::Error,
        Some(TestStatus::Skipped) => FailureCause::Skipped,
        _ => FailureCause::Missing,
    }
}

/// Builds the lists from a status map with the same classification as the grade.
pub fn test_lists(
    map: &StatusMap,
    expected: &ExpectedTests,
    eval_type: EvalType,
    rules: GradingRules,
) -> TestLists {
    let mut lists = TestLists::default();
    let mut seen = HashSet::new();
    let kinds = expected
        .fail_to_pass
        .iter()
        .map(|c| (c, ExpectedKind::FailToPass))
        .chain(
            expected
                .pass_to_pass
                .iter()
                .map(|c| (c, ExpectedKind::PassToPass)),
        );
    for (case, kind) in kinds {
        if !seen.insert(case.as_str()) {
            continue;
        }
        let status = match eval_type {
            EvalType::PassAndFail => crate::grading::resolve_case(case, map, rules),
            EvalType::FailOnly => map.get(case),
        };
        let mut entry = TestEntry {
            name: case.clone(),
            status: status.cloned(),
            cause: None,
        };
        match classify(case, map, kind, eval_type, rules) {
            Outcome::Success if matches!(status, Some(TestStatus::Skipped)) => {
                lists.push_skip(entry)
            }
            Outcome::Success => lists.push_pass(entry),
            Outcome::Failure => {
                entry.cause = Some(failure_cause(status));
                lists.push_failure(entry);
            }
            Outcome::Uncounted => lists.push_skip(entry),
        }
    }
    lists
}

/// One grading of one SWE-bench-style log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwebenchGrade {
    /// Which reference behaviour graded this, e.g. `swebench5`.
    pub rules: GradingRules,
    pub reference: String,
    pub parser: Parser,
    pub eval_type: EvalType,
    pub log: LogEvaluation,
    pub tests_status: TestsStatus,
    pub fail_to_pass_score: f64,
    pub pass_to_pass_score: f64,
    pub resolution: Resolution,
    /// Valid log and RESOLVED_FULL: the reward.
    pub is_success: bool,
    pub lists: TestLists,
}

/// What to grade.
#[derive(Clone, Copy, Debug)]
pub struct GradeRequest<'a> {
    pub parser: Parser,
    /// The whole evaluation log, markers included.
    pub log: &'a str,
    pub expected: &'a ExpectedTests,
    pub eval_type: EvalType,
    pub rules: GradingRules,
    pub exit_code: ExitCodeSource,
}

/// Evaluates the log and grades it. An invalid log grades with an empty status map, so
/// every expected test is a failure (`missing`) and `is_success` is false.
pub fn grade_swebench(request: &GradeRequest<'_>) -> SwebenchGrade {
    let log = evaluate_log_with(
        request.parser,
        request.log,
        request.rules,
        request.exit_code,
    );
    let status = tests_status(
        &log.status_map,
        request.expected,
        request.eval_type,
        request.rules,
        false,
    );
    let resolution = resolution(&status);
    let lists = test_lists(
        &log.status_map,
        request.expected,
        request.eval_type,
        request.rules,
    );
    SwebenchGrade {
        rules: request.rules,
        reference: request.rules.reference().to_owned(),
        parser: request.parser,
        eval_type: request.eval_type,
        fail_to_pass_score: fail_to_pass_score(&status),
        pass_to_pass_score: pass_to_pass_score(&status),
        is_success: log.valid && resolution == Resolution::Full,
        resolution,
        tests_status: status,
        log,
        lists,
    }
}

/// One instance's entry in SWE-bench's `report.json` (`get_eval_report`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    #[serde(rename = "patch_is_None")]
    pub patch_is_none: bool,
    pub patch_exists: bool,
    pub patch_successfully_applied: bool,
    pub resolved: bool,
    /// 5.x only. Kiln does not run the reference's advisory log classifier, so this is
    /// always false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infra_failure: Option<bool>,
    /// 5.x: why a run whose log was not found valid looks like a broken environment (or
    /// an ambiguous failure), from the harness's advisory classifier
    /// ([`InstanceReport::classify_unfound`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests_status: Option<TestsStatus>,
}

impl InstanceReport {
    /// `get_eval_report`'s branch for a run whose test output was not found (5.x rules
    /// only): the classifier's reason over the test output, and `infra_failure` when its
    /// tier is the environment's. Advisory: `resolved` stays false either way.
    pub fn classify_unfound(&mut self, test_output: &str) {
        if self.infra_failure.is_none() || self.patch_is_none || self.patch_successfully_applied {
            return;
        }
        if let Some((reason, tier)) = crate::infra::classify_text(test_output) {
            self.infra_failure = Some(tier == crate::infra::Tier::Environment);
            self.infra_failure_reason = Some(reason.to_string());
        }
    }
}

/// `get_eval_report`: `{instance_id: InstanceReport}`. `grade` is `None` when the model
/// patch was `None` (nothing was run).
pub fn swebench_report(
    instance_id: &str,
    grade: Option<&SwebenchGrade>,
    include_tests_status: bool,
) -> BTreeMap<String, InstanceReport> {
    let rules = grade.map_or(GradingRules::default(), |g| g.rules);
    let mut report = InstanceReport {
        patch_is_none: grade.is_none(),
        patch_exists: grade.is_some(),
        patch_successfully_applied: false,
        resolved: false,
        infra_failure: (rules == GradingRules::Swebench5).then_some(false),
        infra_failure_reason: None,
        tests_status: None,
    };
    if let Some(grade) = grade.filter(|g| g.log.valid) {
        report.patch_successfully_applied = true;
        report.resolved = grade.resolution == Resolution::Full;
        if include_tests_status {
            report.tests_status = Some(grade.tests_status.clone());
        }
    }
    BTreeMap::from([(instance_id.to_owned(), report)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unfound(infra_failure: Option<bool>) -> InstanceReport {
        InstanceReport {
            patch_is_none: false,
            patch_exists: true,
            patch_successfully_applied: false,
            resolved: false,
            infra_failure,
            infra_failure_reason: None,
            tests_status: None,
        }
    }

    #[test]
    fn only_unfound_5x_runs_are_classified() {
        let offline = "pip: [Errno -3] Temporary failure in name resolution\n";
        let mut report = unfound(Some(false));
        report.classify_unfound(offline);
        assert_eq!(report.infra_failure, Some(true));
        assert_eq!(
            report.infra_failure_reason.as_deref(),
            Some("network_unreachable")
        );
        // An ambiguous signature is named, but not called the environment's fault.
        let mut report = unfound(Some(false));
        report.classify_unfound("ModuleNotFoundError: No module named 'x'");
        assert_eq!(report.infra_failure, Some(false));
        assert_eq!(
            report.infra_failure_reason.as_deref(),
            Some("missing_module")
        );
        // 4.x rules have no such field; a run whose log was found is not classified.
        let mut report = unfound(None);
        report.classify_unfound(offline);
        assert_eq!(
            (report.infra_failure, report.infra_failure_reason),
            (None, None)
        );
        let mut report = unfound(Some(false));
        report.patch_successfully_applied = true;
        report.classify_unfound(offline);
        assert_eq!(report.infra_failure_reason, None);
        // Nothing matched: nothing said.
        let mut report = unfound(Some(false));
        report.classify_unfound("error: patch does not apply");
        assert_eq!(
            (report.infra_failure, report.infra_failure_reason),
            (Some(false), None)
        );
    }
}
