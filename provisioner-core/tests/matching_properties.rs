//! Property tests: the chosen volume satisfies every constraint, nothing smaller in its
//! access-mode set does, volumes bound elsewhere or being deleted are never chosen, the
//! explanation covers every volume, and the index agrees with the linear reference on
//! random clusters, including after incremental updates.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use proptest::prelude::*;
use provisioner_core::binding::access_modes::AccessModeSet;
use provisioner_core::binding::find::{MatchForm, Rejection, explain_match, find_match};
use provisioner_core::binding::index::VolumeIndex;
use provisioner_core::binding::label_selector::LabelSelector;
use provisioner_core::binding::node_affinity::check_node_affinity;
use provisioner_core::binding::predicates::{
    access_modes_satisfied, claim_access_modes, claim_class, claim_request, claim_vac,
    is_volume_bound_to_claim, volume_access_modes, volume_capacity, volume_class,
    volume_mode_mismatch, volume_phase, volume_vac,
};
use support::*;

const SIZES: &[&str] = &[
    "500M",
    "1G",
    "1000Mi",
    "1Gi",
    "1024Mi",
    "1073741824",
    "1.5Gi",
    "2Gi",
    "2G",
    "5Gi",
    "10Gi",
    "10G",
    "100Gi",
    "1Ti",
    "800E",
    "0",
];
const CLASSES: &[&str] = &["", "gold", "silver"];
const CLAIMS: &[&str] = &["c0", "c1", "c2"];
const UIDS: &[&str] = &["", "u0", "u1"];
const MODES: &[&str] = &[RWO, ROX, RWX, RWOP];

#[derive(Debug, Clone)]
struct VolumeSpec {
    size: usize,
    modes: Vec<usize>,
    class: usize,
    beta_class: Option<usize>,
    claim_ref: Option<(usize, usize, bool)>,
    phase: usize,
    block: Option<bool>,
    vac: Option<bool>,
    deleting: bool,
    tier: Option<bool>,
    zone: Option<bool>,
}

fn volume_spec() -> impl Strategy<Value = VolumeSpec> {
    (
        (
            0..SIZES.len(),
            proptest::collection::vec(0..MODES.len(), 0..3),
            0..CLASSES.len(),
        ),
        (
            proptest::option::weighted(0.1, 0..CLASSES.len()),
            proptest::option::weighted(0.3, (0..CLAIMS.len(), 0..UIDS.len(), any::<bool>())),
            0..6usize,
        ),
        (
            proptest::option::of(any::<bool>()),
            proptest::option::weighted(0.2, any::<bool>()),
            proptest::bool::weighted(0.1),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (size, modes, class),
                (beta_class, claim_ref, phase),
                (block, vac, deleting, tier, zone),
            )| {
                VolumeSpec {
                    size,
                    modes,
                    class,
                    beta_class,
                    claim_ref,
                    phase,
                    block,
                    vac,
                    deleting,
                    tier,
                    zone,
                }
            },
        )
}

fn build_volume(i: usize, spec: &VolumeSpec) -> PersistentVolume {
    let modes: Vec<&str> = spec.modes.iter().map(|&m| MODES[m]).collect();
    let mut pv = mk_pv(&format!("pv{i}"), SIZES[spec.size])
        .modes(&modes)
        .class(CLASSES[spec.class]);
    if let Some(beta) = spec.beta_class {
        pv = pv.beta_class(CLASSES[beta]);
    }
    if let Some((claim, uid, other_namespace)) = spec.claim_ref {
        let namespace = if other_namespace { "elsewhere" } else { "myns" };
        pv = pv.claim_ref(namespace, CLAIMS[claim], UIDS[uid]);
    }
    pv = pv.phase(
        [
            Some("Available"),
            Some("Available"),
            Some("Bound"),
            Some("Released"),
            Some("Pending"),
            None,
        ][spec.phase],
    );
    pv = pv.volume_mode(spec.block.map(|b| if b { "Block" } else { "Filesystem" }));
    if let Some(fast) = spec.vac {
        pv = pv.vac(if fast { "fast" } else { "" });
    }
    if spec.deleting {
        pv = pv.deleting();
    }
    let mut labels = Vec::new();
    if let Some(gold) = spec.tier {
        labels.push(("tier", if gold { "gold" } else { "silver" }));
    }
    if !labels.is_empty() {
        pv = pv.labels(&labels);
    }
    if let Some(a) = spec.zone {
        pv = pv.affinity_in("zone", if a { "a" } else { "b" });
    }
    pv
}

