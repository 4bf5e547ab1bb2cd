//! `VerificationResult` is what Kiln stores and serves for a verification job. Its JSON must
//! stay the shape Kiln wrote before the type existed (a `serde_json::json!` map built in
//! kiln-services, kept below as `legacy_json`), and stored results must read back as they were.
use std::fs;
use std::path::{Path, PathBuf};

use kiln_verify::{
    codeset, grade_swebench, parse_junit_document, CodesetGrade, EvalType, ExitCodeSource,
    ExpectedTests, GradeRequest, GradingRules, Parser, SwebenchGrade, VerificationResult,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The result as kiln-services built it before `VerificationResult` (verbatim but for the
/// inputs: a grade, the test time and the log tail).
fn legacy_swebench(grade: &SwebenchGrade, seconds: f64, stdout: &str) -> Value {
    let lists = &grade.lists;
    json!({
        "tool": "test_suite",
        "is_success": grade.is_success,
        "execution_duration_seconds": seconds,
        "total": lists.total, "passed": lists.passed, "failed": lists.failed, "skipped": lists.skipped,
        "passes": lists.passes, "failures": lists.failures, "skips": lists.skips,
        "stdout": stdout,
        "stderr": "",
        "grading": {
            "rules": grade.rules,
            "parser": grade.parser.to_string(),
            "eval_type": grade.eval_type,
            "resolution": grade.resolution,
            "fail_to_pass_score": grade.fail_to_pass_score,
            "pass_to_pass_score": grade.pass_to_pass_score,
            "log_valid": grade.log.valid,
            // Was Rust's `Debug` text before issue 14; now the documented `Display` text.
            "invalid_reason": grade.log.invalid.as_ref().map(ToString::to_string),
            "tests_status": grade.tests_status,
            "status_map": grade.log.status_map.to_btree(),
        },
    })
}

fn legacy_codeset(grade: &CodesetGrade, seconds: f64, stdout: &str) -> Value {
    let lists = &grade.lists;
    json!({
        "tool": "test_suite",
        "is_success": grade.correct,
        "execution_duration_seconds": seconds,
        "total": lists.total, "passed": lists.passed, "failed": lists.failed, "skipped": lists.skipped,
        "passes": lists.passes, "failures": lists.failures, "skips": lists.skips,
        "stdout": stdout,
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

#[derive(Deserialize)]
struct Case {
    #[serde(default)]
    parser: Option<Parser>,
    #[serde(default)]
    rules: GradingRules,
    #[serde(default)]
    eval_type: EvalType,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    fail_to_pass: Vec<String>,
    #[serde(default)]
    pass_to_pass: Vec<String>,
    #[serde(default)]
    fail_to_fail: Vec<String>,
}

/// Every recorded fixture input (`<parser>/<name>.log|xml`) with its cases.
fn fixtures() -> Vec<(PathBuf, Vec<Case>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut found = Vec::new();
    for dir in fs::read_dir(root).expect("fixtures dir") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() || dir.ends_with("sources") {
            continue;
        }
        for file in fs::read_dir(&dir).expect("parser dir") {
            let path = file.expect("entry").path();
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("log" | "xml")
            ) {
                continue;
            }
            let cases = path.with_extension("cases.json");
            let text = fs::read_to_string(&cases).expect("cases");
            found.push((path, serde_json::from_str(&text).expect("cases parse")));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// What the store does: JSON text out, the type back in, and the same JSON again.
fn assert_round_trips(result: &VerificationResult, legacy: &Value, at: &str) {
    let stored = serde_json::to_string(legacy).expect("encode");
    let read: VerificationResult = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("{at}: a stored result does not read back: {e}"));
    assert_eq!(&read, result, "{at}: read back differently");
    assert_eq!(
        &serde_json::to_value(&read).expect("encode"),
        legacy,
        "{at}: re-served differently"
    );
}

#[test]
fn every_fixture_grades_to_the_shape_kiln_always_stored() {
    let mut checked = 0;
    for (input, cases) in fixtures() {
        let text = fs::read_to_string(&input).expect("fixture");
        for (i, case) in cases.iter().enumerate() {
            let at = format!("{} case {i}", input.display());
            let stdout = format!("tail of {at}\u{0}ü");
            let (result, legacy) = if input.extension().is_some_and(|e| e == "xml") {
                let document = parse_junit_document(&text).expect("fixture XML");
                let grade = codeset::grade_codeset(
                    &document.cases,
                    &case.fail_to_pass,
                    &case.pass_to_pass,
                    &case.fail_to_fail,
                );
                (
                    VerificationResult::codeset(&grade, 1.25, stdout.clone()),
                    legacy_codeset(&grade, 1.25, &stdout),
                )
            } else {
                let grade = grade_swebench(&GradeRequest {
                    parser: case.parser.expect("log cases name a parser"),
                    log: &text,
                    expected: &ExpectedTests {
                        fail_to_pass: case.fail_to_pass.clone(),
                        pass_to_pass: case.pass_to_pass.clone(),
                        ..ExpectedTests::default()
                    },
                    eval_type: case.eval_type,
                    rules: case.rules,
                    exit_code: case
                        .exit_code
                        .map_or(ExitCodeSource::FromLog, ExitCodeSource::Trusted),
                });
                (
                    VerificationResult::swebench(&grade, 0.1, stdout.clone()),
                    legacy_swebench(&grade, 0.1, &stdout),
                )
            };
            assert_eq!(
                serde_json::to_value(&result).expect("encode"),
                legacy,
                "{at}: the result's JSON changed"
            );
            assert_round_trips(&result, &legacy, &at);
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "expected the recorded fixtures, checked {checked}"
    );
}

/// A result as a Kiln server stored it (SQLite `verification_jobs.result`, keys sorted as
/// serde_json wrote them), from the demo dataset's failing run.
const STORED_SWEBENCH: &str = r#"{"execution_duration_seconds":0.412,"failed":1,"failures":[{"cause":"FAILED","name":"tests/test_calc.py::test_add","status":"FAILED"}],"grading":{"eval_type":"pass_and_fail","fail_to_pass_score":0.0,"invalid_reason":null,"log_valid":true,"parser":"pytest","pass_to_pass_score":1.0,"resolution":"RESOLVED_NO","rules":"swebench5","status_map":{"tests/test_calc.py::test_add":"FAILED","tests/test_calc.py::test_sub":"PASSED"},"tests_status":{"FAIL_TO_FAIL":{"failure":[],"success":[]},"FAIL_TO_PASS":{"failure":["tests/test_calc.py::test_add"],"success":[]},"PASS_TO_FAIL":{"failure":[],"success":[]},"PASS_TO_PASS":{"failure":[],"success":["tests/test_calc.py::test_sub"]}}},"is_success":false,"passed":1,"passes":[{"name":"tests/test_calc.py::test_sub","status":"PASSED"}],"skipped":0,"skips":[],"stderr":"","stdout":">>>>> Start Test Output\nFAILED tests/test_calc.py::test_add\n>>>>> End Test Output\n","tool":"test_suite","total":2}"#;

const STORED_CODESET: &str = r#"{"execution_duration_seconds":3.5,"failed":0,"failures":[],"grading":{"actual_failures":["t.B"],"actual_passes":["t.A"],"actual_skipped":[],"expected_failures_correct":true,"expected_passes_correct":true,"rules":"codeset_gym"},"is_success":true,"passed":1,"passes":[{"name":"t.A","status":"PASSED"}],"skipped":0,"skips":[],"stderr":"","stdout":"","tool":"test_suite","total":1}"#;

#[test]
fn stored_results_read_back_and_serve_unchanged() {
    for stored in [STORED_SWEBENCH, STORED_CODESET] {
        let read: VerificationResult = serde_json::from_str(stored).expect("reads back");
        let as_stored: Value = serde_json::from_str(stored).expect("JSON");
        assert_eq!(serde_json::to_value(&read).expect("encode"), as_stored);
    }
    let swebench: VerificationResult = serde_json::from_str(STORED_SWEBENCH).expect("reads");
    assert!(matches!(
        swebench.grading,
        kiln_verify::result::Grading::Swebench(_)
    ));
    let codeset: VerificationResult = serde_json::from_str(STORED_CODESET).expect("reads");
    assert!(matches!(
        codeset.grading,
        kiln_verify::result::Grading::Codeset(_)
    ));
}

/// `grading.invalid_reason` is the documented text (README, "Grading"): a stable prefix per
/// kind and a readable detail, never Rust's `Debug` form (`HarnessMarker { marker: … }`).
#[test]
fn invalid_reason_is_documented_text() {
    let cases: [(&str, Option<i64>, &str); 4] = [
        (
            ">>>>> Start Test Output\nPASSED a\n>>>>> End Test Output\n>>>>> Tests Timed Out\n",
            None,
            "harness marker: the log contains \">>>>> Tests Timed Out\"",
        ),
        (
            "PASSED a\n",
            None,
            "missing test output markers: the log lacks the start or end of the test output",
        ),
        (
            ">>>>> Start Test Output\nPASSED a\n>>>>> End Test Output\n",
            Some(2),
            "exit code without failures: the tests exited 2 but no test failed",
        ),
        (
            ">>>>> Start Test Output\n>>>>> End Test Output\n",
            Some(0),
            "no tests ran: nothing parsed and nothing shows the suite ran",
        ),
    ];
    for (log, exit_code, want) in cases {
        let grade = grade_swebench(&GradeRequest {
            parser: if want.starts_with("no tests ran") {
                Parser::Jest
            } else {
                Parser::Pytest
            },
            log,
            expected: &ExpectedTests {
                fail_to_pass: vec!["a".into()],
                ..ExpectedTests::default()
            },
            eval_type: EvalType::PassAndFail,
            rules: GradingRules::Swebench5,
            exit_code: exit_code.map_or(ExitCodeSource::FromLog, ExitCodeSource::Trusted),
        });
        let json = serde_json::to_value(VerificationResult::swebench(&grade, 0.1, String::new()))
            .expect("serialises");
        assert_eq!(
            json["grading"]["invalid_reason"],
            json!(want),
            "log {log:?}"
        );
        assert_eq!(json["grading"]["log_valid"], json!(false));
    }
}
