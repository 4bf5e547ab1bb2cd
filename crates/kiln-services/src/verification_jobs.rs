//! Verification jobs of a session: started, watched and ended here; run by the session's
//! worker (`sessions::worker`), so they are ordered with the agent's own commands.
use std::time::Duration;

use chrono::Utc;
use kiln_store::{JobStatus, JobUpdate, NewVerificationJob, VerificationJobRecord};

use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;
use crate::sessions::work_queue::{not_live, Work};
use crate::sessions::SessionService;

impl SessionService {
    /// Starts grading the session's current state: a job, queued behind the session's
    /// earlier interactions. A sample Kiln cannot verify gives a job in `error`.
    pub async fn start_verification(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> ServiceResult<VerificationJobRecord> {
        let session = self.owned(user_id, session_id).await?;
        if !session.status.is_live() {
            return Err(not_live(&session, "verification needs a live session"));
        }
        let Some((dataset, sample_id, version)) = session.source.sample() else {
            return Err(ServiceError::Refused {
                code: "not_made_from_sample",
                message: format!(
                    "session {session_id} was not made from a sample (it runs an image): there \
                     are no tests to verify it with"
                ),
            });
        };
        let sample = self
            .store()
            .get_sample(dataset, sample_id, Some(version))
            .await?
            .ok_or_else(|| {
                ServiceError::Internal(format!("the sample of session {session_id} is gone"))
            })?;
        let permit = self.reserve_work(&session)?;
        let job = self
            .store()
            .insert_verification_job(&NewVerificationJob {
                job_id: new_id("job"),
                session_id: session_id.to_string(),
                user_id: user_id.to_string(),
                sample_id: sample_id.to_string(),
                created_at: Utc::now(),
            })
            .await?;
        match crate::verification::plan_for(&sample.record) {
            Ok(plan) => {
                permit.send(Work::Verify {
                    job_id: job.job_id.clone(),
                    plan: Box::new(plan),
                    cause: tracing::Span::current(),
                });
            }
            Err(why) => {
                drop(permit);
                let update = JobUpdate {
                    status: JobStatus::Error,
                    at: Utc::now(),
                    result: None,
                    error_code: Some("not_verifiable".into()),
                    error_message: Some(format!("this sample cannot be verified: {why}")),
                };
                let announce = self.job_event();
                self.store()
                    .update_verification_job(&job.job_id, &update, announce.as_deref())
                    .await?;
                self.changes().notify(session_id);
            }
        }
        Ok(job)
    }

    /// The caller's verification job; waits (bounded) while it is unfinished.
    pub async fn verification_job(
        &self,
        user_id: &str,
        session_id: &str,
        job_id: &str,
        wait: bool,
    ) -> ServiceResult<VerificationJobRecord> {
        self.owned(user_id, session_id).await?;
        let timeout = if wait {
            self.long_poll_window()
        } else {
            Duration::ZERO
        };
        self.changes()
            .wait_for(session_id, timeout, || async {
                let job = self
                    .store()
                    .get_verification_job(session_id, job_id)
                    .await?
                    .ok_or_else(|| ServiceError::not_found(format!("verification job {job_id}")))?;
                let done = job.status.is_finished();
                Ok((job, done))
            })
            .await
    }

    /// Marks unfinished jobs (of one session, or all) as ended.
    pub(crate) async fn end_jobs(
        &self,
        session_id: Option<&str>,
        status: JobStatus,
        code: &str,
        message: &str,
    ) -> ServiceResult<usize> {
        let mut n = 0;
        for job in self.store().list_unfinished_verification_jobs().await? {
            if session_id.is_some_and(|s| s != job.session_id) {
                continue;
            }
            let update = JobUpdate {
                status,
                at: Utc::now(),
                result: None,
                error_code: Some(code.into()),
                error_message: Some(message.into()),
            };
            // Announced like any job's end: `verification.error`, for a lost sandbox and for
            // a job cancelled by its session's end alike (its status and code say which).
            let announce = self.job_event();
            if self
                .store()
                .update_verification_job(&job.job_id, &update, announce.as_deref())
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}
