//! The result of one verification, as it is stored and served: the contract's
//! `TestSuiteResult` plus Kiln's grading details under `grading`, so a SWE-bench
//! `report.json` can be produced from it unchanged. One type, serialised once: the store
//! writes it as JSON text and the API returns the same JSON.
//!
//! Fields are declared in alphabetical order, the order of results stored before this type
//! existed (written from a sorted JSON map). Key order carries no meaning: readers must not
//! rely on it (the nested `kiln-verify` types keep their own declared order).
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    CodesetGrade, EvalType, GradingRules, Parser, Resolution, SwebenchGrade, TestEntry, TestLists,
    TestStatus, TestsStatus,
};

/// The `tool` of every result graded by a test suite.
pub const TEST_SUITE_TOOL: &str = "test_suite";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerificationResult {
    pub execution_duration_seconds: f64,
    pub failed: usize,
    pub failures: Vec<TestEntry>,
    pub grading: Grading,
    /// The reward: resolved (SWE-bench) or exactly the expected sets (codeset-gym).
    pub is_success: bool,
    pub passed: usize,
    pub passes: Vec<TestEntry>,
    pub skipped: usize,
    pub skips: Vec<TestEntry>,
    pub stderr: String,
    /// The tail of the test log.
    pub stdout: String,
    pub tool: String,
    pub total: usize,
}

/// How the result was graded; told apart by `rules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Grading {
    Swebench(SwebenchGrading),
    Codeset(CodesetGrading),
}

/// The SWE-bench harness's verdict: its rules, `tests_status`, scores and resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwebenchGrading {
    pub eval_type: EvalType,
    pub fail_to_pass_score: f64,
    /// Why the log is invalid (when `log_valid` is false), for people.
    pub invalid_reason: Option<String>,
    pub log_valid: bool,
    pub parser: Parser,
    pub pass_to_pass_score: f64,
    pub resolution: Resolution,
    pub rules: GradingRules,
    pub status_map: BTreeMap<String, TestStatus>,
    pub tests_status: TestsStatus,
}

/// codeset-gym's verdict: which expected sets matched, and what the reports said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodesetGrading {
    pub actual_failures: BTreeSet<String>,
    pub actual_passes: BTreeSet<String>,
    pub actual_skipped: BTreeSet<String>,
    pub expected_failures_correct: bool,
    pub expected_passes_correct: bool,
    pub rules: CodesetRules,
}

/// The `rules` of a codeset-gym grading: always `codeset_gym`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodesetRules {
    #[serde(rename = "codeset_gym")]
    CodesetGym,
}

impl VerificationResult {
    /// A SWE-bench grading; `stdout` is what of the log the result keeps.
    pub fn swebench(
        grade: &SwebenchGrade,
        execution_duration_seconds: f64,
        stdout: String,
    ) -> Self {
        let grading = Grading::Swebench(SwebenchGrading {
            eval_type: grade.eval_type,
            fail_to_pass_score: grade.fail_to_pass_score,
            invalid_reason: grade.log.invalid.as_ref().map(ToString::to_string),
            log_valid: grade.log.valid,
            parser: grade.parser,
            pass_to_pass_score: grade.pass_to_pass_score,
            resolution: grade.resolution,
            rules: grade.rules,
            status_map: grade.log.status_map.to_btree(),
            tests_status: grade.tests_status.clone(),
        });
        Self::from_lists(
            &grade.lists,
            grade.is_success,
            grading,
            execution_duration_seconds,
            stdout,
        )
    }

    /// A codeset-gym grading; `stdout` is what of the log the result keeps.
    pub fn codeset(grade: &CodesetGrade, execution_duration_seconds: f64, stdout: String) -> Self {
        let grading = Grading::Codeset(CodesetGrading {
            actual_failures: grade.actual_failures.clone(),
            actual_passes: grade.actual_passes.clone(),
            actual_skipped: grade.actual_skipped.clone(),
            expected_failures_correct: grade.expected_failures_correct,
            expected_passes_correct: grade.expected_passes_correct,
            rules: CodesetRules::CodesetGym,
        });
        Self::from_lists(
            &grade.lists,
            grade.correct,
            grading,
            execution_duration_seconds,
            stdout,
        )
    }

    fn from_lists(
        lists: &TestLists,
        is_success: bool,
        grading: Grading,
        execution_duration_seconds: f64,
        stdout: String,
    ) -> Self {
        Self {
            execution_duration_seconds,
            failed: lists.failed,
            failures: lists.failures.clone(),
            grading,
            is_success,
            passed: lists.passed,
            passes: lists.passes.clone(),
            skipped: lists.skipped,
            skips: lists.skips.clone(),
            stderr: String::new(),
            stdout,
            tool: TEST_SUITE_TOOL.to_string(),
            total: lists.total,
        }
    }
}
