//! `[mail]`: how account mails (verification, password reset, e-mail change) are sent.
//! Without `smtp_host`, mails are written to the log and their links kept for an admin
//! (`kiln accounts pending-links`).
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// SMTP server; unset: no mail is sent (logged instead).
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `none` (plain, for a relay on localhost), `starttls` or `tls` (implicit, port 465).
    pub smtp_tls: SmtpTls,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<Secret>,
    /// The From address.
    pub from: String,
    /// Where links in mails point: the public base URL of this server (or of a front end
    /// that forwards `/v1/auth/...`).
    pub public_url: String,
    /// Attempts of one mail before it is `dead`.
    pub max_attempts: u32,
    /// Delay before the second attempt; each later one doubles it, up to the cap.
    pub backoff_base_ms: u64,
    pub backoff_cap_secs: u64,
    /// How long one SMTP attempt may take.
    pub attempt_timeout_secs: u64,
    /// How often the sender looks for due mail when nothing woke it.
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            from: "Kiln <kiln@localhost>".into(),
            public_url: "http://127.0.0.1:8000".into(),
            max_attempts: 8,
            backoff_base_ms: 5_000,
            backoff_cap_secs: 3600,
            attempt_timeout_secs: 20,
            poll_interval_ms: 1000,
        }
    }
}

impl MailConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let rule = |m: &str| Err(ConfigError::Rule(format!("mail.{m}")));
        if self.max_attempts == 0 {
            return rule("max_attempts must be at least 1");
        }
        if self.attempt_timeout_secs == 0 || self.poll_interval_ms == 0 {
            return rule("attempt_timeout_secs and poll_interval_ms must be at least 1");
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return rule("public_url must be an http(s) URL");
        }
        if self.smtp_username.is_some() != self.smtp_password.is_some() {
            return rule("smtp_username and smtp_password go together");
        }
        Ok(())
    }
}
