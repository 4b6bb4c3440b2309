//! A client-side token bucket (client-go's `--kube-api-qps` / `--kube-api-burst`), pure.

use std::time::{Duration, Instant};

/// A token bucket: `qps` tokens a second, at most `burst` saved up. Every request takes one
/// token; when none is left it waits for the next, in arrival order (reservations may run
/// the bucket negative, so waiting requests are not overtaken by later ones).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. `qps` must be positive; a `burst` of 0 counts as 1.
    pub fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes a token at `now`; returns how long to wait before sending (zero when a token
    /// was available).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if now > self.updated {
            let refill = now.duration_since(self.updated).as_secs_f64() * self.qps;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.updated = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Equal up to floating-point rounding.
    #[track_caller]
    fn assert_wait(actual: Duration, expected: Duration) {
        let difference = actual.abs_diff(expected);
        assert!(
            difference < Duration::from_micros(1),
            "waited {actual:?}, expected {expected:?}"
        );
    }

    #[test]
    fn a_burst_passes_at_once_then_requests_are_spaced_by_one_over_qps() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 3, start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        // The fourth and fifth wait for the 1st and 2nd token refilled, in order.
        assert_wait(bucket.reserve(start), 10 * MS);
        assert_wait(bucket.reserve(start), 20 * MS);
    }

    #[test]
    fn tokens_refill_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 2, start);
        bucket.reserve(start);
        bucket.reserve(start);
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_wait(bucket.reserve(later), 100 * MS);
    }

    #[test]
    fn a_partly_refilled_bucket_waits_only_for_the_rest() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 1, start);
        bucket.reserve(start);
        assert_wait(bucket.reserve(start + 40 * MS), 60 * MS);
    }

    #[test]
    fn zero_burst_still_lets_requests_through_one_by_one() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 0, start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_wait(bucket.reserve(start), Duration::from_secs(1));
    }
}
