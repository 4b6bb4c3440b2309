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
    /// It failed; the label says how (an error kind such as `"final"`, `"timeout"`,
    /// `"api"`).
    Failed(&'static str),
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
