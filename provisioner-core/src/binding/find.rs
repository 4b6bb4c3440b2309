//! Finding the volume a claim binds to, in Kubernetes' forms, with an explanation of every
//! volume passed over.
//!
//! These are the reference (linear) searches; [`super::index::VolumeIndex`] answers the same
//! questions at scale and is tested against them.
//!
//! # The three forms
//!
//! - [`find_matching_volume`] is `FindMatchingVolume` from component-helpers, the building
//!   block of both others: one walk over a list of volumes, in list order.
//! - [`find_best_match_for_claim`] is the PV controller's search (`findBestMatchForClaim`):
//!   volumes are grouped by their access-mode set, the sets that contain all the claim's
//!   modes are searched smallest first, and the first set with a match wins. Access modes
//!   are enforced only by this grouping.
//! - [`find_matching_volume_for_node`] is the scheduler's (`findMatchingVolumes` for one
//!   claim): only volumes of the claim's storage class are listed, the node's labels are
//!   checked against node affinity, access modes are checked, and volumes already chosen
//!   for other claims of the pod are excluded.
//!
//! # The walk
//!
//! `FindMatchingVolume` looks at each volume in turn and passes over it at the first filter
//! it fails, in this order: excluded by name; `claimRef` naming another claim; capacity
//! below the request (exact comparison); volume mode; VolumeAttributesClass; deletion
//! timestamp. A volume that has come this far and is pre-bound to the claim (its `claimRef`
//! names the claim, with no UID or the claim's UID) ends the walk at once: it is returned
//! if its node affinity accepts the node (or no node is given), and otherwise *nothing* is
//! returned. Other volumes continue: delayed binding without a node; phase `Available`;
//! the claim's label selector; storage class; node affinity; access modes (only with a
//! node). The smallest survivor wins, the first one met among equals.
//!
//! # Input and errors
//!
//! An invalid request, capacity or selector is bad input (the API server never stores
//! one) and gives a [`MatchError`] naming the field, whatever the form. A claim with a
//! VolumeAttributesClass while the feature gate is off is refused exactly when Kubernetes
//! refuses it: whenever `FindMatchingVolume` runs, which the PV controller does only if
//! some access-mode set can hold the claim's modes. Names are expected to be unique, as in
//! a cluster; the linear searches do not merge volumes of the same name.
//!
//! # Where Kubernetes leaves the order undefined
//!
//! Kubernetes walks volumes in the order of an informer cache (a map), sorts access-mode
//! sets by size only, with an unstable sort, and keeps the first of equally small volumes.
//! We make every choice deterministic: volumes are walked in the order given, sets of equal
//! size are visited in the order of their canonical key compared as strings (`ROX` <
//! `RWO` < `RWOP` < `RWX`, see [`AccessModeSet::search_order`]), and of equally large
//! volumes the first one given wins. Where Kubernetes' answer is defined, ours is the same.
//!
//! # Explanations
//!
//! The `explain_*` functions run the same walk and report, for every volume not chosen, the
//! first reason it was passed over ([`Rejection`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};

use super::access_modes::AccessModeSet;
use super::label_selector::{LabelSelector, SelectorError};
use super::node_affinity::check_node_affinity;
use super::predicates::{
    claim_access_modes, claim_class, claim_request, claim_vac, claim_volume_mode,
    is_volume_bound_to_claim, volume_access_modes, volume_capacity, volume_class, volume_phase,
    volume_vac, volume_volume_mode,
};
use crate::quantity::{Quantity, QuantityError};

/// The phase a volume must be in to be bound to a claim that does not name it.
pub const AVAILABLE_PHASE: &str = "Available";

/// Why a search could not run at all. Each variant names the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The claim's `spec.resources.requests.storage` is not a valid quantity.
    #[error("claim {claim}: spec.resources.requests.storage: {source}")]
    InvalidRequest {
        /// `namespace/name` of the claim.
        claim: String,
        /// The parse error.
        source: QuantityError,
    },
    /// A volume's `spec.capacity.storage` is not a valid quantity.
    #[error("volume {volume}: spec.capacity.storage: {source}")]
    InvalidCapacity {
        /// The volume's name.
        volume: String,
        /// The parse error.
        source: QuantityError,
    },
    /// The claim's `spec.selector` is not a valid label selector.
    #[error("claim {claim}: spec.selector.{source}")]
    InvalidSelector {
        /// `namespace/name` of the claim.
        claim: String,
        /// What is wrong, with the field inside the selector.
        source: SelectorError,
    },
    /// The claim sets `spec.volumeAttributesClassName` while the `VolumeAttributesClass`
    /// feature gate is off; Kubernetes refuses to search at all.
    #[error(
        "claim {claim}: spec.volumeAttributesClassName is {class:?} but the VolumeAttributesClass feature gate is disabled"
    )]
    AttributesClassDisabled {
        /// `namespace/name` of the claim.
        claim: String,
        /// The claim's VolumeAttributesClass.
        class: String,
    },
}

