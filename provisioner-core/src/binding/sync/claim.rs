//! `syncClaim`: the claim state machine.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::bind::bind_into;
use super::meta::{
    CLAIM_LOST, CLAIM_PENDING, Recorder, annotation, claim_event, claim_ref, claim_ref_uid,
    claim_volume_name, has_annotation, name, set_annotation, uid,
};
use super::named::{NamedVolumeOutcome, already_bound_message, named_volume_outcome};
use super::plan::{ClaimKey, EventType, Operation, Plan, Then, Write};
use super::{
    ANN_BETA_DEFAULT_STORAGE_CLASS, ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED,
    ANN_DEFAULT_STORAGE_CLASS, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, SyncError, SyncOptions,
};
use crate::binding::find::{MatchError, find_best_match_for_claim};
use crate::binding::predicates::{claim_class, claim_has_class};

/// The volumes the controller knows, as `syncClaim` needs them: by name, and the
/// `findBestMatchForClaim` search.
///
/// A slice of volumes is a store (a linear search); an index can implement it too.
pub trait VolumeStore {
    /// The volume called `name`.
    fn volume(&self, name: &str) -> Option<&PersistentVolume>;

    /// The PV controller's search for `claim` (see
    /// [`find_best_match_for_claim`](crate::binding::find::find_best_match_for_claim)).
    fn best_match(
        &self,
        claim: &PersistentVolumeClaim,
        delay_binding: bool,
        vac_enabled: bool,
    ) -> Result<Option<&PersistentVolume>, MatchError>;
}

impl VolumeStore for [PersistentVolume] {
    fn volume(&self, name: &str) -> Option<&PersistentVolume> {
        self.iter()
            .find(|pv| pv.metadata.name.as_deref() == Some(name))
    }

    fn best_match(
        &self,
        claim: &PersistentVolumeClaim,
        delay_binding: bool,
        vac_enabled: bool,
    ) -> Result<Option<&PersistentVolume>, MatchError> {
        find_best_match_for_claim(claim, self, delay_binding, vac_enabled)
    }
}

/// Everything `syncClaim` reads besides the claim itself.
pub struct ClaimContext<'a, V: VolumeStore + ?Sized = [PersistentVolume]> {
    /// Every volume the controller knows, in any phase.
    pub volumes: &'a V,
    /// The StorageClasses.
    pub classes: &'a [StorageClass],
    /// Names of the claim's pods that are not terminated and not scheduled (no
    /// `spec.nodeName`), for the `WaitForPodScheduled` event.
    pub unscheduled_pods: &'a [String],
    /// The controller's configuration.
    pub options: &'a SyncOptions,
}

impl<V: VolumeStore + ?Sized> Clone for ClaimContext<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V: VolumeStore + ?Sized> Copy for ClaimContext<'_, V> {}

impl<'a, V: VolumeStore + ?Sized> ClaimContext<'a, V> {
    /// A context with the given volumes and options, no StorageClasses and no pods.
    pub fn new(volumes: &'a V, options: &'a SyncOptions) -> ClaimContext<'a, V> {
        ClaimContext {
            volumes,
            classes: &[],
            unscheduled_pods: &[],
            options,
        }
    }

    /// The same context with these StorageClasses.
    pub fn with_classes(self, classes: &'a [StorageClass]) -> ClaimContext<'a, V> {
        ClaimContext { classes, ..self }
    }

    /// The same context with these unscheduled pods using the claim.
    pub fn with_unscheduled_pods(self, unscheduled_pods: &'a [String]) -> ClaimContext<'a, V> {
        ClaimContext {
            unscheduled_pods,
            ..self
        }
    }

    fn class(&self, name: &str) -> Option<&'a StorageClass> {
        self.classes
            .iter()
            .find(|class| class.metadata.name.as_deref() == Some(name))
    }
}

/// `syncClaim`: what the PV controller does with `claim` now.
///
/// - No `pv.kubernetes.io/bind-completed` and no `spec.volumeName`: decide delayed binding
///   from the class (`WaitForFirstConsumer`; a class with no mode is an error), search with
///   [`VolumeStore::best_match`] and bind; with no match, assign the default StorageClass
///   to a claim that has no class at all, else wait for a consumer (`WaitForFirstConsumer`
///   or `WaitForPodScheduled`) when delayed and no node is selected, else trigger
///   provisioning when the claim has a class, else report `FailedBinding`.
/// - No `bind-completed` but `spec.volumeName`: see [`named_volume_outcome`].
/// - `bind-completed`: Lost (`ClaimLost`) when the volume name is gone or the volume is
///   missing, re-bind when the volume lost its `claimRef` or names this claim's UID, Lost
///   (`ClaimMisbound`) when it names another claim.
///
/// Events accompanying a phase change are recorded only when the phase changes.
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::sync::{ClaimContext, SyncOptions, sync_claim};
///
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default", "uid": "c-1"},
///     "spec": {"storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}},
///     "status": {"phase": "Pending"},
/// }))?;
/// let volumes: Vec<PersistentVolume> = vec![];
/// let options = SyncOptions::default();
/// let plan = sync_claim(&claim, &ClaimContext::new(volumes.as_slice(), &options));
/// let event = plan.events().next().unwrap();
/// assert_eq!(event.reason, "FailedBinding");
/// assert_eq!(event.message,
///     "no persistent volumes available for this claim and no storage class is set");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn sync_claim<V: VolumeStore + ?Sized>(
    claim: &PersistentVolumeClaim,
    context: &ClaimContext<'_, V>,
) -> Plan {
    let mut recorder = Recorder::default();
    let mut claim = claim.clone();
    let outcome = if has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
        sync_bound_claim(&mut recorder, &mut claim, context)
    } else if claim_volume_name(&claim).is_empty() {
        sync_unmatched_claim(&mut recorder, &mut claim, context)
    } else {
        sync_named_claim(&mut recorder, &mut claim, context)
    };
    let then = match outcome {
        Ok(then) => then,
        Err(error) => Then::Retry(error),
    };
    recorder.finish(then)
}

