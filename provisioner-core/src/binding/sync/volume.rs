//! `syncVolume`: the volume state machine, with `unbindVolume` and `reclaimVolume`.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::meta::{
    Recorder, VOLUME_AVAILABLE, VOLUME_BOUND, VOLUME_FAILED, VOLUME_RELEASED, annotation,
    claim_event, claim_ref, claim_ref_key, claim_ref_uid, claim_volume_name, has_annotation, name,
    reclaim_policy, uid, volume_event,
};
use super::plan::{EventType, Operation, Plan, Then, Write};
use super::{ANN_BOUND_BY_CONTROLLER, ANN_MIGRATED_TO, ANN_PROVISIONED_BY, SyncOptions};
use crate::binding::predicates::{volume_mode_mismatch, volume_phase};

/// What the API server said when asked for the claim a volume's `claimRef` names.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ApiAnswer<'a> {
    /// Not asked yet.
    #[default]
    NotAsked,
    /// The claim exists.
    Found(&'a PersistentVolumeClaim),
    /// The API server answered NotFound.
    NotFound,
}

/// Where `syncVolume` looks for the claim a volume's `claimRef` names.
///
/// The controller looks in its own cache and informer first ([`ClaimLookup::cached`]). When
/// that is not conclusive (the claim is absent from the cache and the volume is not yet
/// Released or Failed, or the cached claim has another UID) it asks the API server, so that
/// a volume whose claim the cache has not seen yet is never released by mistake
/// (kubernetes#83177). A plan then comes back as [`Then::NeedsFreshClaim`]; sync again with
/// [`ClaimLookup::api`] filled in.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClaimLookup<'a> {
    /// The claim as the controller's cache has it, if it has it.
    pub cached: Option<&'a PersistentVolumeClaim>,
    /// The API server's answer, once asked.
    pub api: ApiAnswer<'a>,
}

