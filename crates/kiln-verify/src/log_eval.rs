//! From a whole evaluation log to a status map and a validity verdict: SWE-bench's
//! `get_logs_eval`.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::parsers::{parse, ParseError, Parser};
use crate::python_str::python_regex;
use crate::rules::GradingRules;
use crate::status::{StatusMap, TestStatus};

pub const APPLY_PATCH_FAIL: &str = ">>>>> Patch Apply Failed";
pub const RESET_FAILED: &str = ">>>>> Reset Failed";
pub const TESTS_ERROR: &str = ">>>>> Tests Errored";
pub const TESTS_TIMEOUT: &str = ">>>>> Tests Timed Out";
pub const START_TEST_OUTPUT: &str = ">>>>> Start Test Output";
pub const END_TEST_OUTPUT: &str = ">>>>> End Test Output";
pub const TEST_EXIT_CODE: &str = ">>>>> Test Exit Code";

/// Markers whose mere presence anywhere in the log invalidates it.
const BAD_MARKERS: [&str; 4] = [APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT];

/// 5.x: evidence that a runner executed, for logs whose status map is empty.
static SUITE_RAN: LazyLock<Regex> = LazyLock::new(|| {
    python_regex(concat!(
        r"(?m)Executed [1-9]\d* of \d+",
        r"|TOTAL: [1-9]\d* (?:SUCCESS|FAILED)",
        r"|[1-9]\d* passing",
        r"|Tests:{s}+[1-9]\d*",
        r"|Test Suites:{s}+(?:\d+ {w}+, )*[1-9]\d* total",
        r"|^# tests [1-9]\d*",
        r"|[1-9]\d* specs?, \d+ failures?",
        r"|': ok$",
    ))
});

static EXIT_CODE: LazyLock<Regex> =
    LazyLock::new(|| python_regex(r">>>>> Test Exit Code:{s}*(-?\d+)"));

/// Why a log cannot be graded; an invalid log is never a success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InvalidLog {
    /// A harness failure marker (patch apply, reset, error, timeout) is in the log.
    HarnessMarker { marker: String },
    /// The start or end test-output marker is missing.
    MissingMarkers,
    /// Nothing parsed and nothing shows the suite ran (5.x).
    NoTestsRan,
    /// The test command exited non-zero but no test is FAILED or ERROR: the log does
    /// not describe the run that happened, e.g. forged PASSED lines (5.x).
    ExitCodeWithoutFailures { exit_code: i64 },
    /// The reference parser raises on this log.
    ParserFailed { message: String },
}

/// The stable, documented text of `grading.invalid_reason` (README, "Grading"): a fixed
/// prefix per kind (`harness marker:`, `missing test output markers`, `no tests ran`,
/// `exit code without failures:`, `parser failed:`), then the detail for people. Scripts
/// may match on the prefix; it never changes.
impl std::fmt::Display for InvalidLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidLog::HarnessMarker { marker } => {
                write!(f, "harness marker: the log contains {marker:?}")
            }
            InvalidLog::MissingMarkers => f.write_str(
                "missing test output markers: the log lacks the start or end of the test output",
            ),
            InvalidLog::NoTestsRan => {
                f.write_str("no tests ran: nothing parsed and nothing shows the suite ran")
            }
            InvalidLog::ExitCodeWithoutFailures { exit_code } => write!(
                f,
                "exit code without failures: the tests exited {exit_code} but no test failed"
            ),
            InvalidLog::ParserFailed { message } => write!(f, "parser failed: {message}"),
        }
    }
}

/// Which text produced the status map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParsedRegion {
    /// Between the start and end markers.
    Markers,
    /// The region parsed to nothing, so the whole log was parsed.
    WholeLog,
    /// Nothing was parsed (invalid before parsing).
    None,
}

/// The outcome of reading one evaluation log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvaluation {
    /// Empty whenever the log is invalid, as in the reference.
    pub status_map: StatusMap,
    /// The reference's `found` / `patch_successfully_applied`.
    pub valid: bool,
    pub invalid: Option<InvalidLog>,
    pub region: ParsedRegion,
    /// The exit code the validity check used (5.x), if any.
    pub exit_code: Option<i64>,
    pub rules: GradingRules,
}

