//! Account mails: composed into the outbox (in the transaction that makes their token) and
//! sent by a background task over SMTP (`lettre`), with retries and backoff. Without an
//! SMTP server configured, a mail is written to the log and marked `logged`; its link stays
//! in the outbox for `kiln accounts pending-links`.
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_config::{MailConfig, SmtpTls};
use kiln_store::{MailStatus, OutboxMail, Store};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use tokio::sync::Notify;

use crate::ids::new_id;
use crate::webhooks::backoff_delay;

/// Mails claimed per round.
const BATCH: u64 = 20;

/// A mail for the outbox, with the link it carries (kept apart for the admin CLI).
pub(crate) fn compose(
    user_id: &str,
    to: &str,
    subject: &str,
    intro: &str,
    link: String,
) -> OutboxMail {
    let now = Utc::now();
    OutboxMail {
        mail_id: new_id("mail"),
        user_id: Some(user_id.to_string()),
        to_address: to.to_string(),
        subject: subject.to_string(),
        body: format!(
            "{intro}\n\n{link}\n\nIf you did not ask for this, ignore this mail.\n-- Kiln\n"
        ),
        link: Some(link),
        status: MailStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
        sent_at: None,
    }
}

pub(crate) struct Sender {
    pub store: Arc<dyn Store>,
    pub config: MailConfig,
    pub wake: Arc<Notify>,
}

impl Sender {
    pub(crate) async fn run(self: Arc<Self>) {
        let transport = match self.transport() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "mail: cannot set up the SMTP transport; mails stay pending");
                return;
            }
        };
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            if let Err(e) = self.round(transport.as_ref()).await {
                tracing::warn!(error = %e, "mail: a sending round failed");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    fn transport(&self) -> Result<Option<AsyncSmtpTransport<Tokio1Executor>>, String> {
        let Some(host) = &self.config.smtp_host else {
            return Ok(None);
        };
        let builder = match self.config.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| e.to_string())?,
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?
            }
        };
        let mut builder = builder
            .port(self.config.smtp_port)
            .timeout(Some(Duration::from_secs(self.config.attempt_timeout_secs)));
        if let (Some(user), Some(password)) =
            (&self.config.smtp_username, &self.config.smtp_password)
        {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        Ok(Some(builder.build()))
    }

    async fn round(
        &self,
        transport: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    ) -> Result<(), kiln_store::StoreError> {
        let now = Utc::now();
        let lease = chrono::Duration::seconds(
            i64::try_from(self.config.attempt_timeout_secs).unwrap_or(60) + 5,
        );
        for mail in self.store.claim_mail(now, now + lease, BATCH).await? {
            let outcome = match transport {
                None => {
                    tracing::info!(to = %mail.to_address, subject = %mail.subject,
                        "mail: no SMTP server configured; `kiln accounts pending-links` shows its link");
                    Ok(MailStatus::Logged)
                }
                Some(t) => self.send(t, &mail).await.map(|()| MailStatus::Sent),
            };
            let now = Utc::now();
            let (status, next_at, error) = match outcome {
                Ok(status) => (status, now, None),
                Err(e) if mail.attempts >= self.config.max_attempts => {
                    tracing::warn!(mail_id = %mail.mail_id, error = %e, "mail: giving up");
                    (MailStatus::Dead, now, Some(e))
                }
                Err(e) => {
                    let wait = backoff_delay(
                        mail.attempts,
                        Duration::from_millis(self.config.backoff_base_ms),
                        Duration::from_secs(self.config.backoff_cap_secs),
                        rand::thread_rng().gen(),
                    );
                    let wait = chrono::Duration::from_std(wait).unwrap_or(lease);
                    (MailStatus::Pending, now + wait, Some(e))
                }
            };
            self.store
                .record_mail_attempt(
                    &mail.mail_id,
                    mail.attempts,
                    status,
                    next_at,
                    error.as_deref(),
                    now,
                )
                .await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        transport: &AsyncSmtpTransport<Tokio1Executor>,
        mail: &OutboxMail,
    ) -> Result<(), String> {
        let message = Message::builder()
            .from(self.config.from.parse().map_err(|e| format!("from: {e}"))?)
            .to(mail.to_address.parse().map_err(|e| format!("to: {e}"))?)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| e.to_string())?;
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
