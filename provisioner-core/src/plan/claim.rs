//! What to do with a claim: [`decide_claim`].
//!
//! The rules follow the Go library's `shouldProvision`/`provisionClaimOperation` (which
//! claims are ours, WaitForFirstConsumer, block volumes), with four additions: a claim in
//! flight (carrying a [provisioning record](super::record)) is always finished or cleaned
//! up, a record that went stale is retired with its asset before a new one is written
//! ([`ClaimAction::RetireRecord`]), every case the Go library passes over silently gets a
//! reason that becomes an Event ([`Refusal`]), and data sources are checked.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, TypedObjectReference};
use k8s_openapi::api::storage::v1::StorageClass;

use super::keys::{
    BETA_STORAGE_PROVISIONER, BLOCK_VOLUME_MODE, PROVISIONING_RECORD, SELECTED_NODE,
    STORAGE_PROVISIONER, WAIT_FOR_FIRST_CONSUMER,
};
use super::record::{
    ProvisioningRecord, RecordError, is_in_flight, read_record, volume_belongs_to_claim,
};
use super::{ProvisionerNames, annotation};
use crate::binding::predicates::{claim_class, claim_volume_mode};
use crate::provisioner::{ParameterError, Provisioner};

/// The backend's answers that [`decide_claim`] needs; every [`Provisioner`] provides them.
pub trait BackendCapabilities {
    /// See [`Provisioner::supports_block`].
    fn supports_block(&self) -> bool;
    /// See [`Provisioner::supports_data_source`].
    fn supports_data_source(&self, source: &TypedObjectReference) -> bool;
    /// See [`Provisioner::should_provision`].
    fn should_provision(&self, claim: &PersistentVolumeClaim) -> bool;
}

impl<P: Provisioner> BackendCapabilities for P {
    fn supports_block(&self) -> bool {
        Provisioner::supports_block(self)
    }
    fn supports_data_source(&self, source: &TypedObjectReference) -> bool {
        Provisioner::supports_data_source(self, source)
    }
    fn should_provision(&self, claim: &PersistentVolumeClaim) -> bool {
        Provisioner::should_provision(self, claim)
    }
}

/// What [`decide_claim`] sees.
#[derive(Clone, Copy, Debug)]
pub struct ClaimView<'a> {
    /// The claim.
    pub claim: &'a PersistentVolumeClaim,
    /// The claim's StorageClass, if it exists.
    pub class: Option<&'a StorageClass>,
    /// The PersistentVolume named [`Self::volume_name`], if the cache has it.
    pub volume: Option<&'a PersistentVolume>,
    /// The name the claim's PersistentVolume gets.
    pub volume_name: &'a str,
    /// This provisioner's names.
    pub names: &'a ProvisionerNames,
}

/// What to do with a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimAction {
    /// Nothing to do; no Event.
    Ignore(IgnoreReason),
    /// Provision (or resume provisioning) with this class.
    Provision,
    /// The PersistentVolume exists or the claim is bound: remove the in-flight record.
    ClearRecord,
    /// The claim is being deleted while in flight: unless a PersistentVolume for it exists
    /// (checked live), delete the asset with the recorded data, then remove the record.
    CleanUp(Option<ProvisioningRecord>),
    /// The claim carries a record that differs from the one the next attempt would write
    /// (the class's parameters or provisioner, the selected node or the volume name changed
    /// since an attempt that did not finish): unless a PersistentVolume for it exists
    /// (checked live), delete the asset made under this old record, then remove the record;
    /// the next pass writes the new one. Overwriting the record instead would strand that
    /// asset.
    RetireRecord(ProvisioningRecord),
    /// Something retrying cannot fix: a Warning `ProvisioningFailed` Event, then wait until
    /// the claim or its class changes.
    Refuse(Refusal),
}

/// Why a claim is left alone without an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// Another provisioner's claim (or none's).
    NotOurs,
    /// The backend's [`Provisioner::should_provision`] said no.
    DeclinedByBackend,
    /// The claim is being deleted and nothing is in flight.
    Deleting,
    /// `spec.volumeName` is set.
    AlreadyBound,
    /// The PersistentVolume exists; the PV controller will bind it.
    VolumeExists,
    /// WaitForFirstConsumer class and no node selected yet.
    WaitingForNode,
    /// A volume populator handles this claim's `dataSourceRef`.
    PopulatorDataSource,
    /// The claim names no class.
    NoClass,
}

