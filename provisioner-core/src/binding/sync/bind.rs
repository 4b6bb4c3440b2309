//! `bind`: the four writes that bind a volume and a claim.

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};

use super::meta::{
    CLAIM_BOUND, Recorder, VOLUME_BOUND, claim_volume_name, has_annotation, name, set_annotation,
};
use super::plan::{Plan, Then, Write};
use super::{ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER};
use crate::binding::predicates::is_volume_bound_to_claim;

/// The writes that bind `volume` and `claim`, in Kubernetes' order. A write that would change
/// nothing is left out, so binding an already bound pair plans nothing.
///
/// 1. The volume (Update): `claimRef` becomes a full reference to the claim (kind,
///    apiVersion, namespace, name, uid, resourceVersion) unless it already names the claim
///    with its UID; `pv.kubernetes.io/bound-by-controller` is added unless the volume was
///    already bound to this claim (a user's pre-binding stays unannotated).
/// 2. The volume's status: phase `Bound`, message cleared.
/// 3. The claim (Update): `spec.volumeName` and, when that changes,
///    `bound-by-controller`; `pv.kubernetes.io/bind-completed` always.
/// 4. The claim's status: phase `Bound`, the volume's access modes, its capacity (only when
///    becoming Bound; the `volume.alpha.kubernetes.io/pre-resize-capacity` annotation wins),
///    and its VolumeAttributesClass as `currentVolumeAttributesClassName` (Pending → Bound
///    only, with `vac_enabled`).
///
/// If a write fails the later ones are not attempted; the next `syncClaim` or `syncVolume`
/// plans the rest. A volume without `capacity.storage` stops the plan before the claim's
/// status with [`Then::Retry`].
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::sync::{Write, bind};
///
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default", "uid": "c-1", "resourceVersion": "7"},
/// }))?;
/// let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "pv-1"},
///     "spec": {"capacity": {"storage": "1Gi"}},
/// }))?;
/// let plan = bind(&volume, &claim, true);
/// let Write::UpdateVolume(pv) = &plan.writes[0] else { panic!() };
/// let claim_ref = pv.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
/// assert_eq!(claim_ref.uid.as_deref(), Some("c-1"));
/// assert_eq!(claim_ref.resource_version.as_deref(), Some("7"));
/// assert!(matches!(plan.writes[1], Write::UpdateVolumeStatus(_)));
/// assert!(matches!(plan.writes[2], Write::UpdateClaim(_)));
/// assert!(matches!(plan.writes[3], Write::UpdateClaimStatus(_)));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn bind(volume: &PersistentVolume, claim: &PersistentVolumeClaim, vac_enabled: bool) -> Plan {
    let mut recorder = Recorder::default();
    let then = match bind_into(&mut recorder, volume, claim, vac_enabled) {
        Ok(()) => Then::Done,
        Err(error) => Then::Retry(error),
    };
    recorder.finish(then)
}

pub(super) fn bind_into(
    recorder: &mut Recorder,
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    vac_enabled: bool,
) -> Result<(), super::SyncError> {
    let mut volume = volume.clone();
    let mut claim = claim.clone();
    bind_volume_to_claim(recorder, &mut volume, &claim);
    recorder.update_volume_phase(&mut volume, VOLUME_BOUND, "");
    bind_claim_to_volume(recorder, &mut claim, &volume);
    recorder.update_claim_status(&mut claim, CLAIM_BOUND, Some(&volume), vac_enabled)
}

/// `GetBindVolumeToClaim` + `bindVolumeToClaim`.
fn bind_volume_to_claim(
    recorder: &mut Recorder,
    volume: &mut PersistentVolume,
    claim: &PersistentVolumeClaim,
) {
    let set_bound_by_controller = !is_volume_bound_to_claim(volume, claim);
    let mut dirty = false;
    let spec = volume
        .spec
        .get_or_insert_with(PersistentVolumeSpec::default);
    let current = spec.claim_ref.as_ref();
    let names_claim_with_uid = current.is_some_and(|r| {
        field(r.name.as_ref()) == field(claim.metadata.name.as_ref())
            && field(r.namespace.as_ref()) == field(claim.metadata.namespace.as_ref())
            && field(r.uid.as_ref()) == field(claim.metadata.uid.as_ref())
    });
    if !names_claim_with_uid {
        spec.claim_ref = Some(claim_reference(claim));
        dirty = true;
    }
    if set_bound_by_controller && !has_annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER) {
        set_annotation(&mut volume.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        dirty = true;
    }
    if dirty {
        recorder.push(Write::UpdateVolume(volume.clone()));
    }
}

/// `bindClaimToVolume`.
fn bind_claim_to_volume(
    recorder: &mut Recorder,
    claim: &mut PersistentVolumeClaim,
    volume: &PersistentVolume,
) {
    let mut dirty = false;
    let volume_name = name(&volume.metadata);
    if claim_volume_name(claim) != volume_name {
        claim.spec.get_or_insert_with(Default::default).volume_name = Some(volume_name.to_owned());
        if !has_annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER) {
            set_annotation(&mut claim.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        dirty = true;
    }
    if !has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
        set_annotation(&mut claim.metadata, ANN_BIND_COMPLETED, "yes");
        dirty = true;
    }
    if dirty {
        recorder.push(Write::UpdateClaim(claim.clone()));
    }
}

fn field(value: Option<&String>) -> &str {
    value.map_or("", String::as_str)
}

/// `reference.GetReference` for a claim.
fn claim_reference(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        kind: Some("PersistentVolumeClaim".to_owned()),
        api_version: Some("v1".to_owned()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}