impl<'a> ClaimLookup<'a> {
    /// A lookup with only the cache's answer.
    pub fn cached(claim: Option<&'a PersistentVolumeClaim>) -> ClaimLookup<'a> {
        ClaimLookup {
            cached: claim,
            api: ApiAnswer::NotAsked,
        }
    }

    /// The same lookup with the API server's answer (`None` for NotFound).
    pub fn with_api(self, claim: Option<&'a PersistentVolumeClaim>) -> ClaimLookup<'a> {
        ClaimLookup {
            api: claim.map_or(ApiAnswer::NotFound, ApiAnswer::Found),
            ..self
        }
    }
}

/// `syncVolume`: what the PV controller does with `volume` now.
///
/// - No `claimRef`, or one without a UID (pre-bound, waiting for its claim): Available.
/// - The claim is gone (or has another UID): Released unless already Released or Failed,
///   then the reclaim policy: nothing for `Retain` or a migrated volume, the recycler for
///   `Recycle`, the deleter for `Delete` (an external provisioner deletes its own volumes),
///   Failed with `VolumeUnknownReclaimPolicy` otherwise. With no in-tree plugin to recycle
///   or delete, Failed with `VolumeFailedRecycle` / `VolumeFailedDelete`.
/// - The claim has not chosen a volume: a `VolumeMismatch` warning on both when the volume
///   modes differ, else the claim is enqueued for `syncClaim`.
/// - The claim names this volume: Bound.
/// - The claim names another volume: a provisioned volume with policy `Delete` is released
///   and deleted; otherwise it is unbound: a controller-made `claimRef` is removed with its
///   annotation, a user's pre-binding only loses its UID, and the volume is Available.
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::sync::{ClaimLookup, SyncOptions, Then, Write, sync_volume};
///
/// let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "pv-1"},
///     "spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "c-1"},
///              "persistentVolumeReclaimPolicy": "Retain"},
///     "status": {"phase": "Bound"},
/// }))?;
/// let options = SyncOptions::default();
///
/// // Not in the cache: ask the API server before releasing anything.
/// let plan = sync_volume(&volume, ClaimLookup::cached(None), &options);
/// assert!(matches!(plan.then, Then::NeedsFreshClaim(_)));
///
/// // The API server does not have it either: the volume is Released and retained.
/// let plan = sync_volume(&volume, ClaimLookup::cached(None).with_api(None), &options);
/// let Write::UpdateVolumeStatus(released) = &plan.writes[0] else { panic!() };
/// assert_eq!(released.status.as_ref().unwrap().phase.as_deref(), Some("Released"));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn sync_volume(
    volume: &PersistentVolume,
    lookup: ClaimLookup<'_>,
    options: &SyncOptions,
) -> Plan {
    let mut recorder = Recorder::default();
    let mut volume = volume.clone();
    let Some(claim_ref) = claim_ref(&volume).cloned() else {
        recorder.update_volume_phase(&mut volume, VOLUME_AVAILABLE, "");
        return recorder.finish(Then::Done);
    };
    let ref_uid = claim_ref_uid(&claim_ref).to_owned();
    if ref_uid.is_empty() {
        // Reserved for a claim that has not bound yet; syncClaim handles it.
        recorder.update_volume_phase(&mut volume, VOLUME_AVAILABLE, "");
        return recorder.finish(Then::Done);
    }
    let key = claim_ref_key(&claim_ref);
    let released_or_failed = matches!(volume_phase(&volume), VOLUME_RELEASED | VOLUME_FAILED);

    let mut claim = lookup.cached;
    if claim.is_none() && !released_or_failed {
        claim = match lookup.api {
            ApiAnswer::NotAsked => return recorder.finish(Then::NeedsFreshClaim(key)),
            ApiAnswer::Found(fresh) => Some(fresh),
            ApiAnswer::NotFound => None,
        };
    }
    if let Some(found) = claim
        && uid(&found.metadata) != ref_uid
    {
        // Maybe a stale cache entry: only the API server can tell whether the claim the
        // volume was bound to is really gone.
        claim = match lookup.api {
            ApiAnswer::NotAsked => return recorder.finish(Then::NeedsFreshClaim(key)),
            ApiAnswer::Found(fresh) if uid(&fresh.metadata) == ref_uid => Some(fresh),
            ApiAnswer::Found(_) | ApiAnswer::NotFound => None,
        };
    }

    let volume_name = name(&volume.metadata).to_owned();
    let then = match claim {
        None => {
            // Never overwrite Failed: the user should see it, while reclaim keeps retrying.
            if !released_or_failed {
                recorder.update_volume_phase(&mut volume, VOLUME_RELEASED, "");
            }
            reclaim_volume(&mut recorder, &mut volume, lookup.cached, options)
        }
        Some(claim) if claim_volume_name(claim).is_empty() => {
            if volume_mode_mismatch(claim, &volume) {
                // findBestMatchForClaim will never offer this volume: say why.
                recorder.event(
                    volume_event(&volume),
                    EventType::Warning,
                    "VolumeMismatch",
                    format!(
                        "Cannot bind PersistentVolume to requested PersistentVolumeClaim \"{}\" \
                         due to incompatible volumeMode.",
                        name(&claim.metadata)
                    ),
                );
                recorder.event(
                    claim_event(claim),
                    EventType::Warning,
                    "VolumeMismatch",
                    format!(
                        "Cannot bind PersistentVolume \"{volume_name}\" to requested \
                         PersistentVolumeClaim due to incompatible volumeMode."
                    ),
                );
                Then::Done
            } else {
                // Bound on this side, Pending on the other: syncClaim finishes it.
                Then::EnqueueClaim(key)
            }
        }
        Some(claim) if claim_volume_name(claim) == volume_name => {
            recorder.update_volume_phase(&mut volume, VOLUME_BOUND, "");
            Then::Done
        }
        Some(_) => {
            if has_annotation(&volume.metadata, ANN_PROVISIONED_BY)
                && reclaim_policy(&volume) == "Delete"
            {
                // Provisioned for this claim, which got bound elsewhere: not needed.
                if !released_or_failed {
                    recorder.update_volume_phase(&mut volume, VOLUME_RELEASED, "");
                }
                reclaim_volume(&mut recorder, &mut volume, lookup.cached, options)
            } else {
                unbind_volume(&mut recorder, &mut volume);
                Then::Done
            }
        }
    };
    recorder.finish(then)
}

/// `unbindVolume`: undo the binding on the volume side and make it Available.
fn unbind_volume(recorder: &mut Recorder, volume: &mut PersistentVolume) {
    let spec = volume.spec.get_or_insert_with(Default::default);
    if has_annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER) {
        // The controller made this binding: remove all of it.
        spec.claim_ref = None;
        if let Some(annotations) = volume.metadata.annotations.as_mut() {
            annotations.remove(ANN_BOUND_BY_CONTROLLER);
            if annotations.is_empty() {
                volume.metadata.annotations = None;
            }
        }
    } else if let Some(claim_ref) = spec.claim_ref.as_mut() {
        // The user pre-bound it: keep it reserved for that claim name.
        claim_ref.uid = None;
    }
    recorder.push(Write::UpdateVolume(volume.clone()));
    recorder.update_volume_phase(volume, VOLUME_AVAILABLE, "");
}

