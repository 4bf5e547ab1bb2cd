//! One lock per instance for what reads or replaces its sandbox as a whole: a snapshot
//! (or a fork's) must not freeze a sandbox that a restore into the same instance is
//! replacing and destroying. Entries are dropped with their last holder.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct InstanceLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl InstanceLocks {
    /// Waits for the instance's lock; held until the guard drops.
    pub(crate) async fn lock(&self, instance_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            // One map operation per critical section: a poisoned map is consistent.
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 256 {
                map.retain(|_, held| held.strong_count() > 0);
            }
            match map.get(instance_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(instance_id.to_string(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_instance_others_run_on() {
        let locks = InstanceLocks::default();
        let held = locks.lock("a").await;
        // Another instance is not held up.
        let _b = locks.lock("b").await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a"));
        assert!(waiting.await.is_err(), "a second holder of `a` waited");
        drop(held);
        let _again = locks.lock("a").await;
    }
}
