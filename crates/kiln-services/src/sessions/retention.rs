//! Output retention: an interaction's stdout and stderr (up to `max_output_bytes` each) are
//! kept `sessions.output_retention_days` after it finished, then emptied; the interaction
//! keeps everything else and says `output_expired`. 0 days keeps output for ever.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::SessionService;
use crate::error::ServiceResult;

/// Interactions trimmed per store call: each call is one short write.
const BATCH: u64 = 200;
/// How often the retention task runs (output is kept for days; minutes do not matter).
const EVERY: Duration = Duration::from_secs(10 * 60);

impl SessionService {
    /// Empties the output of interactions that finished more than the retention period
    /// before `now`. Returns how many it trimmed.
    pub async fn expire_output(&self, now: DateTime<Utc>) -> ServiceResult<u64> {
        let days = self.config.output_retention_days;
        if days == 0 {
            return Ok(0);
        }
        let before = now - chrono::Duration::days(i64::from(days));
        let mut total = 0;
        loop {
            let n = self
                .store
                .expire_interaction_output(before, now, BATCH)
                .await?;
            total += n;
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    /// Runs the retention task (at once, then every few minutes) until the service is
    /// dropped.
    pub fn spawn_output_retention(self: &Arc<Self>) {
        if self.config.output_retention_days == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                match this.expire_output(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(interactions = n, "old interaction output removed"),
                    Err(e) => tracing::warn!(error = %e, "cannot apply output retention"),
                }
            }
        });
    }
}
