//! Latency samples and their summary (nearest-rank percentiles).

use std::fmt;
use std::time::Duration;

/// A sorted set of latencies.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th quantile (0.0–1.0) by nearest rank; `None` when there are no samples.
    pub fn quantile(&self, p: f64) -> Option<Duration> {
        let last = self.0.len().checked_sub(1)?;
        let rank = (p * self.0.len() as f64).ceil() as usize;
        Some(self.0[rank.saturating_sub(1).min(last)])
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

impl fmt::Display for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={:<6} p50 {:>10}  p99 {:>10}  min {:>10}  max {:>10}",
            self.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.0.first().copied()),
            ms(self.0.last().copied()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Latencies {
        Latencies::new(v.iter().map(|&m| Duration::from_millis(m)).collect())
    }

    #[test]
    fn nearest_rank_quantiles() {
        let l = ms_list(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(l.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(l.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(l.quantile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(l.quantile(0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(ms_list(&[]).quantile(0.5), None);
        let l = ms_list(&[7, 3]);
        assert_eq!(l.quantile(0.5), Some(Duration::from_millis(3)));
        assert_eq!(l.quantile(0.99), Some(Duration::from_millis(7)));
        assert!(ms_list(&[]).to_string().contains("p50          -"));
    }
}