/// The first reason a volume was not chosen for a claim.
///
/// [`Display`](fmt::Display) says it in an operator's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Scheduler: the volume was already chosen for another claim of the same pod.
    Excluded,
    /// The volume's `claimRef` names another claim.
    ClaimedByOther {
        /// `namespace/name` in the `claimRef` (empty parts when unset).
        claim: String,
    },
    /// The volume's `claimRef` names this claim's namespace and name but another UID: it
    /// belongs to an earlier claim of the same name (typically a Retain volume whose claim
    /// was deleted and re-created). Removing `claimRef.uid` frees it for this claim.
    ClaimedByPreviousIncarnation {
        /// `namespace/name` of the claim.
        claim: String,
        /// The UID in the `claimRef`.
        uid: String,
    },
    /// The volume's capacity is below the claim's request.
    TooSmall {
        /// The volume's `capacity.storage`.
        capacity: Quantity,
        /// The claim's `requests.storage`.
        request: Quantity,
    },
    /// The volume modes differ (unset means `Filesystem`).
    VolumeModeMismatch {
        /// The volume's mode.
        volume: String,
        /// The claim's mode.
        claim: String,
    },
    /// The VolumeAttributesClass names differ ("" means none).
    AttributesClassMismatch {
        /// The volume's VolumeAttributesClass.
        volume: String,
        /// The claim's VolumeAttributesClass.
        claim: String,
    },
    /// The `VolumeAttributesClass` feature gate is off and the volume sets a class.
    AttributesClassDisabled {
        /// The volume's VolumeAttributesClass.
        volume: String,
    },
    /// The volume has a `deletionTimestamp`.
    BeingDeleted,
    /// The volume is pre-bound to this claim but its node affinity rejects the node;
    /// Kubernetes then gives up the whole search for this node.
    PreBoundNodeMismatch {
        /// The node's name.
        node: String,
        /// Why the node affinity rejects it.
        detail: String,
    },
    /// The search stopped at another volume pre-bound to this claim that was chosen.
    PreBoundVolumeChosen {
        /// The chosen volume.
        chosen: String,
    },
    /// The search ended, with no volume, at a volume pre-bound to this claim that does
    /// not fit the node.
    SearchEndedByPreBound {
        /// The pre-bound volume.
        volume: String,
    },
    /// The claim's class binds on first consumer: the PV controller binds only volumes
    /// pre-bound to the claim, and leaves the rest to the scheduler.
    WaitForFirstConsumer,
    /// The volume's phase is not `Available`.
    PhaseNotAvailable {
        /// The phase ("" when unset).
        phase: String,
    },
    /// The volume's labels fail the claim's `spec.selector`.
    SelectorMismatch {
        /// The first requirement not met, e.g. `tier in (gold)`.
        requirement: String,
    },
    /// The effective storage classes differ ("" means no class).
    ClassMismatch {
        /// The volume's class.
        volume: String,
        /// The claim's class.
        claim: String,
    },
    /// The volume's node affinity rejects the node.
    NodeAffinityMismatch {
        /// The node's name.
        node: String,
        /// Why.
        detail: String,
    },
    /// The volume does not offer every access mode the claim asks for.
    ModesDoNotCover {
        /// The volume's access modes, as the index key (e.g. `RWO,ROX`).
        volume: String,
        /// The claim's `spec.accessModes`.
        claim: Vec<String>,
    },
    /// PV controller: a volume was found in a smaller access-mode set, searched first.
    AccessModeSetNotSearched {
        /// This volume's access-mode set.
        set: String,
        /// The set the chosen volume came from.
        chosen_set: String,
    },
    /// The volume fits, but a smaller one that fits was chosen.
    LargerThanChosen {
        /// This volume's capacity.
        capacity: Quantity,
        /// The chosen volume.
        chosen: String,
        /// The chosen volume's capacity.
        chosen_capacity: Quantity,
    },
    /// The volume fits and is as small as the chosen one, which came first.
    TieLostToEarlier {
        /// The chosen volume.
        chosen: String,
    },
    /// Named-volume path: the claim names another volume in `spec.volumeName`.
    NotNamedByClaim {
        /// The volume the claim names.
        named: String,
    },
    /// Named-volume path: the claim names this volume but it cannot be bound.
    NamedVolumeUnsuitable {
        /// Why, in words.
        reason: String,
    },
}

fn class_text(class: &str) -> String {
    if class.is_empty() {
        "no class".to_owned()
    } else {
        format!("class {class:?}")
    }
}

