//! `kiln datasets validate`: a dataset is trustworthy when, for every sample, a fresh
//! session graded as is fails and one with the gold patch applied succeeds.
use std::sync::Arc;

use kiln_store::{JobStatus, SampleQuery};
use kiln_verify::{Grading, VerificationResult};

use crate::datasets::DatasetService;
use crate::error::{ServiceError, ServiceResult};
use crate::sessions::{Action, CreateSession, SessionService};

#[derive(Debug, Clone, PartialEq)]
pub struct SampleValidation {
    pub sample_id: String,
    /// `is_success` without the gold patch (`None`: could not grade).
    pub without_patch: Option<bool>,
    /// `is_success` with the gold patch.
    pub with_gold: Option<bool>,
    /// Why grading failed, when it did.
    pub problem: Option<String>,
    /// For a run that disagrees, which expected tests did not do what the record says
    /// (one line each: "with the gold patch: FAIL_TO_PASS failed: a, b").
    pub disagreeing_tests: Vec<String>,
}

/// Which samples to validate: those whose id equals one of the patterns or matches it as
/// a glob (`*` any run of characters, `?` one); every sample when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleFilter {
    pub patterns: Vec<String>,
}

impl SampleFilter {
    pub fn matches(&self, sample_id: &str) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| p == sample_id || glob_matches(p.as_bytes(), sample_id.as_bytes()))
    }
}

/// `*` and `?` only (instance ids have no path separators to respect).
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

impl SampleValidation {
    /// The dataset agrees with itself for this sample.
    pub fn agrees(&self) -> bool {
        self.without_patch == Some(false) && self.with_gold == Some(true)
    }
}

/// Validates the latest samples of `dataset` that `filter` selects, as `user_id`,
/// reporting each as it finishes.
pub async fn validate_dataset(
    sessions: &Arc<SessionService>,
    datasets: &DatasetService,
    user_id: &str,
    dataset: &str,
    filter: &SampleFilter,
    mut report: impl FnMut(&SampleValidation),
) -> ServiceResult<Vec<SampleValidation>> {
    let page = datasets
        .list_samples(&SampleQuery {
            dataset: Some(dataset.to_string()),
            ..SampleQuery::default()
        })
        .await?;
    if page.samples.is_empty() {
        return Err(ServiceError::not_found(format!(
            "dataset {dataset} (or it has no samples)"
        )));
    }
    let chosen: Vec<_> = page
        .samples
        .into_iter()
        .filter(|s| filter.matches(&s.sample_id))
        .collect();
    if chosen.is_empty() {
        return Err(ServiceError::not_found(format!(
            "a sample of {dataset} matching {}",
            filter.patterns.join(", ")
        )));
    }
    let mut results = Vec::new();
    for sample in chosen {
        let mut result = SampleValidation {
            sample_id: sample.sample_id.clone(),
            without_patch: None,
            with_gold: None,
            problem: None,
            disagreeing_tests: Vec::new(),
        };
        match grade(sessions, user_id, dataset, &sample.sample_id, None).await {
            Ok(v) => {
                result.without_patch = Some(v.is_success);
                if v.is_success {
                    result
                        .disagreeing_tests
                        .extend(disagreeing("without the patch", &v, false));
                }
            }
            Err(e) => result.problem = Some(format!("without patch: {e}")),
        }
        match grade(
            sessions,
            user_id,
            dataset,
            &sample.sample_id,
            Some(&sample.record.patch),
        )
        .await
        {
            Ok(v) => {
                result.with_gold = Some(v.is_success);
                if !v.is_success {
                    result
                        .disagreeing_tests
                        .extend(disagreeing("with the gold patch", &v, true));
                }
            }
            Err(e) => result.problem = Some(format!("with the gold patch: {e}")),
        }
        report(&result);
        results.push(result);
    }
    Ok(results)
}

