//! What verifying a sample means: its test command, its parser, its grading rules and the
//! files its test patch touches, read from the record or derived from the repository as
//! the SWE-bench harness does.
use kiln_store::SampleRecord;
use kiln_verify::{EvalType, ExpectedTests, GradingRules, Parser};

/// The harness's default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// Which reference a sample is graded against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grading {
    /// The SWE-bench harness: test patch, test command, log parser, 5.x (or 4.x) rules.
    Swebench,
    /// codeset-gym: the image's `/verifier.sh` writes JUnit XML to the language's report
    /// paths; success iff the passing and failing sets are exactly the expected ones.
    Codeset { language: String },
}

#[derive(Debug, Clone)]
pub struct VerifyPlan {
    pub grading: Grading,
    pub base_commit: String,
    pub test_patch: String,
    /// Paths the test patch touches (old and new sides), relative to /testbed.
    pub test_files: Vec<String>,
    /// Paths the test patch creates (absent at base_commit).
    pub created_files: Vec<String>,
    pub test_cmd: String,
    pub parser: Parser,
    pub rules: GradingRules,
    pub eval_type: EvalType,
    pub expected: ExpectedTests,
    pub timeout_secs: u64,
    /// `git apply` flags: the harness uses `--reject` for non-Python repositories.
    pub apply_flags: &'static str,
}

/// Builds the plan, or says what the record lacks.
pub fn plan_for(record: &SampleRecord) -> Result<VerifyPlan, String> {
    let extra = |key: &str| {
        record
            .extra
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    if extra("grading").as_deref() == Some("codeset") {
        if kiln_verify::report_locations(&record.language).is_none() {
            return Err(format!(
                "codeset grading knows no report path for language {:?}",
                record.language
            ));
        }
        let (test_files, created_files) = patch_files(&record.test_patch);
        return Ok(VerifyPlan {
            grading: Grading::Codeset {
                language: record.language.clone(),
            },
            base_commit: record.base_commit.clone(),
            test_patch: String::new(),
            test_files,
            created_files,
            test_cmd: "/verifier.sh".into(),
            parser: Parser::Junit,
            rules: GradingRules::Swebench5,
            eval_type: EvalType::PassAndFail,
            expected: ExpectedTests {
                fail_to_pass: record.fail_to_pass.clone(),
                pass_to_pass: record.pass_to_pass.clone(),
                fail_to_fail: record.fail_to_fail.clone(),
                pass_to_fail: Vec::new(),
            },
            timeout_secs: record
                .extra
                .get("verify_timeout_secs")
                .and_then(|v| v.as_u64())
                .unwrap_or(DEFAULT_TIMEOUT_SECS),
            apply_flags: "-v",
        });
    }
    let parser = match extra("log_parser") {
        Some(name) => name
            .parse::<Parser>()
            .map_err(|e| format!("log_parser {name:?}: {e}"))?,
        None => kiln_verify::parser_for_repo(&record.repo).ok_or_else(|| {
            format!(
                "no log parser is known for {}; set log_parser in the record",
                record.repo
            )
        })?,
    };
    let test_cmd = match extra("test_cmd") {
        Some(cmd) => cmd,
        None => record
            .swebench_version
            .as_deref()
            .and_then(|v| {
                kiln_verify::python_test_command_for_patch(&record.repo, v, &record.test_patch)
            })
            .ok_or_else(|| {
                format!(
                    "no test command is known for {} (version {:?}); set test_cmd in the record",
                    record.repo, record.swebench_version
                )
            })?,
    };
    let rules = match extra("grading_rules").as_deref() {
        None | Some("swebench5") => GradingRules::Swebench5,
        Some("swebench4") => GradingRules::Swebench4,
        Some(other) => {
            return Err(format!(
                "grading_rules must be swebench5 or swebench4, not {other:?}"
            ))
        }
    };
    let timeout_secs = record
        .extra
        .get("verify_timeout_secs")
        .and_then(|v| v.as_u64())
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    let (test_files, created_files) = patch_files(&record.test_patch);
    Ok(VerifyPlan {
        grading: Grading::Swebench,
        base_commit: record.base_commit.clone(),
        test_patch: record.test_patch.clone(),
        test_files,
        created_files,
        test_cmd,
        parser,
        rules,
        eval_type: kiln_verify::eval_type_for_repo(&record.repo, rules),
        expected: ExpectedTests {
            fail_to_pass: record.fail_to_pass.clone(),
            pass_to_pass: record.pass_to_pass.clone(),
            fail_to_fail: record.fail_to_fail.clone(),
            pass_to_fail: Vec::new(),
        },
        timeout_secs,
        apply_flags: if record.language == "python" {
            "-v"
        } else {
            "--verbose --reject"
        },
    })
}

/// The files a unified diff touches, and those it creates (`--- /dev/null`).
fn patch_files(patch: &str) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut created = Vec::new();
    let mut previous_old: Option<&str> = None;
    for line in patch.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // "a/X b/Y": take both sides (a rename touches both).
            if let Some((a, b)) = rest.split_once(" b/") {
                for path in [a.trim_start_matches("a/"), b] {
                    if !files.iter().any(|f| f == path) {
                        files.push(path.to_string());
                    }
                }
            }
        } else if let Some(old) = line.strip_prefix("--- ") {
            previous_old = Some(old);
        } else if let Some(new) = line.strip_prefix("+++ b/") {
            if previous_old == Some("/dev/null") && !created.iter().any(|f| f == new) {
                created.push(new.to_string());
            }
        }
    }
    (files, created)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "diff --git a/tests/test_a.py b/tests/test_a.py\n--- a/tests/test_a.py\n+++ b/tests/test_a.py\n@@ -1 +1 @@\n-x\n+y\ndiff --git a/tests/test_new.py b/tests/test_new.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/test_new.py\n@@ -0,0 +1 @@\n+z\n";

    #[test]
    fn finds_touched_and_created_files() {
        let (files, created) = patch_files(PATCH);
        assert_eq!(files, ["tests/test_a.py", "tests/test_new.py"]);
        assert_eq!(created, ["tests/test_new.py"]);
        let crlf = PATCH.replace('\n', "\r\n");
        assert_eq!(patch_files(&crlf).1, ["tests/test_new.py"]);
    }

    #[test]
    fn plans_from_the_record_or_the_repository() {
        let mut record = SampleRecord {
            repo: "acme/x".into(),
            base_commit: "abc".into(),
            test_patch: PATCH.into(),
            ..Default::default()
        };
        assert!(plan_for(&record).unwrap_err().contains("no log parser"));
        record.extra.insert("log_parser".into(), "pytest".into());
        assert!(plan_for(&record).unwrap_err().contains("no test command"));
        record.extra.insert("test_cmd".into(), "pytest -rA".into());
        let plan = plan_for(&record).expect("plan");
        assert_eq!(
            (plan.parser, plan.test_cmd.as_str(), plan.timeout_secs),
            (Parser::Pytest, "pytest -rA", 1800)
        );
        record.extra.insert("log_parser".into(), "nonsense".into());
        assert!(plan_for(&record).is_err());

        let django = SampleRecord {
            repo: "django/django".into(),
            swebench_version: Some("3.0".into()),
            test_patch: "diff --git a/tests/queries/tests.py b/tests/queries/tests.py\n".into(),
            language: "python".into(),
            ..Default::default()
        };
        let plan = plan_for(&django).expect("django is known");
        assert_eq!(plan.parser, Parser::Django);
        assert!(
            plan.test_cmd.contains("runtests.py") && plan.test_cmd.ends_with("queries.tests"),
            "{}",
            plan.test_cmd
        );
    }
}
