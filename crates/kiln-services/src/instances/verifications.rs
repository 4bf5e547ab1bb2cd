//! A session's verification jobs, listed on the instance API (`/v1/instances/{id}/
//! verifications`): the dashboard's session page shows them, each linking to its result.
use kiln_store::{VerificationCursor, VerificationJobRecord};

use super::exec::MAX_LIST_LIMIT;
use super::InstanceService;
use crate::error::{ServiceError, ServiceResult};

impl InstanceService {
    /// The caller's instance's verification jobs, newest first, after the job `after` (its
    /// id); at most [`MAX_LIST_LIMIT`].
    pub async fn verification_list(
        &self,
        user_id: &str,
        instance_id: &str,
        after: Option<&str>,
        limit: u64,
    ) -> ServiceResult<Vec<VerificationJobRecord>> {
        self.owned_instance(user_id, instance_id).await?;
        let cursor = match after {
            None => None,
            Some(job_id) => {
                // No job id holds a NUL, and PostgreSQL refuses one as a parameter.
                let found = match job_id.contains('\0') {
                    true => None,
                    false => self.store.get_verification_job(instance_id, job_id).await?,
                };
                let Some(found) = found else {
                    return Err(ServiceError::invalid(
                        &["after"],
                        "no verification job of this instance has this id",
                        "value_error",
                    ));
                };
                Some(VerificationCursor {
                    created_at: found.created_at,
                    job_id: found.job_id,
                })
            }
        };
        Ok(self
            .store
            .list_verification_jobs(instance_id, cursor.as_ref(), limit.min(MAX_LIST_LIMIT))
            .await?)
    }
}
