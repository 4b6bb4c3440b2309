//! Hooks for watching the controller work: an [`Observer`] for metrics and request
//! accounting, and [`Checkpoint`]s between the steps of an operation (for tracing, and for
//! tests that stop the controller at an exact point to prove crash safety).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

/// The labels of a provisioning operation, as the Go library's metrics use them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProvisionLabels {
    /// The claim's `spec.storageClassName` ("" when unset).
    pub class: String,
    /// The kind of the claim's data source ("" when none).
    pub source: String,
}

/// The labels of a deletion, as the Go library's metrics use them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DeleteLabels {
    /// The volume's `spec.storageClassName`.
    pub class: String,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It did what it set out to do.
    Succeeded,
    /// It failed; the label says how: a backend error kind
    /// ([`ProvisionError::kind`](crate::provisioner::ProvisionError::kind),
    /// [`DeleteError::kind`](crate::provisioner::DeleteError::kind), including `"ignored"`
    /// when the backend left the object to another instance), `"parameters"` (recorded
    /// parameters no longer parse), `"api"` (an API request failed) or `"cancelled"` (the
    /// operation was dropped: leadership lost, or the controller stopped).
    Failed(&'static str),
}

/// One of the controller's two work queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueKind {
    /// Claims to provision (or clean up).
    Claims,
    /// PersistentVolumes to delete (or whose finalizer to manage).
    Volumes,
}

impl QueueKind {
    /// A stable label: `"claims"` or `"volumes"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claims => "claims",
            Self::Volumes => "volumes",
        }
    }
}

/// How many objects a queue holds, by state. An object is counted once, in its latest
/// state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct QueueDepth {
    /// Objects due now that wait for a free slot ([`Config::concurrency`](super::Config)).
    pub queued: usize,
    /// Objects whose last pass failed and that wait for their backoff to expire.
    pub retrying: usize,
    /// Objects being worked on now.
    pub running: usize,
}

/// An API request the controller made (watches excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ApiRequest {
    /// `get`, `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// `persistentvolumeclaims`, `persistentvolumes` or `events`.
    pub resource: &'static str,
}

/// Receives what the controller does. Every method defaults to doing nothing; implement the
/// ones you need (for example, metrics). Methods are called inline, so they must be quick.
///
/// **Operations in flight** need no method of their own: every `*_started` call is followed
/// by exactly one `*_finished` call for the same operation, also when the operation is
/// dropped midway (leadership lost, controller stopped; then with
/// `Outcome::Failed("cancelled")`). `started − finished` is the number in flight.
///
/// ```
/// use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
/// use provisioner_core::controller::{Observer, ProvisionLabels, Outcome, QueueDepth, QueueKind};
///
/// #[derive(Default)]
/// struct Gauges {
///     provisions_in_flight: AtomicI64,
///     claims_waiting: AtomicUsize,
///     leading: AtomicBool,
/// }
///
/// impl Observer for Gauges {
///     fn provision_started(&self, _: &ProvisionLabels) {
///         self.provisions_in_flight.fetch_add(1, Ordering::Relaxed);
///     }
///     fn provision_finished(&self, _: &ProvisionLabels, _: Outcome, _: std::time::Duration) {
///         self.provisions_in_flight.fetch_sub(1, Ordering::Relaxed);
///     }
///     fn queue_depth(&self, queue: QueueKind, depth: QueueDepth) {
///         if queue == QueueKind::Claims {
///             self.claims_waiting.store(depth.queued + depth.retrying, Ordering::Relaxed);
///         }
///     }
///     fn leadership_changed(&self, leading: bool) {
///         self.leading.store(leading, Ordering::Relaxed);
///     }
/// }
/// # let gauges = Gauges::default();
/// # gauges.leadership_changed(true);
/// # assert!(gauges.leading.load(Ordering::Relaxed));
/// ```
pub trait Observer: Send + Sync + 'static {
    /// The backend is about to be called to provision a claim.
    fn provision_started(&self, labels: &ProvisionLabels) {
        let _ = labels;
    }

    /// A provisioning attempt ended (success means the PersistentVolume exists).
    fn provision_finished(&self, labels: &ProvisionLabels, outcome: Outcome, elapsed: Duration) {
        let _ = (labels, outcome, elapsed);
    }

    /// The backend is about to be called to delete a volume's asset.
    fn delete_started(&self, labels: &DeleteLabels) {
        let _ = labels;
    }

    /// A deletion ended (success means the PersistentVolume object is gone too).
    fn delete_finished(&self, labels: &DeleteLabels, outcome: Outcome, elapsed: Duration) {
        let _ = (labels, outcome, elapsed);
    }

    /// An attempt failed and will be retried after `delay`.
    fn retry_scheduled(&self, delay: Duration) {
        let _ = delay;
    }

    /// The controller made an API request.
    fn api_request(&self, request: ApiRequest) {
        let _ = request;
    }

    /// A queue's depth changed; `depth` is its new value. Called under the queue's lock, so
    /// calls for one queue arrive in order.
    fn queue_depth(&self, queue: QueueKind, depth: QueueDepth) {
        let _ = (queue, depth);
    }

    /// The controller's view of leadership (see
    /// [`ProvisionController::leadership`](super::ProvisionController::leadership)): called
    /// once when the controller starts, then on every change. `true` means it works.
    fn leadership_changed(&self, leading: bool) {
        let _ = leading;
    }
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

/// A step of an operation that has just completed. The controller awaits the
/// [`CheckpointHook`] (if any) after each, before the next step starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Checkpoint {
    /// The in-flight record and finalizer are on the claim; the backend has not been called.
    RecordSaved,
    /// The backend created the asset; the PersistentVolume does not exist yet.
    AssetProvisioned,
    /// The PersistentVolume exists; the claim still carries the in-flight record.
    VolumeCreated,
    /// The record and finalizer are off the claim; provisioning is complete.
    RecordCleared,
    /// For a claim deleted mid-provisioning: the asset was deleted; the claim still carries
    /// the finalizer.
    OrphanDeleted,
    /// For a Released volume: the asset was deleted; the PersistentVolume still exists.
    VolumeAssetDeleted,
    /// For a claim whose in-flight record went stale: the asset made under the old record
    /// was deleted; the claim still carries the old record.
    StaleAssetDeleted,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Called after each [`Checkpoint`] with the object's key (`namespace/name` for a claim, the
/// name for a volume); the controller continues when the returned future completes. A hook
/// that never completes freezes that operation exactly there, which is how tests simulate a
/// process killed between two steps.
pub type CheckpointHook = Arc<dyn Fn(Checkpoint, &str) -> BoxFuture<'static, ()> + Send + Sync>;
