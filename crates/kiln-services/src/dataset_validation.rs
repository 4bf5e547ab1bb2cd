//! `kiln datasets validate`: a dataset is trustworthy when, for every sample, a fresh
//! session graded as is fails and one with the gold patch applied succeeds.
use std::sync::Arc;

use kiln_store::{JobStatus, SampleQuery};

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
}

impl SampleValidation {
    /// The dataset agrees with itself for this sample.
    pub fn agrees(&self) -> bool {
        self.without_patch == Some(false) && self.with_gold == Some(true)
    }
}

/// Validates every latest sample of `dataset` as `user_id`, reporting each as it finishes.
pub async fn validate_dataset(
    sessions: &Arc<SessionService>,
    datasets: &DatasetService,
    user_id: &str,
    dataset: &str,
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
    let mut results = Vec::new();
    for sample in page.samples {
        let mut result = SampleValidation {
            sample_id: sample.sample_id.clone(),
            without_patch: None,
            with_gold: None,
            problem: None,
        };
        match grade(sessions, user_id, dataset, &sample.sample_id, None).await {
            Ok(v) => result.without_patch = Some(v),
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
            Ok(v) => result.with_gold = Some(v),
            Err(e) => result.problem = Some(format!("with the gold patch: {e}")),
        }
        report(&result);
        results.push(result);
    }
    Ok(results)
}

/// One fresh session, optionally patched, verified, closed.
async fn grade(
    sessions: &Arc<SessionService>,
    user_id: &str,
    dataset: &str,
    sample_id: &str,
    patch: Option<&str>,
) -> ServiceResult<bool> {
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
            (JobStatus::Completed, Some(result)) => Ok(result.is_success),
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
