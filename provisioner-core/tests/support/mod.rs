//! Small builders for volumes, claims and nodes used by the matching tests.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec,
    PersistentVolumeStatus, VolumeNodeAffinity, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
use provisioner_core::binding::find::{MatchForm, explain_match, find_match};
use provisioner_core::binding::index::VolumeIndex;

pub const RWO: &str = "ReadWriteOnce";
pub const ROX: &str = "ReadOnlyMany";
pub const RWX: &str = "ReadWriteMany";
pub const RWOP: &str = "ReadWriteOncePod";

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// A volume: `size`, ReadWriteOnce, Filesystem, Available, no class.
pub fn mk_pv(name: &str, size: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(size.to_owned()),
            )])),
            access_modes: Some(strings(&[RWO])),
            volume_mode: Some("Filesystem".to_owned()),
            ..Default::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Available".to_owned()),
            ..Default::default()
        }),
    }
}

/// A claim `myns/name`: `size`, ReadWriteOnce, Filesystem, no class.
pub fn mk_pvc(name: &str, size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("myns".to_owned()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(strings(&[RWO])),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.to_owned()),
                )])),
                ..Default::default()
            }),
            volume_mode: Some("Filesystem".to_owned()),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn mk_node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn pv_spec(pv: &mut PersistentVolume) -> &mut PersistentVolumeSpec {
    pv.spec.get_or_insert_with(Default::default)
}

fn pvc_spec(pvc: &mut PersistentVolumeClaim) -> &mut PersistentVolumeClaimSpec {
    pvc.spec.get_or_insert_with(Default::default)
}

/// Chainable edits of a volume.
pub trait PvExt: Sized {
    fn modes(self, modes: &[&str]) -> Self;
    fn class(self, class: &str) -> Self;
    fn beta_class(self, class: &str) -> Self;
    fn claim_ref(self, namespace: &str, name: &str, uid: &str) -> Self;
    fn empty_claim_ref(self) -> Self;
    fn phase(self, phase: Option<&str>) -> Self;
    fn labels(self, labels: &[(&str, &str)]) -> Self;
    fn volume_mode(self, mode: Option<&str>) -> Self;
    fn vac(self, class: &str) -> Self;
    fn deleting(self) -> Self;
    fn affinity_in(self, key: &str, value: &str) -> Self;
    fn affinity_terms(self, terms: Vec<NodeSelectorTerm>) -> Self;
    fn uid(self, uid: &str) -> Self;
}

impl PvExt for PersistentVolume {
    fn modes(mut self, modes: &[&str]) -> Self {
        pv_spec(&mut self).access_modes = Some(strings(modes));
        self
    }
    fn class(mut self, class: &str) -> Self {
        pv_spec(&mut self).storage_class_name = Some(class.to_owned());
        self
    }
    fn beta_class(mut self, class: &str) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                "volume.beta.kubernetes.io/storage-class".to_owned(),
                class.to_owned(),
            );
        self
    }
    fn claim_ref(mut self, namespace: &str, name: &str, uid: &str) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        pv_spec(&mut self).claim_ref = Some(ObjectReference {
            kind: Some("PersistentVolumeClaim".to_owned()),
            api_version: Some("v1".to_owned()),
            namespace: non_empty(namespace),
            name: non_empty(name),
            uid: non_empty(uid),
            ..Default::default()
        });
        self
    }
    fn empty_claim_ref(mut self) -> Self {
        pv_spec(&mut self).claim_ref = Some(ObjectReference::default());
        self
    }
    fn phase(mut self, phase: Option<&str>) -> Self {
        self.status = Some(PersistentVolumeStatus {
            phase: phase.map(str::to_owned),
            ..Default::default()
        });
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
    fn volume_mode(mut self, mode: Option<&str>) -> Self {
        pv_spec(&mut self).volume_mode = mode.map(str::to_owned);
        self
    }
    fn vac(mut self, class: &str) -> Self {
        pv_spec(&mut self).volume_attributes_class_name = Some(class.to_owned());
        self
    }
    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(Default::default()));
        self
    }
    fn affinity_in(self, key: &str, value: &str) -> Self {
        self.affinity_terms(vec![term_in(key, value)])
    }
    fn affinity_terms(mut self, terms: Vec<NodeSelectorTerm>) -> Self {
        pv_spec(&mut self).node_affinity = Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: terms,
            }),
        });
        self
    }
    fn uid(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.to_owned());
        self
    }
}

pub fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: (!values.is_empty()).then(|| strings(values)),
    }
}

pub fn term_in(key: &str, value: &str) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(vec![requirement(key, "In", &[value])]),
        match_fields: None,
    }
}

