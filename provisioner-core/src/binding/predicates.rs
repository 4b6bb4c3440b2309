//! The primitive checks every form of matching is built from.
//!
//! These restate `k8s.io/component-helpers/storage/volume` (`pv_helpers.go`, `helpers.go`):
//! effective storage class, "is this volume bound to this claim", volume mode, access modes,
//! VolumeAttributesClass, and reading the storage sizes.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::quantity::{Quantity, QuantityError};

/// The legacy annotation that, when present, overrides `spec.storageClassName`.
pub const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// The resource name of storage in `capacity` and `resources.requests`.
pub const STORAGE_RESOURCE: &str = "storage";

/// `spec.volumeMode` when it is not set.
pub const FILESYSTEM_VOLUME_MODE: &str = "Filesystem";

/// The claim's effective storage class: the beta annotation when present (even if ""),
/// else `spec.storageClassName`, else "".
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(class) = annotation(&claim.metadata, BETA_STORAGE_CLASS_ANNOTATION) {
        return class;
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// Whether the claim asks for a class at all (the beta annotation or `spec.storageClassName`
/// is present, even as ""). Only retroactive default-class assignment cares: elsewhere an
/// absent class and "" are the same.
pub fn claim_has_class(claim: &PersistentVolumeClaim) -> bool {
    annotation(&claim.metadata, BETA_STORAGE_CLASS_ANNOTATION).is_some()
        || claim
            .spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// The volume's effective storage class: the beta annotation when present, else
/// `spec.storageClassName`, else "".
pub fn volume_class(pv: &PersistentVolume) -> &str {
    if let Some(class) = annotation(&pv.metadata, BETA_STORAGE_CLASS_ANNOTATION) {
        return class;
    }
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// `IsVolumeBoundToClaim`: the volume's `claimRef` names this claim (namespace and name) and
/// either carries no UID or the claim's UID. Kind, apiVersion and resourceVersion are ignored.
pub fn is_volume_bound_to_claim(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    let ref_name = claim_ref.name.as_deref().unwrap_or("");
    let ref_namespace = claim_ref.namespace.as_deref().unwrap_or("");
    if ref_name != claim.metadata.name.as_deref().unwrap_or("")
        || ref_namespace != claim.metadata.namespace.as_deref().unwrap_or("")
    {
        return false;
    }
    let ref_uid = claim_ref.uid.as_deref().unwrap_or("");
    ref_uid.is_empty() || ref_uid == claim.metadata.uid.as_deref().unwrap_or("")
}

/// Whether the volume has a `claimRef` at all (to this claim or any other).
pub fn volume_has_claim_ref(pv: &PersistentVolume) -> bool {
    pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some())
}

/// `CheckVolumeModeMismatches`: the modes differ, a missing mode counting as `Filesystem`.
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    claim_volume_mode(claim) != volume_volume_mode(pv)
}

/// The claim's volume mode, `Filesystem` when unset.
pub fn claim_volume_mode(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM_VOLUME_MODE)
}

/// The volume's volume mode, `Filesystem` when unset.
pub fn volume_volume_mode(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM_VOLUME_MODE)
}

/// `CheckAccessModes`: every mode the claim lists is among the volume's modes (a claim that
/// lists none is always satisfied).
pub fn access_modes_satisfied(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let volume_modes = volume_access_modes(pv);
    claim_access_modes(claim)
        .iter()
        .all(|mode| volume_modes.contains(mode))
}

/// The claim's `spec.accessModes` (empty when unset).
pub fn claim_access_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

/// The volume's `spec.accessModes` (empty when unset).
pub fn volume_access_modes(pv: &PersistentVolume) -> &[String] {
    pv.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

/// The claim's VolumeAttributesClass name; unset and "" are the same.
pub fn claim_vac(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's VolumeAttributesClass name; unset and "" are the same.
pub fn volume_vac(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref())
        .unwrap_or("")
}

/// The VolumeAttributesClass rule of `FindMatchingVolume` for one volume: with the feature
/// gate on, the names must be equal; with it off, a volume carrying a VAC never matches.
/// (A claim carrying a VAC with the gate off is an error for the whole search, not checked
/// here.)
pub fn vac_matches(
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    vac_enabled: bool,
) -> bool {
    if vac_enabled {
        claim_vac(claim) == volume_vac(pv)
    } else {
        volume_vac(pv).is_empty()
    }
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn volume_is_being_deleted(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_some()
}

/// The volume's `status.phase` ("" when unset).
pub fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The claim's `spec.resources.requests.storage`; a missing request reads as zero.
pub fn claim_request(claim: &PersistentVolumeClaim) -> Result<Quantity, QuantityError> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(STORAGE_RESOURCE))
        .map_or_else(|| Ok(Quantity::zero()), Quantity::try_from)
}

/// The volume's `spec.capacity.storage`; a missing capacity reads as zero.
pub fn volume_capacity(pv: &PersistentVolume) -> Result<Quantity, QuantityError> {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(STORAGE_RESOURCE))
        .map_or_else(|| Ok(Quantity::zero()), Quantity::try_from)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}
