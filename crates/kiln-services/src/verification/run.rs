//! The steps of one verification inside a session's sandbox, as the SWE-bench harness
//! takes them, with one addition: the agent's versions of the test files (and the git
//! index) are saved first and restored last, so verifying changes nothing the agent sees.
//!
//! 1. prepare: save, reset the test files to base_commit, apply the test patch;
//! 2. run the test command between the harness's markers (own timeout, whole process
//!    group killed on expiry), output to a file;
//! 3. read the log; 4. restore; 5. grade (pure, `kiln-verify`).
use std::collections::BTreeMap;
use std::time::Instant;

use kiln_protocol::{Binary, ExecRequest, WriteFileRequest};
use kiln_runtime::{Runtime, RuntimeError, SandboxId};
use kiln_verify::log_eval::{
    APPLY_PATCH_FAIL, END_TEST_OUTPUT, RESET_FAILED, START_TEST_OUTPUT, TESTS_TIMEOUT,
};
use kiln_verify::{
    CodesetGrade, ExitCodeSource, GradeRequest, JunitCase, ReportLocation, SwebenchGrade,
};

use super::plan::{Grading, VerifyPlan};

/// Largest log read back (the agent's file-read cap).
const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// Output kept in the result's `stdout` (its tail).
const RESULT_OUTPUT_BYTES: usize = 64 * 1024;
const STEP_TIMEOUT_MS: u64 = 120_000;

pub enum Grade {
    Swebench(Box<SwebenchGrade>),
    Codeset(Box<CodesetGrade>),
}

pub struct Verified {
    pub grade: Grade,
    pub log: String,
    pub test_seconds: f64,
}

/// Which step is about to run, for the job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Preparing,
    Testing,
}

pub async fn verify(
    runtime: &dyn Runtime,
    sandbox: &SandboxId,
    job_id: &str,
    plan: &VerifyPlan,
    mut on_step: impl FnMut(Step),
) -> Result<Verified, RuntimeError> {
    let dir = format!("/tmp/.kiln-verify/{job_id}");
    on_step(Step::Preparing);
    runtime
        .write_file(
            sandbox,
            WriteFileRequest {
                path: format!("{dir}/test.patch"),
                content: Binary(patch_as_the_harness_writes_it(&plan.test_patch)),
                mode: Some(0o600),
                create_parents: true,
            },
        )
        .await?;
    let prepared = runtime
        .exec(
            sandbox,
            shell(
                &prepare_script(&dir, plan),
                STEP_TIMEOUT_MS,
                BTreeMap::new(),
            ),
        )
        .await?;
    let prepare_log = format!(
        "{}{}",
        prepared.stdout.to_string_lossy(),
        prepared.stderr.to_string_lossy()
    );

    let (log, exit_code, test_seconds) = if prepared.exit_code == 0 {
        on_step(Step::Testing);
        let started = Instant::now();
        let env = BTreeMap::from([("KILN_TEST_CMD".to_string(), plan.test_cmd.clone())]);
        let script = match &plan.grading {
            Grading::Swebench => test_script(&dir, ""),
            Grading::Codeset { language } => test_script(&dir, &stale_reports(language)),
        };
        let ran = runtime
            .exec(
                sandbox,
                shell(&script, plan.timeout_secs.saturating_mul(1000), env),
            )
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let file = runtime
            .read_file(sandbox, &format!("{dir}/log"), Some(MAX_LOG_BYTES))
            .await;
        let mut log = match file {
            Ok(f) => f.content.to_string_lossy(),
            Err(e) => format!("(cannot read the test log: {e})\n"),
        };
        if ran.timed_out {
            // The reference marks a timed-out run so that its log is invalid.
            log.push_str(&format!("\n{TESTS_TIMEOUT}\n"));
        }
        (
            format!("{prepare_log}{log}"),
            i64::from(ran.exit_code),
            seconds,
        )
    } else {
        (prepare_log, i64::from(prepared.exit_code), 0.0)
    };

    let grade = match &plan.grading {
        Grading::Swebench => {
            Grade::Swebench(Box::new(kiln_verify::grade_swebench(&GradeRequest {
                parser: plan.parser,
                log: &log,
                expected: &plan.expected,
                eval_type: plan.eval_type,
                rules: plan.rules,
                exit_code: ExitCodeSource::Trusted(exit_code),
            })))
        }
        Grading::Codeset { language } => {
            let cases = read_reports(runtime, sandbox, language).await?;
            let e = &plan.expected;
            Grade::Codeset(Box::new(kiln_verify::grade_codeset(
                &cases,
                &e.fail_to_pass,
                &e.pass_to_pass,
                &e.fail_to_fail,
            )))
        }
    };
    let restore = shell(
        &restore_script(&dir, plan),
        STEP_TIMEOUT_MS,
        BTreeMap::new(),
    );
    let restored = runtime.exec(sandbox, restore).await?;
    if restored.exit_code != 0 {
        tracing::warn!(job = job_id, output = %restored.stderr.to_string_lossy(), "restoring the agent's test files failed");
    }
    Ok(Verified {
        grade,
        log,
        test_seconds,
    })
}

/// `rm -f` of every report location of `language`, so a stale report cannot grade.
fn stale_reports(language: &str) -> String {
    let paths: Vec<&str> = kiln_verify::report_locations(language)
        .unwrap_or_default()
        .iter()
        .map(|l| match l {
            ReportLocation::Single(p) | ReportLocation::Glob(p) => *p,
        })
        .collect();
    // The paths are the collector's own constants: globs must stay unquoted.
    format!("rm -f {}", paths.join(" "))
}

