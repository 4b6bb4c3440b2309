//! One test per matching rule (the filters of `FindMatchingVolume` in order, the access-mode
//! sets of the PV controller, the scheduler's form), each also checking the explanation.

mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use provisioner_core::binding::find::{
    MatchError, MatchForm, MatchReport, Rejection, explain_match, explain_named_volume,
    find_best_match_for_claim,
};
use provisioner_core::binding::label_selector::SelectorError;
use support::*;

fn controller(claim: &PersistentVolumeClaim, volumes: &[PersistentVolume]) -> MatchReport {
    explain_match(
        claim,
        volumes,
        MatchForm::Controller {
            delay_binding: false,
        },
        true,
    )
    .expect("search runs")
}

fn reason<'r>(report: &'r MatchReport, volume: &str) -> &'r Rejection {
    &report
        .rejected
        .iter()
        .find(|r| r.volume == volume)
        .unwrap_or_else(|| panic!("{volume} not in {report:?}"))
        .reason
}

#[test]
fn claim_ref_to_another_claim_is_taken() {
    let claim = mk_pvc("data", "1Gi").uid("uid-now");
    let volumes = vec![
        mk_pv("other", "1Gi").claim_ref("myns", "other", "x"),
        mk_pv("empty-ref", "1Gi").empty_claim_ref(),
        mk_pv("uid-only", "1Gi").claim_ref("", "", "uid-now"),
        mk_pv("old-incarnation", "1Gi").claim_ref("myns", "data", "uid-before"),
        mk_pv("free", "2Gi"),
    ];
    let report = controller(&claim, &volumes);
    assert_eq!(report.chosen.as_deref(), Some("free"));
    assert_eq!(
        reason(&report, "other"),
        &Rejection::ClaimedByOther {
            claim: "myns/other".into()
        }
    );
    assert_eq!(
        reason(&report, "empty-ref"),
        &Rejection::ClaimedByOther { claim: "/".into() }
    );
    assert_eq!(
        reason(&report, "uid-only"),
        &Rejection::ClaimedByOther { claim: "/".into() }
    );
    assert_eq!(
        reason(&report, "old-incarnation"),
        &Rejection::ClaimedByPreviousIncarnation {
            claim: "myns/data".into(),
            uid: "uid-before".into()
        }
    );
    assert!(
        reason(&report, "old-incarnation")
            .to_string()
            .contains("remove spec.claimRef.uid")
    );
}

#[test]
fn claim_ref_with_this_claims_uid_or_no_uid_is_pre_bound() {
    let claim = mk_pvc("data", "1Gi").uid("u1");
    for uid in ["u1", ""] {
        let volumes = vec![
            mk_pv("free", "1Gi"),
            mk_pv("reserved", "5Gi").claim_ref("myns", "data", uid),
        ];
        assert_eq!(
            controller_choice(&claim, &volumes, false, true).as_deref(),
            Some("reserved"),
            "uid {uid:?}"
        );
    }
    let other_namespace = vec![mk_pv("reserved", "5Gi").claim_ref("elsewhere", "data", "")];
    assert_eq!(
        controller_choice(&claim, &other_namespace, false, true),
        None
    );
}

#[test]
fn capacity_must_reach_the_request_exactly_compared() {
    let claim = mk_pvc("data", "1Gi");
    let volumes = vec![
        mk_pv("decimal-giga", "1G"),
        mk_pv("mebi", "1000Mi"),
        mk_pv("same-in-mebi", "1024Mi"),
        mk_pv("gibi", "1Gi"),
    ];
    let report = controller(&claim, &volumes);
    assert_eq!(
        report.chosen.as_deref(),
        Some("same-in-mebi"),
        "1024Mi == 1Gi, met first"
    );
    assert!(matches!(
        reason(&report, "decimal-giga"),
        Rejection::TooSmall { .. }
    ));
    assert!(matches!(
        reason(&report, "mebi"),
        Rejection::TooSmall { .. }
    ));
    assert_eq!(
        reason(&report, "gibi"),
        &Rejection::TieLostToEarlier {
            chosen: "same-in-mebi".into()
        }
    );
    assert_eq!(
        reason(&report, "decimal-giga").to_string(),
        "too small: capacity 1G is less than the requested 1Gi"
    );
}

