//! A claim that names its volume (`spec.volumeName`): the checks Kubernetes makes before
//! binding, and the outcomes, each with a typed reason.

use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::ANN_BOUND_BY_CONTROLLER;
use super::meta::{claim_ref, claim_ref_key, has_annotation, name};
use super::plan::ClaimKey;
use crate::binding::predicates::{
    access_modes_satisfied, claim_access_modes, claim_class, claim_request, claim_vac,
    claim_volume_mode, is_volume_bound_to_claim, volume_access_modes, volume_capacity,
    volume_class, volume_is_being_deleted, volume_mode_mismatch, volume_vac, volume_volume_mode,
};
use crate::quantity::{Quantity, QuantityError};

/// Why a volume named by a claim cannot be bound to it (`checkVolumeSatisfyClaim`).
///
/// [`Display`](fmt::Display) says it in an operator's words;
/// [`kubernetes_message`](VolumeMismatch::kubernetes_message) gives Kubernetes' own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeMismatch {
    /// The volume has a `deletionTimestamp`.
    BeingDeleted,
    /// The volume's capacity, rounded up to whole bytes, is below the claim's request.
    TooSmall {
        /// The volume's `capacity.storage`.
        capacity: Quantity,
        /// The claim's `requests.storage`.
        request: Quantity,
    },
    /// A size cannot be read (the API server never stores such a value).
    UnreadableSize {
        /// `spec.capacity.storage` of the volume or `spec.resources.requests.storage` of the
        /// claim.
        field: &'static str,
        /// The parse error.
        error: QuantityError,
    },
    /// The effective storage classes differ ("" means no class).
    StorageClass {
        /// The volume's class.
        volume: String,
        /// The claim's class.
        claim: String,
    },
    /// The VolumeAttributesClass names differ ("" means none).
    AttributesClass {
        /// The volume's VolumeAttributesClass.
        volume: String,
        /// The claim's VolumeAttributesClass.
        claim: String,
    },
    /// The `VolumeAttributesClass` feature gate is off and one side sets a class.
    AttributesClassDisabled,
    /// The volume modes differ (unset means `Filesystem`).
    VolumeMode {
        /// The volume's mode.
        volume: String,
        /// The claim's mode.
        claim: String,
    },
    /// The claim asks for access modes the volume does not offer.
    AccessModes {
        /// The claim's modes missing from the volume, in the claim's order.
        missing: Vec<String>,
    },
}

impl VolumeMismatch {
    /// The error text Kubernetes produces, e.g. `requested PV is too small`.
    ///
    /// The text for [`VolumeMismatch::AttributesClassDisabled`] is not confirmed against the
    /// source (binder test 2-13 only checks the event reason).
    pub fn kubernetes_message(&self, volume_name: &str) -> String {
        match self {
            VolumeMismatch::BeingDeleted => {
                format!("the volume is marked for deletion \"{volume_name}\"")
            }
            VolumeMismatch::TooSmall { .. } => "requested PV is too small".to_owned(),
            VolumeMismatch::UnreadableSize { field, error } => format!("{field}: {error}"),
            VolumeMismatch::StorageClass { .. } => "storageClassName does not match".to_owned(),
            VolumeMismatch::AttributesClass { .. } => {
                "volumeAttributesClassName does not match".to_owned()
            }
            VolumeMismatch::AttributesClassDisabled => "volumeAttributesClassName is not \
                supported when the feature-gate VolumeAttributesClass is disabled"
                .to_owned(),
            VolumeMismatch::VolumeMode { .. } => "incompatible volumeMode".to_owned(),
            VolumeMismatch::AccessModes { .. } => "incompatible accessMode".to_owned(),
        }
    }

    /// The message of the `VolumeMismatch` warning event recorded on the claim.
    pub fn event_message(&self, volume_name: &str) -> String {
        format!(
            "Cannot bind to requested volume \"{volume_name}\": {}",
            self.kubernetes_message(volume_name)
        )
    }
}

fn or_none(class: &str) -> String {
    if class.is_empty() {
        "(none)".to_owned()
    } else {
        format!("{class:?}")
    }
}

