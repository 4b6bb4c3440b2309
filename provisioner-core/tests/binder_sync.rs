//! Kubernetes' binder test tables (pkg/controller/volume/persistentvolume/binder_test.go,
//! TestSync and TestSyncBlockVolume), restated case by case: the cluster before, one
//! `syncClaim` or `syncVolume` applied in full, the cluster and the events after.
//!
//! Upstream only checks the events it lists (a prefix of what was recorded); these tests
//! require the exact list, so a few rows list events upstream's table leaves out.

mod binder_support;

use binder_support::*;
use k8s_openapi::api::storage::v1::StorageClass;
use provisioner_core::binding::sync::{
    ANN_BIND_COMPLETED as BC, ANN_BOUND_BY_CONTROLLER as BBC, ANN_SELECTED_NODE, ClaimLookup,
    SyncOptions, Then, sync_volume,
};

const LABELS: &[(&str, &str)] = &[("foo", "true"), ("bar", "false")];

fn classes() -> Vec<StorageClass> {
    vec![mk_class(
        "wait",
        "kubernetes.io/no-provisioner",
        Some("WaitForFirstConsumer"),
    )]
}

fn case(name: &'static str, subject: Subject) -> Case {
    Case {
        name,
        subject,
        volumes: vec![],
        claims: vec![],
        expected_volumes: vec![],
        expected_claims: vec![],
        events: vec![],
    }
}