#[test]
fn missing_request_and_capacity_read_as_zero() {
    let claim = mk_pvc("data", "1Gi").no_request();
    let mut no_capacity = mk_pv("no-capacity", "1Gi");
    if let Some(spec) = no_capacity.spec.as_mut() {
        spec.capacity = None;
    }
    let volumes = vec![mk_pv("some", "1Gi"), no_capacity];
    assert_eq!(
        controller_choice(&claim, &volumes, false, true).as_deref(),
        Some("no-capacity")
    );
}

#[test]
fn checks_before_the_pre_bound_shortcut_apply_to_pre_bound_volumes() {
    let claim = mk_pvc("data", "1Gi").vac("fast");
    let pre_bound =
        |name: &str, size: &str| mk_pv(name, size).claim_ref("myns", "data", "").vac("fast");
    let volumes = vec![
        pre_bound("too-small", "1Mi"),
        pre_bound("block", "1Gi").volume_mode(Some("Block")),
        pre_bound("other-vac", "1Gi").vac("slow"),
        pre_bound("deleting", "1Gi").deleting(),
    ];
    let report = controller(&claim, &volumes);
    assert_eq!(report.chosen, None);
    assert!(matches!(
        reason(&report, "too-small"),
        Rejection::TooSmall { .. }
    ));
    assert_eq!(
        reason(&report, "block"),
        &Rejection::VolumeModeMismatch {
            volume: "Block".into(),
            claim: "Filesystem".into()
        }
    );
    assert_eq!(
        reason(&report, "other-vac"),
        &Rejection::AttributesClassMismatch {
            volume: "slow".into(),
            claim: "fast".into()
        }
    );
    assert_eq!(reason(&report, "deleting"), &Rejection::BeingDeleted);
}

#[test]
fn report_serializes_for_the_explain_command() {
    let claim = mk_pvc("data", "2Gi");
    let volumes = vec![mk_pv("small", "1Gi"), mk_pv("fits", "2Gi")];
    let json = serde_json::to_value(controller(&claim, &volumes)).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "chosen": "fits",
            "rejected": [{
                "volume": "small",
                "reason": "too small: capacity 1Gi is less than the requested 2Gi",
            }],
        })
    );
}

#[test]
fn pre_bound_volume_skips_phase_class_selector_and_wins_over_smaller() {
    let claim = mk_pvc("data", "1Gi")
        .class("gold")
        .select_labels(&[("tier", "gold")]);
    let volumes = vec![
        mk_pv("small-free", "1Gi")
            .class("gold")
            .labels(&[("tier", "gold")]),
        mk_pv("reserved", "10Gi")
            .claim_ref("myns", "data", "")
            .phase(Some("Bound"))
            .class("other"),
        mk_pv("after", "1Gi")
            .class("gold")
            .labels(&[("tier", "gold")]),
    ];
    let report = controller(&claim, &volumes);
    assert_eq!(report.chosen.as_deref(), Some("reserved"));
    let chosen = Rejection::PreBoundVolumeChosen {
        chosen: "reserved".into(),
    };
    assert_eq!(
        reason(&report, "small-free"),
        &chosen,
        "a candidate met before"
    );
    assert_eq!(reason(&report, "after"), &chosen, "not examined after");
    assert_eq!(
        controller_choice(&claim, &volumes, false, true).as_deref(),
        Some("reserved")
    );
}

#[test]
fn delayed_binding_skips_unbound_volumes() {
    let claim = mk_pvc("data", "1Gi");
    let volumes = vec![mk_pv("free", "1Gi")];
    let report = explain_match(
        &claim,
        &volumes,
        MatchForm::Controller {
            delay_binding: true,
        },
        true,
    )
    .expect("search runs");
    assert_eq!(report.chosen, None);
    assert_eq!(reason(&report, "free"), &Rejection::WaitForFirstConsumer);
}

#[test]
fn only_available_volumes_are_bound() {
    let claim = mk_pvc("data", "1Gi");
    let volumes = vec![
        mk_pv("pending", "1Gi").phase(Some("Pending")),
        mk_pv("bound", "1Gi").phase(Some("Bound")),
        mk_pv("released", "1Gi").phase(Some("Released")),
        mk_pv("failed", "1Gi").phase(Some("Failed")),
        mk_pv("no-phase", "1Gi").phase(None),
    ];
    let report = controller(&claim, &volumes);
    assert_eq!(report.chosen, None);
    assert_eq!(
        reason(&report, "released"),
        &Rejection::PhaseNotAvailable {
            phase: "Released".into()
        }
    );
    assert_eq!(
        reason(&report, "no-phase"),
        &Rejection::PhaseNotAvailable {
            phase: String::new()
        }
    );
    assert_eq!(
        reason(&report, "released").to_string(),
        "phase is Released, not Available"
    );
}

