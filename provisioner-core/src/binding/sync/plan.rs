//! What a sync decides: ordered writes, and what happens next.

use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::SyncError;

/// A claim's identity as a volume's `claimRef` and the controller's cache know it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ClaimKey {
    /// The key of `claim` (missing fields read as "").
    pub fn of(claim: &PersistentVolumeClaim) -> ClaimKey {
        ClaimKey {
            namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            name: claim.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One API call the controller makes, in the order it makes them.
///
/// Every write carries the whole object as the controller would send it. As on the API server,
/// an `Update*` write changes metadata and spec only and an `Update*Status` write changes the
/// status only (see [`ObjectSet::apply`](super::ObjectSet::apply)).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `PUT /api/v1/persistentvolumes/{name}`.
    UpdateVolume(PersistentVolume),
    /// `PUT /api/v1/persistentvolumes/{name}/status`.
    UpdateVolumeStatus(PersistentVolume),
    /// `PUT /api/v1/namespaces/{ns}/persistentvolumeclaims/{name}`.
    UpdateClaim(PersistentVolumeClaim),
    /// `PUT /api/v1/namespaces/{ns}/persistentvolumeclaims/{name}/status`.
    UpdateClaimStatus(PersistentVolumeClaim),
    /// An event recorded on a volume or a claim (best effort: it never stops a plan).
    Event(Event),
}

impl Write {
    /// The event, when this write records one.
    pub fn as_event(&self) -> Option<&Event> {
        match self {
            Write::Event(event) => Some(event),
            _ => None,
        }
    }
}

/// The object an event is recorded on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventObject {
    /// A PersistentVolume, by name.
    Volume(String),
    /// A PersistentVolumeClaim.
    Claim(ClaimKey),
}

/// `Normal` or `Warning`, as in `core/v1` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something the user should look at.
    Warning,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        })
    }
}

/// An event the controller records, with Kubernetes' reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What the event is about.
    pub object: EventObject,
    /// `Normal` or `Warning`.
    pub event_type: EventType,
    /// The machine-readable reason, e.g. `VolumeMismatch`.
    pub reason: String,
    /// The message, word for word as Kubernetes writes it.
    pub message: String,
}

/// Asynchronous work the controller would start after the writes; the caller decides whether
/// and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Provision a volume for the claim with an in-tree plugin.
    ProvisionInTree {
        /// The claim.
        claim: ClaimKey,
        /// The plugin (the StorageClass's `provisioner`).
        plugin: String,
        /// The StorageClass.
        class: String,
    },
    /// Delete the released volume's storage with an in-tree plugin, then the PV object.
    Delete {
        /// The volume.
        volume: String,
        /// The deleter plugin.
        plugin: String,
    },
    /// Recycle the released volume (deprecated policy) with an in-tree plugin, then make it
    /// Available again.
    Recycle {
        /// The volume.
        volume: String,
        /// The recycler plugin.
        plugin: String,
    },
}

/// What happens once a plan's writes are applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Then {
    /// Nothing more; the next periodic sync looks again.
    #[default]
    Done,
    /// The sync returns an error and the object is requeued with backoff.
    Retry(SyncError),
    /// `syncVolume` asks for a prompt `syncClaim` of this claim.
    EnqueueClaim(ClaimKey),
    /// The controller starts this asynchronous operation.
    Start(Operation),
    /// `syncVolume` did not find the claim where it looked so far and must ask the API server
    /// before deciding; the plan has no writes. Sync again with
    /// [`ClaimLookup::api`](super::ClaimLookup::api) answered.
    NeedsFreshClaim(ClaimKey),
}

/// The outcome of one sync: the writes, in order, and what happens next.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The API calls and events, in the order Kubernetes makes them.
    pub writes: Vec<Write>,
    /// What follows the writes.
    pub then: Then,
}

/// Where [`Plan::apply`] stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("write {failed_at} of the plan failed: {error}")]
pub struct Stopped<E> {
    /// The index of the write that failed; the writes before it were applied.
    pub failed_at: usize,
    /// The failure.
    pub error: E,
}

impl Plan {
    /// Applies the writes in order with `apply`, stopping at the first failure, as the
    /// controller does: a later sync recomputes the plan from what was written and finishes
    /// the job.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    /// use provisioner_core::binding::sync::{ObjectSet, bind};
    ///
    /// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
    ///     "metadata": {"name": "data", "namespace": "default", "uid": "c-1"},
    /// }))?;
    /// let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
    ///     "metadata": {"name": "pv-1"}, "spec": {"capacity": {"storage": "1Gi"}},
    /// }))?;
    /// let mut cluster = ObjectSet::new([volume.clone()], [claim.clone()]);
    ///
    /// // The controller crashes before the third of the four writes.
    /// let plan = bind(&volume, &claim, true);
    /// let mut done = 0;
    /// let stopped = plan
    ///     .apply(|write| {
    ///         if done == 2 {
    ///             return Err("crashed");
    ///         }
    ///         done += 1;
    ///         cluster.apply(write).map_err(|_| "rejected")
    ///     })
    ///     .unwrap_err();
    /// assert_eq!(stopped.failed_at, 2);
    ///
    /// // After the restart, binding again plans only the two claim writes.
    /// let (volume, claim) = (cluster.volume("pv-1").unwrap(), cluster.claim("default", "data").unwrap());
    /// assert_eq!(bind(volume, claim, true).writes.len(), 2);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn apply<E>(
        &self,
        mut apply: impl FnMut(&Write) -> Result<(), E>,
    ) -> Result<(), Stopped<E>> {
        for (index, write) in self.writes.iter().enumerate() {
            apply(write).map_err(|error| Stopped {
                failed_at: index,
                error,
            })?;
        }
        Ok(())
    }

    /// The events among the writes, in order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.writes.iter().filter_map(Write::as_event)
    }

    /// Whether the plan writes anything to the API other than events.
    pub fn changes_objects(&self) -> bool {
        self.writes.iter().any(|w| !matches!(w, Write::Event(_)))
    }
}
