//! Reading SWE-bench-style task records (a JSON array or JSON lines) into samples.
//! Every problem is collected and reported with its line or record number; a file with
//! any problem imports nothing.
use kiln_store::{NewSample, SampleRecord};
use serde_json::{Map, Value};

/// One problem in an import file. `location` is `line N` (JSON lines) or `record N`
/// (a JSON array), 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    pub location: String,
    pub reason: String,
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// Fields Kiln models itself; everything else goes to `SampleRecord::extra` verbatim.
const KNOWN: &[&str] = &[
    "sample_id",
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "non_code_patch",
    "problem_statement",
    "hints_text",
    "environment_setup_commit",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "FAIL_TO_FAIL",
    "fail_to_pass",
    "pass_to_pass",
    "fail_to_fail",
    "language",
    "verifier",
    "description",
    "image",
    "version",
];

const VERIFIERS: &[&str] = &["test_suite", "static_analysis", "linter", "custom"];
const MAX_ID_LEN: usize = 200;

/// Parses a whole import file. Returns every sample, or every problem found.
pub fn parse_records(text: &str) -> Result<Vec<NewSample>, Vec<RecordProblem>> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut problems = Vec::new();
    let mut samples = Vec::new();
    let mut values: Vec<(String, Value)> = Vec::new();
    if trimmed.starts_with('[') {
        match serde_json::from_str::<Vec<Value>>(trimmed) {
            Ok(array) => {
                for (i, value) in array.into_iter().enumerate() {
                    values.push((format!("record {}", i + 1), value));
                }
            }
            Err(e) => {
                return Err(vec![RecordProblem {
                    location: format!("line {}", e.line()),
                    reason: format!("not a valid JSON array: {e}"),
                }])
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(value) => values.push((format!("line {}", i + 1), value)),
                Err(e) => problems.push(RecordProblem {
                    location: format!("line {}", i + 1),
                    reason: format!("invalid JSON: {e}"),
                }),
            }
        }
    }
    for (location, value) in values {
        match parse_one(value) {
            Ok(sample) => samples.push((location, sample)),
            Err(reason) => problems.push(RecordProblem { location, reason }),
        }
    }
    // Report in file order, whatever stage found the problem.
    problems.sort_by_key(|p| {
        p.location
            .split(' ')
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    });
    if samples.is_empty() && problems.is_empty() {
        problems.push(RecordProblem {
            location: "file".into(),
            reason: "no records found".into(),
        });
    }
    let mut seen = std::collections::HashMap::new();
    for (location, sample) in &samples {
        if let Some(first) = seen.insert(sample.sample_id.clone(), location.clone()) {
            problems.push(RecordProblem {
                location: location.clone(),
                reason: format!(
                    "sample id {:?} appears again (first at {first})",
                    sample.sample_id
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(samples.into_iter().map(|(_, s)| s).collect())
    } else {
        Err(problems)
    }
}

fn parse_one(value: Value) -> Result<NewSample, String> {
    let Value::Object(mut obj) = value else {
        return Err("a record must be a JSON object".into());
    };
    let instance_id = required_str(&obj, "instance_id")?;
    check_id("instance_id", &instance_id)?;
    let sample_id = match optional_str(&obj, "sample_id")? {
        Some(id) => id,
        None => instance_id.clone(),
    };
    check_id("sample_id", &sample_id)?;
    let repo = required_str(&obj, "repo")?;
    check_repo(&repo)?;
    let base_commit = required_str(&obj, "base_commit")?;
    if !(4..=64).contains(&base_commit.len()) || !base_commit.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(format!(
            "base_commit {base_commit:?} is not a git commit hash"
        ));
    }
    let verifier = optional_str(&obj, "verifier")?.unwrap_or_else(|| "test_suite".into());
    if !VERIFIERS.contains(&verifier.as_str()) {
        return Err(format!(
            "verifier must be one of {VERIFIERS:?}, not {verifier:?}"
        ));
    }
    let record = SampleRecord {
        environment_setup_commit: optional_str(&obj, "environment_setup_commit")?
            .unwrap_or_else(|| base_commit.clone()),
        instance_id,
        base_commit,
        patch: optional_str(&obj, "patch")?.unwrap_or_default(),
        test_patch: optional_str(&obj, "test_patch")?.unwrap_or_default(),
        non_code_patch: optional_str(&obj, "non_code_patch")?.unwrap_or_default(),
        problem_statement: optional_str(&obj, "problem_statement")?.unwrap_or_default(),
        hints_text: optional_str(&obj, "hints_text")?.unwrap_or_default(),
        fail_to_pass: test_list(&obj, "FAIL_TO_PASS", "fail_to_pass")?,
        pass_to_pass: test_list(&obj, "PASS_TO_PASS", "pass_to_pass")?,
        fail_to_fail: test_list(&obj, "FAIL_TO_FAIL", "fail_to_fail")?,
        language: optional_str(&obj, "language")?.unwrap_or_else(|| "python".into()),
        verifier,
        description: optional_str(&obj, "description")?,
        image: optional_str(&obj, "image")?,
        swebench_version: match obj.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err("version must be a string or a number".into()),
        },
        repo,
        extra: Map::new(),
    };
    for key in KNOWN {
        obj.remove(*key);
    }
    Ok(NewSample {
        sample_id,
        record: SampleRecord {
            extra: obj,
            ..record
        },
    })
}

fn required_str(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match optional_str(obj, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(format!("{key} must not be empty")),
        None => Err(format!("missing required field {key}")),
    }
}

fn optional_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} must be a string, not {}", kind(other))),
    }
}

