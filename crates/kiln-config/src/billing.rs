//! `[billing]` and `[billing.stripe]`: prices, the balance check and Stripe.
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

/// Prices, the balance check and Stripe. Usage is recorded whether or not billing is
/// enabled; enabled, a session needs a balance to start and stops when it runs out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Refuse sessions without balance and stop them when it runs out. Off by default: a
    /// self-hosted server records usage without charging anyone.
    pub enabled: bool,
    pub cost_per_minute_cents: i64,
    pub agent_job_cost_cents: i64,
    /// How often running sessions are priced against their users' balances (1–3600).
    pub balance_check_secs: u64,
    /// How often ready sessions' sandboxes are checked and their heartbeat recorded (1–3600).
    pub heartbeat_secs: u64,
    /// The smallest deposit accepted, in cents.
    pub min_deposit_cents: i64,
    pub stripe: StripeConfig,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cost_per_minute_cents: 5,
            agent_job_cost_cents: 50,
            balance_check_secs: 10,
            heartbeat_secs: 30,
            min_deposit_cents: 500,
            stripe: StripeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    pub api_base: String,
    /// `sk_…`; deposits are refused (503) without it.
    pub secret_key: Option<Secret>,
    /// `whsec_…`; webhooks are refused without it.
    pub webhook_secret: Option<Secret>,
    pub success_url: String,
    pub cancel_url: String,
    /// How old a webhook's signed timestamp may be (either way), in seconds.
    pub webhook_tolerance_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            secret_key: None,
            webhook_secret: None,
            success_url: "http://127.0.0.1:8000/billing/success".into(),
            cancel_url: "http://127.0.0.1:8000/billing/cancel".into(),
            webhook_tolerance_secs: 300,
        }
    }
}

impl BillingConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let b = self;
        for (name, secs) in [
            ("billing.balance_check_secs", b.balance_check_secs),
            ("billing.heartbeat_secs", b.heartbeat_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                return Err(ConfigError::Rule(format!(
                    "{name} must be between 1 and 3600"
                )));
            }
        }
        if b.cost_per_minute_cents < 0 || b.agent_job_cost_cents < 0 || b.min_deposit_cents < 1 {
            return Err(ConfigError::Rule(
                "billing prices must not be negative, and min_deposit_cents at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use crate::{Config, Overrides};

    #[test]
    fn billing_defaults_and_bounds() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.billing.enabled);
            assert_eq!(config.billing.cost_per_minute_cents, 5);
            assert_eq!(config.billing.balance_check_secs, 10);
            assert_eq!(config.billing.stripe.api_base, "https://api.stripe.com");
            assert_eq!(config.billing.stripe.webhook_tolerance_secs, 300);
            assert_eq!(config.billing.min_deposit_cents, 500);
            jail.set_env("KILN_BILLING__BALANCE_CHECK_SECS", "0");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("balance_check_secs"), "{err}");
            jail.set_env("KILN_BILLING__BALANCE_CHECK_SECS", "3601");
            assert!(Config::load(None, &Overrides::default()).is_err());
            jail.set_env("KILN_BILLING__BALANCE_CHECK_SECS", "3600");
            jail.set_env("KILN_BILLING__STRIPE__SECRET_KEY", "sk_test_hidden");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.to_masked_toml().contains("sk_test_hidden"));
            Ok(())
        });
    }
}
