//! Re-grading a finished run from its saved test logs: the same grading as the run's
//! verifications (`kiln_verify::grade_swebench` over the sample's plan) and the same
//! `report.json` entry ([`super::instance::report_entry`]), without running anything.
use std::collections::BTreeMap;

use kiln_store::SampleQuery;
use kiln_verify::{ExitCodeSource, GradeRequest, InstanceReport, VerificationResult};
use serde::Serialize;

use super::layout::{self, Layout};
use super::predictions::Predictions;
use crate::datasets::DatasetService;
use crate::error::ServiceResult;
use crate::verification::plan::{plan_for, Grading};

/// What a re-grade did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegradeSummary {
    /// Instances graded again (they had a complete test log).
    pub regraded: usize,
    /// Of those, the ones whose `resolved` changed.
    pub changed: usize,
    pub changed_ids: Vec<String>,
    /// Finished instances kept as they were: codeset grading (its verdict is in JUnit
    /// reports, not in the log), a log kept only as its tail, or a sample the dataset
    /// no longer has.
    pub skipped_ids: Vec<String>,
}

/// Grades a saved test log again. `None` when the log cannot be graded on its own: a
/// codeset-gym sample, or a log cut to its tail (its start marker is gone, and grading
/// it would call every run invalid). The exit code is read from the log, as the
/// reference does: the runtime's own is not kept with the run.
pub fn regrade_output(
    record: &kiln_store::SampleRecord,
    test_output: &str,
) -> Option<InstanceReport> {
    let plan = plan_for(record).ok()?;
    if plan.grading != Grading::Swebench || is_cut(test_output) {
        return None;
    }
    let grade = kiln_verify::grade_swebench(&GradeRequest {
        parser: plan.parser,
        log: test_output,
        expected: &plan.expected,
        eval_type: plan.eval_type,
        rules: plan.rules,
        exit_code: ExitCodeSource::FromLog,
    });
    let result = VerificationResult::swebench(&grade, 0.0, test_output.to_string());
    Some(super::instance::report_entry(&result))
}

/// `log_tail`'s mark of a log kept only as its tail.
fn is_cut(test_output: &str) -> bool {
    test_output.starts_with("[… ")
        && test_output
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(" bytes cut …]"))
}

/// Re-grades every instance of the run with a report and a test log, rewriting the
/// reports that change. Instances without a test log (the patch did not apply, an
/// infrastructure failure) keep theirs. The caller rebuilds the run report.
pub async fn regrade_run(
    datasets: &DatasetService,
    dataset: &str,
    layout: &Layout,
    predictions: &Predictions,
) -> ServiceResult<(RegradeSummary, BTreeMap<String, bool>)> {
    let page = datasets
        .list_samples(&SampleQuery {
            dataset: Some(dataset.to_string()),
            ..SampleQuery::default()
        })
        .await?;
    let records: BTreeMap<&str, _> = page
        .samples
        .iter()
        .map(|s| (s.sample_id.as_str(), &s.record))
        .collect();
    let mut summary = RegradeSummary::default();
    let mut verdicts = BTreeMap::new();
    for prediction in predictions.by_id.values() {
        let Some(old) = layout.saved_report(prediction) else {
            continue;
        };
        let dir = layout.instance_dir(prediction);
        let Ok(output) = std::fs::read_to_string(dir.join(layout::TEST_OUTPUT)) else {
            continue;
        };
        let id = &prediction.instance_id;
        let new = records
            .get(id.as_str())
            .and_then(|record| regrade_output(record, &output));
        let Some(new) = new else {
            summary.skipped_ids.push(id.clone());
            continue;
        };
        summary.regraded += 1;
        if new.resolved != old.resolved {
            summary.changed += 1;
            summary.changed_ids.push(id.clone());
        }
        verdicts.insert(id.clone(), new.resolved);
        if new != old {
            let map = BTreeMap::from([(id.clone(), &new)]);
            let text = serde_json::to_vec_pretty(&map)
                .map_err(|e| crate::error::ServiceError::Internal(e.to_string()))?;
            let path = dir.join(layout::REPORT);
            layout::write_atomically(&path, &text).map_err(|e| {
                crate::error::ServiceError::Internal(format!(
                    "cannot write {}: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok((summary, verdicts))
}

#[cfg(test)]
mod tests {
    use kiln_verify::log_eval::{END_TEST_OUTPUT, START_TEST_OUTPUT};

    use super::*;

    fn record() -> kiln_store::SampleRecord {
        let mut record = kiln_store::SampleRecord {
            repo: "acme/x".into(),
            fail_to_pass: vec!["tests/a.py::t".into()],
            pass_to_pass: vec!["tests/a.py::u".into()],
            ..Default::default()
        };
        record.extra.insert("log_parser".into(), "pytest".into());
        record.extra.insert("test_cmd".into(), "pytest -rA".into());
        record
    }

    fn log(t: &str) -> String {
        format!("{START_TEST_OUTPUT}\n{t} tests/a.py::t\nPASSED tests/a.py::u\n{END_TEST_OUTPUT}\n")
    }

    #[test]
    fn a_log_grades_as_its_tests_say() {
        let resolved = regrade_output(&record(), &log("PASSED")).expect("graded");
        assert!(resolved.resolved && resolved.patch_successfully_applied);
        let failed = regrade_output(&record(), &log("FAILED")).expect("graded");
        assert!(!failed.resolved && failed.patch_successfully_applied);
    }

    #[test]
    fn a_log_kept_as_its_tail_or_a_codeset_sample_is_not_regraded() {
        let cut = format!("[… 70000 bytes cut …]\n{}", log("PASSED"));
        assert_eq!(regrade_output(&record(), &cut), None);
        let mut codeset = record();
        codeset.extra.insert("grading".into(), "codeset".into());
        codeset.language = "python".into();
        assert_eq!(regrade_output(&codeset, &log("PASSED")), None);
    }
}