/// `syncUnboundClaim`, `spec.volumeName` empty: the user takes any matching volume.
fn sync_unmatched_claim(
    recorder: &mut Recorder,
    claim: &mut PersistentVolumeClaim,
    context: &ClaimContext<'_, impl VolumeStore + ?Sized>,
) -> Result<Then, SyncError> {
    let options = context.options;
    let delay_binding = is_delay_binding_mode(claim, context)?;
    let found = context
        .volumes
        .best_match(claim, delay_binding, options.vac_enabled)
        .map_err(|source| SyncError::Match {
            claim: ClaimKey::of(claim),
            source: Box::new(source),
        })?;
    if let Some(volume) = found {
        bind_into(recorder, volume, claim, options.vac_enabled)?;
        return Ok(Then::Done);
    }
    if let Some(default_class) = default_class_to_assign(claim, context) {
        // Saved alone; the next sync carries on with the class.
        claim
            .spec
            .get_or_insert_with(Default::default)
            .storage_class_name = Some(default_class);
        recorder.push(Write::UpdateClaim(claim.clone()));
        return Ok(Then::Done);
    }
    if delay_binding && !has_annotation(&claim.metadata, ANN_SELECTED_NODE) {
        // No pod using the claim has been scheduled yet.
        emit_waiting_for_consumer(recorder, claim, context.unscheduled_pods);
    } else if !claim_class(claim).is_empty() {
        // Provisioning finishes asynchronously; the status is left alone.
        return Ok(provision_claim(recorder, claim, context));
    } else {
        recorder.event(
            claim_event(claim),
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        );
    }
    recorder.update_claim_status(claim, CLAIM_PENDING, None, options.vac_enabled)?;
    Ok(Then::Done)
}

/// `syncUnboundClaim`, `spec.volumeName` set: the user asked for a specific volume.
fn sync_named_claim(
    recorder: &mut Recorder,
    claim: &mut PersistentVolumeClaim,
    context: &ClaimContext<'_, impl VolumeStore + ?Sized>,
) -> Result<Then, SyncError> {
    let vac_enabled = context.options.vac_enabled;
    let volume = context.volumes.volume(claim_volume_name(claim));
    match (named_volume_outcome(claim, volume, vac_enabled), volume) {
        (NamedVolumeOutcome::Bindable | NamedVolumeOutcome::BoundToThisClaim, Some(volume)) => {
            bind_into(recorder, volume, claim, vac_enabled)?;
        }
        (NamedVolumeOutcome::Mismatch(mismatch), Some(volume)) => {
            let message = mismatch.event_message(name(&volume.metadata));
            recorder.event(
                claim_event(claim),
                EventType::Warning,
                "VolumeMismatch",
                message,
            );
            recorder.update_claim_status(claim, CLAIM_PENDING, None, vac_enabled)?;
        }
        (
            NamedVolumeOutcome::BoundToOtherClaim {
                other,
                claim_bound_by_controller,
            },
            Some(volume),
        ) => {
            let message = already_bound_message(volume);
            recorder.event(
                claim_event(claim),
                EventType::Warning,
                "FailedBinding",
                message,
            );
            if claim_bound_by_controller {
                return Err(SyncError::VolumeClaimedByOther {
                    claim: ClaimKey::of(claim),
                    volume: name(&volume.metadata).to_owned(),
                    other,
                });
            }
            recorder.update_claim_status(claim, CLAIM_PENDING, None, vac_enabled)?;
        }
        // The volume is not (yet) known: wait for it.
        _ => recorder.update_claim_status(claim, CLAIM_PENDING, None, vac_enabled)?,
    }
    Ok(Then::Done)
}