fn vac_text(class: &str) -> String {
    if class.is_empty() {
        "none".to_owned()
    } else {
        format!("{class:?}")
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Excluded => {
                f.write_str("already chosen for another claim of the same pod")
            }
            Rejection::ClaimedByOther { claim } => {
                write!(f, "already bound or reserved for another claim ({claim})")
            }
            Rejection::ClaimedByPreviousIncarnation { claim, uid } => write!(
                f,
                "reserved for an earlier claim named {claim} (uid {uid}), not this one; remove spec.claimRef.uid from the volume to let this claim have it"
            ),
            Rejection::TooSmall { capacity, request } => write!(
                f,
                "too small: capacity {capacity} is less than the requested {request}"
            ),
            Rejection::VolumeModeMismatch { volume, claim } => write!(
                f,
                "volume mode {volume} does not match the claim's {claim}"
            ),
            Rejection::AttributesClassMismatch { volume, claim } => write!(
                f,
                "VolumeAttributesClass {} differs from the claim's {}",
                vac_text(volume),
                vac_text(claim)
            ),
            Rejection::AttributesClassDisabled { volume } => write!(
                f,
                "has VolumeAttributesClass {volume:?} but the VolumeAttributesClass feature gate is disabled"
            ),
            Rejection::BeingDeleted => f.write_str("being deleted (deletionTimestamp is set)"),
            Rejection::PreBoundNodeMismatch { node, detail } => write!(
                f,
                "pre-bound to this claim, but does not fit node {node} ({detail}); Kubernetes then considers no other volume for this node"
            ),
            Rejection::PreBoundVolumeChosen { chosen } => write!(
                f,
                "not considered: the claim is pre-bound to volume {chosen}, which was chosen"
            ),
            Rejection::SearchEndedByPreBound { volume } => write!(
                f,
                "not considered: the claim is pre-bound to volume {volume}, which does not fit the node, so the search ended with no volume"
            ),
            Rejection::WaitForFirstConsumer => f.write_str(
                "the claim's storage class binds on first consumer (WaitForFirstConsumer): the PV controller binds only volumes pre-bound to the claim; the scheduler picks one once a pod using the claim is scheduled",
            ),
            Rejection::PhaseNotAvailable { phase } if phase.is_empty() => {
                f.write_str("has no phase yet (only Available volumes are bound)")
            }
            Rejection::PhaseNotAvailable { phase } => {
                write!(f, "phase is {phase}, not Available")
            }
            Rejection::SelectorMismatch { requirement } => write!(
                f,
                "labels do not match the claim's selector (requires {requirement})"
            ),
            Rejection::ClassMismatch { volume, claim } => write!(
                f,
                "storage class mismatch: the volume has {}, the claim asks for {}",
                class_text(volume),
                class_text(claim)
            ),
            Rejection::NodeAffinityMismatch { node, detail } => {
                write!(f, "node affinity does not allow node {node}: {detail}")
            }
            Rejection::ModesDoNotCover { volume, claim } => {
                let offered = if volume.is_empty() { "no known access modes" } else { volume };
                write!(
                    f,
                    "access modes: the volume offers {offered}, the claim needs {}",
                    claim.join(", ")
                )
            }
            Rejection::AccessModeSetNotSearched { set, chosen_set } => write!(
                f,
                "not searched: a volume was found among volumes with fewer access modes ({}), which are searched before this volume's ({set})",
                if chosen_set.is_empty() { "none" } else { chosen_set }
            ),
            Rejection::LargerThanChosen {
                capacity,
                chosen,
                chosen_capacity,
            } => write!(
                f,
                "fits, but {chosen} ({chosen_capacity}) is smaller than this volume ({capacity}); the smallest fitting volume wins"
            ),
            Rejection::TieLostToEarlier { chosen } => write!(
                f,
                "fits, but {chosen} is just as small and was considered first"
            ),
            Rejection::NotNamedByClaim { named } => {
                write!(f, "the claim names volume {named} in spec.volumeName")
            }
            Rejection::NamedVolumeUnsuitable { reason } => {
                write!(f, "named by the claim but cannot be bound: {reason}")
            }
        }
    }
}

/// One volume that was not chosen, with the first reason.
///
/// Serializes as `{"volume": "<name>", "reason": "<the reason in words>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedVolume {
    /// The volume's name.
    pub volume: String,
    /// Why it was passed over.
    pub reason: Rejection,
}

impl serde::Serialize for RejectedVolume {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("RejectedVolume", 2)?;
        out.serialize_field("volume", &self.volume)?;
        out.serialize_field("reason", &self.reason.to_string())?;
        out.end()
    }
}

