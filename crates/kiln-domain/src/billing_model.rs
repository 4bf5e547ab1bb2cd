//! Records of billing: the ledger of transactions in integer cents, and how a session's
//! time is priced. Balances are never stored: they are sums over the ledger.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{SessionRecord, SessionStatus};

/// The contract's transaction types. Deposits and refunds credit the user (positive
/// amounts), usage charges them (negative amounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Deposit,
    SessionUsage,
    Refund,
    AgentJobUsage,
    AgentJobRefund,
}

impl TransactionKind {
    pub const ALL: [TransactionKind; 5] = [
        Self::Deposit,
        Self::SessionUsage,
        Self::Refund,
        Self::AgentJobUsage,
        Self::AgentJobRefund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::SessionUsage => "session_usage",
            Self::Refund => "refund",
            Self::AgentJobUsage => "agent_job_usage",
            Self::AgentJobRefund => "agent_job_refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTransaction {
    pub transaction_id: String,
    pub user_id: String,
    pub kind: TransactionKind,
    /// Positive credits the user, negative charges them.
    pub amount_cents: i64,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
    pub duration_minutes: Option<f64>,
    /// Idempotency: at most one transaction of a kind per reference.
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub transaction_id: String,
    pub user_id: String,
    pub kind: TransactionKind,
    pub amount_cents: i64,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub session_id: Option<String>,
    pub job_id: Option<String>,
    pub duration_minutes: Option<f64>,
    pub reference: Option<String>,
}

/// What the ledger says of one user. `balance == total_deposited - total_spent` always:
/// `total_spent` is every non-deposit transaction, charges less refunds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balance {
    pub balance_cents: i64,
    pub total_deposited_cents: i64,
    pub total_spent_cents: i64,
    /// The newest transaction's time, if any.
    pub last_transaction_at: Option<DateTime<Utc>>,
}

/// A page of a user's ledger, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionQuery {
    pub user_id: String,
    /// Empty means every kind.
    pub kinds: Vec<TransactionKind>,
    /// Inclusive bounds on `created_at`.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only the newest `max_items` matches are considered at all (paging and totals).
    pub max_items: Option<u64>,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransactionPage {
    pub transactions: Vec<Transaction>,
    /// Matches considered (after `max_items`).
    pub total: u64,
    /// Per kind over the matches considered: (kind, count, sum of amounts, sum of minutes).
    pub by_kind: Vec<KindTotal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KindTotal {
    pub kind: TransactionKind,
    pub count: u64,
    pub amount_cents: i64,
    pub minutes: f64,
}

/// Ending a session and billing its time, in one store transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnd {
    pub session_id: String,
    /// `Closed` or `Terminated`.
    pub status: SessionStatus,
    pub at: DateTime<Utc>,
    /// End at the last heartbeat (or `ready_at` when none) instead of `at`, never later than
    /// `at`: the sandbox vanished while nobody watched, and the gap is not billed.
    pub at_last_heartbeat: bool,
    /// `(code, message)` recorded as the session's error when this call ends it.
    pub reason: Option<(String, String)>,
    pub cost_per_minute_cents: i64,
    /// The id of the usage transaction, if one is written.
    pub transaction_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndedSession {
    pub session: SessionRecord,
    /// The usage charge; `None` for a session that never became ready.
    pub charge: Option<Transaction>,
}

/// The price of a session's time from `ready_at` to `until`: its exact length in minutes,
/// and its cost in whole cents, rounded up. The same function prices a running session
/// (for the balance check) and an ended one (the charge), so they agree to the cent.
pub fn session_price(
    ready_at: DateTime<Utc>,
    until: DateTime<Utc>,
    cost_per_minute_cents: i64,
) -> (f64, i64) {
    let micros = (until - ready_at)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .max(0);
    let minutes = micros as f64 / 60_000_000.0;
    let per_minute = i128::from(cost_per_minute_cents.max(0));
    // Both factors are non-negative, so this is the ceiling of the division.
    let cents = (i128::from(micros) * per_minute + 59_999_999) / 60_000_000;
    (minutes, i64::try_from(cents).unwrap_or(i64::MAX))
}

/// The description of a session's usage charge.
pub fn usage_description(session_id: &str, minutes: f64, per_minute: i64) -> String {
    format!("session {session_id}: {minutes:.4} minutes at {per_minute} cents per minute")
}

/// When a session being ended stops counting.
pub fn end_time(
    end: &SessionEnd,
    ready_at: Option<DateTime<Utc>>,
    alive_at: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    if end.at_last_heartbeat {
        alive_at.or(ready_at).unwrap_or(end.at).min(end.at)
    } else {
        end.at
    }
}

/// The usage charge of a session that was ready from `ready_at` to `ended_at`.
pub fn usage(
    end: &SessionEnd,
    session: &SessionRecord,
    ready_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
) -> NewTransaction {
    let (minutes, cents) = session_price(ready_at, ended_at, end.cost_per_minute_cents);
    NewTransaction {
        transaction_id: end.transaction_id.clone(),
        user_id: session.user_id.clone(),
        kind: TransactionKind::SessionUsage,
        amount_cents: -cents,
        description: usage_description(&session.session_id, minutes, end.cost_per_minute_cents),
        created_at: ended_at,
        session_id: Some(session.session_id.clone()),
        job_id: None,
        duration_minutes: Some(minutes),
        reference: Some(session.session_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn session_price_rounds_up_to_the_cent() {
        let t0 = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let at = |micros| t0 + chrono::Duration::microseconds(micros);
        assert_eq!(session_price(t0, t0, 5), (0.0, 0));
        assert_eq!(session_price(t0, at(1), 5).1, 1);
        assert_eq!(session_price(t0, at(60_000_000), 5), (1.0, 5));
        assert_eq!(session_price(t0, at(90_000_000), 5), (1.5, 8));
        assert_eq!(session_price(at(5), t0, 5), (0.0, 0), "never negative");
    }

    #[test]
    fn kinds_round_trip() {
        for kind in TransactionKind::ALL {
            assert_eq!(TransactionKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(TransactionKind::parse("usage"), None);
    }
}
