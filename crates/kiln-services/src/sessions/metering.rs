//! What sessions cost while they run: the charge when one ends, the balance check at
//! creation, the balance reaper that stops a user's sessions when their money runs out,
//! and the heartbeat that bounds what a session lost during downtime is billed.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_store::{session_price, SessionEnd, SessionRecord, SessionStatus};

use super::{Readiness, SessionService};
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;

/// The error code of sessions stopped because their user's balance ran out.
pub const INSUFFICIENT_BALANCE: &str = "insufficient_balance";

impl SessionService {
    /// Ends the session and charges its ready time in one store transaction (see
    /// [`kiln_store::BillingStore::end_session_billed`]); `None` if it had already ended.
    pub(super) async fn end_billed(
        &self,
        session_id: &str,
        status: SessionStatus,
        at: DateTime<Utc>,
        at_last_heartbeat: bool,
        reason: Option<(String, String)>,
    ) -> ServiceResult<Option<SessionRecord>> {
        // Every end (close, expiry, balance, a lost sandbox, recovery) passes here once,
        // and is announced in the transaction that ends it.
        let announce = self.session_event(|s| crate::webhooks::EventType::ended(s.status));
        let ended = self
            .store
            .end_session_billed(
                &SessionEnd {
                    session_id: session_id.to_string(),
                    status,
                    at,
                    at_last_heartbeat,
                    reason,
                    cost_per_minute_cents: self.billing.cost_per_minute_cents,
                    transaction_id: new_id("txn"),
                },
                announce.as_deref(),
            )
            .await?;
        let Some(ended) = ended else { return Ok(None) };
        if let Some(charge) = &ended.charge {
            tracing::info!(
                session = session_id,
                cents = -charge.amount_cents,
                minutes = charge.duration_minutes,
                "session billed"
            );
        }
        Ok(Some(ended.session))
    }

    /// With billing enabled, a new session needs at least one minute's price.
    pub(super) async fn check_balance(&self, user_id: &str) -> ServiceResult<()> {
        if !self.billing.enabled {
            return Ok(());
        }
        let balance = self.store.balance(user_id).await?.balance_cents;
        let needed = self.billing.cost_per_minute_cents;
        if balance < needed {
            return Err(ServiceError::PaymentRequired(format!(
                "insufficient balance: {balance} cents, and a session needs at least one minute \
                 ({needed} cents); deposit money (POST /billing/deposit) or ask an admin for credits"
            )));
        }
        Ok(())
    }

    /// Terminates every session of each user whose ready sessions have cost, so far, at
    /// least their balance (priced as the charge will be). Returns how many it ended.
    pub async fn reap_unpaid(&self, now: DateTime<Utc>) -> ServiceResult<usize> {
        let ready = self.store.list_sessions_in(&[SessionStatus::Ready]).await?;
        // Another node's sessions are its own to end (their sandboxes are not ours).
        let others = self
            .sandboxes
            .others_live_sessions(self.store.as_ref())
            .await?;
        let ready: Vec<_> = ready
            .into_iter()
            .filter(|s| !others.contains(&s.session_id))
            .collect();
        let mut accrued: BTreeMap<&str, (i64, Vec<&str>)> = BTreeMap::new();
        for session in &ready {
            let cost = session.ready_at.map_or(0, |ready_at| {
                session_price(ready_at, now, self.billing.cost_per_minute_cents).1
            });
            let entry = accrued.entry(session.user_id.as_str()).or_default();
            entry.0 = entry.0.saturating_add(cost);
            entry.1.push(session.session_id.as_str());
        }
        let mut ended = 0;
        for (user_id, (cost, sessions)) in accrued {
            let balance = self.store.balance(user_id).await?.balance_cents;
            if balance.saturating_sub(cost) > 0 {
                continue;
            }
            let message = format!(
                "terminated: the balance ran out ({balance} cents before this session's charges, \
                 {cost} cents used by running sessions)"
            );
            tracing::info!(
                user = user_id,
                balance,
                cost,
                "balance used up: stopping sessions"
            );
            for id in sessions {
                let reason = Some((INSUFFICIENT_BALANCE, message.clone()));
                match self.end(id, SessionStatus::Terminated, reason).await {
                    Ok(Some(_)) => ended += 1,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(session = id, error = %e, "cannot stop an unpaid session")
                    }
                }
            }
        }
        Ok(ended)
    }

    /// Records a heartbeat for every ready session whose sandbox this server runs.
    pub async fn record_heartbeats(&self, now: DateTime<Utc>) -> ServiceResult<u64> {
        let Ok((runtime, ..)) = self.runtime() else {
            return Ok(0);
        };
        let running: HashSet<String> = runtime
            .list()
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .into_iter()
            .map(|info| info.id.as_str().to_string())
            .collect();
        let alive: Vec<String> = self
            .lock_live()
            .iter()
            .filter(|(_, live)| {
                matches!(&*live.readiness.borrow(), Readiness::Ready(id) if running.contains(id.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect();
        Ok(self.store.record_heartbeats(&alive, now).await?)
    }

    /// Runs the heartbeat and, with billing enabled, the balance reaper, until the service
    /// is dropped.
    pub fn spawn_metering(self: &Arc<Self>) {
        let heartbeat = Duration::from_secs(self.billing.heartbeat_secs.max(1));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                if let Err(e) = this.record_heartbeats(Utc::now()).await {
                    tracing::warn!(error = %e, "cannot record session heartbeats");
                }
                // Usage is sampled at the heartbeat's pace (`billing.heartbeat_secs`).
                this.sample_usage().await;
            }
        });
        if !self.billing.enabled {
            return;
        }
        let check = Duration::from_secs(self.billing.balance_check_secs.max(1));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(check);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                match this.reap_unpaid(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "sessions stopped: balance used up"),
                    Err(e) => tracing::warn!(error = %e, "cannot check balances"),
                }
            }
        });
    }
}