/// The result of a search with explanations: the chosen volume, and every other volume
/// given, in input order, with the first reason it was passed over.
///
/// Serializes as `{"chosen": "<name>" | null, "rejected": [{"volume", "reason"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct MatchReport {
    /// The name of the volume Kubernetes would bind, if any.
    pub chosen: Option<String>,
    /// Every other volume, in input order.
    pub rejected: Vec<RejectedVolume>,
}

/// Which of Kubernetes' searches to run.
#[derive(Debug, Clone, Copy)]
pub enum MatchForm<'a> {
    /// The PV controller (kube-controller-manager): [`find_best_match_for_claim`].
    Controller {
        /// Whether the claim's class binds on first consumer (`IsDelayBindingMode`).
        delay_binding: bool,
    },
    /// The scheduler's volume binding for one node: [`find_matching_volume_for_node`].
    Scheduler {
        /// The node being considered.
        node: &'a Node,
        /// Names of volumes already chosen for other claims of the pod.
        excluded: &'a BTreeSet<String>,
    },
    /// `FindMatchingVolume` itself over the list as given: [`find_matching_volume`].
    Direct {
        /// The node, in the scheduler path.
        node: Option<&'a Node>,
        /// Names of volumes to skip.
        excluded: &'a BTreeSet<String>,
        /// `delayBinding` (only has an effect without a node).
        delay_binding: bool,
    },
}

/// Runs the search `form` describes and returns the chosen volume.
pub fn find_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    form: MatchForm<'_>,
    vac_enabled: bool,
) -> Result<Option<&'a PersistentVolume>, MatchError> {
    let chosen = run(claim, volumes, form, vac_enabled, None)?;
    Ok(chosen.map(|i| &volumes[i]))
}

/// Runs the search `form` describes and explains it.
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::find::{explain_match, MatchForm, Rejection};
///
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default"},
///     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
/// }))?;
/// let pv = |name: &str, size: &str| -> PersistentVolume {
///     serde_json::from_value(serde_json::json!({
///         "metadata": {"name": name},
///         "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": size}},
///         "status": {"phase": "Available"},
///     })).unwrap()
/// };
/// let volumes = [pv("small", "10G"), pv("big", "20Gi"), pv("exact", "10Gi")];
/// let report = explain_match(&claim, &volumes, MatchForm::Controller { delay_binding: false }, true)?;
/// assert_eq!(report.chosen.as_deref(), Some("exact"));
/// assert!(matches!(report.rejected[0].reason, Rejection::TooSmall { .. }));
/// assert!(matches!(report.rejected[1].reason, Rejection::LargerThanChosen { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn explain_match(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    form: MatchForm<'_>,
    vac_enabled: bool,
) -> Result<MatchReport, MatchError> {
    let mut reasons: Vec<Option<Rejection>> = vec![None; volumes.len()];
    let chosen = run(claim, volumes, form, vac_enabled, Some(&mut reasons))?;
    Ok(report(volumes, chosen, reasons))
}

/// `FindMatchingVolume`: one walk over `volumes` in order (see the module docs for the
/// filters and their order). `node` is set in the scheduler path; `excluded` names volumes
/// to skip; `delay_binding` makes a search without a node return only a pre-bound volume.
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    node: Option<&Node>,
    excluded: &BTreeSet<String>,
    delay_binding: bool,
    vac_enabled: bool,
) -> Result<Option<&'a PersistentVolume>, MatchError> {
    find_match(
        claim,
        volumes,
        MatchForm::Direct {
            node,
            excluded,
            delay_binding,
        },
        vac_enabled,
    )
}

/// The PV controller's search (`findBestMatchForClaim`): access-mode sets smallest first,
/// and inside a set the smallest volume that satisfies every filter, unless a volume is
/// pre-bound to the claim.
///
/// `volumes` is every volume the controller knows, in any phase, with unique names.
///
/// ```
/// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
/// use provisioner_core::binding::find::find_best_match_for_claim;
///
/// let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "data", "namespace": "default"},
///     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
/// }))?;
/// let pv = |name: &str, modes: &[&str]| -> PersistentVolume {
///     serde_json::from_value(serde_json::json!({
///         "metadata": {"name": name},
///         "spec": {"accessModes": modes, "capacity": {"storage": "5Gi"}},
///         "status": {"phase": "Available"},
///     })).unwrap()
/// };
/// let volumes = [pv("nfs", &["ReadWriteOnce", "ReadWriteMany"]), pv("disk", &["ReadWriteOnce"])];
/// let chosen = find_best_match_for_claim(&claim, &volumes, false, true)?;
/// assert_eq!(chosen.and_then(|pv| pv.metadata.name.as_deref()), Some("disk"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn find_best_match_for_claim<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    delay_binding: bool,
    vac_enabled: bool,
) -> Result<Option<&'a PersistentVolume>, MatchError> {
    find_match(
        claim,
        volumes,
        MatchForm::Controller { delay_binding },
        vac_enabled,
    )
}