#[test]
fn selector_operators_and_mismatch_reason() {
    let volumes = vec![
        mk_pv("gold-a", "1Gi").labels(&[("tier", "gold"), ("zone", "a")]),
        mk_pv("gold-b", "2Gi").labels(&[("tier", "gold"), ("zone", "b")]),
        mk_pv("silver", "3Gi").labels(&[("tier", "silver")]),
        mk_pv("plain", "4Gi"),
    ];
    let choose = |claim: PersistentVolumeClaim| controller_choice(&claim, &volumes, false, true);
    let base = || mk_pvc("data", "1Gi");
    assert_eq!(
        choose(base().select_labels(&[("tier", "silver")])).as_deref(),
        Some("silver")
    );
    assert_eq!(
        choose(base().select_expression("zone", "In", &["b", "c"])).as_deref(),
        Some("gold-b")
    );
    assert_eq!(
        choose(base().select_expression("tier", "NotIn", &["gold"])).as_deref(),
        Some("silver")
    );
    assert_eq!(
        choose(base().select_expression("tier", "DoesNotExist", &[])).as_deref(),
        Some("plain")
    );
    assert_eq!(
        choose(base().select_expression("zone", "Exists", &[])).as_deref(),
        Some("gold-a")
    );
    assert_eq!(
        choose(base().select_labels(&[("tier", "gold")]).select_expression(
            "zone",
            "NotIn",
            &["a"]
        ))
        .as_deref(),
        Some("gold-b"),
        "entries are ANDed"
    );
    assert_eq!(
        choose(base().select_labels(&[])).as_deref(),
        Some("gold-a"),
        "an empty selector matches everything"
    );
    let report = controller(
        &base().select_expression("tier", "In", &["bronze"]),
        &volumes,
    );
    assert_eq!(
        reason(&report, "gold-a"),
        &Rejection::SelectorMismatch {
            requirement: "tier in (bronze)".into()
        }
    );
}