/// The expected tests a run got wrong: with the gold patch, those that failed; without
/// it (which should fail), the FAIL_TO_PASS tests that already pass. An invalid log says
/// why instead.
fn disagreeing(run: &str, result: &VerificationResult, gold: bool) -> Vec<String> {
    let Grading::Swebench(grading) = &result.grading else {
        return Vec::new();
    };
    if let Some(reason) = &grading.invalid_reason {
        return vec![format!("{run}: the log is invalid ({reason})")];
    }
    let status = &grading.tests_status;
    let lists: [(&str, &str, &[String]); 2] = if gold {
        [
            ("FAIL_TO_PASS", "failed", &status.fail_to_pass.failure),
            ("PASS_TO_PASS", "failed", &status.pass_to_pass.failure),
        ]
    } else {
        [
            (
                "FAIL_TO_PASS",
                "passed already",
                &status.fail_to_pass.success,
            ),
            ("PASS_TO_PASS", "failed", &status.pass_to_pass.failure),
        ]
    };
    lists
        .into_iter()
        .filter(|(_, _, tests)| !tests.is_empty())
        .map(|(kind, what, tests)| format!("{run}: {kind} {what}: {}", tests.join(", ")))
        .collect()
}

/// One fresh session, optionally patched, verified, closed.
async fn grade(
    sessions: &Arc<SessionService>,
    user_id: &str,
    dataset: &str,
    sample_id: &str,
    patch: Option<&str>,
) -> ServiceResult<VerificationResult> {
    let session = sessions
        .create(CreateSession::sample(user_id, dataset, sample_id, Some(60)))
        .await?;
    let id = session.session_id.clone();
    let outcome = async {
        let ready = sessions.get(user_id, &id, true).await?;
        if ready.status != kiln_store::SessionStatus::Ready {
            return Err(ServiceError::Internal(format!(
                "session did not become ready: {}",
                ready
                    .error_message
                    .unwrap_or_else(|| ready.status.as_str().into())
            )));
        }
        if let Some(patch) = patch {
            let upload = Action::Upload {
                path: "/tmp/gold.patch".into(),
                content: patch.as_bytes().to_vec(),
                executable: false,
            };
            sessions.submit_and_wait(user_id, &id, upload).await?;
            let apply = Action::Exec {
                command: "cd /testbed && git apply -v /tmp/gold.patch".into(),
                timeout_secs: 120,
            };
            let (_, applied) = sessions.submit_and_wait(user_id, &id, apply).await?;
            if applied.exit_code != 0 {
                return Err(ServiceError::Internal(format!(
                    "the gold patch does not apply: {}",
                    applied.stderr.trim()
                )));
            }
        }
        let job = sessions.start_verification(user_id, &id).await?;
        let job = loop {
            let j = sessions
                .verification_job(user_id, &id, &job.job_id, true)
                .await?;
            if j.status.is_finished() {
                break j;
            }
        };
        match (job.status, job.result) {
            (JobStatus::Completed, Some(result)) => Ok(result),
            (status, _) => Err(ServiceError::Internal(format!(
                "verification ended {}: {}",
                status.as_str(),
                job.error_message.unwrap_or_default()
            ))),
        }
    }
    .await;
    // Close whatever happened; a failure to close is reported only if grading worked.
    let closed = sessions.close(user_id, &id).await;
    match (outcome, closed) {
        (Ok(v), Ok(_)) => Ok(v),
        (Ok(_), Err(e)) | (Err(e), _) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_ids_and_globs() {
        let all = SampleFilter::default();
        assert!(all.matches("anything"));
        let f = SampleFilter {
            patterns: vec!["astropy__astropy-12907".into(), "django__*-1?".into()],
        };
        assert!(f.matches("astropy__astropy-12907"));
        assert!(!f.matches("astropy__astropy-1290"));
        assert!(f.matches("django__django-11"));
        assert!(!f.matches("django__django-111"));
        assert!(!f.matches("sympy__sympy-11"));
        assert!(glob_matches(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob_matches(b"*a*b", b"xxaxxbxx"));
        assert!(glob_matches(b"**", b""));
    }
}
