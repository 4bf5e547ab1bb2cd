//! The seams an agent job leaves for billing and for private repositories. Both are
//! no-ops here; the ledger and GitHub sign-in plug in by implementing these traits.
use async_trait::async_trait;

use crate::error::ServiceResult;

/// The job a charge or refund is for. `job_id` is the idempotency reference: charging or
/// refunding the same job twice must change the ledger once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCharge {
    pub job_id: String,
    pub user_id: String,
    pub agent_id: String,
}

#[async_trait]
pub trait JobBilling: Send + Sync {
    /// Called once a job is validated, before it is stored; an error refuses the job
    /// (e.g. too little balance) and nothing is stored.
    async fn charge(&self, job: &JobCharge) -> ServiceResult<()>;
    /// Called when a charged job ends in `error` (including a restart cutting it off,
    /// and a job that could not be stored after its charge).
    async fn refund(&self, job: &JobCharge) -> ServiceResult<()>;
}

/// Billing off: jobs cost nothing.
pub struct NoBilling;

#[async_trait]
impl JobBilling for NoBilling {
    async fn charge(&self, _job: &JobCharge) -> ServiceResult<()> {
        Ok(())
    }

    async fn refund(&self, _job: &JobCharge) -> ServiceResult<()> {
        Ok(())
    }
}

/// Where a token for cloning a user's private repositories over HTTPS comes from. The
/// token is sent as HTTP basic auth through git's environment configuration only.
#[async_trait]
pub trait CloneCredentials: Send + Sync {
    async fn token_for(&self, user_id: &str) -> Option<String>;
}

/// No credentials: public repositories only.
pub struct NoCredentials;

#[async_trait]
impl CloneCredentials for NoCredentials {
    async fn token_for(&self, _user_id: &str) -> Option<String> {
        None
    }
}