impl LogEvaluation {
    fn invalid(reason: InvalidLog, region: ParsedRegion, rules: GradingRules) -> Self {
        Self {
            status_map: StatusMap::new(),
            valid: false,
            invalid: Some(reason),
            region,
            exit_code: None,
            rules,
        }
    }
}

/// Python reads the log with universal newlines: `\r\n` and lone `\r` become `\n`.
/// Without this a CRLF log would put `\r` into names.
pub fn universal_newlines(log: &str) -> String {
    log.replace("\r\n", "\n").replace('\r', "\n")
}

/// `content.split(START)[1].split(END)[0]`: after the first start marker, up to the
/// next start marker, then up to the first end marker.
pub fn test_output_region(log: &str) -> Option<&str> {
    if !(log.contains(START_TEST_OUTPUT) && log.contains(END_TEST_OUTPUT)) {
        return None;
    }
    let after_start = log.split(START_TEST_OUTPUT).nth(1)?;
    after_start.split(END_TEST_OUTPUT).next()
}

/// The first recorded `>>>>> Test Exit Code: N` in the log (first match wins, as in
/// the reference, so a test that prints the marker itself is believed).
pub fn recorded_exit_code(log: &str) -> Option<i64> {
    let digits = EXIT_CODE.captures(log)?.get(1)?.as_str();
    // Python's int() never overflows; a huge code is still "non-zero".
    Some(digits.parse::<i64>().unwrap_or(if digits.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

/// Where the validity check takes the test command's exit code from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCodeSource {
    /// Search the log for `>>>>> Test Exit Code: N`, as the reference does.
    FromLog,
    /// The exit code the runtime observed itself; tests cannot forge it. Departs from the
    /// reference only when the log carries a forged or missing marker.
    Trusted(i64),
}

/// `get_logs_eval` of the given rules over a whole log (markers included).
pub fn evaluate_log(parser: Parser, log: &str, rules: GradingRules) -> LogEvaluation {
    evaluate_log_with(parser, log, rules, ExitCodeSource::FromLog)
}

pub fn evaluate_log_with(
    parser: Parser,
    log: &str,
    rules: GradingRules,
    exit_code: ExitCodeSource,
) -> LogEvaluation {
    let content = universal_newlines(log);
    if let Some(marker) = BAD_MARKERS.iter().find(|m| content.contains(*m)) {
        let reason = InvalidLog::HarnessMarker {
            marker: (*marker).to_owned(),
        };
        return LogEvaluation::invalid(reason, ParsedRegion::None, rules);
    }
    let Some(region) = test_output_region(&content) else {
        return LogEvaluation::invalid(InvalidLog::MissingMarkers, ParsedRegion::None, rules);
    };
    let parsed = parse(parser, region, rules).and_then(|map| {
        if map.is_empty() {
            parse(parser, &content, rules).map(|m| (m, ParsedRegion::WholeLog))
        } else {
            Ok((map, ParsedRegion::Markers))
        }
    });
    let (status_map, region) = match parsed {
        Ok(result) => result,
        Err(error) => {
            let reason = parser_failed(&error);
            return LogEvaluation::invalid(reason, ParsedRegion::Markers, rules);
        }
    };
    let mut evaluation = LogEvaluation {
        status_map,
        valid: true,
        invalid: None,
        region,
        exit_code: None,
        rules,
    };
    if rules == GradingRules::Swebench4 {
        return evaluation;
    }
    if evaluation.status_map.is_empty() && !SUITE_RAN.is_match(&content) {
        return LogEvaluation::invalid(InvalidLog::NoTestsRan, region, rules);
    }
    let code = match exit_code {
        ExitCodeSource::FromLog => recorded_exit_code(&content),
        ExitCodeSource::Trusted(code) => Some(code),
    };
    evaluation.exit_code = code;
    let any_failure = evaluation
        .status_map
        .iter()
        .any(|(_, s)| matches!(s, TestStatus::Failed | TestStatus::Error));
    if let Some(code) = code.filter(|c| *c != 0) {
        if !evaluation.status_map.is_empty() && !any_failure {
            let mut invalid = LogEvaluation::invalid(
                InvalidLog::ExitCodeWithoutFailures { exit_code: code },
                region,
                rules,
            );
            invalid.exit_code = Some(code);
            return invalid;
        }
    }
    evaluation
}

fn parser_failed(error: &ParseError) -> InvalidLog {
    InvalidLog::ParserFailed {
        message: error.to_string(),
    }
}
