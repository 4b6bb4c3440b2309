//! The election loop: reads and writes the lock every retry period, decides with
//! [`Election`], publishes leadership on a `watch` channel, falls back from a forbidden
//! Lease to the Endpoints lock, and releases the lock when told to stop.

use std::future::Future;
use std::hash::BuildHasher;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use super::election::{Election, JITTER_FACTOR, Step};
use super::lock::{EndpointsLock, LeaderLock, LeaseLock, LockError, StoredRecord};
use super::{LeaderElectionConfig, reasons};
use crate::events::{EventRecorder, EventType};

/// Runs one participant of a leader election. Build it, hand
/// [`leadership`](Self::leadership) to the work that needs a single leader (for example
/// [`ProvisionController::leadership`](crate::controller::ProvisionController::leadership)),
/// then [`run`](Self::run) it.
///
/// It never gives up and never ends the process: errors are logged and retried every
/// retry period; losing the lease turns leadership off and the elector keeps competing.
pub struct LeaderElector {
    election: Election,
    /// The namespace of the locks (for messages).
    namespace: String,
    locks: Locks,
    /// The lock as last read or written (its version guards the next write).
    stored: Option<StoredRecord>,
    leading: bool,
    leadership: watch::Sender<bool>,
    events: Option<EventRecorder>,
    /// The holder last logged, so a standby logs each new leader once.
    reported_holder: Option<String>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("identity", &self.election.identity())
            .field("lock", &self.locks.active().describe())
            .field("leading", &self.leading)
            .finish_non_exhaustive()
    }
}

/// The lock in use, and the one to fall back to if the first is forbidden.
struct Locks {
    primary: Box<dyn LeaderLock>,
    fallback: Option<Box<dyn LeaderLock>>,
    using_fallback: bool,
    /// The primary lock worked once: a later "forbidden" is an RBAC change to report, not
    /// a reason to switch (switching while others use the primary would elect two leaders).
    primary_worked: bool,
    /// The fallback Event is still to be published (once the lock object is known).
    fallback_to_report: bool,
}

impl Locks {
    fn active(&self) -> &dyn LeaderLock {
        match (&self.fallback, self.using_fallback) {
            (Some(fallback), true) => fallback.as_ref(),
            _ => self.primary.as_ref(),
        }
    }
}

/// How an attempt ended.
enum Attempt {
    /// This participant holds the lock (acquired or renewed).
    Holding,
    /// Another participant holds a valid lease.
    HeldBy(String),
}

impl LeaderElector {
    /// An elector on the Lease `config.namespace()/config.lock_name()`, falling back to the
    /// Endpoints object of the same name if Leases are forbidden (unless
    /// [`LeaderElectionConfig::endpoints_fallback`] is off). Events about the lock are
    /// written as `component`.
    pub fn new(client: Client, config: &LeaderElectionConfig) -> Self {
        let timeout = config.timings.renew_deadline();
        let primary = LeaseLock::new(
            client.clone(),
            &config.namespace,
            &config.lock_name,
            timeout,
        );
        let fallback = config.endpoints_fallback.then(|| {
            Box::new(EndpointsLock::new(
                client.clone(),
                &config.namespace,
                &config.lock_name,
                timeout,
            )) as Box<dyn LeaderLock>
        });
        let events = EventRecorder::new(
            client,
            config.event_component.clone(),
            Some(config.identity.clone()),
            timeout,
        );
        Self::with_locks(config, Box::new(primary), fallback).with_events(events)
    }

    /// An elector on the given locks, without Events (tests, custom locks).
    pub fn with_locks(
        config: &LeaderElectionConfig,
        primary: Box<dyn LeaderLock>,
        fallback: Option<Box<dyn LeaderLock>>,
    ) -> Self {
        Self {
            election: Election::new(config.identity.clone(), config.timings),
            namespace: config.namespace.clone(),
            locks: Locks {
                primary,
                fallback,
                using_fallback: false,
                primary_worked: false,
                fallback_to_report: false,
            },
            stored: None,
            leading: false,
            leadership: watch::channel(false).0,
            events: None,
            reported_holder: None,
        }
    }

