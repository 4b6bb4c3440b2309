//! The election loop against an in-memory lock, on tokio's paused clock: what each
//! participant does over time, exactly, without waiting for real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

/// What a participant's view of the shared lock does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Works,
    Forbidden,
    /// Reads work, writes are forbidden.
    ReadOnly,
    /// Calls fail at once (API server unreachable).
    Fails,
    /// Calls never answer.
    Hangs,
}

/// One lock object shared by all participants.
#[derive(Debug, Default)]
struct Object {
    stored: Option<(LeaderRecord, u64)>,
    writes: Vec<LeaderRecord>,
}

/// A participant's handle on a shared [`Object`], with its own failure mode.
#[derive(Clone)]
struct FakeLock {
    name: &'static str,
    object: Arc<Mutex<Object>>,
    mode: Arc<Mutex<Mode>>,
}

impl FakeLock {
    fn new(name: &'static str, object: &Arc<Mutex<Object>>) -> Self {
        Self {
            name,
            object: object.clone(),
            mode: Arc::new(Mutex::new(Mode::Works)),
        }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn stored(record: LeaderRecord, version: u64) -> StoredRecord {
        StoredRecord {
            record,
            metadata: ObjectMeta {
                resource_version: Some(version.to_string()),
                ..ObjectMeta::default()
            },
        }
    }

    /// Fails per the mode, or runs `operation` on the object.
    fn call<T: Send + 'static>(
        &self,
        writes: bool,
        operation: impl FnOnce(&mut Object) -> Result<T, LockError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LockError>> {
        let mode = match *self.mode.lock().unwrap() {
            Mode::ReadOnly if writes => Mode::Forbidden,
            Mode::ReadOnly => Mode::Works,
            mode => mode,
        };
        let object = self.object.clone();
        let lock = self.name.to_owned();
        async move {
            match mode {
                Mode::Works => operation(&mut object.lock().unwrap()),
                Mode::Forbidden => Err(LockError::Forbidden {
                    lock,
                    message: "leases is forbidden".into(),
                }),
                Mode::Fails => Err(LockError::Api {
                    lock,
                    source: kube::Error::Service("connection refused".into()),
                }),
                Mode::Hangs => std::future::pending().await,
                Mode::ReadOnly => unreachable!("resolved above"),
            }
        }
        .boxed()
    }
}

impl LeaderLock for FakeLock {
    fn describe(&self) -> String {
        self.name.to_owned()
    }

    fn get(&self) -> BoxFuture<'_, Result<Option<StoredRecord>, LockError>> {
        self.call(false, |object| {
            Ok(object
                .stored
                .clone()
                .map(|(record, version)| Self::stored(record, version)))
        })
    }

    fn create<'a>(
        &'a self,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>> {
        let record = record.clone();
        let lock = self.name.to_owned();
        self.call(true, move |object| {
            if object.stored.is_some() {
                return Err(LockError::Conflict { lock });
            }
            object.stored = Some((record.clone(), 1));
            object.writes.push(record.clone());
            Ok(Self::stored(record, 1))
        })
    }

    fn update<'a>(
        &'a self,
        current: &'a StoredRecord,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>> {
        let record = record.clone();
        let lock = self.name.to_owned();
        let expected = current.metadata.resource_version.clone();
        self.call(true, move |object| {
            let Some((_, version)) = object.stored else {
                return Err(LockError::Conflict { lock });
            };
            if expected != Some(version.to_string()) {
                return Err(LockError::Conflict { lock });
            }
            object.stored = Some((record.clone(), version + 1));
            object.writes.push(record.clone());
            Ok(Self::stored(record, version + 1))
        })
    }

    fn reference(&self, _: &StoredRecord) -> ObjectReference {
        ObjectReference::default()
    }
}

const SECOND: Duration = Duration::from_secs(1);

fn config(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig::new("lock", "ns", identity)
}