/// `reclaimVolume`, with the asynchronous recycle and delete operations' first steps
/// (`isVolumeReleased`, the plugin lookup) played out in place.
fn reclaim_volume(
    recorder: &mut Recorder,
    volume: &mut PersistentVolume,
    cached_claim: Option<&PersistentVolumeClaim>,
    options: &SyncOptions,
) -> Then {
    if annotation(&volume.metadata, ANN_MIGRATED_TO).is_some_and(|v| !v.is_empty()) {
        // Migrated to CSI: the external provisioner owns it.
        return Then::Done;
    }
    let volume_name = name(&volume.metadata).to_owned();
    match reclaim_policy(volume) {
        "Retain" => Then::Done,
        "Recycle" => {
            if !is_volume_released(volume, cached_claim) {
                return Then::Done;
            }
            match first_plugin(options) {
                Some(plugin) => Then::Start(Operation::Recycle {
                    volume: volume_name,
                    plugin,
                }),
                None => {
                    recorder.update_volume_phase_with_event(
                        volume,
                        VOLUME_FAILED,
                        EventType::Warning,
                        "VolumeFailedRecycle",
                        "No recycler plugin found for the volume!",
                    );
                    Then::Done
                }
            }
        }
        "Delete" => {
            if !is_volume_released(volume, cached_claim) {
                return Then::Done;
            }
            match find_deleter(volume, options) {
                Deleter::External => Then::Done,
                Deleter::InTree(plugin) => Then::Start(Operation::Delete {
                    volume: volume_name,
                    plugin,
                }),
                Deleter::Missing(message) => {
                    recorder.update_volume_phase_with_event(
                        volume,
                        VOLUME_FAILED,
                        EventType::Warning,
                        "VolumeFailedDelete",
                        &message,
                    );
                    Then::Done
                }
            }
        }
        _ => {
            recorder.update_volume_phase_with_event(
                volume,
                VOLUME_FAILED,
                EventType::Warning,
                "VolumeUnknownReclaimPolicy",
                "Volume has unrecognized PersistentVolumeReclaimPolicy",
            );
            Then::Done
        }
    }
}

/// `isVolumeReleased`: bound (with a UID) to a claim that is gone, has another UID, or is
/// bound to another volume. Uses the cache only, as upstream does.
fn is_volume_released(
    volume: &PersistentVolume,
    cached_claim: Option<&PersistentVolumeClaim>,
) -> bool {
    let Some(claim_ref) = claim_ref(volume) else {
        return false;
    };
    let ref_uid = claim_ref_uid(claim_ref);
    if ref_uid.is_empty() {
        return false;
    }
    match cached_claim {
        Some(claim) if uid(&claim.metadata) == ref_uid => {
            let bound_to = claim_volume_name(claim);
            !bound_to.is_empty() && bound_to != name(&volume.metadata)
        }
        _ => true,
    }
}

enum Deleter {
    /// An external provisioner (or CSI driver) deletes the volume.
    External,
    /// An in-tree plugin deletes it.
    InTree(String),
    /// No deleter: the message the volume fails with.
    Missing(String),
}

/// `findDeletablePlugin`, with `HonorPVReclaimPolicy` on.
fn find_deleter(volume: &PersistentVolume, options: &SyncOptions) -> Deleter {
    if let Some(provisioner) = annotation(&volume.metadata, ANN_PROVISIONED_BY)
        && !provisioner.is_empty()
    {
        if options.in_tree_plugins.contains(provisioner) {
            return Deleter::InTree(provisioner.to_owned());
        }
        if !provisioner.starts_with("kubernetes.io/") {
            return Deleter::External;
        }
        return Deleter::Missing(format!("no volume plugin matched name: {provisioner}"));
    }
    if has_annotation(&volume.metadata, ANN_MIGRATED_TO)
        || volume.spec.as_ref().is_some_and(|s| s.csi.is_some())
    {
        return Deleter::External;
    }
    match first_plugin(options) {
        Some(plugin) => Deleter::InTree(plugin),
        None => Deleter::Missing(format!(
            "error getting deleter volume plugin for volume \"{}\": no volume plugin matched",
            name(&volume.metadata)
        )),
    }
}

/// The plugin that would claim a volume by its spec: every configured plugin supports every
/// volume (see [`SyncOptions::in_tree_plugins`]), so the first by name.
fn first_plugin(options: &SyncOptions) -> Option<String> {
    options.in_tree_plugins.iter().next().cloned()
}