    /// Publishes Events about the lock (became leader, stopped leading, fallback) with
    /// `recorder`.
    #[must_use]
    pub fn with_events(mut self, recorder: EventRecorder) -> Self {
        self.events = Some(recorder);
        self
    }

    /// `true` while this participant leads. Starts `false`.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leadership.subscribe()
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        self.election.identity()
    }

    /// Competes for the lock until `release` completes, then gives the lock up (if held) so
    /// a standby takes over at once, and returns. Leadership turns `false` before the lock
    /// is released.
    pub async fn run(mut self, release: impl Future<Output = ()> + Send) {
        let timings = self.election.timings();
        let mut release = std::pin::pin!(release);
        loop {
            let started = Instant::now();
            // A leader must finish renewing by its renew deadline; a candidate's attempt is
            // bounded the same way so a hung call cannot stall the loop.
            let deadline = self
                .election
                .renew_deadline_at()
                .filter(|_| self.leading)
                .map_or(started + timings.renew_deadline(), Instant::from_std);
            tokio::select! {
                biased;
                () = &mut release => break,
                outcome = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => {
                    let outcome = outcome.unwrap_or_else(|_| Err(AttemptError::TimedOut(timings.renew_deadline())));
                    self.after_attempt(outcome).await;
                }
            }
            let pause = if self.leading {
                timings.retry_period()
            } else {
                jittered(timings.retry_period())
            };
            tokio::select! {
                biased;
                () = &mut release => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.release().await;
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, AttemptError> {
        let started = Instant::now().into_std();
        let wall = Timestamp::now();
        // Renew without reading first when nothing suggests the lock changed (one request
        // per renewal instead of two); any failure falls back to read-and-decide.
        if self.leading
            && let (Some(stored), Some(record)) =
                (&self.stored, self.election.fast_renewal(started, wall))
        {
            match self.locks.active().update(stored, &record).await {
                Ok(stored) => {
                    self.election.written(stored.record.clone(), started);
                    self.stored = Some(stored);
                    return Ok(Attempt::Holding);
                }
                Err(error) => {
                    tracing::debug!(%error, "optimistic renewal failed; reading the lock");
                }
            }
        }
        let current = self.locks.active().get().await?;
        self.note_lock_works(current.as_ref()).await;
        let step =
            self.election
                .next_step(current.as_ref().map(|stored| &stored.record), started, wall);
        let written = match (step, &current) {
            (Step::Create(record), _) => self.locks.active().create(&record).await?,
            (Step::Update(record), Some(current)) => {
                self.locks.active().update(current, &record).await?
            }
            (Step::Update(_), None) => unreachable!("an update is only decided for a record read"),
            (Step::HeldByOther { holder }, _) => {
                self.stored = current;
                return Ok(Attempt::HeldBy(holder));
            }
        };
        self.note_lock_works(Some(&written)).await;
        self.election.written(written.record.clone(), started);
        self.stored = Some(written);
        Ok(Attempt::Holding)
    }

    /// The active lock answered: remember that the primary is in use once its object
    /// exists (others may hold it), or publish the fallback Event now that the Endpoints
    /// object is known.
    async fn note_lock_works(&mut self, stored: Option<&StoredRecord>) {
        if !self.locks.using_fallback {
            self.locks.primary_worked |= stored.is_some();
            return;
        }
        if let Some(stored) = stored
            && std::mem::take(&mut self.locks.fallback_to_report)
            && let Some(events) = &self.events
        {
            let message = fallback_message(
                &self.locks.primary.describe(),
                &self.locks.active().describe(),
                &self.namespace,
            );
            events
                .publish(
                    &self.locks.active().reference(stored),
                    EventType::Warning,
                    reasons::LEASE_FORBIDDEN,
                    &message,
                )
                .await;
        }
    }

    async fn after_attempt(&mut self, outcome: Result<Attempt, AttemptError>) {
        match outcome {
            Ok(Attempt::Holding) => {
                if !self.leading {
                    self.leading = true;
                    self.leadership.send_replace(true);
                    tracing::info!(
                        lock = %self.locks.active().describe(),
                        identity = self.election.identity(),
                        "became leader"
                    );
                    self.lock_event("became leader").await;
                }
            }
            Ok(Attempt::HeldBy(holder)) => {
                if self.leading {
                    self.stop_leading(&format!("the lock was taken by {holder}"))
                        .await;
                }
                if self.reported_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(
                        lock = %self.locks.active().describe(),
                        leader = %holder,
                        "another replica leads; standing by"
                    );
                    self.reported_holder = Some(holder);
                }
            }
            Err(error) => {
                if error.is_forbidden() && self.switch_to_fallback() {
                    return;
                }
                tracing::warn!(
                    lock = %self.locks.active().describe(),
                    %error,
                    "leader election attempt failed"
                );
                let now = Instant::now().into_std();
                if self.leading && !self.election.is_leading(now) {
                    self.stop_leading("the lease could not be renewed within the renew deadline")
                        .await;
                }
            }
        }
    }

    /// Switches to the Endpoints lock after the Lease was forbidden, if that is still
    /// allowed; returns whether it switched.
    fn switch_to_fallback(&mut self) -> bool {
        if self.locks.using_fallback || self.locks.primary_worked || self.locks.fallback.is_none() {
            return false;
        }
        self.locks.using_fallback = true;
        self.locks.fallback_to_report = true;
        tracing::warn!(
            "{}",
            fallback_message(
                &self.locks.primary.describe(),
                &self.locks.active().describe(),
                &self.namespace
            )
        );
        true
    }

    async fn stop_leading(&mut self, why: &str) {
        self.leading = false;
        self.leadership.send_replace(false);
        tracing::warn!(
            lock = %self.locks.active().describe(),
            reason = why,
            "stopped leading; work stops until the lock is acquired again"
        );
        self.lock_event("stopped leading").await;
    }

    /// client-go's Normal `LeaderElection` Event on the lock object.
    async fn lock_event(&self, what: &str) {
        if let (Some(events), Some(stored)) = (&self.events, &self.stored) {
            let message = format!("{} {what}", self.election.identity());
            events
                .publish(
                    &self.locks.active().reference(stored),
                    EventType::Normal,
                    reasons::LEADER_ELECTION,
                    &message,
                )
                .await;
        }
    }

    async fn release(&mut self) {
        if self.leading {
            self.leading = false;
            self.leadership.send_replace(false);
        }
        let Some(record) = self.election.release_record(Timestamp::now()) else {
            return;
        };
        let Some(stored) = self.stored.clone() else {
            return;
        };
        let lock = self.locks.active();
        let timeout = self.election.timings().renew_deadline();
        let released = tokio::time::timeout(timeout, async {
            match lock.update(&stored, &record).await {
                // An attempt interrupted by the release may have renewed meanwhile: release
                // the newer version if it is still ours.
                Err(LockError::Conflict { .. }) => match lock.get().await? {
                    Some(current) if current.record.holder_identity == self.election.identity() => {
                        lock.update(&current, &record).await.map(Some)
                    }
                    _ => Ok(None),
                },
                other => other.map(Some),
            }
        })
        .await;
        match released {
            Ok(Ok(Some(_))) => tracing::info!(lock = %lock.describe(), "released the lock"),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::warn!(lock = %lock.describe(), %error, "could not release the lock; standbys wait for it to expire");
            }
            Err(_) => {
                tracing::warn!(lock = %lock.describe(), "releasing the lock timed out; standbys wait for it to expire");
            }
        }
    }
}

/// What the operator reads in the log and in the Event when the Lease is forbidden.
fn fallback_message(lease: &str, endpoints: &str, namespace: &str) -> String {
    format!(
        "{lease} is forbidden, so leader election uses the deprecated {endpoints} instead. \
         Grant the provisioner's ServiceAccount this rule in a Role in namespace {namespace:?}: \
         apiGroups [\"coordination.k8s.io\"], resources [\"leases\"], verbs [\"get\", \"create\", \"update\"], \
         then restart all replicas together"
    )
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

impl AttemptError {
    fn is_forbidden(&self) -> bool {
        matches!(self, Self::Lock(error) if error.is_forbidden())
    }
}

/// `period` stretched by a random factor in `[1, 1 + JITTER_FACTOR)`, as client-go's
/// `JitterUntil` does, so candidates do not all knock at once.
fn jittered(period: Duration) -> Duration {
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(1.0 + unit * JITTER_FACTOR)
}