/// The scheduler's search for one claim on one node: the volumes of the claim's storage
/// class, walked with the node's labels checked against node affinity, access modes
/// checked, and `excluded` (volumes chosen for the pod's other claims) skipped. A volume
/// pre-bound to the claim that does not fit the node ends the search with no volume.
pub fn find_matching_volume_for_node<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    node: &Node,
    excluded: &BTreeSet<String>,
    vac_enabled: bool,
) -> Result<Option<&'a PersistentVolume>, MatchError> {
    find_match(
        claim,
        volumes,
        MatchForm::Scheduler { node, excluded },
        vac_enabled,
    )
}

/// The scheduler's `findMatchingVolumes` for the unbound claims of one pod on one node:
/// claims are matched in increasing order of their request, each chosen volume excluded
/// for the claims after it. Returns the choice for each claim, in the order given.
///
/// Kubernetes sorts the claims with an unstable sort, so the order of claims with equal
/// requests is undefined there; we keep their given order.
pub fn find_matching_volumes_for_pod<'a>(
    claims: &[&PersistentVolumeClaim],
    volumes: &'a [PersistentVolume],
    node: &Node,
    vac_enabled: bool,
) -> Result<Vec<Option<&'a PersistentVolume>>, MatchError> {
    let mut requests = Vec::with_capacity(claims.len());
    for claim in claims {
        requests.push(ClaimQuery::new(claim, vac_enabled)?.request);
    }
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| requests[a].cmp(&requests[b]));
    let mut excluded = BTreeSet::new();
    let mut chosen = vec![None; claims.len()];
    for i in order {
        let found =
            find_matching_volume_for_node(claims[i], volumes, node, &excluded, vac_enabled)?;
        if let Some(pv) = found {
            excluded.insert(volume_name(pv).to_owned());
        }
        chosen[i] = found;
    }
    Ok(chosen)
}

/// Explains the named-volume path (a claim with `spec.volumeName`): every other volume is
/// passed over, and the named one is chosen when `check` accepts it.
///
/// `check` is the named-volume decision (the binder's `check_volume_satisfy_claim` and
/// claimRef rules); its error is shown in words.
pub fn explain_named_volume<E: fmt::Display>(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    check: impl Fn(&PersistentVolume) -> Result<(), E>,
) -> MatchReport {
    let named = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    let mut chosen = None;
    let mut reasons = vec![None; volumes.len()];
    for (i, volume) in volumes.iter().enumerate() {
        if volume_name(volume) != named {
            reasons[i] = Some(Rejection::NotNamedByClaim {
                named: named.to_owned(),
            });
        } else if chosen.is_some() {
            // A second object with the same name: only the first is considered.
            reasons[i] = Some(Rejection::NotNamedByClaim {
                named: named.to_owned(),
            });
        } else {
            match check(volume) {
                Ok(()) => chosen = Some(i),
                Err(error) => {
                    reasons[i] = Some(Rejection::NamedVolumeUnsuitable {
                        reason: error.to_string(),
                    });
                }
            }
        }
    }
    report(volumes, chosen, reasons)
}

fn report(
    volumes: &[PersistentVolume],
    chosen: Option<usize>,
    reasons: Vec<Option<Rejection>>,
) -> MatchReport {
    let rejected = reasons
        .into_iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != chosen)
        .map(|(i, reason)| RejectedVolume {
            volume: volume_name(&volumes[i]).to_owned(),
            // Every volume not chosen is given a reason by the walk; this fallback only
            // guards the report's shape.
            reason: reason.unwrap_or(Rejection::ModesDoNotCover {
                volume: String::new(),
                claim: Vec::new(),
            }),
        })
        .collect();
    MatchReport {
        chosen: chosen.map(|i| volume_name(&volumes[i]).to_owned()),
        rejected,
    }
}

/// The volume's `metadata.name` ("" when unset).
pub(crate) fn volume_name(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or("")
}

/// `namespace/name` of a claim, as Kubernetes writes it in messages.
pub(crate) fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or("")
    )
}

/// What a search needs to know about the claim, validated once.
pub(crate) struct ClaimQuery<'c> {
    pub(crate) claim: &'c PersistentVolumeClaim,
    pub(crate) request: Quantity,
    pub(crate) class: &'c str,
    pub(crate) selector: Option<LabelSelector>,
    pub(crate) vac_enabled: bool,
}