#[derive(Debug, Clone)]
struct ClaimSpec {
    name: usize,
    uid: usize,
    size: usize,
    modes: Vec<usize>,
    unknown_mode: bool,
    class: usize,
    selector: Option<usize>,
    block: bool,
    vac: bool,
}

fn claim_spec() -> impl Strategy<Value = ClaimSpec> {
    (
        (0..CLAIMS.len(), 1..UIDS.len(), 0..SIZES.len() - 2),
        proptest::collection::vec(0..MODES.len(), 0..3),
        proptest::bool::weighted(0.05),
        0..CLASSES.len(),
        proptest::option::weighted(0.3, 0..3usize),
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |((name, uid, size), modes, unknown_mode, class, selector, block, vac)| ClaimSpec {
                name,
                uid,
                size,
                modes,
                unknown_mode,
                class,
                selector,
                block,
                vac,
            },
        )
}

fn build_claim(spec: &ClaimSpec) -> PersistentVolumeClaim {
    let mut modes: Vec<&str> = spec.modes.iter().map(|&m| MODES[m]).collect();
    if spec.unknown_mode {
        modes.push("Sideways");
    }
    let mut claim = mk_pvc(CLAIMS[spec.name], SIZES[spec.size])
        .uid(UIDS[spec.uid])
        .modes(&modes)
        .class(CLASSES[spec.class]);
    claim = match spec.selector {
        Some(0) => claim.select_labels(&[("tier", "gold")]),
        Some(1) => claim.select_expression("tier", "NotIn", &["gold"]),
        Some(_) => claim.select_expression("tier", "Exists", &[]),
        None => claim,
    };
    if spec.block {
        claim = claim.volume_mode(Some("Block"));
    }
    if spec.vac {
        claim = claim.vac("fast");
    }
    claim
}

fn cluster() -> impl Strategy<Value = (Vec<PersistentVolume>, Vec<PersistentVolumeClaim>)> {
    (
        proptest::collection::vec(volume_spec(), 0..40),
        proptest::collection::vec(claim_spec(), 1..6),
    )
        .prop_map(|(volumes, claims)| {
            (
                volumes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| build_volume(i, s))
                    .collect(),
                claims.iter().map(build_claim).collect(),
            )
        })
}

fn name(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or("")
}

fn names(chosen: Option<&PersistentVolume>) -> Option<String> {
    chosen.map(|pv| name(pv).to_owned())
}

/// Every filter an unbound volume must pass in the controller's path.
fn fits_unbound(claim: &PersistentVolumeClaim, pv: &PersistentVolume, vac_enabled: bool) -> bool {
    let selector = claim
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(|s| LabelSelector::from_api(s).expect("valid selector"));
    let no_labels = BTreeMap::new();
    pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none())
        && volume_capacity(pv).expect("valid") >= claim_request(claim).expect("valid")
        && !volume_mode_mismatch(claim, pv)
        && vac_ok(claim, pv, vac_enabled)
        && pv.metadata.deletion_timestamp.is_none()
        && volume_phase(pv) == "Available"
        && selector.is_none_or(|s| s.matches(pv.metadata.labels.as_ref().unwrap_or(&no_labels)))
        && volume_class(pv) == claim_class(claim)
}

fn vac_ok(claim: &PersistentVolumeClaim, pv: &PersistentVolume, vac_enabled: bool) -> bool {
    if vac_enabled {
        claim_vac(claim) == volume_vac(pv)
    } else {
        volume_vac(pv).is_empty()
    }
}

fn fits_pre_bound(claim: &PersistentVolumeClaim, pv: &PersistentVolume, vac_enabled: bool) -> bool {
    is_volume_bound_to_claim(pv, claim)
        && volume_capacity(pv).expect("valid") >= claim_request(claim).expect("valid")
        && !volume_mode_mismatch(claim, pv)
        && vac_ok(claim, pv, vac_enabled)
        && pv.metadata.deletion_timestamp.is_none()
}

fn never_choosable(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let claimed_elsewhere = pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some())
        && !is_volume_bound_to_claim(pv, claim);
    claimed_elsewhere || pv.metadata.deletion_timestamp.is_some()
}

