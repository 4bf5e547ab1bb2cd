//! codeset-gym grading (`codeset_gym==0.2.1`, `check_test_results` with
//! `previous_commit=False`): JUnit reports in, success iff the passing set equals
//! FAIL_TO_PASS ∪ PASS_TO_PASS and the failing set equals FAIL_TO_FAIL; skips ignored.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::parsers::junit::{parse_junit_document, JunitCase, JunitDocument, JunitOutcome};
use crate::parsers::ParseError;
use crate::report::{FailureCause, TestEntry, TestLists};
use crate::status::TestStatus;

/// Where codeset-gym looks for reports, relative to the repository directory, in order.
/// A `Single` path is used if it parses to a non-empty report; a `Glob` combines every
/// match (see [`combine_glob_documents`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum ReportLocation {
    Single(&'static str),
    Glob(&'static str),
}

/// The collector's search order for a language (`python`, `java`, `javascript`,
/// `typescript`, `go`, `rust`, `csharp`, `c`, `cpp`, `c++`; case-insensitive).
pub fn report_locations(language: &str) -> Option<&'static [ReportLocation]> {
    use ReportLocation::{Glob, Single};
    Some(match language.to_ascii_lowercase().as_str() {
        "python" => &[Single("report.xml"), Glob("test_reports/*.xml")],
        "java" => &[
            Single("target/surefire-reports/suite.xml"),
            Glob("target/surefire-reports/TEST-*.xml"),
            Glob("target/surefire-reports/*.xml"),
            Glob("build/test-results/test/*.xml"),
        ],
        "javascript" | "typescript" => &[
            Single("test-results/junit.xml"),
            Single("test-results/test-results.xml"),
        ],
        "go" => &[Single("test-results.xml"), Single("go-test-report.xml")],
        "rust" => &[Single("target/junit.xml"), Single("test-results.xml")],
        "csharp" => &[
            Single("TestResults/results.xml"),
            Glob("TestResults/*.xml"),
            Single("test-results.xml"),
        ],
        "c" | "cpp" | "c++" => &[
            Single("gtest_output.xml"),
            Single("test-results.xml"),
            Glob("Testing/*/Test.xml"),
        ],
        _ => return None,
    })
}

/// Cases of a single-path report, or `None` where codeset-gym would move on to the next
/// location (unparsable, or empty by junitparser's `len`).
pub fn single_report_cases(xml: &str) -> Option<Vec<JunitCase>> {
    let document = parse_junit_document(xml).ok()?;
    (document.junitparser_len > 0).then_some(document.cases)
}

/// Cases of a glob location (junitparser's `JUnitXml().add_testsuite(file)` per file).
/// Only `<testsuite>`-rooted files contribute: a `<testsuites>` root is appended as a
/// child that junitparser's iteration never visits. `None` (move on) when nothing
/// contributes, as codeset-gym raises "No valid XML files found" then.
pub fn combine_glob_documents(xml_files: &[&str]) -> Option<Vec<JunitCase>> {
    let mut contributed = 0;
    let mut cases = Vec::new();
    for xml in xml_files {
        let Ok(document) = parse_junit_document(xml) else {
            continue;
        };
        if !document.multi_suite_root {
            contributed += 1;
            cases.extend(document.cases);
        }
    }
    (contributed > 0).then_some(cases)
}

/// Parses one report for grading, failing loudly (unlike the collector helpers).
pub fn parse_report(xml: &str) -> Result<JunitDocument, ParseError> {
    parse_junit_document(xml)
}

/// codeset-gym's result, field for field, plus the lists Kiln returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodesetGrade {
    pub correct: bool,
    pub expected_passes_correct: bool,
    pub expected_failures_correct: bool,
    pub expected_passes: BTreeSet<String>,
    pub expected_failures: BTreeSet<String>,
    pub actual_passes: BTreeSet<String>,
    pub actual_failures: BTreeSet<String>,
    pub actual_skipped: BTreeSet<String>,
    pub lists: TestLists,
}

fn status_of(outcome: JunitOutcome) -> TestStatus {
    match outcome {
        JunitOutcome::Passed => TestStatus::Passed,
        JunitOutcome::Failed => TestStatus::Failed,
        JunitOutcome::Error => TestStatus::Error,
        JunitOutcome::Skipped => TestStatus::Skipped,
    }
}

/// Grades cases against the expected lists.
///
/// A name can land in several sets when duplicate cases disagree, exactly as with the
/// reference's sets. Lists: `passes` = expected passes that passed; `failures` = expected
/// passes that did not (cause FAILED/ERROR/SKIPPED/missing), unexpected passes, and
/// failures that were not expected (or expected failures that did not fail: `missing`);
/// `skips` = every skipped case.
pub fn grade_codeset(
    cases: &[JunitCase],
    fail_to_pass: &[String],
    pass_to_pass: &[String],
    fail_to_fail: &[String],
) -> CodesetGrade {
    let expected_passes: BTreeSet<String> =
        fail_to_pass.iter().chain(pass_to_pass).cloned().collect();
    let expected_failures: BTreeSet<String> = fail_to_fail.iter().cloned().collect();
    let mut actual_passes = BTreeSet::new();
    let mut actual_failures = BTreeSet::new();
    let mut actual_skipped = BTreeSet::new();
    let mut last_outcome = std::collections::BTreeMap::new();
    for case in cases {
        let set = match case.outcome {
            JunitOutcome::Skipped => &mut actual_skipped,
            JunitOutcome::Failed | JunitOutcome::Error => &mut actual_failures,
            JunitOutcome::Passed => &mut actual_passes,
        };
        set.insert(case.name.clone());
        last_outcome.insert(case.name.clone(), case.outcome);
    }
    let expected_passes_correct = expected_passes == actual_passes;
    let expected_failures_correct = expected_failures == actual_failures;

    let mut lists = TestLists::default();
    let entry = |name: &str, cause: Option<FailureCause>| TestEntry {
        name: name.to_owned(),
        status: last_outcome.get(name).map(|o| status_of(*o)),
        cause,
    };
    for name in &expected_passes {
        if actual_passes.contains(name) {
            lists.push_pass(entry(name, None));
        } else {
            let cause = match last_outcome.get(name) {
                Some(JunitOutcome::Failed) => FailureCause::Failed,
                Some(JunitOutcome::Error) => FailureCause::Error,
                Some(JunitOutcome::Skipped) => FailureCause::Skipped,
                _ => FailureCause::Missing,
            };
            lists.push_failure(entry(name, Some(cause)));
        }
    }
    for name in actual_passes.difference(&expected_passes) {
        lists.push_failure(entry(name, Some(FailureCause::UnexpectedPass)));
    }
    for name in actual_failures.difference(&expected_failures) {
        if !expected_passes.contains(name) {
            lists.push_failure(entry(name, Some(FailureCause::UnexpectedFailure)));
        }
    }
    for name in expected_failures.difference(&actual_failures) {
        lists.push_failure(entry(name, Some(FailureCause::Missing)));
    }
    for name in &actual_skipped {
        lists.push_skip(entry(name, None));
    }
    CodesetGrade {
        correct: expected_passes_correct && expected_failures_correct,
        expected_passes_correct,
        expected_failures_correct,
        expected_passes,
        expected_failures,
        actual_passes,
        actual_failures,
        actual_skipped,
        lists,
    }
}