impl<'c> ClaimQuery<'c> {
    /// Reads the request and compiles the selector. Both are validated up front: an
    /// invalid value is bad input (the API server would never store it).
    pub(crate) fn new(
        claim: &'c PersistentVolumeClaim,
        vac_enabled: bool,
    ) -> Result<ClaimQuery<'c>, MatchError> {
        let request = claim_request(claim).map_err(|source| MatchError::InvalidRequest {
            claim: claim_key(claim),
            source,
        })?;
        let selector = claim
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(LabelSelector::from_api)
            .transpose()
            .map_err(|source| MatchError::InvalidSelector {
                claim: claim_key(claim),
                source,
            })?;
        Ok(ClaimQuery {
            claim,
            request,
            class: claim_class(claim),
            selector,
            vac_enabled,
        })
    }

    /// `FindMatchingVolume` refuses a claim with a VolumeAttributesClass when the gate is
    /// off. This is Kubernetes behaviour, raised only when `FindMatchingVolume` runs.
    pub(crate) fn check_vac_gate(&self) -> Result<(), MatchError> {
        let class = claim_vac(self.claim);
        if !self.vac_enabled && !class.is_empty() {
            return Err(MatchError::AttributesClassDisabled {
                claim: claim_key(self.claim),
                class: class.to_owned(),
            });
        }
        Ok(())
    }
}

/// Reads every volume's capacity, failing on the first invalid one.
pub(crate) fn read_capacities(volumes: &[PersistentVolume]) -> Result<Vec<Quantity>, MatchError> {
    volumes
        .iter()
        .map(|pv| {
            volume_capacity(pv).map_err(|source| MatchError::InvalidCapacity {
                volume: volume_name(pv).to_owned(),
                source,
            })
        })
        .collect()
}

/// The node as the volume checks see it: labels only (plus the name for messages).
struct NodeView<'n> {
    name: &'n str,
    labels: &'n BTreeMap<String, String>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'n> NodeView<'n> {
    fn of(node: &'n Node) -> NodeView<'n> {
        NodeView {
            name: node.metadata.name.as_deref().unwrap_or(""),
            labels: node.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
        }
    }
}

/// How one `FindMatchingVolume` walk ended.
enum Walk {
    /// A volume pre-bound to the claim was returned at once.
    PreBound(usize),
    /// A volume pre-bound to the claim does not fit the node: no volume at all.
    PreBoundUnfit,
    /// The smallest candidate, if any.
    Smallest(Option<usize>),
}

struct WalkInput<'a, 'n> {
    query: &'a ClaimQuery<'a>,
    volumes: &'a [PersistentVolume],
    capacities: &'a [Quantity],
    node: Option<&'a NodeView<'n>>,
    excluded: &'a BTreeSet<String>,
    delay_binding: bool,
}

fn note(
    reasons: &mut Option<&mut Vec<Option<Rejection>>>,
    i: usize,
    why: impl FnOnce() -> Rejection,
) {
    if let Some(reasons) = reasons.as_deref_mut() {
        reasons[i] = Some(why());
    }
}