fn node(zone_a: bool) -> Node {
    mk_node("n1", &[("zone", if zone_a { "a" } else { "b" })])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn controller_choice_is_sound_and_minimal(
        (volumes, claims) in cluster(),
        delay_binding in proptest::bool::weighted(0.2),
        vac_enabled in proptest::bool::weighted(0.8),
    ) {
        for claim in &claims {
            let Ok(chosen) = find_match(claim, &volumes, MatchForm::Controller { delay_binding }, vac_enabled) else {
                prop_assert!(!vac_enabled && !claim_vac(claim).is_empty(), "only the VAC gate can fail");
                continue;
            };
            let Some(chosen) = chosen else { continue };
            prop_assert!(!never_choosable(claim, chosen));
            if is_volume_bound_to_claim(chosen, claim) {
                prop_assert!(fits_pre_bound(claim, chosen, vac_enabled));
                continue;
            }
            prop_assert!(!delay_binding, "delayed binding picks only pre-bound volumes");
            prop_assert!(fits_unbound(claim, chosen, vac_enabled));
            prop_assert!(access_modes_satisfied(claim, chosen) || claim_access_modes(claim).is_empty());
            let set = AccessModeSet::from_modes(volume_access_modes(chosen));
            let capacity = volume_capacity(chosen).expect("valid");
            for pv in &volumes {
                if AccessModeSet::from_modes(volume_access_modes(pv)) == set && fits_unbound(claim, pv, vac_enabled) {
                    prop_assert!(volume_capacity(pv).expect("valid") >= capacity, "{} is smaller than {}", name(pv), name(chosen));
                }
                // A volume pre-bound to the claim in this set or one searched earlier would
                // have been chosen instead.
                let requested = AccessModeSet::requested(claim_access_modes(claim)).expect("known modes");
                let pre_bound_set = AccessModeSet::from_modes(volume_access_modes(pv));
                if fits_pre_bound(claim, pv, vac_enabled) && pre_bound_set.contains_all(requested) {
                    prop_assert!(pre_bound_set.search_order(set).is_gt(), "pre-bound {} passed over", name(pv));
                }
            }
        }
    }

    #[test]
    fn scheduler_choice_is_sound(
        (volumes, claims) in cluster(),
        zone_a in any::<bool>(),
        excluded in proptest::collection::btree_set(0..40usize, 0..4),
    ) {
        let node = node(zone_a);
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let excluded: BTreeSet<String> = excluded.iter().map(|i| format!("pv{i}")).collect();
        for claim in &claims {
            let form = MatchForm::Scheduler { node: &node, excluded: &excluded };
            let Ok(chosen) = find_match(claim, &volumes, form, true) else { continue };
            let Some(chosen) = chosen else { continue };
            prop_assert!(!never_choosable(claim, chosen));
            prop_assert!(!excluded.contains(name(chosen)));
            prop_assert_eq!(volume_class(chosen), claim_class(claim));
            prop_assert!(check_node_affinity(chosen, &labels).is_ok());
            if !is_volume_bound_to_claim(chosen, claim) {
                prop_assert!(fits_unbound(claim, chosen, true));
                prop_assert!(access_modes_satisfied(claim, chosen));
                let capacity = volume_capacity(chosen).expect("valid");
                for pv in &volumes {
                    if fits_unbound(claim, pv, true)
                        && access_modes_satisfied(claim, pv)
                        && !excluded.contains(name(pv))
                        && check_node_affinity(pv, &labels).is_ok()
                    {
                        prop_assert!(volume_capacity(pv).expect("valid") >= capacity);
                    }
                }
            }
        }
    }

    #[test]
    fn explanation_agrees_and_covers_every_volume(
        (volumes, claims) in cluster(),
        zone_a in any::<bool>(),
        delay_binding in any::<bool>(),
    ) {
        let node = node(zone_a);
        let excluded = BTreeSet::from(["pv1".to_owned()]);
        for claim in &claims {
            for form in [
                MatchForm::Controller { delay_binding },
                MatchForm::Scheduler { node: &node, excluded: &excluded },
                MatchForm::Direct { node: None, excluded: &excluded, delay_binding },
            ] {
                let chosen = find_match(claim, &volumes, form, true);
                let report = explain_match(claim, &volumes, form, true);
                match (chosen, report) {
                    (Ok(chosen), Ok(report)) => {
                        prop_assert_eq!(names(chosen), report.chosen.clone());
                        let mut seen: Vec<&str> = report.rejected.iter().map(|r| r.volume.as_str()).collect();
                        seen.extend(report.chosen.as_deref());
                        seen.sort_unstable();
                        let mut all: Vec<&str> = volumes.iter().map(name).collect();
                        all.sort_unstable();
                        prop_assert_eq!(seen, all);
                        for rejected in &report.rejected {
                            prop_assert!(!rejected.reason.to_string().is_empty());
                            // The report's guard value never shows: every volume got a reason.
                            let guard = matches!(&rejected.reason, Rejection::ModesDoNotCover { volume, claim } if volume.is_empty() && claim.is_empty());
                            prop_assert!(!guard, "{} has no reason", rejected.volume);
                        }
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "search {:?} and explanation {:?} disagree", a.map(names), b),
                }
            }
        }
    }

    #[test]
    fn index_agrees_with_the_linear_search(
        (volumes, claims) in cluster(),
        delay_binding in proptest::bool::weighted(0.2),
        vac_enabled in proptest::bool::weighted(0.8),
        zone_a in any::<bool>(),
        excluded in proptest::collection::btree_set(0..40usize, 0..4),
    ) {
        let index = VolumeIndex::from_volumes(volumes.clone()).expect("valid volumes");
        let node = node(zone_a);
        let excluded: BTreeSet<String> = excluded.iter().map(|i| format!("pv{i}")).collect();
        for claim in &claims {
            let linear = find_match(claim, &volumes, MatchForm::Controller { delay_binding }, vac_enabled);
            let indexed = index.find_best_match_for_claim(claim, delay_binding, vac_enabled);
            prop_assert_eq!(linear.map(names), indexed.map(names));
            let form = MatchForm::Scheduler { node: &node, excluded: &excluded };
            let linear = find_match(claim, &volumes, form, vac_enabled);
            let indexed = index.find_matching_volume_for_node(claim, &node, &excluded, vac_enabled);
            prop_assert_eq!(linear.map(names), indexed.map(names));
        }
    }

    #[test]
    fn index_agrees_after_incremental_updates(
        initial in proptest::collection::vec(volume_spec(), 0..30),
        updates in proptest::collection::vec((0..40usize, proptest::option::of(volume_spec())), 0..30),
        claims in proptest::collection::vec(claim_spec(), 1..4),
    ) {
        let mut index = VolumeIndex::new();
        // The reference list: replaced volumes keep their place, removed ones leave it,
        // new ones go to the end, exactly as the index orders them.
        let mut reference: Vec<PersistentVolume> = Vec::new();
        for (i, spec) in initial.iter().enumerate() {
            let pv = build_volume(i, spec);
            index.insert(pv.clone()).expect("valid");
            reference.push(pv);
        }
        for (i, update) in &updates {
            let pv_name = format!("pv{i}");
            let position = reference.iter().position(|pv| name(pv) == pv_name);
            match (update, position) {
                (Some(spec), Some(p)) => {
                    let pv = build_volume(*i, spec);
                    prop_assert!(index.insert(pv.clone()).expect("valid").is_some());
                    reference[p] = pv;
                }
                (Some(spec), None) => {
                    let pv = build_volume(*i, spec);
                    prop_assert!(index.insert(pv.clone()).expect("valid").is_none());
                    reference.push(pv);
                }
                (None, Some(p)) => {
                    prop_assert!(index.remove(&pv_name).is_some());
                    reference.remove(p);
                }
                (None, None) => prop_assert!(index.remove(&pv_name).is_none()),
            }
        }
        prop_assert_eq!(index.len(), reference.len());
        let order: Vec<&str> = index.volumes().map(name).collect();
        let expected: Vec<&str> = reference.iter().map(name).collect();
        prop_assert_eq!(order, expected);
        let node = node(true);
        let excluded = BTreeSet::new();
        for claim in claims.iter().map(build_claim) {
            let linear = find_match(&claim, &reference, MatchForm::Controller { delay_binding: false }, true);
            let indexed = index.find_best_match_for_claim(&claim, false, true);
            prop_assert_eq!(linear.map(names), indexed.map(names));
            let form = MatchForm::Scheduler { node: &node, excluded: &excluded };
            let linear = find_match(&claim, &reference, form, true);
            let indexed = index.find_matching_volume_for_node(&claim, &node, &excluded, true);
            prop_assert_eq!(linear.map(names), indexed.map(names));
        }
    }
}