/// A running participant.
struct Participant {
    leadership: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Participant {
    fn start(identity: &str, primary: FakeLock, fallback: Option<FakeLock>) -> Self {
        let elector = LeaderElector::with_locks(
            &config(identity),
            Box::new(primary),
            fallback.map(|lock| Box::new(lock) as Box<dyn LeaderLock>),
        );
        let leadership = elector.leadership();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(elector.run(async {
            let _ = stopped.await;
        }));
        Self {
            leadership,
            stop: Some(stop),
            task,
        }
    }

    fn leads(&self) -> bool {
        *self.leadership.borrow()
    }

    async fn wait_leading(&mut self) {
        self.leadership.wait_for(|leading| *leading).await.unwrap();
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn holder(object: &Arc<Mutex<Object>>) -> Option<String> {
    object
        .lock()
        .unwrap()
        .stored
        .as_ref()
        .map(|(record, _)| record.holder_identity.clone())
}

/// Fails the test if two participants ever lead at the same time.
fn watch_for_two_leaders(a: watch::Receiver<bool>, b: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        loop {
            tokio::select! {
                changed = a.changed() => if changed.is_err() { return },
                changed = b.changed() => if changed.is_err() { return },
            }
            assert!(
                !(*a.borrow() && *b.borrow()),
                "two participants led at the same time"
            );
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_lone_participant_creates_the_lock_and_leads() {
    let object = Arc::default();
    let mut a = Participant::start("a", FakeLock::new("lease", &object), None);
    a.wait_leading().await;
    assert_eq!(holder(&object).as_deref(), Some("a"));
    let first = object.lock().unwrap().writes[0].clone();
    assert_eq!(first.lease_duration_seconds, 15);
    assert_eq!(first.leader_transitions, 0);

    // It keeps renewing: one write per retry period.
    let writes = object.lock().unwrap().writes.len();
    tokio::time::sleep(10 * SECOND).await;
    assert!(a.leads());
    assert!(object.lock().unwrap().writes.len() >= writes + 4);
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lock_and_a_standby_takes_it_at_once() {
    let object = Arc::default();
    let mut a = Participant::start("a", FakeLock::new("lease", &object), None);
    a.wait_leading().await;
    let mut b = Participant::start("b", FakeLock::new("lease", &object), None);
    let overlap = watch_for_two_leaders(a.leadership.clone(), b.leadership.clone());
    tokio::time::sleep(30 * SECOND).await;
    assert!(
        a.leads() && !b.leads(),
        "the standby must wait while the leader renews"
    );

    let mut a_leadership = a.leadership.clone();
    a.stop().await;
    assert!(!*a_leadership.borrow_and_update());
    let released = object.lock().unwrap().writes.last().cloned().unwrap();
    assert_eq!(released.holder_identity, "");
    assert_eq!(released.lease_duration_seconds, 1);

    let released_at = Instant::now();
    b.wait_leading().await;
    // Within the standby's next (jittered) attempt, not after a lease duration.
    assert!(
        released_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        released_at.elapsed()
    );
    assert_eq!(holder(&object).as_deref(), Some("b"));
    assert_eq!(
        object
            .lock()
            .unwrap()
            .writes
            .last()
            .unwrap()
            .leader_transitions,
        1
    );
    b.stop().await;
    overlap.abort();
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_stops_before_its_lease_expires_and_the_standby_takes_over() {
    let object = Arc::default();
    let a_lock = FakeLock::new("lease", &object);
    let mut a = Participant::start("a", a_lock.clone(), None);
    a.wait_leading().await;
    let mut b = Participant::start("b", FakeLock::new("lease", &object), None);
    let overlap = watch_for_two_leaders(a.leadership.clone(), b.leadership.clone());
    tokio::time::sleep(5 * SECOND).await;

    let last_renewal = object.lock().unwrap().writes.len();
    a_lock.set_mode(Mode::Fails);
    let cut_off = Instant::now();
    a.leadership.wait_for(|leading| !*leading).await.unwrap();
    let stopped_after = cut_off.elapsed();
    assert!(
        stopped_after <= 10 * SECOND,
        "the leader stops by its renew deadline, stopped after {stopped_after:?}"
    );
    assert_eq!(
        object.lock().unwrap().writes.len(),
        last_renewal,
        "nothing written while cut off"
    );

    b.wait_leading().await;
    let taken_after = cut_off.elapsed();
    assert!(
        taken_after >= 13 * SECOND,
        "the standby waits for the lease to expire (it saw the last renewal at most one retry period before the cut), took over after {taken_after:?}"
    );
    assert_eq!(holder(&object).as_deref(), Some("b"));

    // The old leader comes back, sees the new holder and stands by: it never exits.
    a_lock.set_mode(Mode::Works);
    tokio::time::sleep(30 * SECOND).await;
    assert!(!a.leads() && b.leads());
    assert!(!a.task.is_finished());
    a.stop().await;
    b.stop().await;
    overlap.abort();
}

#[tokio::test(start_paused = true)]
async fn a_hung_api_call_cannot_keep_a_leader_past_its_renew_deadline() {
    let object = Arc::default();
    let lock = FakeLock::new("lease", &object);
    let mut a = Participant::start("a", lock.clone(), None);
    a.wait_leading().await;
    lock.set_mode(Mode::Hangs);
    let hung = Instant::now();
    a.leadership.wait_for(|leading| !*leading).await.unwrap();
    assert!(hung.elapsed() <= 10 * SECOND, "{:?}", hung.elapsed());

    // Once the API answers again, it finds its own record and leads again.
    lock.set_mode(Mode::Works);
    a.wait_leading().await;
    assert_eq!(holder(&object).as_deref(), Some("a"));
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn forbidden_leases_fall_back_to_the_endpoints_lock() {
    let lease = Arc::default();
    let endpoints = Arc::default();
    let lease_lock = FakeLock::new("lease", &lease);
    lease_lock.set_mode(Mode::Forbidden);
    let mut a = Participant::start(
        "a",
        lease_lock.clone(),
        Some(FakeLock::new("endpoints", &endpoints)),
    );
    a.wait_leading().await;
    assert_eq!(holder(&endpoints).as_deref(), Some("a"));
    assert_eq!(holder(&lease), None);

    // A replica with the same RBAC ends up on the same lock and stands by.
    let b_lease = FakeLock::new("lease", &lease);
    b_lease.set_mode(Mode::Forbidden);
    let b = Participant::start("b", b_lease, Some(FakeLock::new("endpoints", &endpoints)));
    tokio::time::sleep(30 * SECOND).await;
    assert!(a.leads() && !b.leads());

    // The choice is kept: granting Leases later does not split the replicas.
    lease_lock.set_mode(Mode::Works);
    tokio::time::sleep(10 * SECOND).await;
    assert!(a.leads());
    assert_eq!(holder(&lease), None);
    a.stop().await;
    assert_eq!(holder(&endpoints).as_deref(), Some(""));
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_forbidden_after_it_worked_is_not_a_reason_to_switch() {
    let lease = Arc::default();
    let endpoints = Arc::default();
    let lease_lock = FakeLock::new("lease", &lease);
    let mut a = Participant::start(
        "a",
        lease_lock.clone(),
        Some(FakeLock::new("endpoints", &endpoints)),
    );
    a.wait_leading().await;
    lease_lock.set_mode(Mode::Forbidden);
    a.leadership.wait_for(|leading| !*leading).await.unwrap();
    tokio::time::sleep(30 * SECOND).await;
    assert!(!a.leads());
    assert_eq!(
        holder(&endpoints),
        None,
        "the Endpoints lock was never touched"
    );
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_fallback_a_forbidden_lease_is_retried_and_never_led() {
    let lease = Arc::default();
    let lock = FakeLock::new("lease", &lease);
    lock.set_mode(Mode::Forbidden);
    let a = Participant::start("a", lock.clone(), None);
    tokio::time::sleep(30 * SECOND).await;
    assert!(!a.leads());
    assert!(!a.task.is_finished(), "the elector keeps trying");
    // RBAC fixed: it acquires.
    lock.set_mode(Mode::Works);
    let mut a = a;
    a.wait_leading().await;
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_standby_stopping_writes_nothing() {
    let object = Arc::default();
    let mut a = Participant::start("a", FakeLock::new("lease", &object), None);
    a.wait_leading().await;
    let b = Participant::start("b", FakeLock::new("lease", &object), None);
    tokio::time::sleep(5 * SECOND).await;
    b.stop().await;
    let writes = object.lock().unwrap().writes.clone();
    assert!(
        writes.iter().all(|record| record.holder_identity == "a"),
        "{writes:?}"
    );
    assert_eq!(holder(&object).as_deref(), Some("a"));
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_can_be_read_but_not_created_falls_back_too() {
    let lease = Arc::default();
    let endpoints = Arc::default();
    let lease_lock = FakeLock::new("lease", &lease);
    lease_lock.set_mode(Mode::ReadOnly);
    let mut a = Participant::start(
        "a",
        lease_lock,
        Some(FakeLock::new("endpoints", &endpoints)),
    );
    a.wait_leading().await;
    assert_eq!(holder(&endpoints).as_deref(), Some("a"));
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_existing_lease_held_by_others_is_never_abandoned_for_the_fallback() {
    // Another replica holds the Lease; this one may read it but not write it.
    let lease = Arc::default();
    let endpoints = Arc::default();
    let mut other = Participant::start("other", FakeLock::new("lease", &lease), None);
    other.wait_leading().await;
    let read_only = FakeLock::new("lease", &lease);
    read_only.set_mode(Mode::ReadOnly);
    let a = Participant::start("a", read_only, Some(FakeLock::new("endpoints", &endpoints)));
    tokio::time::sleep(30 * SECOND).await;
    assert!(!a.leads());
    assert_eq!(holder(&endpoints), None);
    other.stop().await;
    a.stop().await;
}