/// `FindMatchingVolume`'s loop over `order` (indices into `input.volumes`), recording the
/// first reason for each volume passed over when `reasons` is given.
fn walk(
    input: &WalkInput<'_, '_>,
    order: &[usize],
    mut reasons: Option<&mut Vec<Option<Rejection>>>,
) -> Walk {
    let q = input.query;
    let claim = q.claim;
    let mut best: Option<usize> = None;
    let mut candidates: Vec<usize> = Vec::new();
    for (position, &i) in order.iter().enumerate() {
        let pv = &input.volumes[i];
        let capacity = &input.capacities[i];
        if input.excluded.contains(volume_name(pv)) {
            note(&mut reasons, i, || Rejection::Excluded);
            continue;
        }
        let bound_to_claim = is_volume_bound_to_claim(pv, claim);
        if let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
            && !bound_to_claim
        {
            note(&mut reasons, i, || other_claim_rejection(claim_ref, claim));
            continue;
        }
        if *capacity < q.request {
            note(&mut reasons, i, || Rejection::TooSmall {
                capacity: capacity.clone(),
                request: q.request.clone(),
            });
            continue;
        }
        if claim_volume_mode(claim) != volume_volume_mode(pv) {
            note(&mut reasons, i, || Rejection::VolumeModeMismatch {
                volume: volume_volume_mode(pv).to_owned(),
                claim: claim_volume_mode(claim).to_owned(),
            });
            continue;
        }
        let (claim_attributes, volume_attributes) = (claim_vac(claim), volume_vac(pv));
        if q.vac_enabled && claim_attributes != volume_attributes {
            note(&mut reasons, i, || Rejection::AttributesClassMismatch {
                volume: volume_attributes.to_owned(),
                claim: claim_attributes.to_owned(),
            });
            continue;
        }
        if !q.vac_enabled && !volume_attributes.is_empty() {
            note(&mut reasons, i, || Rejection::AttributesClassDisabled {
                volume: volume_attributes.to_owned(),
            });
            continue;
        }
        if pv.metadata.deletion_timestamp.is_some() {
            note(&mut reasons, i, || Rejection::BeingDeleted);
            continue;
        }
        let affinity = match input.node {
            Some(node) => check_node_affinity(pv, node.labels),
            None => Ok(()),
        };
        if bound_to_claim {
            let chosen = volume_name(pv);
            let (outcome, others) = match &affinity {
                Ok(()) => (
                    Walk::PreBound(i),
                    Rejection::PreBoundVolumeChosen {
                        chosen: chosen.to_owned(),
                    },
                ),
                Err(mismatch) => {
                    note(&mut reasons, i, || Rejection::PreBoundNodeMismatch {
                        node: input.node.map_or("", |n| n.name).to_owned(),
                        detail: mismatch.to_string(),
                    });
                    (
                        Walk::PreBoundUnfit,
                        Rejection::SearchEndedByPreBound {
                            volume: chosen.to_owned(),
                        },
                    )
                }
            };
            for &other in candidates.iter().chain(&order[position + 1..]) {
                note(&mut reasons, other, || others.clone());
            }
            return outcome;
        }
        if input.node.is_none() && input.delay_binding {
            note(&mut reasons, i, || Rejection::WaitForFirstConsumer);
            continue;
        }
        let phase = volume_phase(pv);
        if phase != AVAILABLE_PHASE {
            note(&mut reasons, i, || Rejection::PhaseNotAvailable {
                phase: phase.to_owned(),
            });
            continue;
        }
        if let Some(selector) = &q.selector {
            let labels = pv.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
            if let Some(failed) = selector.first_mismatch(labels) {
                note(&mut reasons, i, || Rejection::SelectorMismatch {
                    requirement: failed.to_string(),
                });
                continue;
            }
        }
        if volume_class(pv) != q.class {
            note(&mut reasons, i, || Rejection::ClassMismatch {
                volume: volume_class(pv).to_owned(),
                claim: q.class.to_owned(),
            });
            continue;
        }
        if let Err(mismatch) = &affinity {
            note(&mut reasons, i, || Rejection::NodeAffinityMismatch {
                node: input.node.map_or("", |n| n.name).to_owned(),
                detail: mismatch.to_string(),
            });
            continue;
        }
        if input.node.is_some() {
            let offered = volume_access_modes(pv);
            if !claim_access_modes(claim)
                .iter()
                .all(|m| offered.contains(m))
            {
                note(&mut reasons, i, || modes_rejection(pv, claim));
                continue;
            }
        }
        // Strictly smaller replaces: of equal sizes the first one met stays.
        if best.is_none_or(|b| input.capacities[b] > *capacity) {
            best = Some(i);
        }
        if reasons.is_some() {
            candidates.push(i);
        }
    }
    if let Some(b) = best {
        let chosen = volume_name(&input.volumes[b]);
        for &other in candidates.iter().filter(|&&c| c != b) {
            note(&mut reasons, other, || {
                if input.capacities[other] > input.capacities[b] {
                    Rejection::LargerThanChosen {
                        capacity: input.capacities[other].clone(),
                        chosen: chosen.to_owned(),
                        chosen_capacity: input.capacities[b].clone(),
                    }
                } else {
                    Rejection::TieLostToEarlier {
                        chosen: chosen.to_owned(),
                    }
                }
            });
        }
    }
    Walk::Smallest(best)
}

fn other_claim_rejection(
    claim_ref: &k8s_openapi::api::core::v1::ObjectReference,
    claim: &PersistentVolumeClaim,
) -> Rejection {
    let namespace = claim_ref.namespace.as_deref().unwrap_or("");
    let name = claim_ref.name.as_deref().unwrap_or("");
    let key = format!("{namespace}/{name}");
    let same_name = Some(name) == claim.metadata.name.as_deref()
        && Some(namespace) == claim.metadata.namespace.as_deref();
    match claim_ref.uid.as_deref() {
        Some(uid) if same_name && !uid.is_empty() => Rejection::ClaimedByPreviousIncarnation {
            claim: key,
            uid: uid.to_owned(),
        },
        _ => Rejection::ClaimedByOther { claim: key },
    }
}

