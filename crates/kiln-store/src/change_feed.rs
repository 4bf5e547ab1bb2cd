//! Changes that other processes on the same database must hear of at once: PostgreSQL's
//! LISTEN/NOTIFY on one channel, the payload a key (a session id). A node that stores a
//! change publishes its key; every node listens and wakes its own long-polls on that key
//! (`kiln_services::changes`). SQLite has no feed: one process serves a SQLite file, and
//! its waiters are woken in-process.
use std::sync::Arc;

use async_trait::async_trait;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::Result;

/// The NOTIFY channel of every change.
pub const CHANNEL: &str = "kiln_changes";
/// The listener connection's `application_name` (`pg_stat_activity`).
pub const LISTENER_NAME: &str = "kiln-change-listener";
/// PostgreSQL refuses a payload of 8000 bytes or more; a key is an id, far shorter.
const MAX_PAYLOAD: usize = 7999;
/// Keys sent in one statement (the publisher batches what piled up meanwhile).
const BATCH: usize = 256;

/// Publishes changes and opens listeners on them.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Tells every listener (this process's included) that `keys` changed.
    async fn publish(&self, keys: &[String]) -> Result<()>;
    /// A listener on the channel, subscribed when this returns: a change published after
    /// that is heard.
    async fn listen(&self) -> Result<Box<dyn ChangeListener>>;
}

/// What a listener hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// This key changed.
    Changed(String),
    /// The connection was lost and is back: changes in between were not heard, so
    /// every waiter must look again.
    Reconnected,
}

#[async_trait]
pub trait ChangeListener: Send {
    /// The next thing heard. An error leaves the listener unusable: open another.
    async fn next(&mut self) -> Result<Heard>;
}

/// The PostgreSQL feed: publishes on the store's pool; a listener holds a connection of
/// its own, outside that pool.
pub(crate) struct PgChangeFeed {
    pool: PgPool,
}

pub(crate) fn postgres(pool: &sqlx::Pool<Postgres>) -> Arc<dyn ChangeFeed> {
    Arc::new(PgChangeFeed { pool: pool.clone() })
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn publish(&self, keys: &[String]) -> Result<()> {
        let keys: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.is_empty() && k.len() <= MAX_PAYLOAD && !k.contains('\0'))
            .collect();
        for chunk in keys.chunks(BATCH) {
            sqlx::query("SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k")
                .bind(CHANNEL)
                .bind(chunk)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn listen(&self) -> Result<Box<dyn ChangeListener>> {
        // A pool of one for the listener, so the connection it holds for good is not one
        // the queries' pool could lend.
        let own = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(
                (*self.pool.connect_options())
                    .clone()
                    .application_name(LISTENER_NAME),
            );
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        Ok(Box::new(PgChangeListener { listener }))
    }
}

struct PgChangeListener {
    listener: PgListener,
}

#[async_trait]
impl ChangeListener for PgChangeListener {
    async fn next(&mut self) -> Result<Heard> {
        // `try_recv` says `None` once when the connection drops; sqlx reconnects (eagerly,
        // and LISTENs again) before it returns, so what follows is heard again.
        Ok(match self.listener.try_recv().await? {
            Some(notification) => Heard::Changed(notification.payload().to_string()),
            None => Heard::Reconnected,
        })
    }
}
