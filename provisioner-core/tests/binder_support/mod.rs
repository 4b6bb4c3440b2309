//! Builders and a runner shared by the binder tests (`binder_*.rs`).
//!
//! The builders follow the shape of upstream's `newVolume`/`newClaim` fixtures: volumes offer
//! ReadWriteOnce and ReadOnlyMany in Filesystem mode with policy Retain; claims ask for the
//! same modes; a claim built Bound carries the status Kubernetes would have given it.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use provisioner_core::binding::sync::{
    ANN_PROVISIONED_BY, ClaimContext, ClaimKey, ObjectSet, Plan, SyncOptions, Then, sync_claim,
    sync_volume,
};

pub const NS: &str = "default";
pub const AVAILABLE: &str = "Available";
pub const BOUND: &str = "Bound";
pub const RELEASED: &str = "Released";
pub const FAILED: &str = "Failed";
pub const PENDING: &str = "Pending";
pub const LOST: &str = "Lost";
pub const RETAIN: &str = "Retain";
pub const DELETE: &str = "Delete";
pub const RECYCLE: &str = "Recycle";
pub const RWO: &str = "ReadWriteOnce";
pub const ROX: &str = "ReadOnlyMany";
pub const RWX: &str = "ReadWriteMany";
pub const BLOCK: &str = "Block";
pub const FILESYSTEM: &str = "Filesystem";
/// The value upstream's fixtures give `pv.kubernetes.io/provisioned-by`.
pub const MOCK_PLUGIN: &str = "kubernetes.io/mock-volume";

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn storage(s: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("storage".to_owned(), quantity(s))])
}

/// An Available volume of `size`, Retain, no class, no claimRef.
pub fn mk_volume(name: &str, size: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version: Some("1".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(storage(size)),
            access_modes: Some(vec![RWO.to_owned(), ROX.to_owned()]),
            persistent_volume_reclaim_policy: Some(RETAIN.to_owned()),
            volume_mode: Some(FILESYSTEM.to_owned()),
            ..PersistentVolumeSpec::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some(AVAILABLE.to_owned()),
            ..PersistentVolumeStatus::default()
        }),
    }
}

/// A Pending claim in [`NS`] requesting `size`, with no class and no volume.
pub fn mk_claim(name: &str, uid: &str, size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            uid: Some(uid.to_owned()),
            resource_version: Some("1".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![RWO.to_owned(), ROX.to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(storage(size)),
                ..VolumeResourceRequirements::default()
            }),
            volume_mode: Some(FILESYSTEM.to_owned()),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(PENDING.to_owned()),
            ..PersistentVolumeClaimStatus::default()
        }),
    }
}

/// A StorageClass with a provisioner and, optionally, a binding mode.
pub fn mk_class(name: &str, provisioner: &str, binding_mode: Option<&str>) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        provisioner: provisioner.to_owned(),
        volume_binding_mode: binding_mode.map(str::to_owned),
        ..StorageClass::default()
    }
}

/// Marks a StorageClass as the default, created at `created_secs` (seconds since the epoch).
pub fn as_default(mut class: StorageClass, created_secs: i64) -> StorageClass {
    class
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            "storageclass.kubernetes.io/is-default-class".to_owned(),
            "true".to_owned(),
        );
    class.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(created_secs).expect("valid timestamp"),
    ));
    class
}

fn annotate(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
}

/// Chainable edits of a volume built with [`mk_volume`].
pub trait VolumeEdit: Sized {
    /// `claimRef` to `claim` in [`NS`]; an empty `uid` leaves the UID out (pre-bound by name).
    fn bound_to(self, claim: &str, uid: &str) -> Self;
    fn phase(self, phase: &str) -> Self;
    fn policy(self, policy: &str) -> Self;
    fn class(self, class: &str) -> Self;
    /// An annotation with upstream's fixture value (`yes`, or the mock plugin name for
    /// `provisioned-by`).
    fn ann(self, key: &str) -> Self;
    fn ann_value(self, key: &str, value: &str) -> Self;
    fn mode(self, mode: &str) -> Self;
    fn modes(self, modes: &[&str]) -> Self;
    fn vac(self, vac: &str) -> Self;
    fn labels(self, labels: &[(&str, &str)]) -> Self;
    fn message(self, message: &str) -> Self;
    fn csi(self, driver: &str) -> Self;
}

