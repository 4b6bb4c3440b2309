//! Deterministic synthetic clusters: volumes and claims with a realistic mix of classes,
//! access modes, sizes, phases and pre-bindings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec, PersistentVolumeStatus,
    VolumeNodeAffinity, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

/// A small deterministic generator (SplitMix64), so that runs are reproducible without a
/// dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Storage classes, the first ("") meaning none.
pub const CLASSES: &[&str] = &[
    "", "standard", "fast", "slow", "nfs", "local", "archive", "gold",
];
const MODE_SETS: &[&[&str]] = &[
    &["ReadWriteOnce"],
    &["ReadWriteOnce"],
    &["ReadWriteOnce", "ReadOnlyMany"],
    &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
    &["ReadWriteMany"],
    &["ReadOnlyMany"],
    &["ReadWriteOncePod"],
];
const UNITS: &[&str] = &["Gi", "G", "Mi"];
const TIERS: &[&str] = &["gold", "silver", "bronze"];
/// Zones nodes and volumes' node affinity use.
pub const ZONES: &[&str] = &["zone-a", "zone-b", "zone-c", "zone-d"];
/// The namespace of every generated claim.
pub const NAMESPACE: &str = "bench";

fn size(rng: &mut SplitMix64) -> String {
    let unit = rng.pick(UNITS);
    let amount = match *unit {
        "Mi" => 1024 * (1 + rng.below(512)),
        _ => 1 + rng.below(1000),
    };
    format!("{amount}{unit}")
}

fn storage(quantity: String) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("storage".to_owned(), Quantity(quantity))])
}

fn claim_name(j: usize) -> String {
    format!("claim-{j}")
}

/// `count` volumes named `pv-<i>`: mostly Available; some Bound or Released to other claims,
/// some Pending or Failed, about 1% pre-bound (by name) to one of `claims` claims, some with
/// labels, Block mode, node affinity or a deletion timestamp.
pub fn volumes(seed: u64, count: usize, claims: usize) -> Vec<PersistentVolume> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|i| {
            let roll = rng.below(100);
            let (phase, claim_ref) = match roll {
                0 if claims > 0 => (
                    "Available",
                    Some(ObjectReference {
                        namespace: Some(NAMESPACE.to_owned()),
                        name: Some(claim_name(rng.below(claims))),
                        ..Default::default()
                    }),
                ),
                1..=14 => ("Bound", Some(other_claim(&mut rng, i))),
                15..=19 => ("Released", Some(other_claim(&mut rng, i))),
                20..=22 => ("Pending", None),
                23..=24 => ("Failed", None),
                _ => ("Available", None),
            };
            let labels = rng
                .percent(50)
                .then(|| BTreeMap::from([("tier".to_owned(), (*rng.pick(TIERS)).to_owned())]));
            let node_affinity = rng.percent(20).then(|| VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "topology.kubernetes.io/zone".to_owned(),
                            operator: "In".to_owned(),
                            values: Some(vec![(*rng.pick(ZONES)).to_owned()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            });
            PersistentVolume {
                metadata: ObjectMeta {
                    name: Some(format!("pv-{i}")),
                    labels,
                    deletion_timestamp: rng.percent(1).then(|| Time(Default::default())),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeSpec {
                    capacity: Some(storage(size(&mut rng))),
                    access_modes: Some(
                        rng.pick(MODE_SETS)
                            .iter()
                            .map(|m| (*m).to_owned())
                            .collect(),
                    ),
                    storage_class_name: Some((*rng.pick(CLASSES)).to_owned()),
                    volume_mode: rng.percent(5).then(|| "Block".to_owned()),
                    claim_ref,
                    node_affinity,
                    ..Default::default()
                }),
                status: Some(PersistentVolumeStatus {
                    phase: Some(phase.to_owned()),
                    ..Default::default()
                }),
            }
        })
        .collect()
}

fn other_claim(rng: &mut SplitMix64, i: usize) -> ObjectReference {
    ObjectReference {
        namespace: Some("elsewhere".to_owned()),
        name: Some(format!("owner-{i}")),
        uid: Some(format!("uid-{}", rng.next_u64())),
        ..Default::default()
    }
}

/// `count` claims named `claim-<j>` in [`NAMESPACE`], with mixed requests, access modes and
/// classes; about 10% select `tier=gold` and 5% ask for Block volumes.
pub fn claims(seed: u64, count: usize) -> Vec<PersistentVolumeClaim> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|j| {
            let selector = rng.percent(10).then(|| LabelSelector {
                match_labels: Some(BTreeMap::from([("tier".to_owned(), "gold".to_owned())])),
                match_expressions: None,
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(j)),
                    namespace: Some(NAMESPACE.to_owned()),
                    uid: Some(format!("claim-uid-{j}")),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(
                        rng.pick(&MODE_SETS[..6])
                            .iter()
                            .take(1 + rng.below(2))
                            .map(|m| (*m).to_owned())
                            .collect(),
                    ),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(storage(size(&mut rng))),
                        ..Default::default()
                    }),
                    storage_class_name: Some((*rng.pick(CLASSES)).to_owned()),
                    selector,
                    volume_mode: rng.percent(5).then(|| "Block".to_owned()),
                    ..Default::default()
                }),
                status: None,
            }
        })
        .collect()
}