fn modes_rejection(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Rejection {
    let offered = volume_access_modes(pv);
    let mut key = AccessModeSet::from_modes(offered).key();
    // Modes Kubernetes does not know are not part of the key but can still satisfy the
    // scheduler's literal comparison; show them too.
    for unknown in offered
        .iter()
        .filter(|m| AccessModeSet::requested([m.as_str()]).is_none())
    {
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(unknown);
    }
    Rejection::ModesDoNotCover {
        volume: key,
        claim: claim_access_modes(claim).to_vec(),
    }
}

fn run(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    form: MatchForm<'_>,
    vac_enabled: bool,
    reasons: Option<&mut Vec<Option<Rejection>>>,
) -> Result<Option<usize>, MatchError> {
    let query = ClaimQuery::new(claim, vac_enabled)?;
    let capacities = read_capacities(volumes)?;
    match form {
        MatchForm::Controller { delay_binding } => {
            controller_search(&query, volumes, &capacities, delay_binding, reasons)
        }
        MatchForm::Scheduler { node, excluded } => {
            query.check_vac_gate()?;
            let node = NodeView::of(node);
            scheduler_search(&query, volumes, &capacities, &node, excluded, reasons)
        }
        MatchForm::Direct {
            node,
            excluded,
            delay_binding,
        } => {
            query.check_vac_gate()?;
            let node = node.map(NodeView::of);
            let input = WalkInput {
                query: &query,
                volumes,
                capacities: &capacities,
                node: node.as_ref(),
                excluded,
                delay_binding,
            };
            let order: Vec<usize> = (0..volumes.len()).collect();
            Ok(match walk(&input, &order, reasons) {
                Walk::PreBound(i) => Some(i),
                Walk::PreBoundUnfit => None,
                Walk::Smallest(best) => best,
            })
        }
    }
}

static NO_EXCLUSIONS: BTreeSet<String> = BTreeSet::new();

fn controller_search(
    query: &ClaimQuery<'_>,
    volumes: &[PersistentVolume],
    capacities: &[Quantity],
    delay_binding: bool,
    mut reasons: Option<&mut Vec<Option<Rejection>>>,
) -> Result<Option<usize>, MatchError> {
    let claim = query.claim;
    let requested = AccessModeSet::requested(claim_access_modes(claim));
    let volume_sets: Vec<AccessModeSet> = volumes
        .iter()
        .map(|pv| AccessModeSet::from_modes(volume_access_modes(pv)))
        .collect();
    // allPossibleMatchingAccessModes: the sets present that hold all requested modes.
    let mut sets: Vec<AccessModeSet> = volume_sets
        .iter()
        .copied()
        .filter(|set| requested.is_some_and(|r| set.contains_all(r)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sets.sort_by(|a, b| a.search_order(*b));
    if !sets.is_empty() {
        // The error comes from FindMatchingVolume, which runs only if a set is searched.
        query.check_vac_gate()?;
    }
    for (i, set) in volume_sets.iter().enumerate() {
        if !sets.contains(set) {
            note(&mut reasons, i, || Rejection::ModesDoNotCover {
                volume: set.key(),
                claim: claim_access_modes(claim).to_vec(),
            });
        }
    }
    let input = WalkInput {
        query,
        volumes,
        capacities,
        node: None,
        excluded: &NO_EXCLUSIONS,
        delay_binding,
    };
    for (s, set) in sets.iter().enumerate() {
        let order: Vec<usize> = (0..volumes.len())
            .filter(|&i| volume_sets[i] == *set)
            .collect();
        let found = match walk(&input, &order, reasons.as_deref_mut()) {
            Walk::PreBound(i) | Walk::Smallest(Some(i)) => Some(i),
            // Without a node a pre-bound volume always fits; like Kubernetes, an empty
            // result moves on to the next set.
            Walk::PreBoundUnfit | Walk::Smallest(None) => None,
        };
        if let Some(chosen) = found {
            for later in &sets[s + 1..] {
                for i in (0..volumes.len()).filter(|&i| volume_sets[i] == *later) {
                    note(&mut reasons, i, || Rejection::AccessModeSetNotSearched {
                        set: later.key(),
                        chosen_set: set.key(),
                    });
                }
            }
            return Ok(Some(chosen));
        }
    }
    Ok(None)
}

fn scheduler_search(
    query: &ClaimQuery<'_>,
    volumes: &[PersistentVolume],
    capacities: &[Quantity],
    node: &NodeView<'_>,
    excluded: &BTreeSet<String>,
    mut reasons: Option<&mut Vec<Option<Rejection>>>,
) -> Result<Option<usize>, MatchError> {
    // The scheduler lists only the volumes of the claim's class (its PV cache is indexed by
    // class), so a pre-bound volume of another class is never seen.
    let mut listed = Vec::new();
    for (i, pv) in volumes.iter().enumerate() {
        if volume_class(pv) == query.class {
            listed.push(i);
        } else {
            note(&mut reasons, i, || Rejection::ClassMismatch {
                volume: volume_class(pv).to_owned(),
                claim: query.class.to_owned(),
            });
        }
    }
    let input = WalkInput {
        query,
        volumes,
        capacities,
        node: Some(node),
        excluded,
        delay_binding: true,
    };
    Ok(match walk(&input, &listed, reasons) {
        Walk::PreBound(i) => Some(i),
        Walk::PreBoundUnfit => None,
        Walk::Smallest(best) => best,
    })
}
