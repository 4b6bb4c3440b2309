//! The leader election decisions, as client-go's `LeaderElector` makes them, over plain
//! data: the record read from the lock, the monotonic time now and the wall time now. No
//! I/O, no clock of its own, so every rule is tested with hand-made times.
//!
//! The rule that matters: a lease is valid for `leaseDurationSeconds` from when **this
//! process observed** the record change, never from the record's `renewTime`. Clocks of
//! other machines may be skewed arbitrarily; only their rates must roughly agree.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::record::LeaderRecord;

/// Rejected election timings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimingsError {
    /// A duration is zero, or the lease is shorter than the one second the record can express.
    #[error("the lease duration must be at least 1s and the other durations above zero")]
    TooShort,
    /// The holder would keep the lease after it stopped working.
    #[error("the lease duration ({lease:?}) must be longer than the renew deadline ({renew:?})")]
    LeaseNotLongerThanRenewDeadline {
        /// The lease duration.
        lease: Duration,
        /// The renew deadline.
        renew: Duration,
    },
    /// Not even one jittered retry fits into the renew deadline.
    #[error(
        "the renew deadline ({renew:?}) must be longer than 1.2 × the retry period ({retry:?})"
    )]
    RenewDeadlineTooShort {
        /// The renew deadline.
        renew: Duration,
        /// The retry period.
        retry: Duration,
    },
}

/// How long a lease lasts, how long its holder keeps trying to renew it, and how often
/// everyone tries. Defaults: 15 s, 10 s, 2 s (client-go's and the Go provisioner
/// library's).
///
/// ```
/// use std::time::Duration;
/// use provisioner_core::leader::Timings;
///
/// let timings = Timings::new(
///     Duration::from_secs(30),
///     Duration::from_secs(20),
///     Duration::from_secs(4),
/// )?;
/// assert_eq!(timings.lease_duration(), Duration::from_secs(30));
/// assert!(Timings::new(Duration::from_secs(5), Duration::from_secs(10), Duration::from_secs(2)).is_err());
/// # Ok::<(), provisioner_core::leader::TimingsError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// client-go's `JitterFactor`: waits between attempts are stretched by up to this factor.
pub(crate) const JITTER_FACTOR: f64 = 1.2;

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// Timings, validated as client-go validates them: lease longer than the renew
    /// deadline, renew deadline longer than 1.2 retry periods, lease at least one second.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, TimingsError> {
        if lease_duration < Duration::from_secs(1)
            || renew_deadline.is_zero()
            || retry_period.is_zero()
        {
            return Err(TimingsError::TooShort);
        }
        if lease_duration <= renew_deadline {
            return Err(TimingsError::LeaseNotLongerThanRenewDeadline {
                lease: lease_duration,
                renew: renew_deadline,
            });
        }
        if renew_deadline <= retry_period.mul_f64(JITTER_FACTOR) {
            return Err(TimingsError::RenewDeadlineTooShort {
                renew: renew_deadline,
                retry: retry_period,
            });
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// How long a lease lasts without renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How long the holder keeps trying to renew before it stops working.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// The pause between attempts.
    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// The lease duration as the record states it (whole seconds, as client-go truncates).
    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// What to do with the lock next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No lock object exists: create it with this record.
    Create(LeaderRecord),
    /// Write this record over the one read (acquiring or renewing), conditional on the
    /// version read.
    Update(LeaderRecord),
    /// Someone else holds a lease that is still valid: wait.
    HeldByOther {
        /// The holder's identity.
        holder: String,
    },
}

/// One participant's view of an election: what it last observed, when, and when it last
/// renewed its own lease.
#[derive(Clone, Debug)]
pub struct Election {
    identity: String,
    timings: Timings,
    observed: Option<LeaderRecord>,
    observed_at: Option<Instant>,
    renewed_at: Option<Instant>,
}

impl Election {
    /// A participant named `identity` that has observed nothing yet.
    pub fn new(identity: impl Into<String>, timings: Timings) -> Self {
        Self {
            identity: identity.into(),
            timings,
            observed: None,
            observed_at: None,
            renewed_at: None,
        }
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The record last observed (read or written).
    pub fn observed(&self) -> Option<&LeaderRecord> {
        self.observed.as_ref()
    }

    /// Whether the record last observed names this participant (client-go's `IsLeader`).
    pub fn holds_record(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|record| record.holder_identity == self.identity)
    }

