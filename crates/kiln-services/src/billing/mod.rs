//! Billing: prices, the ledger (balances are sums over it), credits granted by admins,
//! deposits through Stripe Checkout and the Stripe webhook that credits them.
//!
//! Session time is charged by the session service when a session ends (see
//! [`kiln_store::BillingStore::end_session_billed`]): the charge and the end are one store
//! transaction, so a session is billed exactly once whoever ends it.
mod agent_job_charges;
mod stripe;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kiln_config::BillingConfig;
use kiln_store::{
    Balance, NewTransaction, Store, Transaction, TransactionKind, TransactionPage, TransactionQuery,
};

use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;

pub use agent_job_charges::LedgerJobBilling;
pub use stripe::{verify_signature, Checkout, SignatureError, WebhookOutcome};

/// Longest description a grant may carry.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// The prices in force, as `GET /billing/pricing` shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    pub enabled: bool,
    pub cost_per_minute_cents: i64,
    pub agent_job_cost_cents: i64,
    pub min_deposit_cents: i64,
    pub currency: &'static str,
}

#[derive(Clone)]
pub struct BillingService {
    store: Arc<dyn Store>,
    config: BillingConfig,
    http: reqwest::Client,
}

impl BillingService {
    pub fn new(store: Arc<dyn Store>, config: BillingConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            store,
            config,
            http,
        }
    }

    pub fn config(&self) -> &BillingConfig {
        &self.config
    }

    pub fn pricing(&self) -> Pricing {
        Pricing {
            enabled: self.config.enabled,
            cost_per_minute_cents: self.config.cost_per_minute_cents,
            agent_job_cost_cents: self.config.agent_job_cost_cents,
            min_deposit_cents: self.config.min_deposit_cents,
            currency: "usd",
        }
    }

    pub async fn balance(&self, user_id: &str) -> ServiceResult<Balance> {
        Ok(self.store.balance(user_id).await?)
    }

    pub async fn usage(&self, query: &TransactionQuery) -> ServiceResult<TransactionPage> {
        Ok(self.store.list_transactions(query).await?)
    }

    /// Appends a charge or a credit. With a `reference`, it happens at most once for that
    /// reference and kind: `None` when it already did (agent jobs charge and refund this
    /// way, by job id).
    pub async fn record(
        &self,
        user_id: &str,
        kind: TransactionKind,
        amount_cents: i64,
        description: String,
        reference: Option<String>,
    ) -> ServiceResult<Option<Transaction>> {
        let job = matches!(
            kind,
            TransactionKind::AgentJobUsage | TransactionKind::AgentJobRefund
        );
        let transaction = NewTransaction {
            transaction_id: new_id("txn"),
            user_id: user_id.to_string(),
            kind,
            amount_cents,
            description,
            created_at: Utc::now(),
            session_id: None,
            job_id: reference.clone().filter(|_| job),
            duration_minutes: None,
            reference,
        };
        match self.store.insert_transaction(&transaction).await {
            Err(kiln_store::StoreError::Missing(_)) => {
                Err(ServiceError::not_found(format!("user {user_id}")))
            }
            other => Ok(other?),
        }
    }

    /// What the user was charged (a positive number of cents) by the transaction of this
    /// kind and reference, if there is one.
    pub async fn charged_for_reference(
        &self,
        user_id: &str,
        kind: TransactionKind,
        reference: &str,
    ) -> ServiceResult<Option<i64>> {
        let found = self.store.find_transaction(kind, reference).await?;
        Ok(found
            .filter(|t| t.user_id == user_id)
            .map(|t| -t.amount_cents))
    }

    /// Credits `cents` to a user (`kiln credits grant`): a deposit that no payment backs.
    pub async fn grant(
        &self,
        user_id: &str,
        cents: i64,
        description: Option<String>,
    ) -> ServiceResult<Transaction> {
        if cents <= 0 {
            return Err(ServiceError::invalid(
                &["cents"],
                "a grant must be at least 1 cent",
                "greater_than",
            ));
        }
        let description = description.unwrap_or_else(|| "credit granted by an admin".into());
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ServiceError::invalid(
                &["description"],
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
                "string_too_long",
            ));
        }
        self.record(user_id, TransactionKind::Deposit, cents, description, None)
            .await?
            .ok_or_else(|| ServiceError::Internal("a grant without reference was refused".into()))
    }

    /// Whether the user may start something that costs `cents` (always, billing disabled).
    pub async fn check_affordable(&self, user_id: &str, cents: i64) -> ServiceResult<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let balance = self.store.balance(user_id).await?.balance_cents;
        if balance < cents {
            return Err(ServiceError::PaymentRequired(format!(
                "insufficient balance: {balance} cents, and this needs at least {cents} cents; \
                 deposit money (POST /billing/deposit) or ask an admin for credits"
            )));
        }
        Ok(())
    }

    /// Opens a Stripe Checkout Session for a deposit and returns where to pay.
    pub async fn deposit(&self, user_id: &str, amount_cents: i64) -> ServiceResult<Checkout> {
        let min = self.config.min_deposit_cents;
        if amount_cents < min {
            return Err(ServiceError::invalid(
                &["amount_cents"],
                format!("Input should be greater than or equal to {min}"),
                "greater_than_equal",
            ));
        }
        let key = self.config.stripe.secret_key.as_ref().ok_or_else(|| {
            ServiceError::Unavailable(
                "deposits are not configured on this server (billing.stripe.secret_key is not set)"
                    .into(),
            )
        })?;
        stripe::create_checkout(
            &self.http,
            &self.config.stripe,
            key.expose(),
            user_id,
            amount_cents,
        )
        .await
    }

    /// Handles a Stripe webhook delivery: verifies its signature, then credits a paid
    /// checkout exactly once (a redelivered event or an already credited checkout changes
    /// nothing).
    pub async fn webhook(
        &self,
        payload: &[u8],
        signature: Option<&str>,
        now: DateTime<Utc>,
    ) -> ServiceResult<WebhookOutcome> {
        let secret = self.config.stripe.webhook_secret.as_ref().ok_or_else(|| {
            ServiceError::Unavailable(
                "webhooks are not configured on this server (billing.stripe.webhook_secret is not set)"
                    .into(),
            )
        })?;
        let header = signature.ok_or_else(|| ServiceError::BadRequest {
            code: "missing_signature",
            message: "the Stripe-Signature header is missing".into(),
        })?;
        verify_signature(
            payload,
            header,
            secret.expose().as_bytes(),
            now.timestamp(),
            self.config.stripe.webhook_tolerance_secs,
        )
        .map_err(|e| ServiceError::BadRequest {
            code: e.code(),
            message: e.to_string(),
        })?;
        let Some(credit) = stripe::paid_checkout(payload)? else {
            return Ok(WebhookOutcome::Ignored);
        };
        let transaction = NewTransaction {
            transaction_id: new_id("txn"),
            user_id: credit.user_id.clone(),
            kind: TransactionKind::Deposit,
            amount_cents: credit.amount_cents,
            description: format!("deposit through Stripe (checkout {})", credit.checkout_id),
            created_at: now,
            session_id: None,
            job_id: None,
            duration_minutes: None,
            reference: Some(credit.checkout_id.clone()),
        };
        match self
            .store
            .record_stripe_credit(&credit.event_id, &transaction)
            .await
        {
            Ok(Some(_)) => Ok(WebhookOutcome::Credited {
                user_id: credit.user_id,
                amount_cents: credit.amount_cents,
            }),
            Ok(None) => Ok(WebhookOutcome::AlreadyProcessed),
            Err(kiln_store::StoreError::Missing(_)) => {
                // Retrying cannot help: acknowledge, and leave it to the operator.
                tracing::error!(user = %credit.user_id, checkout = %credit.checkout_id,
                    "a paid checkout names a user this server does not know");
                Ok(WebhookOutcome::Ignored)
            }
            Err(e) => Err(e.into()),
        }
    }
}