impl VolumeEdit for PersistentVolume {
    fn bound_to(mut self, claim: &str, uid: &str) -> Self {
        spec(&mut self).claim_ref = Some(ObjectReference {
            kind: Some("PersistentVolumeClaim".to_owned()),
            api_version: Some("v1".to_owned()),
            namespace: Some(NS.to_owned()),
            name: Some(claim.to_owned()),
            uid: (!uid.is_empty()).then(|| uid.to_owned()),
            ..ObjectReference::default()
        });
        self
    }
    fn phase(mut self, phase: &str) -> Self {
        self.status.get_or_insert_with(Default::default).phase =
            (!phase.is_empty()).then(|| phase.to_owned());
        self
    }
    fn policy(mut self, policy: &str) -> Self {
        spec(&mut self).persistent_volume_reclaim_policy = Some(policy.to_owned());
        self
    }
    fn class(mut self, class: &str) -> Self {
        spec(&mut self).storage_class_name = (!class.is_empty()).then(|| class.to_owned());
        self
    }
    fn ann(self, key: &str) -> Self {
        let value = if key == ANN_PROVISIONED_BY {
            MOCK_PLUGIN
        } else {
            "yes"
        };
        self.ann_value(key, value)
    }
    fn ann_value(mut self, key: &str, value: &str) -> Self {
        annotate(&mut self.metadata, key, value);
        self
    }
    fn mode(mut self, mode: &str) -> Self {
        spec(&mut self).volume_mode = Some(mode.to_owned());
        self
    }
    fn modes(mut self, modes: &[&str]) -> Self {
        spec(&mut self).access_modes = Some(modes.iter().map(|m| (*m).to_owned()).collect());
        self
    }
    fn vac(mut self, vac: &str) -> Self {
        spec(&mut self).volume_attributes_class_name = Some(vac.to_owned());
        self
    }
    fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }
    fn message(mut self, message: &str) -> Self {
        self.status.get_or_insert_with(Default::default).message = Some(message.to_owned());
        self
    }
    fn csi(mut self, driver: &str) -> Self {
        spec(&mut self).csi = Some(k8s_openapi::api::core::v1::CSIPersistentVolumeSource {
            driver: driver.to_owned(),
            volume_handle: "handle".to_owned(),
            ..Default::default()
        });
        self
    }
}

fn spec(pv: &mut PersistentVolume) -> &mut PersistentVolumeSpec {
    pv.spec.get_or_insert_with(Default::default)
}

fn claim_spec(claim: &mut PersistentVolumeClaim) -> &mut PersistentVolumeClaimSpec {
    claim.spec.get_or_insert_with(Default::default)
}

/// Chainable edits of a claim built with [`mk_claim`].
pub trait ClaimEdit: Sized {
    fn volume(self, volume: &str) -> Self;
    /// The phase; `Bound` also fills the status the way a bound claim has it (access modes
    /// and capacity from the claim's own spec, as upstream's fixtures do).
    fn phase(self, phase: &str) -> Self;
    fn class(self, class: &str) -> Self;
    fn ann(self, key: &str) -> Self;
    fn ann_value(self, key: &str, value: &str) -> Self;
    fn mode(self, mode: &str) -> Self;
    fn modes(self, modes: &[&str]) -> Self;
    fn vac(self, vac: &str) -> Self;
    fn selector(self, labels: &[(&str, &str)]) -> Self;
    fn status_capacity(self, size: &str) -> Self;
    fn status_vac(self, vac: &str) -> Self;
}

