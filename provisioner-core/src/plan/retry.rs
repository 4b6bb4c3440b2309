//! Per-claim (and per-volume) retry bookkeeping: exponential backoff with jitter, an exact
//! failure threshold, and the slow path for infeasible requests.
//!
//! Every input is plain data — the current [`Instant`], a jitter sample in `[0, 1)` — so
//! the rules are tested under a paused clock. The state resets whenever the object's
//! fingerprint changes ([`crate::plan::claim::claim_fingerprint`]): a user who edits the claim
//! or fixes the StorageClass gets an immediate retry, a fresh failure budget, and the end of
//! an infeasible delay.

use std::time::Duration;

use tokio::time::Instant;

/// How failed attempts are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure; it doubles with each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the delay (before jitter).
    pub max_backoff: Duration,
    /// Consecutive failed attempts after which the controller stops retrying until the object
    /// changes. `0` retries forever.
    pub failure_threshold: u32,
    /// Delay after an infeasible error (unless the object changes first).
    pub infeasible_delay: Duration,
}

impl Default for RetryPolicy {
    /// 1 s doubling up to 5 min, retrying forever; 5 min after an infeasible error. (The Go
    /// library's most demanding user, the CSI external-provisioner, runs with the same.)
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            failure_threshold: 0,
            infeasible_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay after `failures` consecutive failures (`failures >= 1`), before jitter:
    /// `initial · 2^(failures-1)`, capped at `max_backoff`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff)
    }

    /// [`Self::backoff`] with "equal jitter": a delay uniformly spread over
    /// `[backoff/2, backoff)` by `jitter` in `[0, 1)`, so claims that failed together do not
    /// retry together, and no delay shrinks below half its step.
    pub fn jittered_backoff(&self, failures: u32, jitter: f64) -> Duration {
        let full = self.backoff(failures);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What kind of failure an attempt ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Retry with exponential backoff.
    Transient,
    /// Retry after [`RetryPolicy::infeasible_delay`].
    Infeasible,
}

/// What to do about the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead now.
    Proceed,
    /// Not before this instant.
    NotBefore(Instant),
    /// The failure threshold was reached: wait until the object changes.
    GaveUp,
}

/// The retry state of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryState {
    fingerprint: u64,
    failures: u32,
    not_before: Option<Instant>,
}

impl RetryState {
    /// A fresh state for an object with this fingerprint.
    pub fn new(fingerprint: u64) -> Self {
        Self {
            fingerprint,
            failures: 0,
            not_before: None,
        }
    }

    /// Notes the object's current fingerprint; a change resets the state. Returns whether it
    /// did.
    pub fn observe(&mut self, fingerprint: u64) -> bool {
        if fingerprint == self.fingerprint {
            return false;
        }
        *self = Self::new(fingerprint);
        true
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether an attempt may start at `now`.
    pub fn gate(&self, now: Instant, policy: &RetryPolicy) -> Gate {
        if policy.failure_threshold != 0 && self.failures >= policy.failure_threshold {
            return Gate::GaveUp;
        }
        match self.not_before {
            Some(at) if at > now => Gate::NotBefore(at),
            _ => Gate::Proceed,
        }
    }

    /// Records a failed attempt at `now` and says when the next one may start.
    pub fn record_failure(
        &mut self,
        now: Instant,
        kind: FailureKind,
        policy: &RetryPolicy,
        jitter: f64,
    ) -> Gate {
        self.failures = self.failures.saturating_add(1);
        let delay = match kind {
            FailureKind::Transient => policy.jittered_backoff(self.failures, jitter),
            FailureKind::Infeasible => policy.infeasible_delay,
        };
        self.not_before = Some(now + delay);
        self.gate(now, policy)
    }

    /// Records a successful attempt: the next failure starts from the first step again.
    pub fn record_success(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(threshold: u32) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            failure_threshold: threshold,
            infeasible_delay: Duration::from_secs(600),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(0);
        let steps: Vec<u64> = (1..=9).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.backoff(u32::MAX), p.max_backoff, "no overflow");
    }

