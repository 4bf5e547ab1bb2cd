//! The two tasks of an attached [`ChangeFeed`]: one publishes the keys this process
//! changed, one listens for everybody's. Both end when the [`super::Changes`] they serve
//! is dropped (the outbox goes with it, and with the outbox the senders they watch).
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kiln_store::{ChangeFeed, Heard};
use tokio::sync::{mpsc, watch};

use super::Changes;

/// Keys waiting to be published, at most this many distinct ones: more pile up only
/// while the database refuses the publisher, and then a waiter elsewhere still has its
/// own deadline.
const MAX_PENDING: usize = 10_000;
/// Waits between attempts to reach the database again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

pub(super) struct Outbox {
    pending: Mutex<HashSet<String>>,
    /// Rings the publisher; it ends when this is dropped.
    doorbell: mpsc::Sender<()>,
    bell: Mutex<Option<mpsc::Receiver<()>>>,
    /// Never sent on: the listener ends when this is dropped.
    closing: watch::Sender<()>,
}

impl Default for Outbox {
    fn default() -> Self {
        let (doorbell, bell) = mpsc::channel(1);
        Self {
            pending: Mutex::new(HashSet::new()),
            doorbell,
            bell: Mutex::new(Some(bell)),
            closing: watch::channel(()).0,
        }
    }
}

impl Outbox {
    pub(super) fn push(&self, key: &str) {
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING && !pending.contains(key) {
                tracing::warn!(key, "the change feed is behind; a change is not published");
                return;
            }
            pending.insert(key.to_string());
        }
        // Full: the publisher is already rung and takes every pending key.
        let _ = self.doorbell.try_send(());
    }

    fn take(&self) -> Vec<String> {
        lock(&self.pending).drain().collect()
    }

    fn put_back(&self, keys: Vec<String>) {
        let mut pending = lock(&self.pending);
        for key in keys {
            if pending.len() >= MAX_PENDING {
                break;
            }
            pending.insert(key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every operation under these locks is one insert or drain: a poisoned lock is
    // still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes what piles up in `outbox`, in batches, until the outbox is dropped.
pub(super) async fn publish(outbox: Arc<Outbox>, feed: Arc<dyn ChangeFeed>) {
    let Some(mut bell) = lock(&outbox.bell).take() else {
        return;
    };
    let weak: Weak<Outbox> = Arc::downgrade(&outbox);
    drop(outbox);
    let outbox = weak;
    let mut retry = FIRST_RETRY;
    while bell.recv().await.is_some() {
        let Some(keys) = outbox.upgrade().map(|o| o.take()) else {
            return;
        };
        if keys.is_empty() {
            continue;
        }
        match feed.publish(&keys).await {
            Ok(()) => retry = FIRST_RETRY,
            Err(e) => {
                tracing::warn!(error = %e, keys = keys.len(), "cannot publish changes; retrying");
                let Some(outbox) = outbox.upgrade() else {
                    return;
                };
                outbox.put_back(keys);
                let _ = outbox.doorbell.try_send(());
                drop(outbox);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

/// Listens until `changes` is dropped: wakes its waiters on every key heard, and every
/// waiter after each (re)connection, which may have missed changes.
pub(super) async fn listen(changes: Weak<Changes>, feed: Arc<dyn ChangeFeed>) {
    let Some(mut closing) = changes
        .upgrade()
        .and_then(|c| c.outbox.get().map(|o| o.closing.subscribe()))
    else {
        return;
    };
    let mut retry = FIRST_RETRY;
    loop {
        let opened = tokio::select! {
            opened = feed.listen() => opened,
            _ = closing.changed() => return,
        };
        match opened {
            Ok(mut listener) => {
                retry = FIRST_RETRY;
                let Some(c) = changes.upgrade() else { return };
                c.wake_all();
                drop(c);
                loop {
                    let heard = tokio::select! {
                        heard = listener.next() => heard,
                        _ = closing.changed() => return,
                    };
                    let Some(c) = changes.upgrade() else { return };
                    match heard {
                        Ok(Heard::Changed(key)) => c.wake(&key),
                        Ok(Heard::Reconnected) => {
                            tracing::warn!(
                                "the change listener reconnected; every waiter looks again"
                            );
                            c.wake_all();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the change listener failed; opening another");
                            // Changes may go unheard until the next one is open: look
                            // again then (above), and until then by the waiters' deadlines.
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for changes; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = closing.changed() => return,
        }
        retry = (retry * 2).min(LAST_RETRY);
    }
}