impl ClaimEdit for PersistentVolumeClaim {
    fn volume(mut self, volume: &str) -> Self {
        claim_spec(&mut self).volume_name = Some(volume.to_owned());
        self
    }
    fn phase(mut self, phase: &str) -> Self {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_owned());
        if phase == BOUND {
            status.access_modes = spec.access_modes;
            status.capacity = spec.resources.and_then(|r| r.requests);
            status.current_volume_attributes_class_name = spec.volume_attributes_class_name;
        }
        self
    }
    fn class(mut self, class: &str) -> Self {
        claim_spec(&mut self).storage_class_name = Some(class.to_owned());
        self
    }
    fn ann(self, key: &str) -> Self {
        self.ann_value(key, "yes")
    }
    fn ann_value(mut self, key: &str, value: &str) -> Self {
        annotate(&mut self.metadata, key, value);
        self
    }
    fn mode(mut self, mode: &str) -> Self {
        claim_spec(&mut self).volume_mode = Some(mode.to_owned());
        self
    }
    fn modes(mut self, modes: &[&str]) -> Self {
        claim_spec(&mut self).access_modes = Some(modes.iter().map(|m| (*m).to_owned()).collect());
        self
    }
    fn vac(mut self, vac: &str) -> Self {
        claim_spec(&mut self).volume_attributes_class_name = Some(vac.to_owned());
        self
    }
    fn selector(mut self, labels: &[(&str, &str)]) -> Self {
        claim_spec(&mut self).selector = Some(LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..LabelSelector::default()
        });
        self
    }
    fn status_capacity(mut self, size: &str) -> Self {
        self.status.get_or_insert_with(Default::default).capacity = Some(storage(size));
        self
    }
    fn status_vac(mut self, vac: &str) -> Self {
        self.status
            .get_or_insert_with(Default::default)
            .current_volume_attributes_class_name = Some(vac.to_owned());
        self
    }
}

/// Which object a case syncs once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// `syncClaim` of the first claim; the sync must not fail.
    Claim,
    /// `syncClaim` of the first claim; the sync must fail (requeue with backoff).
    ClaimFails,
    /// `syncVolume` of the first volume.
    Volume,
}

/// One table row: the cluster before, one sync applied in full, the cluster after.
pub struct Case {
    pub name: &'static str,
    pub subject: Subject,
    pub volumes: Vec<PersistentVolume>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub expected_volumes: Vec<PersistentVolume>,
    pub expected_claims: Vec<PersistentVolumeClaim>,
    /// `"<type> <reason>"`, in order; every event the sync records must be listed.
    pub events: Vec<&'static str>,
}

/// Strips what a comparison must ignore: resource versions, which every write bumps.
pub fn normalized_volume(mut pv: PersistentVolume) -> PersistentVolume {
    pv.metadata.resource_version = None;
    if let Some(claim_ref) = pv.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
        claim_ref.resource_version = None;
    }
    pv
}

pub fn normalized_claim(mut claim: PersistentVolumeClaim) -> PersistentVolumeClaim {
    claim.metadata.resource_version = None;
    claim
}

/// Plans one sync of `subject` against `cluster` (the set plays both cache and API server).
pub fn plan_for(
    cluster: &ObjectSet,
    subject: Subject,
    classes: &[StorageClass],
    options: &SyncOptions,
    volume: Option<&PersistentVolume>,
    claim: Option<&PersistentVolumeClaim>,
) -> Plan {
    match subject {
        Subject::Claim | Subject::ClaimFails => {
            let claim = claim.expect("a claim to sync");
            let context = ClaimContext::new(cluster.volumes(), options).with_classes(classes);
            sync_claim(claim, &context)
        }
        Subject::Volume => {
            let volume = volume.expect("a volume to sync");
            sync_volume(volume, cluster.claim_lookup(volume), options)
        }
    }
}