/// `syncBoundClaim`: the claim completed binding earlier.
fn sync_bound_claim(
    recorder: &mut Recorder,
    claim: &mut PersistentVolumeClaim,
    context: &ClaimContext<'_, impl VolumeStore + ?Sized>,
) -> Result<Then, SyncError> {
    let vac_enabled = context.options.vac_enabled;
    let volume_name = claim_volume_name(claim).to_owned();
    if volume_name.is_empty() {
        recorder.update_claim_status_with_event(
            claim,
            CLAIM_LOST,
            EventType::Warning,
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            vac_enabled,
        )?;
        return Ok(Then::Done);
    }
    let Some(volume) = context.volumes.volume(&volume_name) else {
        recorder.update_claim_status_with_event(
            claim,
            CLAIM_LOST,
            EventType::Warning,
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            vac_enabled,
        )?;
        return Ok(Then::Done);
    };
    match claim_ref(volume) {
        // The volume came unbound, or the controller has not seen its update yet: bind again.
        None => bind_into(recorder, volume, claim, vac_enabled)?,
        // All is well; binding makes sure both sides say Bound (often a no-op).
        Some(claim_ref) if claim_ref_uid(claim_ref) == uid(&claim.metadata) => {
            bind_into(recorder, volume, claim, vac_enabled)?;
        }
        Some(_) => recorder.update_claim_status_with_event(
            claim,
            CLAIM_LOST,
            EventType::Warning,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
            vac_enabled,
        )?,
    }
    Ok(Then::Done)
}

/// `IsDelayBindingMode`: no class or an unknown class binds at once; a class without a
/// binding mode is an error.
fn is_delay_binding_mode(
    claim: &PersistentVolumeClaim,
    context: &ClaimContext<'_, impl VolumeStore + ?Sized>,
) -> Result<bool, SyncError> {
    let class_name = claim_class(claim);
    if class_name.is_empty() {
        return Ok(false);
    }
    let Some(class) = context.class(class_name) else {
        return Ok(false);
    };
    match class.volume_binding_mode.as_deref() {
        None => Err(SyncError::ClassWithoutBindingMode {
            class: class_name.to_owned(),
        }),
        Some(mode) => Ok(mode == "WaitForFirstConsumer"),
    }
}

/// `assignDefaultStorageClass`: a claim with no class at all gets the default class (the
/// newest of those marked default, ties broken by name).
fn default_class_to_assign(
    claim: &PersistentVolumeClaim,
    context: &ClaimContext<'_, impl VolumeStore + ?Sized>,
) -> Option<String> {
    if claim_has_class(claim) {
        return None;
    }
    let is_default = |class: &&StorageClass| {
        annotation(&class.metadata, ANN_DEFAULT_STORAGE_CLASS) == Some("true")
            || annotation(&class.metadata, ANN_BETA_DEFAULT_STORAGE_CLASS) == Some("true")
    };
    context
        .classes
        .iter()
        .filter(is_default)
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                // Newest first, then the smaller name: the smaller name must compare greater.
                .then_with(|| name(&b.metadata).cmp(name(&a.metadata)))
        })
        .map(|class| name(&class.metadata).to_owned())
}

/// `emitEventForUnboundDelayBindingClaim`.
fn emit_waiting_for_consumer(
    recorder: &mut Recorder,
    claim: &PersistentVolumeClaim,
    unscheduled_pods: &[String],
) {
    let (reason, message) = match unscheduled_pods {
        [] => (
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".to_owned(),
        ),
        [pod] => (
            "WaitForPodScheduled",
            format!("waiting for pod {pod} to be scheduled"),
        ),
        pods => (
            "WaitForPodScheduled",
            format!("waiting for pods {} to be scheduled", pods.join(",")),
        ),
    };
    recorder.event(claim_event(claim), EventType::Normal, reason, message);
}

/// `provisionClaim` with `findProvisionablePlugin`, and the external branch
/// (`provisionClaimOperationExternal`) played out in place.
fn provision_claim(
    recorder: &mut Recorder,
    claim: &mut PersistentVolumeClaim,
    context: &ClaimContext<'_, impl VolumeStore + ?Sized>,
) -> Then {
    let options = context.options;
    if !options.dynamic_provisioning {
        return Then::Done;
    }
    let class_name = claim_class(claim).to_owned();
    let Some(class) = context.class(&class_name) else {
        recorder.event(
            claim_event(claim),
            EventType::Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        );
        return Then::Done;
    };
    let provisioner = class.provisioner.as_str();
    if options.in_tree_plugins.contains(provisioner) {
        return Then::Start(Operation::ProvisionInTree {
            claim: ClaimKey::of(claim),
            plugin: provisioner.to_owned(),
            class: class_name,
        });
    }
    if provisioner.starts_with("kubernetes.io/") {
        recorder.event(
            claim_event(claim),
            EventType::Warning,
            "ProvisioningFailed",
            format!("no volume plugin matched name: {provisioner}"),
        );
        return Then::Done;
    }
    // setClaimProvisioner: both annotations, saved only when the GA one differs.
    if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner) {
        set_annotation(
            &mut claim.metadata,
            ANN_BETA_STORAGE_PROVISIONER,
            provisioner,
        );
        set_annotation(&mut claim.metadata, ANN_STORAGE_PROVISIONER, provisioner);
        recorder.push(Write::UpdateClaim(claim.clone()));
    }
    recorder.event(
        claim_event(claim),
        EventType::Normal,
        "ExternalProvisioning",
        format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
             or manually by the system administrator. If volume creation is delayed, please \
             verify that the provisioner is running and correctly registered."
        ),
    );
    Then::Done
}
