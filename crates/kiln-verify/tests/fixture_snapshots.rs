//! Snapshot tests over every recorded fixture: each `<name>.log` (or JUnit `<name>.xml`)
//! with `<name>.cases.json` is graded and compared with `<name>.snap.json`.
//! `KILN_UPDATE_SNAPSHOTS=1 cargo test -p kiln-verify` rewrites the snapshots; review
//! the diff. The same fixtures are graded by the Python reference in `tests/parity/`.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_verify::{
    codeset, grade_swebench, parse, parse_junit_document, EvalType, ExitCodeSource, ExpectedTests,
    GradeRequest, GradingRules, Parser,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
struct Case {
    label: String,
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

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn grade_log(log: &str, case: &Case) -> Value {
    let parser = case.parser.expect("log cases name a parser");
    let expected = ExpectedTests {
        fail_to_pass: case.fail_to_pass.clone(),
        pass_to_pass: case.pass_to_pass.clone(),
        ..ExpectedTests::default()
    };
    let grade = grade_swebench(&GradeRequest {
        parser,
        log,
        expected: &expected,
        eval_type: case.eval_type,
        rules: case.rules,
        exit_code: case
            .exit_code
            .map_or(ExitCodeSource::FromLog, ExitCodeSource::Trusted),
    });
    let parsed = match parse(parser, log, case.rules) {
        Ok(map) => json!(map),
        Err(e) => json!({ "error": e.to_string() }),
    };
    json!({
        "parsed_raw": parsed,
        "status_map": grade.log.status_map,
        "valid": grade.log.valid,
        "invalid": grade.log.invalid,
        "region": grade.log.region,
        "tests_status": grade.tests_status,
        "resolution": grade.resolution,
        "is_success": grade.is_success,
        "lists": grade.lists,
    })
}

fn grade_xml(xml: &str, case: &Case) -> Value {
    let document = parse_junit_document(xml).expect("fixture XML parses");
    let grade = codeset::grade_codeset(
        &document.cases,
        &case.fail_to_pass,
        &case.pass_to_pass,
        &case.fail_to_fail,
    );
    let status_map = parse(Parser::Junit, xml, GradingRules::default()).expect("status map");
    json!({ "cases": document.cases, "status_map": status_map, "codeset": grade })
}

fn fixture_inputs() -> Vec<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    for dir in fs::read_dir(fixtures_dir()).expect("fixtures dir") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() || dir.ends_with("sources") {
            continue;
        }
        for file in fs::read_dir(&dir).expect("parser dir") {
            let path = file.expect("entry").path();
            let is_input = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("log" | "xml")
            );
            if is_input {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("utf-8 name");
                found.push((path.clone(), dir.join(format!("{stem}.cases.json"))));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_fixture_matches_its_snapshot() {
    let update = std::env::var_os("KILN_UPDATE_SNAPSHOTS").is_some();
    let mut mismatches = Vec::new();
    let inputs = fixture_inputs();
    assert!(
        inputs.len() >= 20,
        "expected the recorded fixtures, found {}",
        inputs.len()
    );
    for (input, cases_path) in inputs {
        let text = fs::read_to_string(&input).expect("read fixture");
        let cases: Vec<Case> = serde_json::from_str(
            &fs::read_to_string(&cases_path)
                .unwrap_or_else(|e| panic!("{}: {e}", cases_path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", cases_path.display()));
        let is_xml = input.extension().is_some_and(|e| e == "xml");
        let mut actual = Map::new();
        for case in &cases {
            let value = if is_xml {
                grade_xml(&text, case)
            } else {
                grade_log(&text, case)
            };
            actual.insert(case.label.clone(), value);
        }
        let actual = Value::Object(actual);
        let snap_path = input.with_extension("snap.json");
        if update {
            let pretty = serde_json::to_string_pretty(&actual).expect("json");
            fs::write(&snap_path, pretty + "\n").expect("write snapshot");
            continue;
        }
        let expected: Value = fs::read_to_string(&snap_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        if expected != actual {
            mismatches.push(snap_path.display().to_string());
        }
    }
    assert!(
        mismatches.is_empty(),
        "snapshots differ (rerun with KILN_UPDATE_SNAPSHOTS=1 and review): {mismatches:#?}"
    );
}