    /// Whether this participant may work at `now`: it holds the record and renewed it
    /// less than the renew deadline ago. Past the deadline it must stop, while its lease
    /// is still valid for the others, so two leaders never work at once.
    pub fn is_leading(&self, now: Instant) -> bool {
        self.holds_record()
            && self.renewed_at.is_some_and(|renewed| {
                now.saturating_duration_since(renewed) < self.timings.renew_deadline
            })
    }

    /// When leadership ends unless renewed before (`None` when not leading).
    pub fn renew_deadline_at(&self) -> Option<Instant> {
        self.renewed_at
            .filter(|_| self.holds_record())
            .map(|renewed| renewed + self.timings.renew_deadline)
    }

    /// Whether the lease last observed is still valid at `now`, counted from when it was
    /// observed, for the duration it states.
    pub fn observed_lease_valid(&self, now: Instant) -> bool {
        match (&self.observed, self.observed_at) {
            (Some(record), Some(observed_at)) => {
                let duration =
                    Duration::from_secs(u64::try_from(record.lease_duration_seconds).unwrap_or(0));
                observed_at + duration > now
            }
            _ => false,
        }
    }

    /// Decides the next step from `current`, the record just read (`None`: no lock object
    /// exists). Records `current` as observed at `now` if it differs from what was observed
    /// before. `wall` is only written into the record.
    pub fn next_step(
        &mut self,
        current: Option<&LeaderRecord>,
        now: Instant,
        wall: Timestamp,
    ) -> Step {
        let mut ours = LeaderRecord {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.timings.lease_seconds(),
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: 0,
        };
        let Some(current) = current else {
            return Step::Create(ours);
        };
        if self.observed.as_ref() != Some(current) {
            self.observed = Some(current.clone());
            self.observed_at = Some(now);
        }
        if current.is_held() && !self.holds_record() && self.observed_lease_valid(now) {
            return Step::HeldByOther {
                holder: current.holder_identity.clone(),
            };
        }
        if self.holds_record() {
            ours.acquire_time = current.acquire_time;
            ours.leader_transitions = current.leader_transitions;
        } else {
            ours.leader_transitions = current.leader_transitions.saturating_add(1);
        }
        Step::Update(ours)
    }

    /// The record to renew with without reading the lock first, when this participant
    /// leads and its lease is valid (client-go's optimistic renewal; if the write fails,
    /// read and decide with [`next_step`](Self::next_step)).
    pub fn fast_renewal(&self, now: Instant, wall: Timestamp) -> Option<LeaderRecord> {
        if !self.holds_record() || !self.observed_lease_valid(now) {
            return None;
        }
        let observed = self.observed.as_ref()?;
        Some(LeaderRecord {
            renew_time: Some(wall),
            lease_duration_seconds: self.timings.lease_seconds(),
            ..observed.clone()
        })
    }

    /// `record` was written at `now`: it is what everyone now observes, and if it names
    /// this participant, its lease was renewed.
    pub fn written(&mut self, record: LeaderRecord, now: Instant) {
        self.renewed_at = (record.holder_identity == self.identity).then_some(now);
        self.observed = Some(record);
        self.observed_at = Some(now);
    }

