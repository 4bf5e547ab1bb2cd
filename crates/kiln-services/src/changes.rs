//! Long-poll support: a GET on something unfinished waits, bounded, and answers the
//! moment it changes. Writers call [`Changes::notify`] with a key (a session id) after
//! every change they store; readers call [`Changes::wait_for`] with the same key and a
//! check that reads the store. The check runs after the waiter is registered, so a
//! change between the check and the wait is never missed.
//!
//! On PostgreSQL the nodes share the store, so a change stored on one node must wake the
//! waiters of every node: with a feed attached ([`Changes::attach_feed`]) each key is
//! also published (NOTIFY, right after the change committed) and every node's listener
//! wakes its own waiters on it. A listener that lost its connection wakes every waiter
//! once it is back, since what changed meanwhile was not heard.
mod feed;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kiln_store::ChangeFeed;
use tokio::sync::Notify;
use tokio::time::Instant;

use feed::Outbox;

#[derive(Default)]
pub struct Changes {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Keys on their way to the other nodes, when a feed is attached.
    outbox: OnceLock<Arc<Outbox>>,
}

impl Changes {
    /// Wakes everyone waiting on `key`, on every node when a feed is attached.
    pub fn notify(&self, key: &str) {
        self.wake(key);
        if let Some(outbox) = self.outbox.get() {
            outbox.push(key);
        }
    }

    /// Wakes this process's waiters on `key`.
    fn wake(&self, key: &str) {
        let notify = self.lock().get(key).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter of this process, to look again.
    fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = self.lock().values().cloned().collect();
        for notify in all {
            notify.notify_waiters();
        }
    }

    /// Publishes every change to the other processes on the store and wakes this one's
    /// waiters on theirs (once; later calls do nothing). The tasks end with `self`.
    pub fn attach_feed(self: &Arc<Self>, feed: Arc<dyn ChangeFeed>) {
        let outbox = Arc::new(Outbox::default());
        if self.outbox.set(outbox.clone()).is_err() {
            return;
        }
        tokio::spawn(feed::publish(outbox, feed.clone()));
        tokio::spawn(feed::listen(Arc::downgrade(self), feed));
    }

    /// Whether changes on other nodes wake this process's waiters.
    pub fn heard_across_nodes(&self) -> bool {
        self.outbox.get().is_some()
    }

    /// Runs `check` until it says done (`Ok((value, true))`), `timeout` passes, or it
    /// fails; returns the last value. `check` runs again after every notification.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        key: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, bool), E>>,
    {
        let deadline = Instant::now() + timeout;
        let notify = self.entry(key);
        let result = loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match check().await {
                Ok((value, true)) => break Ok(value),
                Ok((value, false)) if Instant::now() >= deadline => break Ok(value),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        self.release(key, notify);
        result
    }

    fn entry(&self, key: &str) -> Arc<Notify> {
        self.lock().entry(key.to_string()).or_default().clone()
    }

    /// Forgets `key` when the last waiter leaves, so the map holds only keys someone
    /// is waiting on.
    fn release(&self, key: &str, notify: Arc<Notify>) {
        let mut map = self.lock();
        // Ours and the map's: no other waiter holds it.
        if Arc::strong_count(&notify) <= 2 {
            map.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        // A panic while holding this lock leaves the map consistent (every operation is
        // a single insert or remove), so a poisoned lock is safe to keep using.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn wakes_on_change_and_times_out_otherwise() {
        let changes = Arc::new(Changes::default());
        let flag = Arc::new(AtomicBool::new(false));
        let start = std::time::Instant::now();
        let waiter = {
            let (changes, flag) = (changes.clone(), flag.clone());
            tokio::spawn(async move {
                changes
                    .wait_for("k", Duration::from_secs(10), || {
                        let done = flag.load(Ordering::SeqCst);
                        async move { Ok::<_, ()>((done, done)) }
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        flag.store(true, Ordering::SeqCst);
        changes.notify("k");
        assert_eq!(waiter.await.expect("join"), Ok(true));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "woke on notify, not on timeout"
        );
        assert!(changes.lock().is_empty(), "entries are released");

        let start = std::time::Instant::now();
        let value = changes
            .wait_for("other", Duration::from_millis(100), || async {
                Ok::<_, ()>((7, false))
            })
            .await;
        assert_eq!(value, Ok(7));
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
