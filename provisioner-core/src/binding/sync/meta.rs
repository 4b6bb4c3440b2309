//! Small field accessors and the plan builder shared by the state machines.

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::plan::{ClaimKey, Event, EventObject, EventType, Plan, Then, Write};
use super::{ANN_PRE_RESIZE_CAPACITY, SyncError};
use crate::binding::predicates::STORAGE_RESOURCE;
use crate::quantity::Quantity;

pub(super) const VOLUME_AVAILABLE: &str = "Available";
pub(super) const VOLUME_BOUND: &str = "Bound";
pub(super) const VOLUME_RELEASED: &str = "Released";
pub(super) const VOLUME_FAILED: &str = "Failed";
pub(super) const CLAIM_PENDING: &str = "Pending";
pub(super) const CLAIM_BOUND: &str = "Bound";
pub(super) const CLAIM_LOST: &str = "Lost";

pub(super) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub(super) fn has_annotation(meta: &ObjectMeta, key: &str) -> bool {
    annotation(meta, key).is_some()
}

pub(super) fn set_annotation(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
}

pub(super) fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

pub(super) fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

pub(super) fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
}

pub(super) fn claim_ref_key(claim_ref: &ObjectReference) -> ClaimKey {
    ClaimKey {
        namespace: claim_ref.namespace.clone().unwrap_or_default(),
        name: claim_ref.name.clone().unwrap_or_default(),
    }
}

pub(super) fn claim_ref_uid(claim_ref: &ObjectReference) -> &str {
    claim_ref.uid.as_deref().unwrap_or("")
}

pub(super) fn claim_volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

pub(super) fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub(super) fn reclaim_policy(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("")
}

pub(super) fn volume_event(pv: &PersistentVolume) -> EventObject {
    EventObject::Volume(name(&pv.metadata).to_owned())
}

pub(super) fn claim_event(claim: &PersistentVolumeClaim) -> EventObject {
    EventObject::Claim(ClaimKey::of(claim))
}

/// Builds a plan the way the controller acts: each helper mirrors one controller method,
/// skips writes that would change nothing, and updates the caller's copy of the object so
/// that later steps see what earlier ones wrote.
#[derive(Default)]
pub(super) struct Recorder {
    writes: Vec<Write>,
}

impl Recorder {
    pub(super) fn push(&mut self, write: Write) {
        self.writes.push(write);
    }

    pub(super) fn event(
        &mut self,
        object: EventObject,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.writes.push(Write::Event(Event {
            object,
            event_type,
            reason: reason.to_owned(),
            message: message.into(),
        }));
    }

    pub(super) fn finish(self, then: Then) -> Plan {
        Plan {
            writes: self.writes,
            then,
        }
    }

    /// `updateVolumePhase`: nothing when the phase is already set; otherwise the phase and
    /// the message (cleared when empty).
    pub(super) fn update_volume_phase(
        &mut self,
        pv: &mut PersistentVolume,
        phase: &str,
        message: &str,
    ) {
        if crate::binding::predicates::volume_phase(pv) == phase {
            return;
        }
        let status = pv
            .status
            .get_or_insert_with(PersistentVolumeStatus::default);
        status.phase = Some(phase.to_owned());
        status.message = (!message.is_empty()).then(|| message.to_owned());
        self.writes.push(Write::UpdateVolumeStatus(pv.clone()));
    }

    /// `updateVolumePhaseWithEvent`: the phase write and then the event, both only when the
    /// phase changes.
    pub(super) fn update_volume_phase_with_event(
        &mut self,
        pv: &mut PersistentVolume,
        phase: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        if crate::binding::predicates::volume_phase(pv) == phase {
            return;
        }
        self.update_volume_phase(pv, phase, message);
        self.event(volume_event(pv), event_type, reason, message);
    }

