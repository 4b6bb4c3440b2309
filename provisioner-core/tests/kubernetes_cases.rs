//! The scenarios of Kubernetes' own matching tests (the PV controller's `index_test.go`,
//! component-helpers' `pv_helpers_test.go`), restated with our builders. Every controller
//! and scheduler case is also checked against the explanation and the index.

mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use provisioner_core::binding::find::{MatchError, find_matching_volume};
use support::*;

/// The volume set of the controller's index tests (deliberately out of order).
fn index_test_volumes() -> Vec<PersistentVolume> {
    let rwo_rox = [RWO, ROX];
    let all_three = [RWO, ROX, RWX];
    vec![
        mk_pv("gce003", "10G").modes(&rwo_rox),
        mk_pv("gce004", "20G")
            .modes(&rwo_rox)
            .claim_ref("", "", "def456")
            .phase(Some("Bound")),
        mk_pv("nfs002", "5G").modes(&all_three),
        mk_pv("gce001", "1G")
            .modes(&rwo_rox)
            .claim_ref("", "", "abc123")
            .phase(Some("Bound")),
        mk_pv("nfs003", "10G").modes(&all_three),
        mk_pv("gce002", "5G").modes(&rwo_rox),
        mk_pv("nfs001", "1G").modes(&all_three),
        mk_pv("gce0022", "20000G").labels(&[("should-exist", "true")]),
        mk_pv("gce0023", "10000G")
            .labels(&[("should-exist", "true")])
            .class("silver"),
        mk_pv("gce0024", "100G").class("silver"),
        mk_pv("gce0025", "50G").class("gold"),
        mk_pv("local001", "200E").modes(&all_three).class("large"),
        mk_pv("local002", "800E").modes(&all_three).class("large"),
        mk_pv("affinity001", "100G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value1"),
        mk_pv("affinity002", "150G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value1"),
        mk_pv("affinity003", "100G")
            .modes(&rwo_rox)
            .class("wait")
            .claim_ref("myns", "claim02", "")
            .affinity_in("key1", "value1"),
        mk_pv("affinity003", "200G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value3"),
        mk_pv("affinity004-pending", "200G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value4")
            .phase(Some("Pending")),
        mk_pv("affinity004-failed", "200G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value4")
            .phase(Some("Failed")),
        mk_pv("affinity004-released", "200G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value4")
            .phase(Some("Released")),
        mk_pv("affinity004-empty", "200G")
            .modes(&rwo_rox)
            .class("wait")
            .affinity_in("key1", "value4")
            .phase(None),
    ]
}

/// The claim of the index tests: `myns/claim01`, ReadOnlyMany + ReadWriteOnce.
fn index_test_claim(size: &str) -> PersistentVolumeClaim {
    mk_pvc("claim01", size).modes(&[ROX, RWO])
}

