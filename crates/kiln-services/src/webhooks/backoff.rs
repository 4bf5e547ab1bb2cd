//! When a failed delivery is tried again: exponential backoff with jitter.
use std::time::Duration;

/// The wait after failed attempt number `attempt` (1 for the first): `base · 2^(attempt−1)`,
/// capped, of which the second half is jittered by `jitter` ∈ [0, 1) ("equal jitter":
/// never less than half the step, so retries still spread out, and receivers recovering
/// from an outage are not hit by every sender at once).
pub fn delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let step = base
        .checked_mul(1u32 << exponent.min(31))
        .unwrap_or(cap)
        .min(cap);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(3600);
        let steps: Vec<u64> = (1..=11)
            .map(|n| delay(n, base, cap, 1.0).as_secs())
            .collect();
        assert_eq!(
            steps,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        for n in 1..=11 {
            let low = delay(n, base, cap, 0.0);
            let high = delay(n, base, cap, 1.0);
            let mid = delay(n, base, cap, 0.5);
            assert_eq!(low * 2, high, "attempt {n}");
            assert!(low < mid && mid < high, "attempt {n}");
        }
        assert_eq!(delay(1_000, base, cap, 1.0), cap, "no overflow");
        assert_eq!(delay(0, base, cap, 1.0), base);
    }
}