/// Runs one case: plans one sync of the subject, applies it, compares the cluster and the
/// events with the expectation.
pub fn run_case(case: &Case, classes: &[StorageClass], options: &SyncOptions) {
    let mut cluster = ObjectSet::new(case.volumes.clone(), case.claims.clone());
    let plan = plan_for(
        &cluster,
        case.subject,
        classes,
        options,
        case.volumes.first(),
        case.claims.first(),
    );
    match (&plan.then, case.subject) {
        (Then::Retry(_), Subject::ClaimFails) => {}
        (Then::Retry(error), _) => panic!("{}: sync failed: {error}", case.name),
        (then, Subject::ClaimFails) => panic!("{}: sync succeeded ({then:?})", case.name),
        _ => {}
    }
    plan.apply(|write| cluster.apply(write))
        .unwrap_or_else(|stopped| panic!("{}: {stopped}", case.name));
    assert_cluster(
        case.name,
        &cluster,
        &case.expected_volumes,
        &case.expected_claims,
    );
    let events: Vec<String> = cluster
        .events()
        .iter()
        .map(|e| format!("{} {}", e.event_type, e.reason))
        .collect();
    assert_eq!(events, case.events, "{}: events", case.name);
}

/// Compares the whole cluster with the expected objects (order-insensitive).
pub fn assert_cluster(
    name: &str,
    cluster: &ObjectSet,
    expected_volumes: &[PersistentVolume],
    expected_claims: &[PersistentVolumeClaim],
) {
    let mut want_volumes: Vec<_> = expected_volumes
        .iter()
        .cloned()
        .map(normalized_volume)
        .collect();
    want_volumes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let got_volumes: Vec<_> = cluster
        .volumes()
        .iter()
        .cloned()
        .map(normalized_volume)
        .collect();
    assert_eq!(
        serde_json::to_value(&got_volumes).expect("serializable"),
        serde_json::to_value(&want_volumes).expect("serializable"),
        "{name}: volumes"
    );
    let mut want_claims: Vec<_> = expected_claims
        .iter()
        .cloned()
        .map(normalized_claim)
        .collect();
    want_claims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let got_claims: Vec<_> = cluster.claims().cloned().map(normalized_claim).collect();
    assert_eq!(
        serde_json::to_value(&got_claims).expect("serializable"),
        serde_json::to_value(&want_claims).expect("serializable"),
        "{name}: claims"
    );
}

/// Syncs every claim and every volume, in name order, until a full pass changes no object
/// (`syncClaim`/`syncVolume` as the periodic resync would). Panics after `max_passes`.
pub fn sync_until_stable(
    cluster: &mut ObjectSet,
    classes: &[StorageClass],
    options: &SyncOptions,
    max_passes: usize,
) {
    for _ in 0..max_passes {
        let mut changed = false;
        let claim_keys: Vec<_> = cluster.claims().map(ClaimKey::of).collect();
        for key in &claim_keys {
            let Some(claim) = cluster.claim(&key.namespace, &key.name).cloned() else {
                continue;
            };
            let plan = plan_for(
                cluster,
                Subject::Claim,
                classes,
                options,
                None,
                Some(&claim),
            );
            changed |= plan.changes_objects();
            plan.apply(|w| cluster.apply(w)).expect("applies");
        }
        let volume_names: Vec<_> = cluster
            .volumes()
            .iter()
            .filter_map(|pv| pv.metadata.name.clone())
            .collect();
        for name in &volume_names {
            let Some(volume) = cluster.volume(name).cloned() else {
                continue;
            };
            let plan = plan_for(
                cluster,
                Subject::Volume,
                classes,
                options,
                Some(&volume),
                None,
            );
            changed |= plan.changes_objects();
            plan.apply(|w| cluster.apply(w)).expect("applies");
        }
        if !changed {
            return;
        }
    }
    panic!("no fixpoint after {max_passes} passes");
}