    #[test]
    fn jitter_spreads_over_the_upper_half_of_the_step() {
        let p = policy(0);
        assert_eq!(p.jittered_backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.jittered_backoff(3, 0.5), Duration::from_secs(3));
        assert!(p.jittered_backoff(3, 0.999) < Duration::from_secs(4));
        assert_eq!(
            p.jittered_backoff(3, 7.0),
            Duration::from_secs(4),
            "clamped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_delays_the_next_attempt_until_its_backoff_elapses() {
        let p = policy(0);
        let mut state = RetryState::new(1);
        let start = Instant::now();
        assert_eq!(state.gate(start, &p), Gate::Proceed);
        let gate = state.record_failure(start, FailureKind::Transient, &p, 0.0);
        let due = start + Duration::from_millis(500);
        assert_eq!(gate, Gate::NotBefore(due));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(state.gate(Instant::now(), &p), Gate::NotBefore(due));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(state.gate(Instant::now(), &p), Gate::Proceed);
    }

    #[test]
    fn the_threshold_allows_exactly_that_many_attempts() {
        for threshold in 1..=5 {
            let p = policy(threshold);
            let mut state = RetryState::new(1);
            let mut now = Instant::now();
            let mut attempts = 0;
            loop {
                match state.gate(now, &p) {
                    Gate::Proceed => {
                        attempts += 1;
                        state.record_failure(now, FailureKind::Transient, &p, 0.5);
                    }
                    Gate::NotBefore(at) => now = at,
                    Gate::GaveUp => break,
                }
                assert!(attempts <= threshold, "never more than the threshold");
            }
            assert_eq!(attempts, threshold);
        }
    }

    #[test]
    fn threshold_zero_retries_forever() {
        let p = policy(0);
        let mut state = RetryState::new(1);
        let now = Instant::now();
        for _ in 0..10_000 {
            state.record_failure(now, FailureKind::Transient, &p, 0.0);
        }
        assert!(matches!(state.gate(now + p.max_backoff, &p), Gate::Proceed));
    }

    #[test]
    fn a_change_resets_failures_backoff_and_the_threshold() {
        let p = policy(2);
        let mut state = RetryState::new(1);
        let now = Instant::now();
        state.record_failure(now, FailureKind::Transient, &p, 0.0);
        state.record_failure(now, FailureKind::Transient, &p, 0.0);
        assert_eq!(state.gate(now, &p), Gate::GaveUp);
        assert!(!state.observe(1), "same fingerprint, no reset");
        assert_eq!(state.gate(now, &p), Gate::GaveUp);
        assert!(state.observe(2));
        assert_eq!(state.failures(), 0);
        assert_eq!(state.gate(now, &p), Gate::Proceed);
    }

    #[tokio::test(start_paused = true)]
    async fn infeasible_waits_long_unless_the_object_changes() {
        let p = policy(0);
        let mut state = RetryState::new(1);
        let start = Instant::now();
        let gate = state.record_failure(start, FailureKind::Infeasible, &p, 0.0);
        assert_eq!(gate, Gate::NotBefore(start + p.infeasible_delay));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(matches!(state.gate(Instant::now(), &p), Gate::NotBefore(_)));
        // The class was fixed: retry at once.
        state.observe(2);
        assert_eq!(state.gate(Instant::now(), &p), Gate::Proceed);
    }

    #[test]
    fn success_restarts_the_backoff_ladder() {
        let p = policy(0);
        let mut state = RetryState::new(1);
        let now = Instant::now();
        for _ in 0..5 {
            state.record_failure(now, FailureKind::Transient, &p, 0.0);
        }
        state.record_success();
        assert_eq!(state.gate(now, &p), Gate::Proceed);
        assert_eq!(
            state.record_failure(now, FailureKind::Transient, &p, 0.0),
            Gate::NotBefore(now + Duration::from_millis(500))
        );
    }
}