    /// `updateClaimStatus`. Without a volume the access modes, capacity and current
    /// VolumeAttributesClass are cleared; with one the access modes follow the volume, the
    /// capacity is copied only when the phase changes (honouring the pre-resize annotation),
    /// and the current VolumeAttributesClass only on Pending → Bound.
    pub(super) fn update_claim_status(
        &mut self,
        claim: &mut PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
        vac_enabled: bool,
    ) -> Result<(), SyncError> {
        let old_phase = claim_phase(claim).to_owned();
        let mut status = claim.status.clone().unwrap_or_default();
        let mut dirty = false;
        if old_phase != phase {
            status.phase = Some(phase.to_owned());
            dirty = true;
        }
        match volume {
            None => {
                dirty |= status.access_modes.take().is_some();
                dirty |= status.capacity.take().is_some();
                // Cleared together with the other bind-time fields (binder test 2-13).
                dirty |= status.current_volume_attributes_class_name.take().is_some();
            }
            Some(pv) => {
                let spec = pv.spec.clone().unwrap_or_default();
                if status.access_modes != spec.access_modes {
                    status.access_modes = spec.access_modes.clone();
                    dirty = true;
                }
                // Only when becoming Bound: a later difference can be deliberate (a
                // filesystem smaller than its block device), so it is never overwritten.
                if old_phase != phase {
                    dirty |= set_bind_capacity(&mut status, pv)?;
                }
                // Only while binding: afterwards the external resizer owns this field.
                if vac_enabled
                    && old_phase == CLAIM_PENDING
                    && phase == CLAIM_BOUND
                    && status.current_volume_attributes_class_name
                        != spec.volume_attributes_class_name
                {
                    status.current_volume_attributes_class_name =
                        spec.volume_attributes_class_name.clone();
                    dirty = true;
                }
            }
        }
        if dirty {
            claim.status = Some(status);
            self.writes.push(Write::UpdateClaimStatus(claim.clone()));
        }
        Ok(())
    }

    /// `updateClaimStatusWithEvent`: nothing when the phase is already set; otherwise the
    /// status write, then the event.
    pub(super) fn update_claim_status_with_event(
        &mut self,
        claim: &mut PersistentVolumeClaim,
        phase: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
        vac_enabled: bool,
    ) -> Result<(), SyncError> {
        if claim_phase(claim) == phase {
            return Ok(());
        }
        self.update_claim_status(claim, phase, None, vac_enabled)?;
        self.event(claim_event(claim), event_type, reason, message);
        Ok(())
    }
}

/// The capacity part of `updateClaimStatus` for a claim becoming Bound; returns whether the
/// status changed.
fn set_bind_capacity(
    status: &mut PersistentVolumeClaimStatus,
    pv: &PersistentVolume,
) -> Result<bool, SyncError> {
    let capacity = pv.spec.as_ref().and_then(|s| s.capacity.as_ref());
    let Some(volume_capacity) = capacity.and_then(|c| c.get(STORAGE_RESOURCE)) else {
        return Err(SyncError::VolumeWithoutCapacity {
            volume: name(&pv.metadata).to_owned(),
        });
    };
    if let Some(pre_resize) = annotation(&pv.metadata, ANN_PRE_RESIZE_CAPACITY) {
        // An unparsable annotation falls back to the volume's capacity, as upstream does.
        let value = match Quantity::parse(pre_resize) {
            Ok(_) => k8s_openapi::apimachinery::pkg::api::resource::Quantity(pre_resize.to_owned()),
            Err(_) => volume_capacity.clone(),
        };
        status
            .capacity
            .get_or_insert_with(Default::default)
            .insert(STORAGE_RESOURCE.to_owned(), value);
        return Ok(true);
    }
    let claim_capacity = status
        .capacity
        .as_ref()
        .and_then(|c| c.get(STORAGE_RESOURCE));
    let same = claim_capacity.is_some_and(|c| quantities_equal(c, volume_capacity));
    if !same {
        status.capacity = capacity.cloned();
    }
    Ok(!same)
}

/// `Quantity.Cmp(...) == 0`, falling back to comparing the text when either side does not
/// parse (the API server never stores such a value).
fn quantities_equal(
    a: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    b: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> bool {
    match (Quantity::try_from(a), Quantity::try_from(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.0 == b.0,
    }
}