#[test]
fn controller_matches_like_index_test_match_volume() {
    let volumes = index_test_volumes();
    let cases: Vec<(&str, PersistentVolumeClaim, Option<&str>)> = vec![
        (
            "smallest of RWO+ROX above 8G",
            index_test_claim("8G"),
            Some("gce003"),
        ),
        (
            "three modes pick the three-mode set",
            index_test_claim("5G").modes(&[ROX, RWO, RWX]),
            Some("nfs002"),
        ),
        (
            "a bound 1G volume is skipped",
            index_test_claim("1G"),
            Some("gce002"),
        ),
        ("nothing is that large", index_test_claim("999G"), None),
        (
            "a label no volume has",
            index_test_claim("999G").select_labels(&[("should-not-exist", "true")]),
            None,
        ),
        (
            "labelled volume lacks ReadOnlyMany",
            index_test_claim("20000G").select_labels(&[("should-exist", "true")]),
            None,
        ),
        (
            "labelled large volume with RWO",
            index_test_claim("20000G")
                .select_labels(&[("should-exist", "true")])
                .modes(&[RWO]),
            Some("gce0022"),
        ),
        (
            "class and labels",
            index_test_claim("1G")
                .select_labels(&[("should-exist", "true")])
                .modes(&[RWO])
                .class("silver"),
            Some("gce0023"),
        ),
        (
            "class alone picks the smaller",
            index_test_claim("1G").modes(&[RWO]).class("silver"),
            Some("gce0024"),
        ),
        (
            "class given by the beta annotation",
            index_test_claim("1G").modes(&[RWO]).beta_class("silver"),
            Some("gce0024"),
        ),
        (
            "1E fits 200E",
            index_test_claim("1E").modes(&[RWO]).class("large"),
            Some("local001"),
        ),
        (
            "800E fits exactly, beyond int64",
            index_test_claim("800E").modes(&[RWO]).class("large"),
            Some("local002"),
        ),
        (
            "950E fits nothing",
            index_test_claim("950E").modes(&[RWO]).class("large"),
            None,
        ),
    ];
    for (name, claim, expected) in cases {
        assert_eq!(
            controller_choice(&claim, &volumes, false, true).as_deref(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn controller_skips_a_bound_twin() {
    let volumes = vec![
        mk_pv("gce001", "1G")
            .modes(&[RWO, ROX])
            .claim_ref("", "", "abc123")
            .phase(Some("Bound")),
        mk_pv("gce002", "1G").modes(&[RWO, ROX]),
    ];
    let claim = index_test_claim("1G");
    assert_eq!(
        controller_choice(&claim, &volumes, false, true).as_deref(),
        Some("gce002")
    );
}

#[test]
fn controller_climbs_access_mode_sets() {
    let gce = || mk_pv("gce", "10G").modes(&[RWO, ROX]);
    let ebs = || mk_pv("ebs", "10G").modes(&[RWO]);
    let nfs = || mk_pv("nfs", "10G").modes(&[RWO, ROX, RWX]);
    let claim = |modes: &[&str]| mk_pvc("claim01", "1G").modes(modes);
    let all = vec![gce(), ebs(), nfs()];
    assert_eq!(
        controller_choice(&claim(&[RWO]), &all, false, true).as_deref(),
        Some("ebs")
    );
    assert_eq!(
        controller_choice(&claim(&[RWO, ROX]), &all, false, true).as_deref(),
        Some("gce")
    );
    assert_eq!(
        controller_choice(&claim(&[RWX, RWO, ROX]), &all, false, true).as_deref(),
        Some("nfs"),
        "the order of requested modes does not matter"
    );
    assert_eq!(
        controller_choice(&claim(&[RWX]), &all, false, true).as_deref(),
        Some("nfs")
    );
    let ebs_taken = vec![gce(), ebs().empty_claim_ref(), nfs()];
    assert_eq!(
        controller_choice(&claim(&[RWO]), &ebs_taken, false, true).as_deref(),
        Some("gce"),
        "an empty claimRef counts as taken: next set up"
    );
    let both_taken = vec![gce().empty_claim_ref(), ebs().empty_claim_ref(), nfs()];
    assert_eq!(
        controller_choice(&claim(&[RWO]), &both_taken, false, true).as_deref(),
        Some("nfs")
    );
    assert_eq!(
        controller_choice(&claim(&[ROX]), &ebs_taken, false, true).as_deref(),
        Some("gce"),
        "a partial request"
    );
}

#[test]
fn controller_pre_bound_rules_like_finding_prebound_volumes() {
    let claim = mk_pvc("claim01", "1Gi");
    let base = || {
        vec![
            mk_pv("pv1", "1Gi"),
            mk_pv("pv5", "5Gi"),
            mk_pv("pv8", "8Gi"),
            mk_pv("pvBadSize", "1Mi"),
            mk_pv("pvBadMode", "1Gi").modes(&[ROX]),
        ]
    };
    let with = |name: &str, edit: &dyn Fn(PersistentVolume) -> PersistentVolume| {
        base()
            .into_iter()
            .map(|pv| {
                if pv.metadata.name.as_deref() == Some(name) {
                    edit(pv)
                } else {
                    pv
                }
            })
            .collect::<Vec<_>>()
    };
    let pre_bind = |pv: PersistentVolume| pv.claim_ref("myns", "claim01", "");
    assert_eq!(
        controller_choice(&claim, &base(), false, true).as_deref(),
        Some("pv1")
    );
    let pv1_taken = with("pv1", &|pv| pv.claim_ref("bar", "foo", ""));
    assert_eq!(
        controller_choice(&claim, &pv1_taken, false, true).as_deref(),
        Some("pv5")
    );
    let pv8_pre_bound = with("pv8", &pre_bind);
    assert_eq!(
        controller_choice(&claim, &pv8_pre_bound, false, true).as_deref(),
        Some("pv8")
    );
    let small_pre_bound = with("pvBadSize", &pre_bind);
    assert_eq!(
        controller_choice(&claim, &small_pre_bound, false, true).as_deref(),
        Some("pv1"),
        "a pre-bound volume that is too small is skipped"
    );
    let wrong_mode_pre_bound = with("pvBadMode", &pre_bind);
    assert_eq!(
        controller_choice(&claim, &wrong_mode_pre_bound, false, true).as_deref(),
        Some("pv1"),
        "a pre-bound volume in a set without the claim's modes is never searched"
    );
}

#[test]
fn controller_with_delayed_binding_takes_only_pre_bound() {
    let volumes = index_test_volumes();
    assert_eq!(
        controller_choice(&index_test_claim("8G"), &volumes, true, true),
        None
    );
    let mut pre_bound = volumes.clone();
    pre_bound.push(
        mk_pv("reserved", "100G")
            .modes(&[RWO, ROX])
            .claim_ref("myns", "claim01", ""),
    );
    assert_eq!(
        controller_choice(&index_test_claim("8G"), &pre_bound, true, true).as_deref(),
        Some("reserved")
    );
}

#[test]
fn volume_modes_like_filtering_volume_modes() {
    let block = Some("Block");
    let fs = Some("Filesystem");
    let cases = [
        (block, fs, false),
        (fs, block, false),
        (block, None, false),
        (None, block, false),
        (block, block, true),
        (fs, fs, true),
        (None, None, true),
        (fs, None, true),
        (None, fs, true),
    ];
    for (claim_mode, volume_mode, matches) in cases {
        let claim = mk_pvc("claim01", "8G").volume_mode(claim_mode);
        let volumes = vec![mk_pv("block", "10G").volume_mode(volume_mode)];
        assert_eq!(
            controller_choice(&claim, &volumes, false, true).is_some(),
            matches,
            "claim {claim_mode:?}, volume {volume_mode:?}"
        );
    }
}

#[test]
fn a_volume_being_deleted_is_never_chosen() {
    let claim = mk_pvc("pvc1", "1G");
    assert_eq!(
        controller_choice(&claim, &[mk_pv("pv1", "1G")], false, true).as_deref(),
        Some("pv1")
    );
    assert_eq!(
        controller_choice(&claim, &[mk_pv("pv1", "1G").deleting()], false, true),
        None
    );
    let pre_bound = mk_pv("pv1", "1G").claim_ref("myns", "pvc1", "").deleting();
    assert_eq!(controller_choice(&claim, &[pre_bound], false, true), None);
}

/// The volumes of component-helpers' `TestFindMatchVolumeWithNode`: uid, name, size.
fn node_test_volumes() -> Vec<PersistentVolume> {
    let local = |uid: &str, name: &str, size: &str| mk_pv(name, size).uid(uid).modes(&[RWO, ROX]);
    vec![
        local("local-small", "local001", "5G"),
        local("local-pd-very-large", "local002", "200E").class("large"),
        local("affinity-pv", "affinity001", "100G")
            .class("wait")
            .affinity_in("key1", "value1"),
        local("affinity-pv2", "affinity002", "150G")
            .class("wait")
            .affinity_in("key1", "value1"),
        local("affinity-prebound", "affinity003", "100G")
            .class("wait")
            .claim_ref("myns", "claim02", "")
            .affinity_in("key1", "value1"),
        local("affinity-pv3", "affinity003", "200G")
            .class("wait")
            .affinity_in("key1", "value3"),
        local("affinity-pv4", "affinity004", "200G")
            .class("wait")
            .affinity_in("key1", "value4")
            .phase(None),
    ]
}

fn node_test_claim(name: &str, modes: &[&str]) -> PersistentVolumeClaim {
    mk_pvc(name, "100G").modes(modes).class("wait")
}

fn uid_of(pv: Option<&PersistentVolume>) -> Option<&str> {
    pv.and_then(|pv| pv.metadata.uid.as_deref())
}

#[test]
fn direct_search_with_node_like_find_match_volume_with_node() {
    let volumes = node_test_volumes();
    let gold: Vec<PersistentVolume> = volumes.iter().cloned().map(|pv| pv.vac("gold")).collect();
    let node = |value: &str| mk_node("n", &[("key1", value)]);
    struct Case<'a> {
        name: &'a str,
        claim: PersistentVolumeClaim,
        node: &'a str,
        excluded: &'a [&'a str],
        volumes: &'a [PersistentVolume],
        vac_enabled: &'a [bool],
        expected: Option<&'a str>,
    }
    let both = &[true, false][..];
    let cases = [
        Case {
            name: "match on node",
            claim: node_test_claim("claim01", &[RWO]),
            node: "value1",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: Some("affinity-pv"),
        },
        Case {
            name: "pre-bound",
            claim: node_test_claim("claim02", &[RWO]),
            node: "value1",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: Some("affinity-prebound"),
        },
        Case {
            name: "exclusion moves on",
            claim: node_test_claim("claim01", &[RWO]),
            node: "value1",
            excluded: &["affinity001"],
            volumes: &volumes,
            vac_enabled: both,
            expected: Some("affinity-pv2"),
        },
        Case {
            name: "everything excluded",
            claim: node_test_claim("claim01", &[RWO]),
            node: "value1",
            excluded: &["affinity001", "affinity002"],
            volumes: &volumes,
            vac_enabled: both,
            expected: None,
        },
        Case {
            name: "access mode",
            claim: node_test_claim("claim01", &[RWX]),
            node: "value1",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: None,
        },
        Case {
            name: "node affinity",
            claim: node_test_claim("claim01", &[RWO]),
            node: "value2",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: None,
        },
        Case {
            name: "pre-bound does not fit the node: no volume at all",
            claim: node_test_claim("claim02", &[RWO]),
            node: "value3",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: None,
        },
        Case {
            name: "not available",
            claim: node_test_claim("claim04", &[RWO]),
            node: "value4",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: None,
        },
        Case {
            name: "bad and good node affinity",
            claim: node_test_claim("claim03", &[RWO]),
            node: "value3",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: both,
            expected: Some("affinity-pv3"),
        },
        Case {
            name: "same VAC",
            claim: node_test_claim("claim01", &[RWO]).vac("gold"),
            node: "value1",
            excluded: &[],
            volumes: &gold,
            vac_enabled: &[true],
            expected: Some("affinity-pv"),
        },
        Case {
            name: "VAC differs",
            claim: node_test_claim("claim01", &[RWO]).vac("silver"),
            node: "value1",
            excluded: &[],
            volumes: &volumes,
            vac_enabled: &[true],
            expected: None,
        },
        Case {
            name: "pre-bound VAC differs",
            claim: node_test_claim("claim02", &[RWO]).vac("silver"),
            node: "value1",
            excluded: &[],
            volumes: &gold,
            vac_enabled: &[true],
            expected: None,
        },
        Case {
            name: "volumes with VAC, gate off",
            claim: node_test_claim("claim01", &[RWO]),
            node: "value1",
            excluded: &[],
            volumes: &gold,
            vac_enabled: &[false],
            expected: None,
        },
    ];
    for case in cases {
        let node = node(case.node);
        let excluded: BTreeSet<String> = case.excluded.iter().map(|e| (*e).to_owned()).collect();
        for &vac_enabled in case.vac_enabled {
            let chosen = find_matching_volume(
                &case.claim,
                case.volumes,
                Some(&node),
                &excluded,
                true,
                vac_enabled,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(
                uid_of(chosen),
                case.expected,
                "{} (VAC gate {vac_enabled})",
                case.name
            );
        }
    }
}

#[test]
fn claim_with_vac_and_gate_off_is_an_error() {
    let claim = node_test_claim("claim01", &[RWO]).vac("gold");
    let node = mk_node("n", &[("key1", "value1")]);
    let err = find_matching_volume(
        &claim,
        &node_test_volumes(),
        Some(&node),
        &BTreeSet::new(),
        true,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, MatchError::AttributesClassDisabled { .. }));
    assert!(err.to_string().contains("spec.volumeAttributesClassName"));
}

#[test]
fn scheduler_form_on_the_node_test_volumes() {
    // Same scenarios through the scheduler's form (class listing, index); names are unique
    // once the two volumes sharing `affinity003` are told apart.
    let volumes: Vec<PersistentVolume> = node_test_volumes()
        .into_iter()
        .map(|mut pv| {
            pv.metadata.name = pv.metadata.uid.clone();
            pv
        })
        .collect();
    let node = |value: &str| mk_node("n", &[("key1", value)]);
    let claim = |name: &str, modes: &[&str]| node_test_claim(name, modes);
    let choice = |c: &PersistentVolumeClaim, n: &str, excluded: &[&str]| {
        scheduler_choice(c, &volumes, &node(n), excluded, true)
    };
    assert_eq!(
        choice(&claim("claim01", &[RWO]), "value1", &[]).as_deref(),
        Some("affinity-pv")
    );
    assert_eq!(
        choice(&claim("claim02", &[RWO]), "value1", &[]).as_deref(),
        Some("affinity-prebound")
    );
    assert_eq!(
        choice(&claim("claim01", &[RWO]), "value1", &["affinity-pv"]).as_deref(),
        Some("affinity-pv2")
    );
    assert_eq!(
        choice(
            &claim("claim01", &[RWO]),
            "value1",
            &["affinity-pv", "affinity-pv2"]
        ),
        None
    );
    assert_eq!(choice(&claim("claim01", &[RWX]), "value1", &[]), None);
    assert_eq!(choice(&claim("claim01", &[RWO]), "value2", &[]), None);
    assert_eq!(choice(&claim("claim02", &[RWO]), "value3", &[]), None);
    assert_eq!(choice(&claim("claim04", &[RWO]), "value4", &[]), None);
    assert_eq!(
        choice(&claim("claim03", &[RWO]), "value3", &[]).as_deref(),
        Some("affinity-pv3")
    );
}