/// Why a claim cannot be provisioned until it or its class changes; each becomes a Warning
/// `ProvisioningFailed` Event whose message is this value's `Display`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The claim's StorageClass does not exist (yet).
    ClassNotFound {
        /// The class name.
        class: String,
    },
    /// The class names a provisioner other than this one.
    UnknownProvisioner {
        /// The class name.
        class: String,
        /// The class's provisioner.
        provisioner: String,
        /// This provisioner's name.
        ours: String,
    },
    /// `volumeMode: Block` and the backend has no block support.
    BlockUnsupported {
        /// This provisioner's name.
        ours: String,
    },
    /// A clone or snapshot data source the backend cannot restore.
    DataSourceUnsupported {
        /// The source kind.
        kind: String,
        /// The source name.
        name: String,
        /// This provisioner's name.
        ours: String,
    },
    /// A class parameter the backend rejects.
    InvalidParameter {
        /// The class name.
        class: String,
        /// The backend's error.
        error: ParameterError,
    },
    /// A PersistentVolume with the claim's volume name exists and belongs to another claim.
    VolumeNameTaken {
        /// The volume name.
        volume: String,
    },
    /// The provisioning record annotation was edited into something unreadable.
    MalformedRecord {
        /// The parse error.
        error: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The in-tree PV controller's wording for the same case.
            Self::ClassNotFound { class } => write!(
                f,
                "storageclass.storage.k8s.io \"{class}\" not found; waiting for it to be created"
            ),
            Self::UnknownProvisioner {
                class,
                provisioner,
                ours,
            } => write!(
                f,
                "StorageClass \"{class}\" names provisioner \"{provisioner}\", not \"{ours}\""
            ),
            // The Go library's wording.
            Self::BlockUnsupported { ours } => {
                write!(f, "{ours} does not support block volume provisioning")
            }
            Self::DataSourceUnsupported { kind, name, ours } => write!(
                f,
                "{ours} does not support provisioning from data source {kind} \"{name}\""
            ),
            Self::InvalidParameter { class, error } => {
                write!(f, "StorageClass \"{class}\": {error}")
            }
            Self::VolumeNameTaken { volume } => write!(
                f,
                "PersistentVolume \"{volume}\" already exists and belongs to another claim"
            ),
            Self::MalformedRecord { error } => write!(f, "{error}"),
        }
    }
}

impl From<RecordError> for Refusal {
    fn from(error: RecordError) -> Self {
        Self::MalformedRecord {
            error: error.to_string(),
        }
    }
}

/// The default PersistentVolume name for a claim: `pvc-<claim uid>`, as Kubernetes and the
/// Go library name dynamically provisioned volumes.
pub fn default_volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// The node the scheduler selected for the claim (GA annotation only, non-empty).
pub fn selected_node(claim: &PersistentVolumeClaim) -> Option<&str> {
    annotation(claim.metadata.annotations.as_ref(), SELECTED_NODE).filter(|node| !node.is_empty())
}

/// The provisioner the claim is waiting for (GA annotation, then beta).
pub fn requested_provisioner(claim: &PersistentVolumeClaim) -> Option<&str> {
    let annotations = claim.metadata.annotations.as_ref();
    annotation(annotations, STORAGE_PROVISIONER)
        .or_else(|| annotation(annotations, BETA_STORAGE_PROVISIONER))
}

