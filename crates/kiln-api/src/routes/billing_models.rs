//! The contract's billing shapes: `UserCredits`, `UsageHistory`, `UsageTransaction`,
//! `MoneyDepositRequest`/`Response`, and the query of `GET /billing/usage`.
use chrono::{DateTime, NaiveDate, Utc};
use kiln_domain::{Balance, Transaction};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::rfc3339;

/// User's money balance and billing information.
#[derive(Serialize, ToSchema)]
pub struct UserCredits {
    pub user_id: String,
    /// Current balance in cents.
    pub balance: i64,
    /// Total money ever deposited in cents.
    pub total_deposited: i64,
    /// Total money ever spent in cents (charges less refunds).
    pub total_spent: i64,
    /// Kiln keeps no Stripe customer: always null.
    pub stripe_customer_id: Option<String>,
    /// Last time the balance changed (now, for a user without transactions).
    #[serde(serialize_with = "rfc3339")]
    pub last_updated: DateTime<Utc>,
}

impl UserCredits {
    pub fn new(user_id: String, balance: Balance) -> Self {
        Self {
            user_id,
            balance: balance.balance_cents,
            total_deposited: balance.total_deposited_cents,
            total_spent: balance.total_spent_cents,
            stripe_customer_id: None,
            last_updated: balance.last_transaction_at.unwrap_or_else(Utc::now),
        }
    }
}

/// Request to deposit money.
#[derive(Deserialize, ToSchema)]
pub struct MoneyDepositRequest {
    /// Amount to deposit in cents (at least the server's `billing.min_deposit_cents`).
    #[schema(minimum = 100)]
    pub amount_cents: i64,
    /// Currency for payment; only `usd` (any case).
    #[serde(default = "usd")]
    #[schema(pattern = "^[uU][sS][dD]$")]
    pub currency: String,
}

fn usd() -> String {
    "usd".into()
}

/// Response for money deposit.
#[derive(Serialize, ToSchema)]
pub struct MoneyDepositResponse {
    /// Stripe checkout URL for payment.
    pub checkout_url: String,
    pub amount_cents: i64,
    pub currency: String,
    /// The Stripe Checkout Session's id (Kiln addition).
    pub checkout_session_id: String,
}

/// Represents a usage transaction (deposit, refund, or spending).
#[derive(Serialize, ToSchema)]
pub struct UsageTransaction {
    pub id: String,
    /// deposit, refund, session_usage, agent_job_usage or agent_job_refund.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// Amount in cents (positive for deposits/refunds, negative for usage).
    pub amount_cents: i64,
    pub description: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    pub session_id: Option<String>,
    /// Session duration (exact, fractional minutes) if applicable.
    pub duration_minutes: Option<f64>,
    pub job_id: Option<String>,
}

impl From<Transaction> for UsageTransaction {
    fn from(t: Transaction) -> Self {
        Self {
            id: t.transaction_id,
            kind: t.kind.as_str().to_string(),
            amount_cents: t.amount_cents,
            description: t.description,
            created_at: t.created_at,
            session_id: t.session_id,
            duration_minutes: t.duration_minutes,
            job_id: t.job_id,
        }
    }
}

/// Complete usage history for a user.
#[derive(Serialize, ToSchema)]
pub struct UsageHistory {
    pub current_balance_cents: i64,
    pub total_deposits_cents: i64,
    pub total_usage_cents: i64,
    pub transactions: Vec<UsageTransaction>,
    /// Over every transaction the filters select (not only this page):
    /// `total_transactions`, `deposits_cents`, `usage_cents` (spent, positive),
    /// `refunds_cents`, `session_count`, `session_minutes`, and `by_type`
    /// (`{type: {count, amount_cents}}`).
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// `page`, `limit`, `total_items`, `total_pages`, `has_next`, `has_previous`.
    #[schema(value_type = Object)]
    pub pagination: serde_json::Value,
}

/// The query of `GET /billing/usage`, for the OpenAPI document; the handler reads the
/// raw query itself, because `transaction_types` may repeat.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UsageParams {
    /// Page number (1-based).
    #[param(minimum = 1, default = 1)]
    pub page: Option<i64>,
    /// Items per page (max 100).
    #[param(minimum = 1, maximum = 100, default = 25)]
    pub limit: Option<i64>,
    /// Include only transactions on or after this date (UTC).
    pub start_date: Option<NaiveDate>,
    /// Include only transactions on or before this date (UTC).
    pub end_date: Option<NaiveDate>,
    /// Filter by transaction type(s): deposit, usage, charge, refund, agent_job_usage,
    /// agent_job_refund (and session_usage). `usage` means session_usage; `charge` means
    /// session_usage and agent_job_usage. Repeat the parameter or separate with commas.
    pub transaction_types: Option<Vec<String>>,
    /// Max transactions to load (default: all). Ignored when start_date or end_date is set.
    #[param(minimum = 1, maximum = 10000)]
    pub max_items: Option<i64>,
}
