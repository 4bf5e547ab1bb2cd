//! `[accounts]`: password accounts under `/v1/auth` (hashing, token lifetimes, sign-in
//! rate limits, field limits).
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Argon2id memory cost in KiB. The default (19 MiB, 2 passes, 1 lane) is OWASP's
    /// first recommended setting: measured ≈ 0.1 s per hash in a debug build on a busy
    /// 2-core machine (less in release), so every guess against a stolen database costs
    /// that much CPU and 19 MiB, while a sign-in stays well under a second.
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Shortest and longest password, in characters.
    pub min_password_chars: usize,
    pub max_password_chars: usize,
    /// How long an e-mailed link works.
    pub verify_email_ttl_secs: u64,
    pub reset_password_ttl_secs: u64,
    pub change_email_ttl_secs: u64,
    /// Failed sign-ins allowed per account and per client address within the window;
    /// beyond them, 429 with `Retry-After` until the window passes.
    pub login_failures_per_account: u32,
    pub login_failures_per_address: u32,
    pub login_window_secs: u64,
    /// Mails (reset, verification) one address may ask for within the window.
    pub mails_per_address: u32,
    /// Live device sessions one user may hold; signing in beyond it ends the oldest.
    pub max_sessions_per_user: u32,
    /// How long `POST /v1/auth/sudo` lets its session or key call destructive routes
    /// (account deletion, factor removal, e-mail change, org key revocation).
    pub sudo_ttl_secs: u64,
    /// MFA recovery (`/v1/auth/recovery/*`): how long after the request its mailed link
    /// starts to work (so whoever holds the mailbox cannot skip the second factor in real
    /// time; the owner's sign-in meanwhile cancels it), and how long it works after that.
    pub mfa_recovery_cooldown_secs: u64,
    pub mfa_recovery_window_secs: u64,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            min_password_chars: 10,
            max_password_chars: 256,
            verify_email_ttl_secs: 48 * 3600,
            reset_password_ttl_secs: 3600,
            change_email_ttl_secs: 24 * 3600,
            login_failures_per_account: 10,
            login_failures_per_address: 30,
            login_window_secs: 15 * 60,
            mails_per_address: 10,
            max_sessions_per_user: 50,
            sudo_ttl_secs: 5 * 60,
            mfa_recovery_cooldown_secs: 24 * 3600,
            mfa_recovery_window_secs: 72 * 3600,
        }
    }
}

impl AccountsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let rule = |m: &str| Err(ConfigError::Rule(format!("accounts.{m}")));
        if self.argon2_memory_kib < 8 * self.argon2_parallelism.max(1)
            || self.argon2_iterations == 0
            || self.argon2_parallelism == 0
        {
            return rule(
                "argon2 parameters: memory >= 8 KiB per lane, iterations and parallelism >= 1",
            );
        }
        if self.mfa_recovery_window_secs == 0 {
            return rule("mfa_recovery_window_secs must be at least 1");
        }
        if self.min_password_chars == 0 || self.max_password_chars < self.min_password_chars {
            return rule("min_password_chars must be >= 1 and <= max_password_chars");
        }
        if self.max_password_chars > 4096 {
            return rule("max_password_chars must be at most 4096");
        }
        if self.login_window_secs == 0 || self.max_sessions_per_user == 0 {
            return rule("login_window_secs and max_sessions_per_user must be at least 1");
        }
        if !(1..=24 * 3600).contains(&self.sudo_ttl_secs) {
            return rule("sudo_ttl_secs must be 1 to 86400");
        }
        Ok(())
    }
}