/// Decides what to do with a claim. See [`ClaimAction`] for the outcomes.
///
/// In order: a claim being deleted is cleaned up if in flight, else ignored; a bound claim
/// or one whose PersistentVolume exists only needs its record cleared; a claim not in flight
/// must name this provisioner and pass the backend's `should_provision`; then its class must
/// exist and name this provisioner, a WaitForFirstConsumer class needs a selected node, and
/// block mode and data sources need backend support; a stale record is retired; last, a
/// claim in flight is resumed only by an instance whose backend accepts it.
///
/// A claim in flight that the backend declines is still looked at up to the stale-record
/// check, without Events: its record may name an asset that only this instance can delete
/// (one instance per node: the old node's instance retires the record after a reschedule).
pub fn decide_claim(view: ClaimView<'_>, backend: &impl BackendCapabilities) -> ClaimAction {
    let claim = view.claim;
    let record = match read_record(&claim.metadata) {
        Ok(record) => record,
        Err(error) => return ClaimAction::Refuse(error.into()),
    };
    let in_flight = is_in_flight(claim);

    // Several provisioners share the record's keys: a record names the provisioner that
    // wrote it, and only that one (or its aliases) touches the claim.
    let named = match &record {
        Some(record) => Some(record.provisioner.as_str()),
        None => requested_provisioner(claim),
    };
    if !named.is_some_and(|name| view.names.is_known(name)) {
        return ClaimAction::Ignore(IgnoreReason::NotOurs);
    }

    if claim.metadata.deletion_timestamp.is_some() {
        return if in_flight {
            ClaimAction::CleanUp(record)
        } else {
            ClaimAction::Ignore(IgnoreReason::Deleting)
        };
    }

    let bound = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        .is_some_and(|name| !name.is_empty());
    if bound {
        return if in_flight {
            ClaimAction::ClearRecord
        } else {
            ClaimAction::Ignore(IgnoreReason::AlreadyBound)
        };
    }

    if let Some(volume) = view.volume {
        let uid = claim.metadata.uid.as_deref().unwrap_or_default();
        if !volume_belongs_to_claim(volume, uid) {
            return ClaimAction::Refuse(Refusal::VolumeNameTaken {
                volume: view.volume_name.to_owned(),
            });
        }
        return if in_flight {
            ClaimAction::ClearRecord
        } else {
            ClaimAction::Ignore(IgnoreReason::VolumeExists)
        };
    }

    let accepted = backend.should_provision(claim);
    if !in_flight && !accepted {
        return ClaimAction::Ignore(IgnoreReason::DeclinedByBackend);
    }
    // Only an instance that accepts the claim reports why it cannot be provisioned; the
    // others stay silent, as they are for claims not in flight.
    let refuse = |refusal: Refusal| {
        if accepted {
            ClaimAction::Refuse(refusal)
        } else {
            ClaimAction::Ignore(IgnoreReason::DeclinedByBackend)
        }
    };

    let class_name = claim_class(claim);
    if class_name.is_empty() {
        return ClaimAction::Ignore(IgnoreReason::NoClass);
    }
    let Some(class) = view.class else {
        return refuse(Refusal::ClassNotFound {
            class: class_name.to_owned(),
        });
    };
    if !view.names.is_known(&class.provisioner) {
        return refuse(Refusal::UnknownProvisioner {
            class: class_name.to_owned(),
            provisioner: class.provisioner.clone(),
            ours: view.names.name().to_owned(),
        });
    }

    if class.volume_binding_mode.as_deref() == Some(WAIT_FOR_FIRST_CONSUMER)
        && selected_node(claim).is_none()
    {
        return ClaimAction::Ignore(IgnoreReason::WaitingForNode);
    }

    if claim_volume_mode(claim) == BLOCK_VOLUME_MODE && !backend.supports_block() {
        return refuse(Refusal::BlockUnsupported {
            ours: view.names.name().to_owned(),
        });
    }

    if let Some(source) = data_source(claim) {
        if !is_clone_or_snapshot(&source) {
            return ClaimAction::Ignore(IgnoreReason::PopulatorDataSource);
        }
        if !backend.supports_data_source(&source) {
            return refuse(Refusal::DataSourceUnsupported {
                kind: source.kind,
                name: source.name,
                ours: view.names.name().to_owned(),
            });
        }
    }

    if let Some(recorded) = record
        && recorded != new_record(claim, class, view.volume_name)
    {
        return ClaimAction::RetireRecord(recorded);
    }
    if !accepted {
        return ClaimAction::Ignore(IgnoreReason::DeclinedByBackend);
    }
    ClaimAction::Provision
}

/// The claim's data source: `dataSourceRef`, else `dataSource`.
pub fn data_source(claim: &PersistentVolumeClaim) -> Option<TypedObjectReference> {
    let spec = claim.spec.as_ref()?;
    if let Some(source) = &spec.data_source_ref {
        return Some(source.clone());
    }
    spec.data_source
        .as_ref()
        .map(|source| TypedObjectReference {
            api_group: source.api_group.clone(),
            kind: source.kind.clone(),
            name: source.name.clone(),
            namespace: None,
        })
}