#[test]
fn invalid_selector_is_an_error_naming_the_field() {
    let volumes = vec![mk_pv("pv", "1Gi")];
    let cases = [
        (
            mk_pvc("data", "1Gi").select_expression("tier", "Gt", &["1"]),
            "matchExpressions[0].operator",
        ),
        (
            mk_pvc("data", "1Gi").select_expression("tier", "In", &[]),
            "matchExpressions[0]",
        ),
        (
            mk_pvc("data", "1Gi").select_expression("tier", "Exists", &["x"]),
            "matchExpressions[0]",
        ),
    ];
    for (claim, field) in cases {
        let err = find_best_match_for_claim(&claim, &volumes, false, true).unwrap_err();
        let MatchError::InvalidSelector {
            claim: name,
            source,
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(name, "myns/data");
        let found = match source {
            SelectorError::InvalidOperator { field, .. }
            | SelectorError::InvalidRequirement { field, .. } => field,
        };
        assert_eq!(found, field);
        assert!(
            err.to_string()
                .starts_with(&format!("claim myns/data: spec.selector.{field}"))
        );
    }
}

#[test]
fn invalid_quantities_are_errors_naming_the_field() {
    let err = find_best_match_for_claim(&mk_pvc("data", "1K"), &[mk_pv("pv", "1Gi")], false, true)
        .unwrap_err();
    assert!(matches!(err, MatchError::InvalidRequest { .. }));
    assert!(
        err.to_string()
            .starts_with("claim myns/data: spec.resources.requests.storage: ")
    );
    let err = find_best_match_for_claim(&mk_pvc("data", "1Gi"), &[mk_pv("pv", "ten")], false, true)
        .unwrap_err();
    assert!(matches!(err, MatchError::InvalidCapacity { ref volume, .. } if volume == "pv"));
    assert!(
        err.to_string()
            .starts_with("volume pv: spec.capacity.storage: ")
    );
}

#[test]
fn storage_class_effective_value() {
    let volumes = vec![
        mk_pv("none", "1Gi"),
        mk_pv("empty", "2Gi").class(""),
        mk_pv("gold", "3Gi").class("gold"),
        mk_pv("beta-gold", "4Gi").class("silver").beta_class("gold"),
        mk_pv("beta-empty", "5Gi").class("gold").beta_class(""),
    ];
    let choose = |claim: PersistentVolumeClaim| controller_choice(&claim, &volumes, false, true);
    assert_eq!(
        choose(mk_pvc("c", "1Gi")).as_deref(),
        Some("none"),
        "unset and \"\" match"
    );
    assert_eq!(
        choose(mk_pvc("c", "1536Mi").class("")).as_deref(),
        Some("empty")
    );
    assert_eq!(
        choose(mk_pvc("c", "3500Mi").class("")).as_deref(),
        Some("beta-empty")
    );
    assert_eq!(
        choose(mk_pvc("c", "3500Mi").class("gold")).as_deref(),
        Some("beta-gold")
    );
    assert_eq!(
        choose(mk_pvc("c", "1Gi").class("").beta_class("gold")).as_deref(),
        Some("gold"),
        "the claim's beta annotation wins over spec"
    );
    let report = controller(&mk_pvc("c", "1Gi").class("gold"), &volumes);
    assert_eq!(
        reason(&report, "none").to_string(),
        "storage class mismatch: the volume has no class, the claim asks for class \"gold\""
    );
}

#[test]
fn volume_attributes_class_rules() {
    let volumes = vec![mk_pv("plain", "1Gi"), mk_pv("fast", "1Gi").vac("fast")];
    let claim_fast = mk_pvc("data", "1Gi").vac("fast");
    assert_eq!(
        controller_choice(&claim_fast, &volumes, false, true).as_deref(),
        Some("fast")
    );
    assert_eq!(
        controller_choice(&mk_pvc("data", "1Gi"), &volumes, false, true).as_deref(),
        Some("plain")
    );
    let gate_off = explain_match(
        &mk_pvc("data", "1Gi"),
        &volumes,
        MatchForm::Controller {
            delay_binding: false,
        },
        false,
    )
    .expect("runs");
    assert_eq!(gate_off.chosen.as_deref(), Some("plain"));
    assert_eq!(
        reason(&gate_off, "fast"),
        &Rejection::AttributesClassDisabled {
            volume: "fast".into()
        }
    );
    let err = find_best_match_for_claim(&claim_fast, &volumes, false, false).unwrap_err();
    assert_eq!(
        err,
        MatchError::AttributesClassDisabled {
            claim: "myns/data".into(),
            class: "fast".into()
        }
    );
    // The controller calls FindMatchingVolume only when some access-mode set fits the
    // claim; with none, there is no error.
    let rwx_only = vec![mk_pv("nfs", "1Gi").modes(&[RWX])];
    assert_eq!(
        find_best_match_for_claim(&claim_fast, &rwx_only, false, false),
        Ok(None)
    );
}

#[test]
fn smallest_wins_and_the_first_of_equals() {
    let claim = mk_pvc("data", "1Gi");
    let volumes = vec![
        mk_pv("ten", "10Gi"),
        mk_pv("two-a", "2Gi"),
        mk_pv("two-b", "2048Mi"),
        mk_pv("three", "3Gi"),
    ];
    let report = controller(&claim, &volumes);
    assert_eq!(report.chosen.as_deref(), Some("two-a"));
    assert_eq!(
        reason(&report, "two-b"),
        &Rejection::TieLostToEarlier {
            chosen: "two-a".into()
        }
    );
    assert!(matches!(
        reason(&report, "ten"),
        Rejection::LargerThanChosen { .. }
    ));
    assert_eq!(
        reason(&report, "three").to_string(),
        "fits, but two-a (2Gi) is smaller than this volume (3Gi); the smallest fitting volume wins"
    );
}

#[test]
fn access_mode_sets_are_searched_smallest_first_with_a_fixed_tie_order() {
    let claim = mk_pvc("data", "1Gi").modes(&[]);
    let volumes = vec![
        mk_pv("rwo", "1Gi").modes(&[RWO]),
        mk_pv("rox", "5Gi").modes(&[ROX]),
        mk_pv("both", "1Gi").modes(&[RWO, ROX]),
    ];
    let report = controller(&claim, &volumes);
    // Sets of one mode tie in size; Kubernetes leaves their order open, we take ROX < RWO.
    assert_eq!(report.chosen.as_deref(), Some("rox"));
    assert_eq!(
        reason(&report, "rwo"),
        &Rejection::AccessModeSetNotSearched {
            set: "RWO".into(),
            chosen_set: "ROX".into()
        }
    );
    let rwo_claim = mk_pvc("data", "1Gi").modes(&[RWO]);
    let report = controller(&rwo_claim, &volumes);
    assert_eq!(report.chosen.as_deref(), Some("rwo"));
    assert_eq!(
        reason(&report, "rox"),
        &Rejection::ModesDoNotCover {
            volume: "ROX".into(),
            claim: vec![RWO.into()]
        }
    );
}

#[test]
fn a_larger_fitting_volume_in_a_smaller_mode_set_wins() {
    // "A PVC binds to a much larger PV": the set decides before the size.
    let claim = mk_pvc("data", "1Gi").modes(&[RWO]);
    let volumes = vec![
        mk_pv("tiny-multi", "1Gi").modes(&[RWO, RWX]),
        mk_pv("huge-single", "1Ti").modes(&[RWO]),
    ];
    assert_eq!(
        controller_choice(&claim, &volumes, false, true).as_deref(),
        Some("huge-single")
    );
}

#[test]
fn unknown_access_modes() {
    let volumes = vec![mk_pv("odd", "1Gi").modes(&[RWO, "Sideways"])];
    assert_eq!(
        controller_choice(&mk_pvc("data", "1Gi"), &volumes, false, true).as_deref(),
        Some("odd"),
        "an unknown mode on the volume is ignored by the index key"
    );
    assert_eq!(
        controller_choice(
            &mk_pvc("data", "1Gi").modes(&["Sideways"]),
            &volumes,
            false,
            true
        ),
        None,
        "no index key holds an unknown mode"
    );
    let node = mk_node("n1", &[]);
    assert_eq!(
        scheduler_choice(
            &mk_pvc("data", "1Gi").modes(&["Sideways"]),
            &volumes,
            &node,
            &[],
            true
        )
        .as_deref(),
        Some("odd"),
        "the scheduler compares modes literally"
    );
}

#[test]
fn scheduler_checks_access_modes_affinity_and_exclusions() {
    let node = mk_node("n1", &[("zone", "a")]);
    let claim = mk_pvc("data", "1Gi").modes(&[RWO, ROX]);
    let volumes = vec![
        mk_pv("rwo-only", "1Gi"),
        mk_pv("zone-b", "1Gi")
            .modes(&[RWO, ROX])
            .affinity_in("zone", "b"),
        mk_pv("taken-by-pod", "1Gi").modes(&[RWO, ROX]),
        mk_pv("other-class", "1Gi").modes(&[RWO, ROX]).class("gold"),
        mk_pv("fits", "2Gi")
            .modes(&[RWO, ROX, RWX])
            .affinity_in("zone", "a"),
    ];
    let excluded = BTreeSet::from(["taken-by-pod".to_owned()]);
    let report = explain_match(
        &claim,
        &volumes,
        MatchForm::Scheduler {
            node: &node,
            excluded: &excluded,
        },
        true,
    )
    .expect("runs");
    assert_eq!(report.chosen.as_deref(), Some("fits"));
    assert!(matches!(
        reason(&report, "rwo-only"),
        Rejection::ModesDoNotCover { .. }
    ));
    assert!(matches!(
        reason(&report, "zone-b"),
        Rejection::NodeAffinityMismatch { .. }
    ));
    assert_eq!(reason(&report, "taken-by-pod"), &Rejection::Excluded);
    assert!(matches!(
        reason(&report, "other-class"),
        Rejection::ClassMismatch { .. }
    ));
    assert_eq!(
        scheduler_choice(&claim, &volumes, &node, &["taken-by-pod"], true).as_deref(),
        Some("fits")
    );
}

#[test]
fn scheduler_gives_up_when_the_pre_bound_volume_does_not_fit_the_node() {
    let node = mk_node("n1", &[("zone", "a")]);
    let claim = mk_pvc("data", "1Gi");
    let volumes = vec![
        mk_pv("fits-before", "1Gi"),
        mk_pv("reserved", "1Gi")
            .claim_ref("myns", "data", "")
            .affinity_in("zone", "b"),
        mk_pv("fits-after", "1Gi"),
    ];
    let report = explain_match(
        &claim,
        &volumes,
        MatchForm::Scheduler {
            node: &node,
            excluded: &BTreeSet::new(),
        },
        true,
    )
    .expect("runs");
    assert_eq!(report.chosen, None);
    assert!(matches!(
        reason(&report, "reserved"),
        Rejection::PreBoundNodeMismatch { .. }
    ));
    let ended = Rejection::SearchEndedByPreBound {
        volume: "reserved".into(),
    };
    assert_eq!(reason(&report, "fits-before"), &ended);
    assert_eq!(reason(&report, "fits-after"), &ended);
    assert_eq!(scheduler_choice(&claim, &volumes, &node, &[], true), None);
    // The scheduler lists volumes by class: a pre-bound volume of another class is unseen.
    let other_class = vec![
        mk_pv("reserved", "1Gi")
            .claim_ref("myns", "data", "")
            .class("gold")
            .affinity_in("zone", "b"),
        mk_pv("fits", "1Gi"),
    ];
    assert_eq!(
        scheduler_choice(&claim, &other_class, &node, &[], true).as_deref(),
        Some("fits")
    );
}

#[test]
fn scheduler_takes_a_fitting_pre_bound_volume_of_any_phase() {
    let node = mk_node("n1", &[("zone", "a")]);
    let claim = mk_pvc("data", "1Gi").modes(&[RWX]);
    let volumes = vec![
        mk_pv("free", "1Gi").modes(&[RWX]),
        mk_pv("reserved", "9Gi")
            .claim_ref("myns", "data", "")
            .phase(Some("Bound")),
    ];
    assert_eq!(
        scheduler_choice(&claim, &volumes, &node, &[], true).as_deref(),
        Some("reserved"),
        "access modes are not checked for the pre-bound volume"
    );
}

#[test]
fn every_volume_is_explained_once_in_input_order() {
    let claim = mk_pvc("data", "5Gi").class("gold");
    let volumes: Vec<PersistentVolume> = (0..12)
        .map(|i| {
            let pv = mk_pv(&format!("pv{i}"), &format!("{}Gi", i + 1)).class(if i % 3 == 0 {
                ""
            } else {
                "gold"
            });
            if i % 4 == 0 {
                pv.phase(Some("Released"))
            } else {
                pv
            }
        })
        .collect();
    let report = controller(&claim, &volumes);
    let mut names: Vec<&str> = report.rejected.iter().map(|r| r.volume.as_str()).collect();
    if let Some(chosen) = &report.chosen {
        names.push(chosen);
    }
    names.sort_unstable();
    let mut expected: Vec<String> = (0..12).map(|i| format!("pv{i}")).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let order: Vec<&str> = report.rejected.iter().map(|r| r.volume.as_str()).collect();
    let mut sorted_by_input = order.clone();
    sorted_by_input.sort_by_key(|n| n[2..].parse::<u32>().unwrap_or(0));
    assert_eq!(order, sorted_by_input);
}

#[test]
fn named_volume_hook() {
    let mut claim = mk_pvc("data", "1Gi");
    if let Some(spec) = claim.spec.as_mut() {
        spec.volume_name = Some("wanted".into());
    }
    let volumes = vec![mk_pv("other", "1Gi"), mk_pv("wanted", "1Gi")];
    let ok = explain_named_volume(&claim, &volumes, |_| Ok::<(), String>(()));
    assert_eq!(ok.chosen.as_deref(), Some("wanted"));
    assert_eq!(
        ok.rejected[0].reason,
        Rejection::NotNamedByClaim {
            named: "wanted".into()
        }
    );
    let refused = explain_named_volume(&claim, &volumes, |_| Err("requested PV is too small"));
    assert_eq!(refused.chosen, None);
    assert_eq!(
        refused.rejected[1].reason.to_string(),
        "named by the claim but cannot be bound: requested PV is too small"
    );
}

#[test]
fn pod_claims_are_matched_smallest_request_first_without_sharing() {
    use provisioner_core::binding::find::find_matching_volumes_for_pod;
    let node = mk_node("n1", &[]);
    let volumes = vec![mk_pv("small", "1Gi"), mk_pv("large", "10Gi")];
    let big = mk_pvc("big", "5Gi");
    let little = mk_pvc("little", "1Gi");
    // Matched smallest request first: "little" takes "small", "big" then gets "large".
    let chosen =
        find_matching_volumes_for_pod(&[&big, &little], &volumes, &node, true).expect("runs");
    let names: Vec<Option<&str>> = chosen.iter().map(|pv| name_of(*pv)).collect();
    assert_eq!(names, [Some("large"), Some("small")]);
    let twins = [
        &mk_pvc("a", "1Gi"),
        &mk_pvc("b", "1Gi"),
        &mk_pvc("c", "1Gi"),
    ];
    let chosen = find_matching_volumes_for_pod(&twins, &volumes, &node, true).expect("runs");
    let names: Vec<Option<&str>> = chosen.iter().map(|pv| name_of(*pv)).collect();
    assert_eq!(
        names,
        [Some("small"), Some("large"), None],
        "a volume is never shared"
    );
}
