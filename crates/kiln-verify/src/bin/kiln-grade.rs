//! `kiln-grade`: grade one log from a JSON request on stdin, print JSON on stdout.
//!
//! Request: `{"parser", "log", "fail_to_pass", "pass_to_pass", "rules"?, "eval_type"?,
//! "exit_code"?}`; `exit_code` makes the validity check use it instead of the log's
//! marker. Response: `{"parsed": <status map of the parser over the raw log>,
//! "parsed_keys", "parse_error"?, "grade": SwebenchGrade, "status_map_keys",
//! "report": report.json entry}` (`*_keys`: insertion order of the maps).
//!
//! With `"mode": "codeset"` the request is `{"mode", "xml", "fail_to_pass",
//! "pass_to_pass", "fail_to_fail"}` and the response `{"cases", "codeset"}`.
//! Used by the parity tests against the Python references.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;

use kiln_verify::{
    grade_codeset, grade_swebench, parse, parse_junit_document, swebench_report, EvalType,
    ExitCodeSource, ExpectedTests, GradeRequest, GradingRules, Parser,
};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    parser: Parser,
    log: String,
    #[serde(default)]
    fail_to_pass: Vec<String>,
    #[serde(default)]
    pass_to_pass: Vec<String>,
    #[serde(default)]
    rules: GradingRules,
    #[serde(default)]
    eval_type: EvalType,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default = "default_instance")]
    instance_id: String,
}

fn default_instance() -> String {
    "instance".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodesetRequest {
    #[allow(dead_code)]
    mode: String,
    xml: String,
    #[serde(default)]
    fail_to_pass: Vec<String>,
    #[serde(default)]
    pass_to_pass: Vec<String>,
    #[serde(default)]
    fail_to_fail: Vec<String>,
}

fn run_codeset(request: CodesetRequest) -> Result<serde_json::Value, String> {
    let document = parse_junit_document(&request.xml).map_err(|e| e.to_string())?;
    let grade = grade_codeset(
        &document.cases,
        &request.fail_to_pass,
        &request.pass_to_pass,
        &request.fail_to_fail,
    );
    Ok(json!({ "cases": document.cases, "codeset": grade }))
}

fn run() -> Result<serde_json::Value, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&input).map_err(|e| format!("invalid JSON: {e}"))?;
    if value.get("mode").and_then(|m| m.as_str()) == Some("codeset") {
        let request: CodesetRequest =
            serde_json::from_value(value).map_err(|e| format!("invalid request: {e}"))?;
        return run_codeset(request);
    }
    let request: Request =
        serde_json::from_value(value).map_err(|e| format!("invalid request: {e}"))?;
    let expected = ExpectedTests {
        fail_to_pass: request.fail_to_pass,
        pass_to_pass: request.pass_to_pass,
        ..ExpectedTests::default()
    };
    let grade = grade_swebench(&GradeRequest {
        parser: request.parser,
        log: &request.log,
        expected: &expected,
        eval_type: request.eval_type,
        rules: request.rules,
        exit_code: request
            .exit_code
            .map_or(ExitCodeSource::FromLog, ExitCodeSource::Trusted),
    });
    let parsed = parse(request.parser, &request.log, request.rules);
    let mut report = swebench_report(&request.instance_id, Some(&grade), true);
    for entry in report.values_mut() {
        entry.classify_unfound(&request.log);
    }
    // JSON objects built through `json!` are sorted; key order matters for prefix
    // matching, so it travels separately.
    let status_map_keys: Vec<&str> = grade.log.status_map.iter().map(|(k, _)| k).collect();
    let mut out = json!({
        "grade": grade,
        "report": report,
        "status_map_keys": status_map_keys,
    });
    match parsed {
        Ok(map) => {
            out["parsed_keys"] = json!(map.iter().map(|(k, _)| k).collect::<Vec<_>>());
            out["parsed"] = json!(map);
        }
        Err(error) => out["parse_error"] = json!(error.to_string()),
    }
    Ok(out)
}

fn main() -> ExitCode {
    match run() {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kiln-grade: {message}");
            ExitCode::from(2)
        }
    }
}