/// Whether a data source is one a provisioner restores itself (a claim clone or a
/// VolumeSnapshot) rather than one a volume populator fills.
fn is_clone_or_snapshot(source: &TypedObjectReference) -> bool {
    let group = source.api_group.as_deref().unwrap_or("");
    (group.is_empty() && source.kind == "PersistentVolumeClaim")
        || (group == "snapshot.storage.k8s.io" && source.kind == "VolumeSnapshot")
}

/// The record to write before calling the backend for a claim of `class`.
pub fn new_record(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    volume_name: &str,
) -> ProvisioningRecord {
    ProvisioningRecord {
        volume_name: volume_name.to_owned(),
        storage_class: class.metadata.name.clone().unwrap_or_default(),
        provisioner: class.provisioner.clone(),
        parameters: class.parameters.clone().unwrap_or_default(),
        selected_node: selected_node(claim).map(str::to_owned),
    }
}

/// A digest of everything a user can change to make a failing claim worth retrying at once:
/// the claim's spec, labels and annotations (less the controller's own record) and the
/// class's identity and version. A change resets the backoff, the failure count and the
/// infeasible delay.
pub fn claim_fingerprint(claim: &PersistentVolumeClaim, class: Option<&StorageClass>) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(&claim.spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    claim.metadata.labels.hash(&mut hasher);
    if let Some(annotations) = &claim.metadata.annotations {
        for (key, value) in annotations {
            if key != PROVISIONING_RECORD {
                (key, value).hash(&mut hasher);
            }
        }
    }
    if let Some(class) = class {
        class.metadata.uid.hash(&mut hasher);
        class.metadata.resource_version.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::keys::{PROVISIONING_FINALIZER, VOLUME_FINALIZER};
    use crate::plan::record::{with_record, without_selected_node};
    use k8s_openapi::api::core::v1::{
        ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec, TypedLocalObjectReference,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::BTreeMap;

    const NAME: &str = "example.com/dir";

    struct Backend {
        block: bool,
        clones: bool,
        accept: bool,
    }

    impl BackendCapabilities for Backend {
        fn supports_block(&self) -> bool {
            self.block
        }
        fn supports_data_source(&self, _: &TypedObjectReference) -> bool {
            self.clones
        }
        fn should_provision(&self, _: &PersistentVolumeClaim) -> bool {
            self.accept
        }
    }

    const PLAIN: Backend = Backend {
        block: false,
        clones: false,
        accept: true,
    };

    fn mk_claim(class: &str, provisioner: Option<&str>) -> PersistentVolumeClaim {
        let mut annotations = BTreeMap::new();
        if let Some(p) = provisioner {
            annotations.insert(STORAGE_PROVISIONER.to_owned(), p.to_owned());
        }
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    fn mk_class(name: &str, provisioner: &str, wffc: bool) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("class-{name}")),
                resource_version: Some("1".into()),
                ..ObjectMeta::default()
            },
            provisioner: provisioner.into(),
            volume_binding_mode: wffc.then(|| WAIT_FOR_FIRST_CONSUMER.to_owned()),
            parameters: Some([("k".to_owned(), "v".to_owned())].into()),
            ..StorageClass::default()
        }
    }

    fn mk_volume(claim_uid: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-u1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                claim_ref: Some(ObjectReference {
                    uid: Some(claim_uid.into()),
                    ..ObjectReference::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    fn decide(
        claim: &PersistentVolumeClaim,
        class: Option<&StorageClass>,
        volume: Option<&PersistentVolume>,
        backend: &Backend,
    ) -> ClaimAction {
        let names = ProvisionerNames::new(NAME).with_aliases(["old"]);
        decide_claim(
            ClaimView {
                claim,
                class,
                volume,
                volume_name: "pvc-u1",
                names: &names,
            },
            backend,
        )
    }

    fn in_flight(claim: &PersistentVolumeClaim, class: &StorageClass) -> PersistentVolumeClaim {
        with_record(claim, &new_record(claim, class, "pvc-u1"))
    }

    #[test]
    fn provisions_a_claim_naming_this_provisioner_or_an_alias() {
        let class = mk_class("fast", NAME, false);
        for name in [NAME, "old"] {
            let claim = mk_claim("fast", Some(name));
            assert_eq!(
                decide(&claim, Some(&class), None, &PLAIN),
                ClaimAction::Provision
            );
        }
    }

    #[test]
    fn the_beta_annotation_counts_too() {
        let mut claim = mk_claim("fast", None);
        claim
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(BETA_STORAGE_PROVISIONER.into(), NAME.into());
        let class = mk_class("fast", NAME, false);
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Provision
        );
    }

    #[test]
    fn ignores_claims_of_other_provisioners_and_declined_claims() {
        let class = mk_class("fast", NAME, false);
        assert_eq!(
            decide(&mk_claim("fast", Some("other")), Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::NotOurs)
        );
        assert_eq!(
            decide(&mk_claim("fast", None), Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::NotOurs)
        );
        let declining = Backend {
            accept: false,
            ..PLAIN
        };
        assert_eq!(
            decide(
                &mk_claim("fast", Some(NAME)),
                Some(&class),
                None,
                &declining
            ),
            ClaimAction::Ignore(IgnoreReason::DeclinedByBackend)
        );
    }

    #[test]
    fn bound_claims_need_nothing_but_a_record_cleared() {
        let class = mk_class("fast", NAME, false);
        let mut claim = mk_claim("fast", Some(NAME));
        claim.spec.as_mut().unwrap().volume_name = Some("pvc-u1".into());
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::AlreadyBound)
        );
        assert_eq!(
            decide(&in_flight(&claim, &class), Some(&class), None, &PLAIN),
            ClaimAction::ClearRecord
        );
    }

    #[test]
    fn an_existing_volume_is_accepted_only_with_the_claim_uid() {
        let class = mk_class("fast", NAME, false);
        let claim = mk_claim("fast", Some(NAME));
        let ours = mk_volume("u1");
        assert_eq!(
            decide(&claim, Some(&class), Some(&ours), &PLAIN),
            ClaimAction::Ignore(IgnoreReason::VolumeExists)
        );
        assert_eq!(
            decide(
                &in_flight(&claim, &class),
                Some(&class),
                Some(&ours),
                &PLAIN
            ),
            ClaimAction::ClearRecord
        );
        let theirs = mk_volume("someone-else");
        assert_eq!(
            decide(&claim, Some(&class), Some(&theirs), &PLAIN),
            ClaimAction::Refuse(Refusal::VolumeNameTaken {
                volume: "pvc-u1".into()
            })
        );
    }

    #[test]
    fn a_deleted_claim_is_cleaned_up_only_when_in_flight() {
        let class = mk_class("fast", NAME, false);
        let mut claim = mk_claim("fast", Some(NAME));
        claim.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::Deleting)
        );
        let mut unannotated = mk_claim("fast", None);
        unannotated.metadata.deletion_timestamp = Some(Time(Default::default()));
        let marked = in_flight(&unannotated, &class);
        let record = new_record(&unannotated, &class, "pvc-u1");
        assert_eq!(
            decide(&marked, None, None, &PLAIN),
            ClaimAction::CleanUp(Some(record)),
            "clean-up needs neither the class nor the annotation naming us: the record does"
        );
        // Only the finalizer left (the record was edited away): still cleaned up.
        claim.metadata.finalizers = Some(vec![PROVISIONING_FINALIZER.into()]);
        assert_eq!(
            decide(&claim, None, None, &PLAIN),
            ClaimAction::CleanUp(None)
        );
    }

    #[test]
    fn a_claim_in_flight_is_resumed_only_by_an_instance_that_accepts_it() {
        let class = mk_class("fast", NAME, false);
        let claim = in_flight(&mk_claim("fast", Some(NAME)), &class);
        let declining = Backend {
            accept: false,
            ..PLAIN
        };
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Provision
        );
        assert_eq!(
            decide(&claim, Some(&class), None, &declining),
            ClaimAction::Ignore(IgnoreReason::DeclinedByBackend),
            "another instance's claim: no backend call, no Event"
        );
        // Nor does a declining instance report what it would refuse.
        assert_eq!(
            decide(&claim, None, None, &declining),
            ClaimAction::Ignore(IgnoreReason::DeclinedByBackend)
        );
        assert!(matches!(
            decide(&claim, None, None, &PLAIN),
            ClaimAction::Refuse(Refusal::ClassNotFound { .. })
        ));
    }

    #[test]
    fn a_stale_record_is_retired_by_every_instance() {
        let class = mk_class("fast", NAME, false);
        let claim = in_flight(&mk_claim("fast", Some(NAME)), &class);
        let old = new_record(&claim, &class, "pvc-u1");
        let declining = Backend {
            accept: false,
            ..PLAIN
        };

        // Parameters changed (StorageClasses are immutable: deleted and created again).
        let mut changed = class.clone();
        changed.parameters = Some([("k".to_owned(), "other".to_owned())].into());
        for backend in [&PLAIN, &declining] {
            assert_eq!(
                decide(&claim, Some(&changed), None, backend),
                ClaimAction::RetireRecord(old.clone())
            );
        }
        // Provisioner renamed to an alias.
        let mut renamed = class.clone();
        renamed.provisioner = "old".into();
        assert_eq!(
            decide(&claim, Some(&renamed), None, &PLAIN),
            ClaimAction::RetireRecord(old.clone())
        );
        // Another volume name (a different namer).
        let names = ProvisionerNames::new(NAME);
        let view = ClaimView {
            claim: &claim,
            class: Some(&class),
            volume: None,
            volume_name: "custom-u1",
            names: &names,
        };
        assert_eq!(
            decide_claim(view, &PLAIN),
            ClaimAction::RetireRecord(old.clone())
        );
        // An unchanged record is resumed.
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Provision
        );
    }

    #[test]
    fn a_rescheduled_claim_retires_its_record_once_a_new_node_is_picked() {
        let class = mk_class("local", NAME, true);
        let mut claim = mk_claim("local", Some(NAME));
        let annotations = claim.metadata.annotations.as_mut().unwrap();
        annotations.insert(SELECTED_NODE.into(), "n1".into());
        let claim = in_flight(&claim, &class);
        let old = read_record(&claim.metadata).unwrap().unwrap();
        assert_eq!(old.selected_node.as_deref(), Some("n1"));

        let unscheduled = without_selected_node(&claim);
        assert_eq!(
            decide(&unscheduled, Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::WaitingForNode)
        );
        let mut moved = unscheduled;
        moved
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SELECTED_NODE.into(), "n2".into());
        assert_eq!(
            decide(&moved, Some(&class), None, &PLAIN),
            ClaimAction::RetireRecord(old)
        );
        // Once retired, the claim is provisioned as new.
        let retired = crate::plan::record::without_record(&moved);
        assert_eq!(
            decide(&retired, Some(&class), None, &PLAIN),
            ClaimAction::Provision
        );
    }

    #[test]
    fn a_claim_in_flight_for_another_provisioner_is_left_to_it() {
        let theirs = mk_class("fast", "someone/else", false);
        let mut claim = in_flight(&mk_claim("fast", Some("someone/else")), &theirs);
        assert_eq!(
            decide(&claim, Some(&theirs), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::NotOurs)
        );
        claim.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(
            decide(&claim, None, None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::NotOurs),
            "their clean-up, not ours"
        );
        // The record decides, even if the claim's annotation was edited to name us.
        claim
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(STORAGE_PROVISIONER.into(), NAME.into());
        assert_eq!(
            decide(&claim, None, None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::NotOurs)
        );
    }

    #[test]
    fn a_missing_class_is_reported_not_silent() {
        let action = decide(&mk_claim("later", Some(NAME)), None, None, &PLAIN);
        assert_eq!(
            action,
            ClaimAction::Refuse(Refusal::ClassNotFound {
                class: "later".into()
            })
        );
        if let ClaimAction::Refuse(refusal) = action {
            assert!(refusal.to_string().contains("\"later\" not found"));
        }
        assert_eq!(
            decide(&mk_claim("", Some(NAME)), None, None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::NoClass)
        );
    }

    #[test]
    fn a_class_of_another_provisioner_is_reported() {
        let class = mk_class("fast", "someone/else", false);
        assert_eq!(
            decide(&mk_claim("fast", Some(NAME)), Some(&class), None, &PLAIN),
            ClaimAction::Refuse(Refusal::UnknownProvisioner {
                class: "fast".into(),
                provisioner: "someone/else".into(),
                ours: NAME.into(),
            })
        );
    }

    #[test]
    fn wait_for_first_consumer_needs_a_selected_node() {
        let class = mk_class("local", NAME, true);
        let mut claim = mk_claim("local", Some(NAME));
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::WaitingForNode)
        );
        let annotations = claim.metadata.annotations.as_mut().unwrap();
        annotations.insert(SELECTED_NODE.into(), String::new());
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::WaitingForNode),
            "an empty node name is no node"
        );
        claim
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SELECTED_NODE.into(), "n1".into());
        assert_eq!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Provision
        );
        assert_eq!(selected_node(&claim), Some("n1"));
    }

    #[test]
    fn block_claims_need_block_support() {
        let class = mk_class("fast", NAME, false);
        let mut claim = mk_claim("fast", Some(NAME));
        claim.spec.as_mut().unwrap().volume_mode = Some(BLOCK_VOLUME_MODE.into());
        let action = decide(&claim, Some(&class), None, &PLAIN);
        assert_eq!(
            action,
            ClaimAction::Refuse(Refusal::BlockUnsupported { ours: NAME.into() })
        );
        if let ClaimAction::Refuse(refusal) = action {
            assert_eq!(
                refusal.to_string(),
                format!("{NAME} does not support block volume provisioning")
            );
        }
        let block = Backend {
            block: true,
            ..PLAIN
        };
        assert_eq!(
            decide(&claim, Some(&class), None, &block),
            ClaimAction::Provision
        );
    }

    #[test]
    fn clones_and_snapshots_need_support_and_populators_are_skipped() {
        let class = mk_class("fast", NAME, false);
        let mut clone = mk_claim("fast", Some(NAME));
        clone.spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: "src".into(),
        });
        assert!(matches!(
            decide(&clone, Some(&class), None, &PLAIN),
            ClaimAction::Refuse(Refusal::DataSourceUnsupported { .. })
        ));
        let cloning = Backend {
            clones: true,
            ..PLAIN
        };
        assert_eq!(
            decide(&clone, Some(&class), None, &cloning),
            ClaimAction::Provision
        );

        let mut populated = mk_claim("fast", Some(NAME));
        populated.spec.as_mut().unwrap().data_source_ref = Some(TypedObjectReference {
            api_group: Some("hello.example.com".into()),
            kind: "Hello".into(),
            name: "h".into(),
            namespace: None,
        });
        assert_eq!(
            decide(&populated, Some(&class), None, &PLAIN),
            ClaimAction::Ignore(IgnoreReason::PopulatorDataSource)
        );
    }

    #[test]
    fn a_malformed_record_is_refused_not_ignored() {
        let class = mk_class("fast", NAME, false);
        let mut claim = mk_claim("fast", Some(NAME));
        claim
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PROVISIONING_RECORD.into(), "][".into());
        assert!(matches!(
            decide(&claim, Some(&class), None, &PLAIN),
            ClaimAction::Refuse(Refusal::MalformedRecord { .. })
        ));
    }

    #[test]
    fn the_record_captures_class_and_node_at_that_moment() {
        let class = mk_class("fast", NAME, true);
        let mut claim = mk_claim("fast", Some(NAME));
        claim
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SELECTED_NODE.into(), "n1".into());
        let record = new_record(&claim, &class, "pvc-u1");
        assert_eq!(record.storage_class, "fast");
        assert_eq!(record.provisioner, NAME);
        assert_eq!(record.parameters["k"], "v");
        assert_eq!(record.selected_node.as_deref(), Some("n1"));
        assert_eq!(default_volume_name(&claim), "pvc-u1");
    }

    #[test]
    fn fingerprint_ignores_the_record_and_follows_claim_and_class_changes() {
        let class = mk_class("fast", NAME, false);
        let claim = mk_claim("fast", Some(NAME));
        let base = claim_fingerprint(&claim, Some(&class));
        assert_eq!(base, claim_fingerprint(&claim, Some(&class)));
        let mut marked = in_flight(&claim, &class);
        marked
            .metadata
            .finalizers
            .as_mut()
            .unwrap()
            .push(VOLUME_FINALIZER.into());
        marked.metadata.resource_version = Some("99".into());
        assert_eq!(
            base,
            claim_fingerprint(&marked, Some(&class)),
            "our own writes change nothing"
        );

        let mut edited = claim.clone();
        edited.metadata.labels = Some([("tier".to_owned(), "gold".to_owned())].into());
        assert_ne!(base, claim_fingerprint(&edited, Some(&class)));

        let mut class_edited = class.clone();
        class_edited.metadata.resource_version = Some("2".into());
        assert_ne!(base, claim_fingerprint(&claim, Some(&class_edited)));
        assert_ne!(base, claim_fingerprint(&claim, None));
    }
}
