//! Agent jobs paid from the ledger: a job is charged `agent_job_cost_cents` when it is
//! accepted and refunded the same amount when it ends in error. The job id is the
//! reference of both, so a retried charge or refund changes the ledger once.
use async_trait::async_trait;
use kiln_store::TransactionKind;

use super::BillingService;
use crate::agent_jobs::{JobBilling, JobCharge};
use crate::error::ServiceResult;

pub struct LedgerJobBilling {
    billing: BillingService,
}

impl LedgerJobBilling {
    pub fn new(billing: BillingService) -> Self {
        Self { billing }
    }

    fn cost_cents(&self) -> i64 {
        self.billing.config.agent_job_cost_cents
    }
}

#[async_trait]
impl JobBilling for LedgerJobBilling {
    async fn charge(&self, job: &JobCharge) -> ServiceResult<()> {
        let cost = self.cost_cents();
        self.billing.check_affordable(&job.user_id, cost).await?;
        self.billing
            .record(
                &job.user_id,
                TransactionKind::AgentJobUsage,
                -cost,
                format!("agent job {} ({})", job.job_id, job.agent_id),
                Some(job.job_id.clone()),
            )
            .await?;
        Ok(())
    }

    async fn refund(&self, job: &JobCharge) -> ServiceResult<()> {
        // Only what was charged comes back: a job refused before its charge has none.
        let Some(charged) = self
            .billing
            .charged_for_reference(&job.user_id, TransactionKind::AgentJobUsage, &job.job_id)
            .await?
        else {
            return Ok(());
        };
        self.billing
            .record(
                &job.user_id,
                TransactionKind::AgentJobRefund,
                charged,
                format!("refund: agent job {} ended in error", job.job_id),
                Some(job.job_id.clone()),
            )
            .await?;
        Ok(())
    }
}
