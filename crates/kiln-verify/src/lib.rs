//! Kiln's verifier: test-output parsers and grading, as pure functions over strings.
//!
//! A verification result is the reward agents are trained on, so every rule here is a
//! port of a reference harness, quirks included, and is parity-tested against it
//! (`tests/parity/` in the repository root):
//! - SWE-bench (`swebench==5.0.2` by default, `4.1.0` selectable through
//!   [`GradingRules`]): [`parse`], [`evaluate_log`], [`tests_status`], [`resolution`],
//!   all of it in one call with [`grade_swebench`], and [`swebench_report`] for
//!   `report.json`;
//! - codeset-gym (`codeset_gym==0.2.1` over `junitparser==3.2.0`): [`grade_codeset`].
//!
//! No I/O happens here: callers read logs and reports and pass their text in.
#![forbid(unsafe_code)]

pub mod codeset;
pub mod grading;
pub mod infra;
pub mod log_eval;
pub mod parsers;
mod python_str;
pub mod report;
pub mod repos;
pub mod result;
pub mod rules;
pub mod status;

pub use codeset::{grade_codeset, report_locations, CodesetGrade, ReportLocation};
pub use grading::{
    classify, fail_to_pass_score, pass_to_pass_score, resolution, resolve_case, tests_status,
    ExpectedKind, ExpectedTests, Outcome, Resolution, SuccessFailure, TestsStatus,
};
pub use log_eval::{
    evaluate_log, evaluate_log_with, test_output_region, ExitCodeSource, InvalidLog, LogEvaluation,
    ParsedRegion,
};
pub use parsers::junit::{parse_junit_document, JunitCase, JunitDocument, JunitOutcome};
pub use parsers::{parse, ParseError, Parser, UnknownParser};
pub use report::{
    grade_swebench, swebench_report, test_lists, FailureCause, GradeRequest, InstanceReport,
    SwebenchGrade, TestEntry, TestLists,
};
pub use repos::{
    eval_type_for_repo, parser_for_repo, python_test_command, python_test_command_for_patch,
    test_directives,
};
pub use result::{CodesetGrading, CodesetRules, Grading, SwebenchGrading, VerificationResult};
pub use rules::{EvalType, GradingRules};
pub use status::{StatusMap, TestStatus};
