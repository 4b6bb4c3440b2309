//! The PV controller's binding state machines, as pure decision functions.
//!
//! kube-controller-manager's PersistentVolume controller syncs every claim (`syncClaim`) and
//! every volume (`syncVolume`) in a loop. Each sync looks at one object and its partner and
//! makes a short, ordered series of API writes. This module computes those writes without
//! making them:
//!
//! - [`sync_claim`]: unbound claims (matching, default class, `WaitForFirstConsumer`,
//!   the provisioning trigger), claims that name their volume, and bound claims (Lost,
//!   Misbound, repair);
//! - [`sync_volume`]: Available, Bound, Released and Failed, unbinding, and the reclaim
//!   policies;
//! - [`bind`]: the four writes that bind a volume and a claim, in Kubernetes' order;
//! - [`check_volume_satisfy_claim`] and [`named_volume_outcome`]: the checks made before
//!   binding a claim to the volume it names, with a typed reason for every refusal.
//!
//! A sync returns a [`Plan`]: the [`Write`]s in order (events included, where Kubernetes
//! records them) and what happens next ([`Then`]). Applying a plan stops at the first failed
//! write, and the next sync finishes the job, exactly as the controller recovers from a crash
//! between two writes. [`ObjectSet`] applies plans to an in-memory cluster with the API
//! server's update semantics.
//!
//! ```
//! use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
//! use provisioner_core::binding::sync::{ClaimContext, ObjectSet, SyncOptions, Then, sync_claim};
//!
//! let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "data", "namespace": "default", "uid": "c-1"},
//!     "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
//!              "volumeName": "pv-1", "resources": {"requests": {"storage": "1Gi"}}},
//! }))?;
//! let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "pv-1"},
//!     "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"},
//!              "persistentVolumeReclaimPolicy": "Retain"},
//!     "status": {"phase": "Available"},
//! }))?;
//! let mut cluster = ObjectSet::new([volume], [claim.clone()]);
//!
//! let options = SyncOptions::default();
//! let plan = sync_claim(&claim, &ClaimContext::new(cluster.volumes(), &options));
//! assert_eq!(plan.writes.len(), 4); // PV claimRef, PV status, claim spec, claim status
//! assert_eq!(plan.then, Then::Done);
//! plan.apply(|write| cluster.apply(write))?;
//!
//! let bound = cluster.claim("default", "data").unwrap();
//! assert_eq!(bound.status.as_ref().unwrap().phase.as_deref(), Some("Bound"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What is not modelled, and why, is listed on [`SyncOptions`].

mod bind;
mod claim;
mod memory;
mod meta;
mod named;
mod plan;
mod volume;

use std::collections::BTreeSet;

pub use bind::bind;
pub use claim::{ClaimContext, VolumeStore, sync_claim};
pub use memory::{ApplyError, ObjectSet};
pub use named::{
    NamedVolumeOutcome, VolumeMismatch, check_volume_satisfy_claim, named_volume_outcome,
};
pub use plan::{ClaimKey, Event, EventObject, EventType, Operation, Plan, Stopped, Then, Write};
pub use volume::{ApiAnswer, ClaimLookup, sync_volume};

use crate::binding::find::MatchError;

/// Claim annotation: the binding half is done; selects `syncBoundClaim`. Its value is ignored.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Volume and claim annotation: the controller, not the user, set that side's pointer.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Volume annotation: the provisioner that created the volume.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Claim annotation: the provisioner expected to create a volume for the claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The deprecated beta form of [`ANN_STORAGE_PROVISIONER`], still written alongside it.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Claim annotation: the node the scheduler chose for a `WaitForFirstConsumer` claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Volume and claim annotation: the CSI driver an in-tree plugin was migrated to.
pub const ANN_MIGRATED_TO: &str = "pv.kubernetes.io/migrated-to";
/// Volume annotation: the size to report in the claim's status when it binds.
pub const ANN_PRE_RESIZE_CAPACITY: &str = "volume.alpha.kubernetes.io/pre-resize-capacity";
/// StorageClass annotation marking the default class (value `"true"`).
pub const ANN_DEFAULT_STORAGE_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta form of [`ANN_DEFAULT_STORAGE_CLASS`].
pub const ANN_BETA_DEFAULT_STORAGE_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// How the modelled controller is configured.
///
/// Not modelled, on purpose:
/// - CSI migration (`pv.kubernetes.io/migrated-to` upkeep on claims and volumes, and the
///   in-tree → CSI name translation): no provisioner built on this crate is an in-tree
///   plugin. A volume that already carries `migrated-to` is still left alone on reclaim.
/// - The in-tree plugins' own work (provisioning, deleting, recycling): a plan names the
///   [`Operation`] the controller would start; the caller runs it or not.
/// - The recycler's "volume still used by pods" check, metrics, and API-server write
///   failures other than the crash points the caller injects.
/// - `HonorPVReclaimPolicy` is taken as on (GA since Kubernetes 1.33).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOptions {
    /// The `VolumeAttributesClass` feature gate (GA and on by default since Kubernetes 1.34).
    pub vac_enabled: bool,
    /// `--enable-dynamic-provisioning` (default on). Off, unmatched claims with a class only
    /// wait.
    pub dynamic_provisioning: bool,
    /// Names of the in-tree volume plugins the controller has (e.g. `kubernetes.io/host-path`).
    /// A plugin listed here is taken to provision, delete and recycle any volume, the way
    /// upstream's test plugin does. Current kube-controller-manager releases provision with
    /// none of them, hence the empty default.
    pub in_tree_plugins: BTreeSet<String>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            vac_enabled: true,
            dynamic_provisioning: true,
            in_tree_plugins: BTreeSet::new(),
        }
    }
}

/// Why a sync fails; the controller requeues the object with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The claim's StorageClass exists but has no `volumeBindingMode`.
    #[error("VolumeBindingMode not set for StorageClass {class:?}")]
    ClassWithoutBindingMode {
        /// The class name.
        class: String,
    },
    /// The volume search could not run.
    #[error("error finding PV for claim {claim}: {source}")]
    Match {
        /// The claim, `namespace/name`.
        claim: ClaimKey,
        /// Why the search failed (boxed: the error is large and rare).
        source: Box<MatchError>,
    },
    /// A claim the controller had bound names a volume now bound to another claim. Kubernetes
    /// says this "should never happen" (someone removed `bind-completed`).
    #[error(
        "invalid binding of claim {claim} to volume {volume:?}: volume already claimed by {other}"
    )]
    VolumeClaimedByOther {
        /// The claim being synced.
        claim: ClaimKey,
        /// The volume it names.
        volume: String,
        /// The claim the volume's `claimRef` names.
        other: ClaimKey,
    },
    /// A volume being bound has no `capacity.storage` to report in the claim's status.
    #[error("PersistentVolume {volume:?} is without a storage capacity")]
    VolumeWithoutCapacity {
        /// The volume.
        volume: String,
    },
}