/// The JUnit cases of the first report location that has any, in codeset-gym's order.
async fn read_reports(
    runtime: &dyn Runtime,
    sandbox: &SandboxId,
    language: &str,
) -> Result<Vec<JunitCase>, RuntimeError> {
    for location in kiln_verify::report_locations(language).unwrap_or_default() {
        let files = match location {
            ReportLocation::Single(path) => vec![(*path).to_string()],
            ReportLocation::Glob(pattern) => {
                let list = shell(
                    &format!("cd /testbed && ls -1d {pattern} 2>/dev/null"),
                    STEP_TIMEOUT_MS,
                    BTreeMap::new(),
                );
                let listed = runtime.exec(sandbox, list).await?;
                listed
                    .stdout
                    .to_string_lossy()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            }
        };
        let mut documents = Vec::new();
        for name in files {
            if let Ok(file) = runtime
                .read_file(sandbox, &format!("/testbed/{name}"), Some(MAX_LOG_BYTES))
                .await
            {
                documents.push(file.content.to_string_lossy());
            }
        }
        let cases = match location {
            ReportLocation::Single(_) => documents
                .first()
                .and_then(|xml| kiln_verify::codeset::single_report_cases(xml)),
            ReportLocation::Glob(_) => kiln_verify::codeset::combine_glob_documents(
                &documents.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
        };
        if let Some(cases) = cases {
            return Ok(cases);
        }
    }
    Ok(Vec::new())
}

/// The harness feeds the test patch to `git apply` through a heredoc, which ends it with a
/// newline: a patch stored without its final newline still applies there, so here too.
fn patch_as_the_harness_writes_it(patch: &str) -> Vec<u8> {
    let mut bytes = patch.as_bytes().to_vec();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes
}

/// The tail of the log, for the result's `stdout`.
pub fn log_tail(log: &str) -> String {
    if log.len() <= RESULT_OUTPUT_BYTES {
        return log.to_string();
    }
    let mut start = log.len() - RESULT_OUTPUT_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut …]\n{}", &log[start..])
}

fn shell(script: &str, timeout_ms: u64, env: BTreeMap<String, String>) -> ExecRequest {
    let mut request = ExecRequest::shell(script.to_string());
    request.timeout_ms = timeout_ms;
    request.env = env;
    request
}

/// `'…'` with embedded quotes escaped: safe for any path.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn file_list(plan: &VerifyPlan) -> String {
    plan.test_files
        .iter()
        .map(|f| quote(f))
        .collect::<Vec<_>>()
        .join(" ")
}

fn prepare_script(dir: &str, plan: &VerifyPlan) -> String {
    let base = quote(&plan.base_commit);
    format!(
        r#"set -u
cd /testbed || exit 90
V={dir}
mkdir -p "$V/backup" && : > "$V/absent"
cp -a .git/index "$V/index" 2>/dev/null || true
for f in {files}; do
  if [ -e "$f" ] || [ -L "$f" ]; then mkdir -p "$V/backup/$(dirname "$f")" && cp -a "$f" "$V/backup/$f"
  else printf '%s\n' "$f" >> "$V/absent"; fi
done
for f in {files}; do
  if git cat-file -e {base}:"$f" 2>/dev/null; then
    git checkout -q {base} -- "$f" || {{ echo '{reset_failed}'; exit 91; }}
  else
    rm -rf -- "$f"
  fi
done
{apply}
"#,
        files = file_list(plan),
        // A sample without a test patch has nothing to apply (and may have no git).
        apply = if plan.test_patch.trim().is_empty() {
            String::new()
        } else {
            format!(
                r#"git apply {} "$V/test.patch" 2>&1 || {{ echo '{APPLY_PATCH_FAIL}'; exit 92; }}"#,
                plan.apply_flags
            )
        },
        reset_failed = RESET_FAILED,
    )
}

fn test_script(dir: &str, before: &str) -> String {
    format!(
        r#"cd /testbed || exit 90
{before}
{{ echo '{START_TEST_OUTPUT}'; ( eval "$KILN_TEST_CMD" ); rc=$?; echo '{END_TEST_OUTPUT}'; }} > {dir}/log 2>&1
exit $rc
"#
    )
}

fn restore_script(dir: &str, plan: &VerifyPlan) -> String {
    format!(
        r#"cd /testbed || exit 90
V={dir}
for f in {files}; do rm -rf -- "$f"; done
cp -a "$V/backup/." . 2>/dev/null || true
[ -f "$V/index" ] && cp -a "$V/index" .git/index
rm -rf "$V"
"#,
        files = file_list(plan),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn patches_end_with_a_newline_as_in_the_harness() {
        assert_eq!(patch_as_the_harness_writes_it("+x"), b"+x\n");
        assert_eq!(patch_as_the_harness_writes_it("+x\n"), b"+x\n");
        assert_eq!(
            patch_as_the_harness_writes_it("+x\r\n"),
            b"+x\r\n",
            "CRLF is kept as given"
        );
    }

    #[test]
    fn long_logs_keep_their_tail() {
        let log = "x".repeat(RESULT_OUTPUT_BYTES + 10) + "END";
        let tail = log_tail(&log);
        assert!(
            tail.ends_with("END") && tail.starts_with("[… 13 bytes cut …]"),
            "{}",
            &tail[..40]
        );
    }
}