/// Test lists come as arrays or, in the public SWE-bench datasets, as JSON-encoded
/// strings of arrays. Both are accepted; anything else is an error, not an empty list.
fn test_list(obj: &Map<String, Value>, upper: &str, lower: &str) -> Result<Vec<String>, String> {
    let (key, value) = match (obj.get(upper), obj.get(lower)) {
        (Some(v), _) => (upper, v),
        (None, Some(v)) => (lower, v),
        (None, None) => return Ok(Vec::new()),
    };
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items.clone(),
        Value::String(s) if s.trim().is_empty() => return Ok(Vec::new()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(items)) => items,
            _ => {
                return Err(format!(
                    "{key} is a string but not a JSON-encoded list of test names"
                ))
            }
        },
        other => {
            return Err(format!(
                "{key} must be a list of test names, not {}",
                kind(other)
            ))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            other => Err(format!("{key}[{i}] must be a string, not {}", kind(&other))),
        })
        .collect()
}

/// Sample ids appear in URL paths and file names: keep them to a safe alphabet.
fn check_id(field: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {id:?} must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 _ - . and not start with a dot"
        ))
    }
}

/// `owner/name`, each part a safe path component (repositories are kept on disk by name).
pub fn check_repo(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if parts.len() == 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(format!("repo {repo:?} must look like owner/name"))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""repo":"psf/requests","base_commit":"0123abcd""#;

    #[test]
    fn reads_json_lines_with_encoded_and_plain_lists() {
        let text = format!(
            "{{\"instance_id\":\"a-1\",{BASE},\"FAIL_TO_PASS\":\"[\\\"t1\\\", \\\"t2\\\"]\",\"PASS_TO_PASS\":[\"p\"],\"created_at\":\"2024\"}}\n\n{{\"instance_id\":\"b-2\",{BASE},\"version\":\"3.0\"}}\n"
        );
        let samples = parse_records(&text).expect("parses");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].record.fail_to_pass, vec!["t1", "t2"]);
        assert_eq!(samples[0].record.pass_to_pass, vec!["p"]);
        assert_eq!(
            samples[0].record.extra.get("created_at"),
            Some(&Value::String("2024".into()))
        );
        assert_eq!(samples[1].record.swebench_version.as_deref(), Some("3.0"));
        assert_eq!(samples[1].record.environment_setup_commit, "0123abcd");
    }

    #[test]
    fn reads_a_json_array() {
        let text =
            format!("[{{\"instance_id\":\"a-1\",{BASE}}}, {{\"instance_id\":\"a-2\",{BASE}}}]");
        assert_eq!(parse_records(&text).expect("parses").len(), 2);
    }

    #[test]
    fn reports_every_problem_by_line() {
        let text = format!(
            "{{\"instance_id\":\"ok-1\",{BASE}}}\nnot json\n{{\"instance_id\":\"x\",\"repo\":\"a/b\"}}\n{{\"instance_id\":\"bad id\",{BASE}}}\n{{\"instance_id\":\"t\",{BASE},\"FAIL_TO_PASS\":\"oops\"}}\n{{\"instance_id\":\"ok-1\",{BASE}}}\n"
        );
        let problems = parse_records(&text).unwrap_err();
        let rendered: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(rendered.len(), 5, "{rendered:#?}");
        assert!(
            rendered[0].starts_with("line 2: invalid JSON"),
            "{rendered:#?}"
        );
        assert!(rendered[1].contains("line 3: missing required field base_commit"));
        assert!(rendered[2].contains("line 4: instance_id \"bad id\""));
        assert!(rendered[3].contains("line 5: FAIL_TO_PASS is a string but not"));
        assert!(rendered[4].contains("line 6: sample id \"ok-1\" appears again (first at line 1)"));
    }

    #[test]
    fn rejects_unsafe_repos_and_commits() {
        for (repo, commit) in [
            ("../etc", "abcd"),
            ("a/b/c", "abcd"),
            ("a/..", "abcd"),
            ("a/b", "zzzz"),
            ("a/b", "ab"),
        ] {
            let text = format!(
                "{{\"instance_id\":\"i\",\"repo\":\"{repo}\",\"base_commit\":\"{commit}\"}}"
            );
            assert!(parse_records(&text).is_err(), "{repo} {commit}");
        }
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(parse_records("\n\n").is_err());
        assert!(parse_records("[]").is_err());
    }
}
