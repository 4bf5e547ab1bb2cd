//! SWE-bench grading: expected test lists against a status map (`get_eval_tests_report`,
//! `compute_fail_to_pass`, `compute_pass_to_pass`, `get_resolution_status`).

use serde::{Deserialize, Serialize};

use crate::rules::{EvalType, GradingRules};
use crate::status::{StatusMap, TestStatus};

/// The expected test lists of a sample.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedTests {
    #[serde(rename = "FAIL_TO_PASS", default)]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS", default)]
    pub pass_to_pass: Vec<String>,
    #[serde(rename = "FAIL_TO_FAIL", default)]
    pub fail_to_fail: Vec<String>,
    #[serde(rename = "PASS_TO_FAIL", default)]
    pub pass_to_fail: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessFailure {
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

/// SWE-bench's `tests_status`, field names as in `report.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestsStatus {
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: SuccessFailure,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: SuccessFailure,
    #[serde(rename = "FAIL_TO_FAIL")]
    pub fail_to_fail: SuccessFailure,
    #[serde(rename = "PASS_TO_FAIL")]
    pub pass_to_fail: SuccessFailure,
}

/// How one expected test counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    /// In neither list, so it does not enter the score (4.x skipped tests, statuses the
    /// reference does not recognise).
    Uncounted,
}

/// Which expected list a test came from: the rules differ for PASS_TO_PASS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedKind {
    FailToPass,
    PassToPass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    #[serde(rename = "RESOLVED_FULL")]
    Full,
    #[serde(rename = "RESOLVED_PARTIAL")]
    Partial,
    #[serde(rename = "RESOLVED_NO")]
    No,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "RESOLVED_FULL",
            Self::Partial => "RESOLVED_PARTIAL",
            Self::No => "RESOLVED_NO",
        }
    }
}

/// The status a case resolves to (5.x `_resolve_case`): the exact name, or for a
/// truncated parametrized id (more `[` than `]`) the first name it prefixes, provided
/// every such name agrees on passing vs not passing.
pub fn resolve_case<'a>(
    case: &str,
    map: &'a StatusMap,
    rules: GradingRules,
) -> Option<&'a TestStatus> {
    if let Some(status) = map.get(case) {
        return Some(status);
    }
    if rules == GradingRules::Swebench4 || case.matches('[').count() <= case.matches(']').count() {
        return None;
    }
    let mut matches = map.iter().filter(|(name, _)| name.starts_with(case));
    let (_, first) = matches.next()?;
    let agree = matches.all(|(_, status)| status.is_passing() == first.is_passing());
    agree.then_some(first)
}

/// Classifies one expected test exactly as the reference's `check_*` helpers do.
pub fn classify(
    case: &str,
    map: &StatusMap,
    kind: ExpectedKind,
    eval_type: EvalType,
    rules: GradingRules,
) -> Outcome {
    if eval_type == EvalType::FailOnly {
        // Exact lookup only: fail-only never prefix-matches.
        return match map.get(case) {
            Some(TestStatus::Failed) => Outcome::Failure,
            _ => Outcome::Success,
        };
    }
    let status = resolve_case(case, map, rules);
    let passed = status.is_some_and(TestStatus::is_passing);
    let skipped = matches!(status, Some(TestStatus::Skipped));
    let failed = matches!(
        (rules, status),
        (_, None | Some(TestStatus::Failed | TestStatus::Error))
            | (GradingRules::Swebench5, Some(TestStatus::Skipped))
    );
    let maintained =
        rules == GradingRules::Swebench5 && kind == ExpectedKind::PassToPass && skipped;
    if passed || maintained {
        Outcome::Success
    } else if failed {
        Outcome::Failure
    } else {
        Outcome::Uncounted
    }
}

fn sort_into(
    cases: &[String],
    map: &StatusMap,
    kind: ExpectedKind,
    eval_type: EvalType,
    rules: GradingRules,
) -> SuccessFailure {
    let mut out = SuccessFailure::default();
    for case in cases {
        match classify(case, map, kind, eval_type, rules) {
            Outcome::Success => out.success.push(case.clone()),
            Outcome::Failure => out.failure.push(case.clone()),
            Outcome::Uncounted => {}
        }
    }
    out
}

/// `get_eval_tests_report`. FAIL_TO_FAIL / PASS_TO_FAIL are filled only with
/// `calculate_to_fail`, with FAIL_TO_PASS semantics, as in the reference.
pub fn tests_status(
    map: &StatusMap,
    expected: &ExpectedTests,
    eval_type: EvalType,
    rules: GradingRules,
    calculate_to_fail: bool,
) -> TestsStatus {
    use ExpectedKind::{FailToPass, PassToPass};
    let mut status = TestsStatus {
        fail_to_pass: sort_into(&expected.fail_to_pass, map, FailToPass, eval_type, rules),
        pass_to_pass: sort_into(&expected.pass_to_pass, map, PassToPass, eval_type, rules),
        ..TestsStatus::default()
    };
    if calculate_to_fail {
        status.fail_to_fail = sort_into(&expected.fail_to_fail, map, FailToPass, eval_type, rules);
        status.pass_to_fail = sort_into(&expected.pass_to_fail, map, FailToPass, eval_type, rules);
    }
    status
}

fn ratio(list: &SuccessFailure) -> f64 {
    let total = list.success.len() + list.failure.len();
    if total == 0 {
        1.0
    } else {
        list.success.len() as f64 / total as f64
    }
}

/// `compute_fail_to_pass`: 1 when nothing counted.
pub fn fail_to_pass_score(status: &TestsStatus) -> f64 {
    ratio(&status.fail_to_pass)
}

/// `compute_pass_to_pass`: 1 when nothing counted.
pub fn pass_to_pass_score(status: &TestsStatus) -> f64 {
    ratio(&status.pass_to_pass)
}

/// `get_resolution_status`, decided on counts so no float comparison is involved.
pub fn resolution(status: &TestsStatus) -> Resolution {
    let f2p_all = status.fail_to_pass.failure.is_empty();
    let f2p_some = !status.fail_to_pass.success.is_empty();
    let p2p_all = status.pass_to_pass.failure.is_empty();
    match (f2p_all, f2p_some, p2p_all) {
        (true, _, true) => Resolution::Full,
        (false, true, true) => Resolution::Partial,
        _ => Resolution::No,
    }
}
