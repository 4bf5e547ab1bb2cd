//! Counting failures (sign-ins, mail requests) per key within a fixed window, in memory.
//! One node's view: behind several nodes each counts its own share, which still bounds
//! guessing (the limit times the nodes).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most; past it, expired windows are dropped, then (if still full) the
/// whole map, so a flood of addresses cannot grow memory without bound.
const MAX_KEYS: usize = 100_000;

pub(crate) struct Limiter {
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` when `key` has reached `limit` in its window.
    pub(crate) fn blocked(&self, key: &str, limit: u32, now: Instant) -> Option<u64> {
        let counts = self.lock();
        let (start, n) = counts.get(key)?;
        let end = *start + self.window;
        (*n >= limit && end > now).then(|| end.duration_since(now).as_secs().max(1))
    }

    /// Counts one event for `key`.
    pub(crate) fn hit(&self, key: &str, now: Instant) {
        let mut counts = self.lock();
        if counts.len() >= MAX_KEYS {
            let window = self.window;
            counts.retain(|_, (start, _)| *start + window > now);
            if counts.len() >= MAX_KEYS {
                counts.clear();
            }
        }
        let entry = counts.entry(key.to_string()).or_insert((now, 0));
        if entry.0 + self.window <= now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    pub(crate) fn clear(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_at_the_limit_until_the_window_ends() {
        let limiter = Limiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.blocked("a", 3, t0), None);
            limiter.hit("a", t0);
        }
        assert_eq!(limiter.blocked("a", 3, t0), Some(60));
        assert_eq!(limiter.blocked("b", 3, t0), None, "keys are apart");
        let later = t0 + Duration::from_secs(61);
        assert_eq!(limiter.blocked("a", 3, later), None, "the window passed");
        limiter.hit("a", later);
        assert_eq!(
            limiter.blocked("a", 3, later),
            None,
            "a new window starts at 1"
        );
        limiter.clear("a");
        assert_eq!(limiter.blocked("a", 1, later), None);
    }
}