/// Chainable edits of a claim.
pub trait PvcExt: Sized {
    fn modes(self, modes: &[&str]) -> Self;
    fn class(self, class: &str) -> Self;
    fn beta_class(self, class: &str) -> Self;
    fn uid(self, uid: &str) -> Self;
    fn volume_mode(self, mode: Option<&str>) -> Self;
    fn vac(self, class: &str) -> Self;
    fn select_labels(self, labels: &[(&str, &str)]) -> Self;
    fn select_expression(self, key: &str, operator: &str, values: &[&str]) -> Self;
    fn no_request(self) -> Self;
}

impl PvcExt for PersistentVolumeClaim {
    fn modes(mut self, modes: &[&str]) -> Self {
        pvc_spec(&mut self).access_modes = Some(strings(modes));
        self
    }
    fn class(mut self, class: &str) -> Self {
        pvc_spec(&mut self).storage_class_name = Some(class.to_owned());
        self
    }
    fn beta_class(mut self, class: &str) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                "volume.beta.kubernetes.io/storage-class".to_owned(),
                class.to_owned(),
            );
        self
    }
    fn uid(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.to_owned());
        self
    }
    fn volume_mode(mut self, mode: Option<&str>) -> Self {
        pvc_spec(&mut self).volume_mode = mode.map(str::to_owned);
        self
    }
    fn vac(mut self, class: &str) -> Self {
        pvc_spec(&mut self).volume_attributes_class_name = Some(class.to_owned());
        self
    }
    fn select_labels(mut self, labels: &[(&str, &str)]) -> Self {
        let selector = pvc_spec(&mut self)
            .selector
            .get_or_insert_with(LabelSelector::default);
        selector.match_labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }
    fn select_expression(mut self, key: &str, operator: &str, values: &[&str]) -> Self {
        let selector = pvc_spec(&mut self)
            .selector
            .get_or_insert_with(LabelSelector::default);
        selector
            .match_expressions
            .get_or_insert_with(Vec::new)
            .push(LabelSelectorRequirement {
                key: key.to_owned(),
                operator: operator.to_owned(),
                values: (!values.is_empty()).then(|| strings(values)),
            });
        self
    }
    fn no_request(mut self) -> Self {
        pvc_spec(&mut self).resources = None;
        self
    }
}

pub fn name_of(pv: Option<&PersistentVolume>) -> Option<&str> {
    pv.and_then(|pv| pv.metadata.name.as_deref())
}

/// The PV controller's choice, checked three ways: the linear search, its explanation and
/// the index must agree.
pub fn controller_choice(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    delay_binding: bool,
    vac_enabled: bool,
) -> Option<String> {
    let form = MatchForm::Controller { delay_binding };
    let linear = find_match(claim, volumes, form, vac_enabled).expect("linear search");
    let report = explain_match(claim, volumes, form, vac_enabled).expect("explain");
    assert_eq!(name_of(linear), report.chosen.as_deref(), "explain agrees");
    assert_eq!(
        report.rejected.len() + usize::from(report.chosen.is_some()),
        volumes.len()
    );
    let index = VolumeIndex::from_volumes(dedup_last(volumes)).expect("index");
    let indexed = index
        .find_best_match_for_claim(claim, delay_binding, vac_enabled)
        .expect("index search");
    if unique_names(volumes) {
        assert_eq!(name_of(linear), name_of(indexed), "index agrees");
    }
    name_of(linear).map(str::to_owned)
}

/// The scheduler's choice on `node`, checked the same three ways.
pub fn scheduler_choice(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    node: &Node,
    excluded: &[&str],
    vac_enabled: bool,
) -> Option<String> {
    let excluded: BTreeSet<String> = excluded.iter().map(|e| (*e).to_owned()).collect();
    let form = MatchForm::Scheduler {
        node,
        excluded: &excluded,
    };
    let linear = find_match(claim, volumes, form, vac_enabled).expect("linear search");
    let report = explain_match(claim, volumes, form, vac_enabled).expect("explain");
    assert_eq!(name_of(linear), report.chosen.as_deref(), "explain agrees");
    if unique_names(volumes) {
        let index = VolumeIndex::from_volumes(volumes.to_vec()).expect("index");
        let indexed = index
            .find_matching_volume_for_node(claim, node, &excluded, vac_enabled)
            .expect("index search");
        assert_eq!(name_of(linear), name_of(indexed), "index agrees");
    }
    name_of(linear).map(str::to_owned)
}

fn unique_names(volumes: &[PersistentVolume]) -> bool {
    let names: BTreeSet<_> = volumes.iter().map(|v| v.metadata.name.clone()).collect();
    names.len() == volumes.len()
}

/// The volumes an informer store would hold: the last object of each name.
fn dedup_last(volumes: &[PersistentVolume]) -> Vec<PersistentVolume> {
    let mut seen = BTreeSet::new();
    let mut kept: Vec<PersistentVolume> = volumes
        .iter()
        .rev()
        .filter(|v| seen.insert(v.metadata.name.clone()))
        .cloned()
        .collect();
    kept.reverse();
    kept
}