trait CaseEdit {
    fn volumes(
        self,
        before: Vec<k8s_openapi::api::core::v1::PersistentVolume>,
        after: Vec<k8s_openapi::api::core::v1::PersistentVolume>,
    ) -> Self;
    fn claims(
        self,
        before: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
        after: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    ) -> Self;
    fn events(self, events: &[&'static str]) -> Self;
}

impl CaseEdit for Case {
    fn volumes(
        mut self,
        before: Vec<k8s_openapi::api::core::v1::PersistentVolume>,
        after: Vec<k8s_openapi::api::core::v1::PersistentVolume>,
    ) -> Self {
        self.volumes = before;
        self.expected_volumes = after;
        self
    }
    fn claims(
        mut self,
        before: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
        after: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    ) -> Self {
        self.claims = before;
        self.expected_claims = after;
        self
    }
    fn events(mut self, events: &[&'static str]) -> Self {
        self.events = events.to_vec();
        self
    }
}

/// Set 1: the claim takes any matching volume.
fn set_1() -> Vec<Case> {
    vec![
        case("1-1 successful bind", Subject::Claim)
            .volumes(
                vec![mk_volume("volume1-1", "1Gi")],
                vec![
                    mk_volume("volume1-1", "1Gi")
                        .bound_to("claim1-1", "uid1-1")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim1-1", "uid1-1", "1Gi")],
                vec![
                    mk_claim("claim1-1", "uid1-1", "1Gi")
                        .volume("volume1-1")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("1-2 no matching volume", Subject::Claim)
            .volumes(
                vec![mk_volume("volume1-2", "1Gi")],
                vec![mk_volume("volume1-2", "1Gi")],
            )
            .claims(
                vec![mk_claim("claim1-2", "uid1-2", "10Gi")],
                vec![mk_claim("claim1-2", "uid1-2", "10Gi")],
            )
            .events(&["Normal FailedBinding"]),
        case("1-3 reset to Pending", Subject::Claim)
            .volumes(
                vec![mk_volume("volume1-3", "1Gi")],
                vec![mk_volume("volume1-3", "1Gi")],
            )
            .claims(
                vec![mk_claim("claim1-3", "uid1-3", "10Gi").phase(BOUND)],
                vec![mk_claim("claim1-3", "uid1-3", "10Gi")],
            )
            .events(&["Normal FailedBinding"]),
        case("1-4 smallest volume", Subject::Claim)
            .volumes(
                vec![
                    mk_volume("volume1-4_1", "10Gi"),
                    mk_volume("volume1-4_2", "1Gi"),
                ],
                vec![
                    mk_volume("volume1-4_1", "10Gi"),
                    mk_volume("volume1-4_2", "1Gi")
                        .bound_to("claim1-4", "uid1-4")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim1-4", "uid1-4", "1Gi")],
                vec![
                    mk_claim("claim1-4", "uid1-4", "1Gi")
                        .volume("volume1-4_2")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case(
            "1-5 volume pre-bound by name wins over a smaller one",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-5_1", "10Gi").bound_to("claim1-5", ""),
                mk_volume("volume1-5_2", "1Gi"),
            ],
            vec![
                mk_volume("volume1-5_1", "10Gi")
                    .bound_to("claim1-5", "uid1-5")
                    .phase(BOUND),
                mk_volume("volume1-5_2", "1Gi"),
            ],
        )
        .claims(
            vec![mk_claim("claim1-5", "uid1-5", "1Gi")],
            vec![
                mk_claim("claim1-5", "uid1-5", "1Gi")
                    .volume("volume1-5_1")
                    .phase(BOUND)
                    .status_capacity("10Gi")
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
        case(
            "1-6 volume pre-bound by UID wins over a smaller one",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-6_1", "10Gi").bound_to("claim1-6", "uid1-6"),
                mk_volume("volume1-6_2", "1Gi"),
            ],
            vec![
                mk_volume("volume1-6_1", "10Gi")
                    .bound_to("claim1-6", "uid1-6")
                    .phase(BOUND),
                mk_volume("volume1-6_2", "1Gi"),
            ],
        )
        .claims(
            vec![mk_claim("claim1-6", "uid1-6", "1Gi")],
            vec![
                mk_claim("claim1-6", "uid1-6", "1Gi")
                    .volume("volume1-6_1")
                    .phase(BOUND)
                    .status_capacity("10Gi")
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
        case(
            "1-7 volume pre-bound to the same name with another UID",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume1-7", "10Gi").bound_to("claim1-7", "uid1-777")],
            vec![mk_volume("volume1-7", "10Gi").bound_to("claim1-7", "uid1-777")],
        )
        .claims(
            vec![mk_claim("claim1-7", "uid1-7", "1Gi")],
            vec![mk_claim("claim1-7", "uid1-7", "1Gi")],
        )
        .events(&["Normal FailedBinding"]),
        case("1-11 bind when the selector matches", Subject::Claim)
            .volumes(
                vec![mk_volume("volume1-1", "1Gi").labels(LABELS)],
                vec![
                    mk_volume("volume1-1", "1Gi")
                        .labels(LABELS)
                        .bound_to("claim1-1", "uid1-1")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim1-1", "uid1-1", "1Gi").selector(LABELS)],
                vec![
                    mk_claim("claim1-1", "uid1-1", "1Gi")
                        .selector(LABELS)
                        .volume("volume1-1")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case(
            "1-12 no bind when the selector does not match",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume1-1", "1Gi")],
            vec![mk_volume("volume1-1", "1Gi")],
        )
        .claims(
            vec![mk_claim("claim1-1", "uid1-1", "1Gi").selector(LABELS)],
            vec![mk_claim("claim1-1", "uid1-1", "1Gi").selector(LABELS)],
        )
        .events(&["Normal FailedBinding"]),
        case("1-13 delayed binding waits for a consumer", Subject::Claim)
            .volumes(
                vec![mk_volume("volume1-1", "1Gi").class("wait")],
                vec![mk_volume("volume1-1", "1Gi").class("wait")],
            )
            .claims(
                vec![mk_claim("claim1-1", "uid1-1", "1Gi").class("wait")],
                vec![mk_claim("claim1-1", "uid1-1", "1Gi").class("wait")],
            )
            .events(&["Normal WaitForFirstConsumer"]),
        case(
            "1-14 delayed binding still takes a pre-bound volume",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-1", "1Gi")
                    .class("wait")
                    .bound_to("claim1-1", ""),
            ],
            vec![
                mk_volume("volume1-1", "1Gi")
                    .class("wait")
                    .bound_to("claim1-1", "uid1-1")
                    .phase(BOUND),
            ],
        )
        .claims(
            vec![mk_claim("claim1-1", "uid1-1", "1Gi").class("wait")],
            vec![
                mk_claim("claim1-1", "uid1-1", "1Gi")
                    .class("wait")
                    .volume("volume1-1")
                    .phase(BOUND)
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
        case(
            "1-15 claim naming a volume takes it over a smaller one",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-15_1", "10Gi"),
                mk_volume("volume1-15_2", "1Gi"),
            ],
            vec![
                mk_volume("volume1-15_1", "10Gi")
                    .bound_to("claim1-15", "uid1-15")
                    .phase(BOUND)
                    .ann(BBC),
                mk_volume("volume1-15_2", "1Gi"),
            ],
        )
        .claims(
            vec![mk_claim("claim1-15", "uid1-15", "1Gi").volume("volume1-15_1")],
            vec![
                mk_claim("claim1-15", "uid1-15", "1Gi")
                    .volume("volume1-15_1")
                    .phase(BOUND)
                    .status_capacity("10Gi")
                    .ann(BC),
            ],
        ),
        case(
            "1-16 claim naming a volume with other access modes",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume1-16", "1Gi")],
            vec![mk_volume("volume1-16", "1Gi")],
        )
        .claims(
            vec![
                mk_claim("claim1-16", "uid1-16", "1Gi")
                    .modes(&[RWX])
                    .volume("volume1-16"),
            ],
            vec![
                mk_claim("claim1-16", "uid1-16", "1Gi")
                    .modes(&[RWX])
                    .volume("volume1-16"),
            ],
        )
        .events(&["Warning VolumeMismatch"]),
        case(
            "1-17 volumes that are not Available are skipped",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-17-pending", "1Gi").phase(PENDING),
                mk_volume("volume1-17-failed", "1Gi").phase(FAILED),
                mk_volume("volume1-17-released", "1Gi").phase(RELEASED),
                mk_volume("volume1-17-empty", "1Gi").phase(""),
            ],
            vec![
                mk_volume("volume1-17-pending", "1Gi").phase(PENDING),
                mk_volume("volume1-17-failed", "1Gi").phase(FAILED),
                mk_volume("volume1-17-released", "1Gi").phase(RELEASED),
                mk_volume("volume1-17-empty", "1Gi").phase(""),
            ],
        )
        .claims(
            vec![mk_claim("claim1-17", "uid1-17", "1Gi")],
            vec![mk_claim("claim1-17", "uid1-17", "1Gi")],
        )
        .events(&["Normal FailedBinding"]),
        case(
            "1-18 scheduled claim with a volume pre-bound by UID",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-18", "1Gi")
                    .class("wait")
                    .bound_to("claim1-18", "uid1-18"),
            ],
            vec![
                mk_volume("volume1-18", "1Gi")
                    .class("wait")
                    .bound_to("claim1-18", "uid1-18")
                    .phase(BOUND),
            ],
        )
        .claims(
            vec![
                mk_claim("claim1-18", "uid1-18", "1Gi")
                    .class("wait")
                    .ann_value(ANN_SELECTED_NODE, "node1"),
            ],
            vec![
                mk_claim("claim1-18", "uid1-18", "1Gi")
                    .class("wait")
                    .ann_value(ANN_SELECTED_NODE, "node1")
                    .volume("volume1-18")
                    .phase(BOUND)
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
    ]
}

/// Set 1, crash recovery: a bind interrupted after each of its writes.
fn set_1_crashes() -> Vec<Case> {
    vec![
        case(
            "1-8 finish a bind interrupted after the volume's claimRef",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-8", "1Gi")
                    .bound_to("claim1-8", "uid1-8")
                    .ann(BBC),
            ],
            vec![
                mk_volume("volume1-8", "1Gi")
                    .bound_to("claim1-8", "uid1-8")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .claims(
            vec![mk_claim("claim1-8", "uid1-8", "1Gi")],
            vec![
                mk_claim("claim1-8", "uid1-8", "1Gi")
                    .volume("volume1-8")
                    .phase(BOUND)
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
        case(
            "1-9 finish a bind interrupted after the volume's status",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-9", "1Gi")
                    .bound_to("claim1-9", "uid1-9")
                    .phase(BOUND)
                    .ann(BBC),
            ],
            vec![
                mk_volume("volume1-9", "1Gi")
                    .bound_to("claim1-9", "uid1-9")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .claims(
            vec![mk_claim("claim1-9", "uid1-9", "1Gi")],
            vec![
                mk_claim("claim1-9", "uid1-9", "1Gi")
                    .volume("volume1-9")
                    .phase(BOUND)
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
        case(
            "1-10 finish a bind interrupted after the claim's volumeName",
            Subject::Claim,
        )
        .volumes(
            vec![
                mk_volume("volume1-10", "1Gi")
                    .bound_to("claim1-10", "uid1-10")
                    .phase(BOUND)
                    .ann(BBC),
            ],
            vec![
                mk_volume("volume1-10", "1Gi")
                    .bound_to("claim1-10", "uid1-10")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .claims(
            vec![
                mk_claim("claim1-10", "uid1-10", "1Gi")
                    .volume("volume1-10")
                    .ann(BBC)
                    .ann(BC),
            ],
            vec![
                mk_claim("claim1-10", "uid1-10", "1Gi")
                    .volume("volume1-10")
                    .phase(BOUND)
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
    ]
}

/// Set 2: the claim names its volume.
fn set_2() -> Vec<Case> {
    vec![
        case("2-1 named volume does not exist", Subject::Claim).claims(
            vec![mk_claim("claim2-1", "uid2-1", "10Gi").volume("volume2-1")],
            vec![mk_claim("claim2-1", "uid2-1", "10Gi").volume("volume2-1")],
        ),
        case(
            "2-2 named volume does not exist, status reset",
            Subject::Claim,
        )
        .claims(
            vec![
                mk_claim("claim2-2", "uid2-2", "10Gi")
                    .volume("volume2-2")
                    .phase(BOUND),
            ],
            vec![mk_claim("claim2-2", "uid2-2", "10Gi").volume("volume2-2")],
        ),
        case("2-3 named volume is free", Subject::Claim)
            .volumes(
                vec![mk_volume("volume2-3", "1Gi")],
                vec![
                    mk_volume("volume2-3", "1Gi")
                        .bound_to("claim2-3", "uid2-3")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim2-3", "uid2-3", "1Gi").volume("volume2-3")],
                vec![
                    mk_claim("claim2-3", "uid2-3", "1Gi")
                        .volume("volume2-3")
                        .phase(BOUND)
                        .ann(BC),
                ],
            ),
        case("2-4 named volume pre-bound back by name", Subject::Claim)
            .volumes(
                vec![mk_volume("volume2-4", "1Gi").bound_to("claim2-4", "")],
                vec![
                    mk_volume("volume2-4", "1Gi")
                        .bound_to("claim2-4", "uid2-4")
                        .phase(BOUND),
                ],
            )
            .claims(
                vec![mk_claim("claim2-4", "uid2-4", "1Gi").volume("volume2-4")],
                vec![
                    mk_claim("claim2-4", "uid2-4", "1Gi")
                        .volume("volume2-4")
                        .phase(BOUND)
                        .ann(BC),
                ],
            ),
        case("2-5 named volume pre-bound back by UID", Subject::Claim)
            .volumes(
                vec![mk_volume("volume2-5", "1Gi").bound_to("claim2-5", "uid2-5")],
                vec![
                    mk_volume("volume2-5", "1Gi")
                        .bound_to("claim2-5", "uid2-5")
                        .phase(BOUND),
                ],
            )
            .claims(
                vec![mk_claim("claim2-5", "uid2-5", "1Gi").volume("volume2-5")],
                vec![
                    mk_claim("claim2-5", "uid2-5", "1Gi")
                        .volume("volume2-5")
                        .phase(BOUND)
                        .ann(BC),
                ],
            ),
        case("2-6 named volume bound to another claim", Subject::Claim)
            .volumes(
                vec![
                    mk_volume("volume2-6", "1Gi")
                        .bound_to("claim2-6_1", "uid2-6_1")
                        .phase(BOUND),
                ],
                vec![
                    mk_volume("volume2-6", "1Gi")
                        .bound_to("claim2-6_1", "uid2-6_1")
                        .phase(BOUND),
                ],
            )
            .claims(
                vec![
                    mk_claim("claim2-6", "uid2-6", "1Gi")
                        .volume("volume2-6")
                        .phase(BOUND),
                ],
                vec![mk_claim("claim2-6", "uid2-6", "1Gi").volume("volume2-6")],
            )
            .events(&["Warning FailedBinding"]),
        case(
            "2-7 claim bound by the controller to a volume bound elsewhere",
            Subject::ClaimFails,
        )
        .volumes(
            vec![
                mk_volume("volume2-7", "1Gi")
                    .bound_to("claim2-7_1", "uid2-7_1")
                    .phase(BOUND),
            ],
            vec![
                mk_volume("volume2-7", "1Gi")
                    .bound_to("claim2-7_1", "uid2-7_1")
                    .phase(BOUND),
            ],
        )
        .claims(
            vec![
                mk_claim("claim2-7", "uid2-7", "1Gi")
                    .volume("volume2-7")
                    .phase(BOUND)
                    .ann(BBC),
            ],
            vec![
                mk_claim("claim2-7", "uid2-7", "1Gi")
                    .volume("volume2-7")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .events(&["Warning FailedBinding"]),
        case(
            "2-8 named volume binds even if the selector does not match",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume2-8", "1Gi")],
            vec![
                mk_volume("volume2-8", "1Gi")
                    .bound_to("claim2-8", "uid2-8")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .claims(
            vec![
                mk_claim("claim2-8", "uid2-8", "1Gi")
                    .selector(LABELS)
                    .volume("volume2-8"),
            ],
            vec![
                mk_claim("claim2-8", "uid2-8", "1Gi")
                    .selector(LABELS)
                    .volume("volume2-8")
                    .phase(BOUND)
                    .ann(BC),
            ],
        ),
        case("2-9 named volume is too small", Subject::Claim)
            .volumes(
                vec![mk_volume("volume2-9", "1Gi")],
                vec![mk_volume("volume2-9", "1Gi")],
            )
            .claims(
                vec![
                    mk_claim("claim2-9", "uid2-9", "2Gi")
                        .volume("volume2-9")
                        .phase(BOUND),
                ],
                vec![mk_claim("claim2-9", "uid2-9", "2Gi").volume("volume2-9")],
            )
            .events(&["Warning VolumeMismatch"]),
        case("2-10 named volume has another class", Subject::Claim)
            .volumes(
                vec![mk_volume("volume2-10", "1Gi").class("gold")],
                vec![mk_volume("volume2-10", "1Gi").class("gold")],
            )
            .claims(
                vec![
                    mk_claim("claim2-10", "uid2-10", "1Gi")
                        .volume("volume2-10")
                        .phase(BOUND),
                ],
                vec![mk_claim("claim2-10", "uid2-10", "1Gi").volume("volume2-10")],
            )
            .events(&["Warning VolumeMismatch"]),
    ]
}

/// Set 3: the claim completed binding earlier.
fn set_3() -> Vec<Case> {
    vec![
        case("3-1 bound claim lost its volumeName", Subject::Claim)
            .claims(
                vec![
                    mk_claim("claim3-1", "uid3-1", "10Gi")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
                vec![
                    mk_claim("claim3-1", "uid3-1", "10Gi")
                        .phase(LOST)
                        .ann(BBC)
                        .ann(BC),
                ],
            )
            .events(&["Warning ClaimLost"]),
        case("3-2 bound claim's volume is gone", Subject::Claim)
            .claims(
                vec![
                    mk_claim("claim3-2", "uid3-2", "10Gi")
                        .volume("volume3-2")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
                vec![
                    mk_claim("claim3-2", "uid3-2", "10Gi")
                        .volume("volume3-2")
                        .phase(LOST)
                        .ann(BBC)
                        .ann(BC),
                ],
            )
            .events(&["Warning ClaimLost"]),
        case("3-3 bound claim's volume lost its claimRef", Subject::Claim)
            .volumes(
                vec![mk_volume("volume3-3", "10Gi")],
                vec![
                    mk_volume("volume3-3", "10Gi")
                        .bound_to("claim3-3", "uid3-3")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![
                    mk_claim("claim3-3", "uid3-3", "10Gi")
                        .volume("volume3-3")
                        .ann(BBC)
                        .ann(BC),
                ],
                vec![
                    mk_claim("claim3-3", "uid3-3", "10Gi")
                        .volume("volume3-3")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("3-4 bound claim's volume names another UID", Subject::Claim)
            .volumes(
                vec![mk_volume("volume3-4", "10Gi").bound_to("claim3-4", "claim3-4-x")],
                vec![mk_volume("volume3-4", "10Gi").bound_to("claim3-4", "claim3-4-x")],
            )
            .claims(
                vec![
                    mk_claim("claim3-4", "uid3-4", "10Gi")
                        .volume("volume3-4")
                        .ann(BBC)
                        .ann(BC),
                ],
                vec![
                    mk_claim("claim3-4", "uid3-4", "10Gi")
                        .volume("volume3-4")
                        .phase(LOST)
                        .ann(BBC)
                        .ann(BC),
                ],
            )
            .events(&["Warning ClaimMisbound"]),
        case(
            "3-5 bound claim with its volume: both Bound",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume3-5", "10Gi").bound_to("claim3-5", "uid3-5")],
            vec![
                mk_volume("volume3-5", "10Gi")
                    .bound_to("claim3-5", "uid3-5")
                    .phase(BOUND),
            ],
        )
        .claims(
            vec![
                mk_claim("claim3-5", "uid3-5", "10Gi")
                    .volume("volume3-5")
                    .ann(BC),
            ],
            vec![
                mk_claim("claim3-5", "uid3-5", "10Gi")
                    .volume("volume3-5")
                    .phase(BOUND)
                    .ann(BC),
            ],
        ),
        case(
            "3-6 bound claim's volume is bound to another claim",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume3-6", "10Gi").bound_to("claim3-6-x", "uid3-6-x")],
            vec![mk_volume("volume3-6", "10Gi").bound_to("claim3-6-x", "uid3-6-x")],
        )
        .claims(
            vec![
                mk_claim("claim3-6", "uid3-6", "10Gi")
                    .volume("volume3-6")
                    .ann(BC),
            ],
            vec![
                mk_claim("claim3-6", "uid3-6", "10Gi")
                    .volume("volume3-6")
                    .phase(LOST)
                    .ann(BC),
            ],
        )
        .events(&["Warning ClaimMisbound"]),
        case("3-7 re-bind ignores the selector", Subject::Claim)
            .volumes(
                vec![mk_volume("volume3-3", "10Gi")],
                vec![
                    mk_volume("volume3-3", "10Gi")
                        .bound_to("claim3-3", "uid3-3")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![
                    mk_claim("claim3-3", "uid3-3", "10Gi")
                        .selector(LABELS)
                        .volume("volume3-3")
                        .ann(BBC)
                        .ann(BC),
                ],
                vec![
                    mk_claim("claim3-3", "uid3-3", "10Gi")
                        .selector(LABELS)
                        .volume("volume3-3")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
    ]
}

/// Set 4: `syncVolume`.
fn set_4() -> Vec<Case> {
    vec![
        case("4-1 free volume stays Available", Subject::Volume)
            .volumes(vec![mk_volume("volume4-1", "10Gi")], vec![mk_volume("volume4-1", "10Gi")]),
        case("4-2 volume pre-bound by name stays Available", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-2", "10Gi").bound_to("claim4-2", "")],
                vec![mk_volume("volume4-2", "10Gi").bound_to("claim4-2", "")],
            ),
        case("4-3 claim gone: Released", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-3", "10Gi").bound_to("claim4-3", "uid4-3").phase(BOUND)],
                vec![mk_volume("volume4-3", "10Gi").bound_to("claim4-3", "uid4-3").phase(RELEASED)],
            ),
        case("4-4 claim replaced (other UID): Released", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-4", "10Gi").bound_to("claim4-4", "uid4-4").phase(BOUND)],
                vec![mk_volume("volume4-4", "10Gi").bound_to("claim4-4", "uid4-4").phase(RELEASED)],
            )
            .claims(
                vec![mk_claim("claim4-4", "uid4-4-x", "10Gi").volume("volume4-4").phase(BOUND).ann(BC)],
                vec![mk_claim("claim4-4", "uid4-4-x", "10Gi").volume("volume4-4").phase(BOUND).ann(BC)],
            ),
        case("4-5 claim not bound yet (controller's binding): left to syncClaim", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-5", "10Gi").bound_to("claim4-5", "uid4-5").phase(BOUND).ann(BBC)],
                vec![mk_volume("volume4-5", "10Gi").bound_to("claim4-5", "uid4-5").phase(BOUND).ann(BBC)],
            )
            .claims(vec![mk_claim("claim4-5", "uid4-5", "10Gi")], vec![mk_claim("claim4-5", "uid4-5", "10Gi")]),
        case("4-5 claim not bound yet (user's binding): left to syncClaim", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-5", "10Gi").bound_to("claim4-5", "uid4-5").phase(BOUND)],
                vec![mk_volume("volume4-5", "10Gi").bound_to("claim4-5", "uid4-5").phase(BOUND)],
            )
            .claims(vec![mk_claim("claim4-5", "uid4-5", "10Gi")], vec![mk_claim("claim4-5", "uid4-5", "10Gi")]),
        case("4-6 claim bound to it: Bound", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-6", "10Gi").bound_to("claim4-6", "uid4-6")],
                vec![mk_volume("volume4-6", "10Gi").bound_to("claim4-6", "uid4-6").phase(BOUND)],
            )
            .claims(
                vec![mk_claim("claim4-6", "uid4-6", "10Gi").volume("volume4-6").phase(BOUND)],
                vec![mk_claim("claim4-6", "uid4-6", "10Gi").volume("volume4-6").phase(BOUND)],
            ),
        case("4-7 controller's binding, claim bound elsewhere: unbound", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-7", "10Gi").bound_to("claim4-7", "uid4-7").phase(BOUND).ann(BBC)],
                vec![mk_volume("volume4-7", "10Gi")],
            )
            .claims(
                vec![mk_claim("claim4-7", "uid4-7", "10Gi").volume("volume4-7-x").phase(BOUND)],
                vec![mk_claim("claim4-7", "uid4-7", "10Gi").volume("volume4-7-x").phase(BOUND)],
            ),
        case("4-8 user's binding, claim bound elsewhere: UID cleared", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-8", "10Gi").bound_to("claim4-8", "uid4-8").phase(BOUND)],
                vec![mk_volume("volume4-8", "10Gi").bound_to("claim4-8", "")],
            )
            .claims(
                vec![mk_claim("claim4-8", "uid4-8", "10Gi").volume("volume4-8-x").phase(BOUND)],
                vec![mk_claim("claim4-8", "uid4-8", "10Gi").volume("volume4-8-x").phase(BOUND)],
            ),
        case("4-9 Delete policy, claim bound to it: kept and Bound", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-9", "10Gi").bound_to("claim4-9", "uid4-9").policy(DELETE)],
                vec![mk_volume("volume4-9", "10Gi").bound_to("claim4-9", "uid4-9").policy(DELETE).phase(BOUND)],
            )
            .claims(
                vec![mk_claim("claim4-9", "uid4-9", "10Gi").volume("volume4-9").phase(BOUND)],
                vec![mk_claim("claim4-9", "uid4-9", "10Gi").volume("volume4-9").phase(BOUND)],
            ),
        case("4-10 Delete policy, claim gone, no deleter: Failed", Subject::Volume)
            .volumes(
                vec![mk_volume("volume4-10", "10Gi").bound_to("claim4-10", "uid4-10").policy(DELETE)],
                vec![mk_volume("volume4-10", "10Gi")
                    .bound_to("claim4-10", "uid4-10")
                    .policy(DELETE)
                    .phase(FAILED)
                    .message("error getting deleter volume plugin for volume \"volume4-10\": no volume plugin matched")],
            )
            .events(&["Warning VolumeFailedDelete"]),
    ]
}

/// Claims with a class.
fn set_13() -> Vec<Case> {
    vec![
        case("13-1 binding to the requested class", Subject::Claim)
            .volumes(
                vec![
                    mk_volume("volume13-1-1", "1Gi"),
                    mk_volume("volume13-1-2", "10Gi").class("gold"),
                ],
                vec![
                    mk_volume("volume13-1-1", "1Gi"),
                    mk_volume("volume13-1-2", "10Gi")
                        .class("gold")
                        .bound_to("claim13-1", "uid13-1")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim13-1", "uid13-1", "1Gi").class("gold")],
                vec![
                    mk_claim("claim13-1", "uid13-1", "1Gi")
                        .class("gold")
                        .volume("volume13-1-2")
                        .phase(BOUND)
                        .status_capacity("10Gi")
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("13-2 binding without a class", Subject::Claim)
            .volumes(
                vec![
                    mk_volume("volume13-2-1", "1Gi").class("gold"),
                    mk_volume("volume13-2-2", "10Gi"),
                ],
                vec![
                    mk_volume("volume13-2-1", "1Gi").class("gold"),
                    mk_volume("volume13-2-2", "10Gi")
                        .bound_to("claim13-2", "uid13-2")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim13-2", "uid13-2", "1Gi")],
                vec![
                    mk_claim("claim13-2", "uid13-2", "1Gi")
                        .volume("volume13-2-2")
                        .phase(BOUND)
                        .status_capacity("10Gi")
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("13-3 binding to a specific class", Subject::Claim)
            .volumes(
                vec![
                    mk_volume("volume13-3-1", "1Gi").class("silver"),
                    mk_volume("volume13-3-2", "10Gi").class("gold"),
                ],
                vec![
                    mk_volume("volume13-3-1", "1Gi").class("silver"),
                    mk_volume("volume13-3-2", "10Gi")
                        .class("gold")
                        .bound_to("claim13-3", "uid13-3")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim13-3", "uid13-3", "1Gi").class("gold")],
                vec![
                    mk_claim("claim13-3", "uid13-3", "1Gi")
                        .class("gold")
                        .volume("volume13-3-2")
                        .phase(BOUND)
                        .status_capacity("10Gi")
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("13-4 empty class", Subject::Claim)
            .volumes(
                vec![mk_volume("volume13-4", "1Gi")],
                vec![
                    mk_volume("volume13-4", "1Gi")
                        .bound_to("claim13-4", "uid13-4")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim13-4", "uid13-4", "1Gi").class("")],
                vec![
                    mk_claim("claim13-4", "uid13-4", "1Gi")
                        .class("")
                        .volume("volume13-4")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("13-5 no class", Subject::Claim)
            .volumes(
                vec![mk_volume("volume13-5", "1Gi")],
                vec![
                    mk_volume("volume13-5", "1Gi")
                        .bound_to("claim13-5", "uid13-5")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![mk_claim("claim13-5", "uid13-5", "1Gi")],
                vec![
                    mk_claim("claim13-5", "uid13-5", "1Gi")
                        .volume("volume13-5")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
    ]
}

/// TestSyncBlockVolume: volume modes.
fn set_14() -> Vec<Case> {
    let v = |name: &str, mode: &str| mk_volume(name, "10Gi").mode(mode);
    let c = |name: &str, uid: &str, mode: &str| mk_claim(name, uid, "10Gi").mode(mode);
    vec![
        case("14-1 Block claim binds a Block volume", Subject::Claim)
            .volumes(
                vec![v("volume14-1", BLOCK)],
                vec![
                    v("volume14-1", BLOCK)
                        .bound_to("claim14-1", "uid14-1")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![c("claim14-1", "uid14-1", BLOCK)],
                vec![
                    c("claim14-1", "uid14-1", BLOCK)
                        .volume("volume14-1")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case(
            "14-2 Filesystem claim binds a Filesystem volume",
            Subject::Claim,
        )
        .volumes(
            vec![v("volume14-2", FILESYSTEM)],
            vec![
                v("volume14-2", FILESYSTEM)
                    .bound_to("claim14-2", "uid14-2")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .claims(
            vec![c("claim14-2", "uid14-2", FILESYSTEM)],
            vec![
                c("claim14-2", "uid14-2", FILESYSTEM)
                    .volume("volume14-2")
                    .phase(BOUND)
                    .ann(BBC)
                    .ann(BC),
            ],
        ),
        case("14-3 Block claim, Filesystem volume", Subject::Claim)
            .volumes(
                vec![v("volume14-3", FILESYSTEM)],
                vec![v("volume14-3", FILESYSTEM)],
            )
            .claims(
                vec![c("claim14-3", "uid14-3", BLOCK)],
                vec![c("claim14-3", "uid14-3", BLOCK)],
            )
            .events(&["Normal FailedBinding"]),
        case("14-4 Filesystem claim, Block volume", Subject::Claim)
            .volumes(vec![v("volume14-4", BLOCK)], vec![v("volume14-4", BLOCK)])
            .claims(
                vec![c("claim14-4", "uid14-4", FILESYSTEM)],
                vec![c("claim14-4", "uid14-4", FILESYSTEM)],
            )
            .events(&["Normal FailedBinding"]),
        case(
            "14-5 same class, other mode: provisioning fails (class missing)",
            Subject::Claim,
        )
        .volumes(
            vec![v("volume14-5", FILESYSTEM).class("gold")],
            vec![v("volume14-5", FILESYSTEM).class("gold")],
        )
        .claims(
            vec![c("claim14-5", "uid14-5", BLOCK).class("gold")],
            vec![c("claim14-5", "uid14-5", BLOCK).class("gold")],
        )
        .events(&["Warning ProvisioningFailed"]),
        case(
            "14-5-1 same mode, other class: provisioning fails (class missing)",
            Subject::Claim,
        )
        .volumes(
            vec![v("volume14-5-1", FILESYSTEM).class("gold")],
            vec![v("volume14-5-1", FILESYSTEM).class("gold")],
        )
        .claims(
            vec![c("claim14-5-1", "uid14-5-1", FILESYSTEM).class("silver")],
            vec![c("claim14-5-1", "uid14-5-1", FILESYSTEM).class("silver")],
        )
        .events(&["Warning ProvisioningFailed"]),
        case(
            "14-5-2 named volume with the same mode and another class",
            Subject::Claim,
        )
        .volumes(
            vec![v("volume14-5-2", FILESYSTEM).class("gold")],
            vec![v("volume14-5-2", FILESYSTEM).class("gold")],
        )
        .claims(
            vec![
                c("claim14-5-2", "uid14-5-2", FILESYSTEM)
                    .class("silver")
                    .volume("volume14-5-2"),
            ],
            vec![
                c("claim14-5-2", "uid14-5-2", FILESYSTEM)
                    .class("silver")
                    .volume("volume14-5-2"),
            ],
        )
        .events(&["Warning VolumeMismatch"]),
        case("14-7 volume pre-bound by name, modes match", Subject::Claim)
            .volumes(
                vec![v("volume14-7", BLOCK).bound_to("claim14-7", "")],
                vec![
                    v("volume14-7", BLOCK)
                        .bound_to("claim14-7", "uid14-7")
                        .phase(BOUND),
                ],
            )
            .claims(
                vec![c("claim14-7", "uid14-7", BLOCK)],
                vec![
                    c("claim14-7", "uid14-7", BLOCK)
                        .volume("volume14-7")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("14-8 named volume with another mode", Subject::Claim)
            .volumes(vec![v("volume14-8", BLOCK)], vec![v("volume14-8", BLOCK)])
            .claims(
                vec![c("claim14-8", "uid14-8", FILESYSTEM).volume("volume14-8")],
                vec![c("claim14-8", "uid14-8", FILESYSTEM).volume("volume14-8")],
            )
            .events(&["Warning VolumeMismatch"]),
        case(
            "14-8-1 volume pre-bound by name with another mode",
            Subject::Claim,
        )
        .volumes(
            vec![v("volume14-8-1", BLOCK).bound_to("claim14-8-1", "")],
            vec![v("volume14-8-1", BLOCK).bound_to("claim14-8-1", "")],
        )
        .claims(
            vec![c("claim14-8-1", "uid14-8-1", FILESYSTEM)],
            vec![c("claim14-8-1", "uid14-8-1", FILESYSTEM)],
        )
        .events(&["Normal FailedBinding"]),
        case("14-9 named Block volume", Subject::Claim)
            .volumes(
                vec![v("volume14-9", BLOCK)],
                vec![
                    v("volume14-9", BLOCK)
                        .bound_to("claim14-9", "uid14-9")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![c("claim14-9", "uid14-9", BLOCK).volume("volume14-9")],
                vec![
                    c("claim14-9", "uid14-9", BLOCK)
                        .volume("volume14-9")
                        .phase(BOUND)
                        .ann(BC),
                ],
            ),
        case("14-10 Block volume pre-bound by name", Subject::Claim)
            .volumes(
                vec![v("volume14-10", BLOCK).bound_to("claim14-10", "")],
                vec![
                    v("volume14-10", BLOCK)
                        .bound_to("claim14-10", "uid14-10")
                        .phase(BOUND),
                ],
            )
            .claims(
                vec![c("claim14-10", "uid14-10", BLOCK)],
                vec![
                    c("claim14-10", "uid14-10", BLOCK)
                        .volume("volume14-10")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case("14-11 named Filesystem volume", Subject::Claim)
            .volumes(
                vec![v("volume14-11", FILESYSTEM)],
                vec![
                    v("volume14-11", FILESYSTEM)
                        .bound_to("claim14-11", "uid14-11")
                        .phase(BOUND)
                        .ann(BBC),
                ],
            )
            .claims(
                vec![c("claim14-11", "uid14-11", FILESYSTEM).volume("volume14-11")],
                vec![
                    c("claim14-11", "uid14-11", FILESYSTEM)
                        .volume("volume14-11")
                        .phase(BOUND)
                        .ann(BC),
                ],
            ),
        case("14-12 Filesystem volume pre-bound by name", Subject::Claim)
            .volumes(
                vec![v("volume14-12", FILESYSTEM).bound_to("claim14-12", "")],
                vec![
                    v("volume14-12", FILESYSTEM)
                        .bound_to("claim14-12", "uid14-12")
                        .phase(BOUND),
                ],
            )
            .claims(
                vec![c("claim14-12", "uid14-12", FILESYSTEM)],
                vec![
                    c("claim14-12", "uid14-12", FILESYSTEM)
                        .volume("volume14-12")
                        .phase(BOUND)
                        .ann(BBC)
                        .ann(BC),
                ],
            ),
        case(
            "14-13 syncVolume warns both sides of a mode mismatch",
            Subject::Volume,
        )
        .volumes(
            vec![
                v("volume14-13", FILESYSTEM)
                    .bound_to("claim14-13", "uid14-13")
                    .ann(BBC),
            ],
            vec![
                v("volume14-13", FILESYSTEM)
                    .bound_to("claim14-13", "uid14-13")
                    .ann(BBC),
            ],
        )
        .claims(
            vec![c("claim14-13", "uid14-13", BLOCK)],
            vec![c("claim14-13", "uid14-13", BLOCK)],
        )
        .events(&["Warning VolumeMismatch", "Warning VolumeMismatch"]),
        case(
            "14-13-1 syncVolume warns both sides of a mode mismatch",
            Subject::Volume,
        )
        .volumes(
            vec![
                v("volume14-13-1", BLOCK)
                    .bound_to("claim14-13-1", "uid14-13-1")
                    .ann(BBC),
            ],
            vec![
                v("volume14-13-1", BLOCK)
                    .bound_to("claim14-13-1", "uid14-13-1")
                    .ann(BBC),
            ],
        )
        .claims(
            vec![c("claim14-13-1", "uid14-13-1", FILESYSTEM)],
            vec![c("claim14-13-1", "uid14-13-1", FILESYSTEM)],
        )
        .events(&["Warning VolumeMismatch", "Warning VolumeMismatch"]),
        case(
            "14-14 syncVolume waits quietly when Block modes match",
            Subject::Volume,
        )
        .volumes(
            vec![
                v("volume14-14", BLOCK)
                    .bound_to("claim14-14", "uid14-14")
                    .ann(BBC),
            ],
            vec![
                v("volume14-14", BLOCK)
                    .bound_to("claim14-14", "uid14-14")
                    .ann(BBC),
            ],
        )
        .claims(
            vec![c("claim14-14", "uid14-14", BLOCK)],
            vec![c("claim14-14", "uid14-14", BLOCK)],
        ),
        case(
            "14-14-1 syncVolume waits quietly when Filesystem modes match",
            Subject::Volume,
        )
        .volumes(
            vec![
                v("volume14-14-1", FILESYSTEM)
                    .bound_to("claim14-14-1", "uid14-14-1")
                    .ann(BBC),
            ],
            vec![
                v("volume14-14-1", FILESYSTEM)
                    .bound_to("claim14-14-1", "uid14-14-1")
                    .ann(BBC),
            ],
        )
        .claims(
            vec![c("claim14-14-1", "uid14-14-1", FILESYSTEM)],
            vec![c("claim14-14-1", "uid14-14-1", FILESYSTEM)],
        ),
    ]
}

fn options(vac_enabled: bool) -> SyncOptions {
    SyncOptions {
        vac_enabled,
        ..SyncOptions::default()
    }
}

/// Upstream runs TestSync with the VolumeAttributesClass gate on and off.
fn run_both_gates(cases: &[Case]) {
    for vac_enabled in [true, false] {
        for case in cases {
            run_case(case, &classes(), &options(vac_enabled));
        }
    }
}

#[test]
fn set_1_claims_take_any_matching_volume() {
    run_both_gates(&set_1());
}

#[test]
fn set_1_interrupted_binds_are_finished() {
    run_both_gates(&set_1_crashes());
}

#[test]
fn set_2_claims_naming_a_volume() {
    run_both_gates(&set_2());
}

#[test]
fn set_3_bound_claims() {
    run_both_gates(&set_3());
}

#[test]
fn set_4_volumes() {
    run_both_gates(&set_4());
}

#[test]
fn set_13_storage_classes() {
    run_both_gates(&set_13());
}

#[test]
fn set_14_volume_modes() {
    for case in &set_14() {
        run_case(case, &classes(), &SyncOptions::default());
    }
}

#[test]
fn vac_2_11_and_2_12_with_the_gate_on() {
    let cases = [
        case(
            "2-11 named volume with another VolumeAttributesClass",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume2-11", "1Gi").vac("gold")],
            vec![mk_volume("volume2-11", "1Gi").vac("gold")],
        )
        .claims(
            vec![
                mk_claim("claim2-11", "uid2-11", "1Gi")
                    .volume("volume2-11")
                    .phase(BOUND),
            ],
            vec![mk_claim("claim2-11", "uid2-11", "1Gi").volume("volume2-11")],
        )
        .events(&["Warning VolumeMismatch"]),
        case(
            "2-12 named volume with the same VolumeAttributesClass",
            Subject::Claim,
        )
        .volumes(
            vec![mk_volume("volume2-12", "1Gi").vac("gold")],
            vec![
                mk_volume("volume2-12", "1Gi")
                    .vac("gold")
                    .bound_to("claim2-12", "uid2-12")
                    .phase(BOUND)
                    .ann(BBC),
            ],
        )
        .claims(
            vec![
                mk_claim("claim2-12", "uid2-12", "1Gi")
                    .vac("gold")
                    .volume("volume2-12"),
            ],
            vec![
                mk_claim("claim2-12", "uid2-12", "1Gi")
                    .vac("gold")
                    .volume("volume2-12")
                    .phase(BOUND)
                    .status_vac("gold")
                    .ann(BC),
            ],
        ),
    ];
    for case in &cases {
        run_case(case, &classes(), &options(true));
    }
}

#[test]
fn vac_2_13_with_the_gate_off() {
    let case = case(
        "2-13 named volume with a VolumeAttributesClass, gate off",
        Subject::Claim,
    )
    .volumes(
        vec![mk_volume("volume2-13", "1Gi").vac("gold")],
        vec![mk_volume("volume2-13", "1Gi").vac("gold")],
    )
    .claims(
        vec![
            mk_claim("claim2-13", "uid2-13", "1Gi")
                .vac("gold")
                .volume("volume2-13")
                .phase(BOUND)
                .status_vac("gold"),
        ],
        vec![
            mk_claim("claim2-13", "uid2-13", "1Gi")
                .vac("gold")
                .volume("volume2-13"),
        ],
    )
    .events(&["Warning VolumeMismatch"]);
    run_case(&case, &classes(), &options(false));
}

/// 4-11: the claim exists on the API server but not yet in the controller's cache. The
/// volume must not be released: the plan asks for the API server's answer first.
#[test]
fn set_4_11_claim_missing_from_the_cache_is_fetched() {
    let volume = mk_volume("volume4-11", "10Gi")
        .bound_to("claim4-11", "uid4-11")
        .policy(DELETE);
    let claim = mk_claim("claim4-11", "uid4-11", "10Gi")
        .volume("volume4-11")
        .phase(BOUND);
    let options = SyncOptions::default();

    let first = sync_volume(&volume, ClaimLookup::cached(None), &options);
    assert!(first.writes.is_empty());
    let Then::NeedsFreshClaim(key) = &first.then else {
        panic!("expected a request for the claim, got {:?}", first.then);
    };
    assert_eq!(
        (key.namespace.as_str(), key.name.as_str()),
        (NS, "claim4-11")
    );

    let second = sync_volume(
        &volume,
        ClaimLookup::cached(None).with_api(Some(&claim)),
        &options,
    );
    let mut cluster = provisioner_core::binding::sync::ObjectSet::new([volume], [claim.clone()]);
    second.apply(|w| cluster.apply(w)).expect("applies");
    assert_cluster(
        "4-11",
        &cluster,
        &[mk_volume("volume4-11", "10Gi")
            .bound_to("claim4-11", "uid4-11")
            .policy(DELETE)
            .phase(BOUND)],
        &[claim],
    );
}

/// 4-12: the cache holds an older claim of the same name; the API server has the one the
/// volume is bound to.
#[test]
fn set_4_12_stale_cached_claim_is_refetched() {
    let volume = mk_volume("volume4-12", "10Gi")
        .bound_to("claim4-12", "uid4-12-new")
        .policy(DELETE);
    let stale = mk_claim("claim4-12", "uid4-12", "10Gi")
        .volume("volume4-12")
        .phase(BOUND);
    let fresh = mk_claim("claim4-12", "uid4-12-new", "10Gi")
        .volume("volume4-12")
        .phase(BOUND);
    let options = SyncOptions::default();

    let first = sync_volume(&volume, ClaimLookup::cached(Some(&stale)), &options);
    assert!(
        matches!(first.then, Then::NeedsFreshClaim(_)),
        "{:?}",
        first.then
    );
    let second = sync_volume(
        &volume,
        ClaimLookup::cached(Some(&stale)).with_api(Some(&fresh)),
        &options,
    );
    let mut cluster = provisioner_core::binding::sync::ObjectSet::new([volume], [fresh.clone()]);
    second.apply(|w| cluster.apply(w)).expect("applies");
    assert_cluster(
        "4-12",
        &cluster,
        &[mk_volume("volume4-12", "10Gi")
            .bound_to("claim4-12", "uid4-12-new")
            .policy(DELETE)
            .phase(BOUND)],
        &[fresh],
    );
}

/// A cached claim with another UID that the API server does not have either: the volume is
/// released, as in 4-4.
#[test]
fn stale_cached_claim_gone_from_the_api_server_releases_the_volume() {
    let volume = mk_volume("v", "10Gi").bound_to("c", "uid-old").phase(BOUND);
    let replacement = mk_claim("c", "uid-new", "10Gi");
    let plan = sync_volume(
        &volume,
        ClaimLookup::cached(Some(&replacement)).with_api(None),
        &SyncOptions::default(),
    );
    assert_eq!(plan.then, Then::Done);
    let mut cluster =
        provisioner_core::binding::sync::ObjectSet::new([volume], [replacement.clone()]);
    plan.apply(|w| cluster.apply(w)).expect("applies");
    assert_cluster(
        "stale",
        &cluster,
        &[mk_volume("v", "10Gi")
            .bound_to("c", "uid-old")
            .phase(RELEASED)],
        &[replacement],
    );
}
