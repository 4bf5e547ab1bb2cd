//! Long-poll support: a GET on something unfinished waits, bounded, and answers the
//! moment it changes. Writers call [`Changes::notify`] with a key (a session id) after
//! every change they store; readers call [`Changes::wait_for`] with the same key and a
//! check that reads the store. The check runs after the waiter is registered, so a
//! change between the check and the wait is never missed.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
pub struct Changes {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Changes {
    /// Wakes everyone waiting on `key`.
    pub fn notify(&self, key: &str) {
        let notify = self.lock().get(key).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
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