impl fmt::Display for VolumeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeMismatch::BeingDeleted => f.write_str("the volume is being deleted"),
            VolumeMismatch::TooSmall { capacity, request } => write!(
                f,
                "the volume holds {capacity}, less than the {request} the claim requests"
            ),
            VolumeMismatch::UnreadableSize { field, error } => {
                write!(f, "{field} is not a valid quantity: {error}")
            }
            VolumeMismatch::StorageClass { volume, claim } => write!(
                f,
                "the volume's storage class {} is not the claim's {}",
                or_none(volume),
                or_none(claim)
            ),
            VolumeMismatch::AttributesClass { volume, claim } => write!(
                f,
                "the volume's VolumeAttributesClass {} is not the claim's {}",
                or_none(volume),
                or_none(claim)
            ),
            VolumeMismatch::AttributesClassDisabled => f.write_str(
                "a VolumeAttributesClass is set but the VolumeAttributesClass feature is disabled",
            ),
            VolumeMismatch::VolumeMode { volume, claim } => write!(
                f,
                "the volume's mode is {volume} but the claim asks for {claim}"
            ),
            VolumeMismatch::AccessModes { missing } => write!(
                f,
                "the volume does not offer the access mode(s) {} the claim asks for",
                missing.join(", ")
            ),
        }
    }
}

/// `checkVolumeSatisfyClaim`: can the claim bind to the volume it names, which no claim has
/// taken yet? The checks run in Kubernetes' order and the first failure is returned.
///
/// Sizes compare as whole bytes rounded up (`Value()`), not exactly as matching does. Phase,
/// labels and node affinity are not checked. The VolumeAttributesClass check sits between
/// the class and the volume-mode checks (the order there is inferred from binder tests
/// 2-11..2-13 rather than read in the source).
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::sync::{VolumeMismatch, check_volume_satisfy_claim};
///
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default"},
///     "spec": {"volumeName": "pv-1", "resources": {"requests": {"storage": "2Gi"}}},
/// }))?;
/// let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "pv-1"},
///     "spec": {"capacity": {"storage": "1Gi"}},
/// }))?;
/// let mismatch = check_volume_satisfy_claim(&volume, &claim, true).unwrap_err();
/// assert!(matches!(mismatch, VolumeMismatch::TooSmall { .. }));
/// assert_eq!(mismatch.kubernetes_message("pv-1"), "requested PV is too small");
/// assert_eq!(mismatch.to_string(), "the volume holds 1Gi, less than the 2Gi the claim requests");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn check_volume_satisfy_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    vac_enabled: bool,
) -> Result<(), VolumeMismatch> {
    if volume_is_being_deleted(volume) {
        return Err(VolumeMismatch::BeingDeleted);
    }
    let request = claim_request(claim).map_err(|error| VolumeMismatch::UnreadableSize {
        field: "spec.resources.requests.storage",
        error,
    })?;
    let capacity = volume_capacity(volume).map_err(|error| VolumeMismatch::UnreadableSize {
        field: "spec.capacity.storage",
        error,
    })?;
    if capacity.ceil_value() < request.ceil_value() {
        return Err(VolumeMismatch::TooSmall { capacity, request });
    }
    if volume_class(volume) != claim_class(claim) {
        return Err(VolumeMismatch::StorageClass {
            volume: volume_class(volume).to_owned(),
            claim: claim_class(claim).to_owned(),
        });
    }
    if vac_enabled {
        if claim_vac(claim) != volume_vac(volume) {
            return Err(VolumeMismatch::AttributesClass {
                volume: volume_vac(volume).to_owned(),
                claim: claim_vac(claim).to_owned(),
            });
        }
    } else if !claim_vac(claim).is_empty() || !volume_vac(volume).is_empty() {
        return Err(VolumeMismatch::AttributesClassDisabled);
    }
    if volume_mode_mismatch(claim, volume) {
        return Err(VolumeMismatch::VolumeMode {
            volume: volume_volume_mode(volume).to_owned(),
            claim: claim_volume_mode(claim).to_owned(),
        });
    }
    if !access_modes_satisfied(claim, volume) {
        let offered = volume_access_modes(volume);
        let missing = claim_access_modes(claim)
            .iter()
            .filter(|mode| !offered.contains(mode))
            .cloned()
            .collect();
        return Err(VolumeMismatch::AccessModes { missing });
    }
    Ok(())
}