    /// The record that gives the lock up so that another participant takes it at once: no
    /// holder, a one-second lease, the transitions kept (client-go's release). `None` when
    /// this participant does not hold the record.
    pub fn release_record(&self, wall: Timestamp) -> Option<LeaderRecord> {
        let observed = self.observed.as_ref().filter(|_| self.holds_record())?;
        Some(LeaderRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: observed.leader_transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn wall() -> Timestamp {
        "2024-05-01T10:00:00Z".parse().unwrap()
    }

    fn timings() -> Timings {
        Timings::default()
    }

    fn held_by(holder: &str, transitions: i32) -> LeaderRecord {
        LeaderRecord {
            holder_identity: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall()),
            renew_time: Some(wall()),
            leader_transitions: transitions,
        }
    }

    /// Runs one attempt and, if it writes, pretends the write succeeded.
    fn attempt(election: &mut Election, current: Option<&LeaderRecord>, now: Instant) -> Step {
        let step = election.next_step(current, now, wall());
        if let Step::Create(record) | Step::Update(record) = &step {
            election.written(record.clone(), now);
        }
        step
    }

    #[test]
    fn timings_are_validated_like_client_go() {
        assert!(Timings::new(15 * SECOND, 10 * SECOND, 2 * SECOND).is_ok());
        assert_eq!(
            Timings::new(10 * SECOND, 10 * SECOND, 2 * SECOND),
            Err(TimingsError::LeaseNotLongerThanRenewDeadline {
                lease: 10 * SECOND,
                renew: 10 * SECOND
            })
        );
        // 1.2 × 2 s = 2.4 s does not fit into 2.4 s.
        assert!(matches!(
            Timings::new(15 * SECOND, Duration::from_millis(2400), 2 * SECOND),
            Err(TimingsError::RenewDeadlineTooShort { .. })
        ));
        assert_eq!(
            Timings::new(
                Duration::from_millis(900),
                Duration::from_millis(500),
                Duration::from_millis(100)
            ),
            Err(TimingsError::TooShort)
        );
        assert_eq!(
            Timings::new(15 * SECOND, 10 * SECOND, Duration::ZERO),
            Err(TimingsError::TooShort)
        );
    }

    #[test]
    fn creates_the_lock_when_there_is_none() {
        let mut election = Election::new("a", timings());
        let step = election.next_step(None, Instant::now(), wall());
        assert_eq!(step, Step::Create(held_by("a", 0)));
        assert!(
            !election.holds_record(),
            "nothing is held before the write succeeds"
        );
    }

    #[test]
    fn a_successful_write_makes_the_writer_leader_until_the_renew_deadline() {
        let start = Instant::now();
        let mut election = Election::new("a", timings());
        attempt(&mut election, None, start);
        assert!(election.is_leading(start));
        assert!(election.is_leading(start + 9 * SECOND));
        assert!(!election.is_leading(start + 10 * SECOND));
        assert_eq!(election.renew_deadline_at(), Some(start + 10 * SECOND));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let start = Instant::now();
        let mut election = Election::new("a", timings());
        let mut mine = held_by("a", 4);
        mine.acquire_time = Some("2024-04-01T00:00:00Z".parse().unwrap());
        election.written(mine.clone(), start);

        let later: Timestamp = "2024-05-01T10:00:02Z".parse().unwrap();
        let step = election.next_step(Some(&mine), start + 2 * SECOND, later);
        let Step::Update(renewed) = step else {
            panic!("expected a renewal, got {step:?}")
        };
        assert_eq!(renewed.holder_identity, "a");
        assert_eq!(renewed.acquire_time, mine.acquire_time);
        assert_eq!(renewed.renew_time, Some(later));
        assert_eq!(renewed.leader_transitions, 4);
    }

    #[test]
    fn waits_while_another_holder_lease_is_valid_then_takes_over() {
        let start = Instant::now();
        let mut election = Election::new("b", timings());
        let theirs = held_by("a", 2);
        assert_eq!(
            attempt(&mut election, Some(&theirs), start),
            Step::HeldByOther { holder: "a".into() }
        );
        // The same record, unchanged: the lease runs from when it was first observed.
        assert_eq!(
            attempt(&mut election, Some(&theirs), start + 14 * SECOND),
            Step::HeldByOther { holder: "a".into() }
        );
        let step = attempt(&mut election, Some(&theirs), start + 15 * SECOND);
        let Step::Update(taken) = step else {
            panic!("expected a takeover, got {step:?}")
        };
        assert_eq!(taken.holder_identity, "b");
        assert_eq!(taken.leader_transitions, 3);
        assert!(election.is_leading(start + 15 * SECOND));
    }

    #[test]
    fn each_renewal_by_the_holder_restarts_the_observed_lease() {
        let start = Instant::now();
        let mut election = Election::new("b", timings());
        let mut theirs = held_by("a", 0);
        attempt(&mut election, Some(&theirs), start);
        // Renewed (any change of the record counts) 10 s later.
        theirs.renew_time = Some("2024-05-01T10:00:10Z".parse().unwrap());
        attempt(&mut election, Some(&theirs), start + 10 * SECOND);
        assert_eq!(
            attempt(&mut election, Some(&theirs), start + 20 * SECOND),
            Step::HeldByOther { holder: "a".into() }
        );
        assert!(matches!(
            attempt(&mut election, Some(&theirs), start + 25 * SECOND),
            Step::Update(_)
        ));
    }

    #[test]
    fn clock_skew_in_the_record_is_ignored() {
        let start = Instant::now();
        // The holder's clock is a day behind: its renewTime looks long expired, but the
        // record was only just observed, so the lease is valid.
        let mut behind = held_by("a", 0);
        behind.renew_time = Some("2024-04-30T10:00:00Z".parse().unwrap());
        let mut election = Election::new("b", timings());
        assert_eq!(
            attempt(&mut election, Some(&behind), start),
            Step::HeldByOther { holder: "a".into() }
        );

        // The holder's clock is a day ahead: its renewTime looks valid for a day, but the
        // record has not changed for a full lease duration, so the holder is gone.
        let mut ahead = held_by("a", 0);
        ahead.renew_time = Some("2024-05-02T10:00:00Z".parse().unwrap());
        let mut election = Election::new("b", timings());
        attempt(&mut election, Some(&ahead), start);
        assert!(matches!(
            attempt(&mut election, Some(&ahead), start + 15 * SECOND),
            Step::Update(_)
        ));
    }

    #[test]
    fn the_lease_duration_of_the_record_counts_not_our_own() {
        let start = Instant::now();
        let mut long = held_by("a", 0);
        long.lease_duration_seconds = 60;
        let mut election = Election::new("b", timings());
        attempt(&mut election, Some(&long), start);
        assert_eq!(
            attempt(&mut election, Some(&long), start + 30 * SECOND),
            Step::HeldByOther { holder: "a".into() }
        );
        assert!(matches!(
            attempt(&mut election, Some(&long), start + 60 * SECOND),
            Step::Update(_)
        ));
    }

    #[test]
    fn a_released_lock_is_taken_at_once() {
        let start = Instant::now();
        let mut leader = Election::new("a", timings());
        attempt(&mut leader, None, start);
        let released = leader.release_record(wall()).expect("a holds the lock");
        assert_eq!(released.holder_identity, "");
        assert_eq!(released.lease_duration_seconds, 1);
        assert_eq!(released.leader_transitions, 0);
        leader.written(released.clone(), start + SECOND);
        assert!(!leader.holds_record());
        assert!(!leader.is_leading(start + SECOND));
        assert_eq!(leader.release_record(wall()), None);

        let mut standby = Election::new("b", timings());
        let step = attempt(&mut standby, Some(&released), start + SECOND);
        let Step::Update(taken) = step else {
            panic!("expected an immediate takeover, got {step:?}")
        };
        assert_eq!(taken.holder_identity, "b");
        assert_eq!(taken.leader_transitions, 1);
    }

    #[test]
    fn only_the_holder_releases() {
        let mut election = Election::new("b", timings());
        attempt(&mut election, Some(&held_by("a", 0)), Instant::now());
        assert_eq!(election.release_record(wall()), None);
    }

    #[test]
    fn seeing_another_holder_ends_leadership_at_once() {
        let start = Instant::now();
        let mut election = Election::new("a", timings());
        attempt(&mut election, None, start);
        // While "a" could not renew, "b" took over.
        let step = attempt(&mut election, Some(&held_by("b", 1)), start + 3 * SECOND);
        assert_eq!(step, Step::HeldByOther { holder: "b".into() });
        assert!(!election.is_leading(start + 3 * SECOND));
        assert_eq!(election.renew_deadline_at(), None);
    }

    #[test]
    fn a_leader_that_finds_its_own_record_renews_even_after_missing_the_deadline() {
        // The API server was unreachable past the renew deadline: work stopped, but the
        // record still names us and nobody took over, so renewing is safe.
        let start = Instant::now();
        let mut election = Election::new("a", timings());
        attempt(&mut election, None, start);
        assert!(!election.is_leading(start + 12 * SECOND));
        let mine = election.observed().cloned().unwrap();
        assert!(matches!(
            attempt(&mut election, Some(&mine), start + 12 * SECOND),
            Step::Update(_)
        ));
        assert!(election.is_leading(start + 12 * SECOND));
    }

    #[test]
    fn fast_renewal_only_while_holding_a_valid_lease() {
        let start = Instant::now();
        let mut election = Election::new("a", timings());
        assert_eq!(election.fast_renewal(start, wall()), None);
        attempt(&mut election, None, start);
        let later: Timestamp = "2024-05-01T10:00:02Z".parse().unwrap();
        let renewal = election.fast_renewal(start + 2 * SECOND, later).unwrap();
        assert_eq!(renewal.holder_identity, "a");
        assert_eq!(renewal.renew_time, Some(later));
        assert_eq!(renewal.acquire_time, Some(wall()));
        assert_eq!(election.fast_renewal(start + 15 * SECOND, later), None);

        let mut standby = Election::new("b", timings());
        attempt(&mut standby, Some(&held_by("a", 0)), start);
        assert_eq!(standby.fast_renewal(start, wall()), None);
    }
}