/// What `syncClaim` does with a claim that names its volume and has not completed binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedVolumeOutcome {
    /// The volume does not exist (in the controller's cache): the claim is set Pending and
    /// retried on every sync.
    VolumeNotFound,
    /// The volume has no `claimRef` and satisfies the claim: they are bound.
    Bindable,
    /// The volume has no `claimRef` but fails a check: a `VolumeMismatch` warning and the
    /// claim stays Pending.
    Mismatch(VolumeMismatch),
    /// The volume's `claimRef` already names this claim (by name, or name and UID): binding
    /// finishes with no further checks.
    BoundToThisClaim,
    /// The volume's `claimRef` names another claim (or this name with another UID): a
    /// `FailedBinding` warning, "already bound to a different claim".
    BoundToOtherClaim {
        /// The claim the volume's `claimRef` names.
        other: ClaimKey,
        /// Whether this claim carries `pv.kubernetes.io/bound-by-controller`. If so the
        /// controller had bound it and this "should never happen": the sync fails instead of
        /// setting the claim Pending.
        claim_bound_by_controller: bool,
    },
}

impl NamedVolumeOutcome {
    /// Whether the claim and the volume get bound.
    pub fn binds(&self) -> bool {
        matches!(
            self,
            NamedVolumeOutcome::Bindable | NamedVolumeOutcome::BoundToThisClaim
        )
    }
}

impl fmt::Display for NamedVolumeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamedVolumeOutcome::VolumeNotFound => {
                f.write_str("the volume the claim names does not exist (yet)")
            }
            NamedVolumeOutcome::Bindable => {
                f.write_str("the volume the claim names is free and satisfies it")
            }
            NamedVolumeOutcome::Mismatch(mismatch) => mismatch.fmt(f),
            NamedVolumeOutcome::BoundToThisClaim => {
                f.write_str("the volume the claim names is already reserved for it")
            }
            NamedVolumeOutcome::BoundToOtherClaim { other, .. } => {
                write!(
                    f,
                    "the volume is already bound to a different claim, {other}"
                )
            }
        }
    }
}

/// Decides the named-volume path of `syncUnboundClaim` for `claim`, given the volume it
/// names as found in the controller's cache (`None` when absent).
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::sync::{NamedVolumeOutcome, named_volume_outcome};
///
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default", "uid": "new"},
///     "spec": {"volumeName": "pv-1"},
/// }))?;
/// // A Retain volume still holding the claim's previous incarnation.
/// let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "pv-1"},
///     "spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "old"}},
/// }))?;
/// let outcome = named_volume_outcome(&claim, Some(&volume), true);
/// assert!(matches!(outcome, NamedVolumeOutcome::BoundToOtherClaim { .. }));
/// assert!(!outcome.binds());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn named_volume_outcome(
    claim: &PersistentVolumeClaim,
    volume: Option<&PersistentVolume>,
    vac_enabled: bool,
) -> NamedVolumeOutcome {
    let Some(volume) = volume else {
        return NamedVolumeOutcome::VolumeNotFound;
    };
    match claim_ref(volume) {
        None => match check_volume_satisfy_claim(volume, claim, vac_enabled) {
            Ok(()) => NamedVolumeOutcome::Bindable,
            Err(mismatch) => NamedVolumeOutcome::Mismatch(mismatch),
        },
        Some(_) if is_volume_bound_to_claim(volume, claim) => NamedVolumeOutcome::BoundToThisClaim,
        Some(other) => NamedVolumeOutcome::BoundToOtherClaim {
            other: claim_ref_key(other),
            claim_bound_by_controller: has_annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER),
        },
    }
}

/// The `FailedBinding` message for a named volume bound to another claim.
pub(super) fn already_bound_message(volume: &PersistentVolume) -> String {
    format!(
        "volume \"{}\" already bound to a different claim.",
        name(&volume.metadata)
    )
}
