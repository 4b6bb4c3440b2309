//! Property: the state machines, run in any order with crashes between any two writes,
//! converge, and never point a claim and a volume at different partners.
//!
//! The cluster starts as users create it: claims with or without `spec.volumeName`, volumes
//! free or pre-bound by `claimRef` (by name, by UID, or to a claim's earlier incarnation),
//! of mixed sizes, access modes, volume modes and classes, and no controller annotations.
//! Random steps then sync one claim or one volume and apply its plan up to a random crash
//! point, or delete a claim and create it again with a new UID. Finally every object is
//! synced until nothing changes.
//!
//! Invariants, checked after every step:
//! - **Bound means mutually bound.** A claim in phase Bound has `bind-completed`, names a
//!   volume V in `spec.volumeName`, V exists and is Bound, and V's `claimRef` names the claim
//!   (namespace, name) with the claim's UID.
//! - **No double booking.** At most one claim with `bind-completed` names any volume.
//! - **No stealing** (checked on every write). The controller never changes a claim's
//!   non-empty `spec.volumeName`, and never points a volume whose `claimRef` carries a UID at
//!   another claim (it may only drop the `claimRef`, or only its UID).
//!
//! And at the fixpoint:
//! - **Pairs are complete.** A claim and a volume that point at each other (volume name,
//!   and `claimRef` with the claim's UID) are both Bound, and the claim has `bind-completed`.
//! - **No different partners.** A volume whose `claimRef` carries the UID of an existing
//!   claim is either named by that claim or that claim names no volume.

mod binder_support;

use binder_support::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use proptest::prelude::*;
use provisioner_core::binding::sync::{
    ANN_BIND_COMPLETED, ClaimContext, ObjectSet, SyncOptions, Write, sync_claim, sync_volume,
};

const CLASSES: [&str; 3] = ["", "wait", "nfs"];
const SIZES: [&str; 3] = ["1Gi", "2Gi", "5Gi"];
const MODE_SETS: [&[&str]; 4] = [&[RWO], &[RWO, ROX], &[RWX], &[RWO, RWX]];

fn storage_classes() -> Vec<StorageClass> {
    vec![
        mk_class("wait", "example.com/nfs", Some("WaitForFirstConsumer")),
        mk_class("nfs", "example.com/nfs", Some("Immediate")),
    ]
}

#[derive(Debug, Clone)]
struct ClaimSpec {
    size: usize,
    modes: usize,
    class: Option<usize>,
    block: bool,
    names_volume: Option<usize>,
}

#[derive(Debug, Clone)]
enum PreBound {
    No,
    ByName(usize),
    ByUid(usize),
    ToEarlierClaim(usize),
}

#[derive(Debug, Clone)]
struct VolumeSpec {
    size: usize,
    modes: usize,
    class: usize,
    block: bool,
    pre_bound: PreBound,
    delete_policy: bool,
    pending: bool,
}

#[derive(Debug, Clone)]
enum Step {
    SyncClaim {
        claim: usize,
        crash_after: Option<usize>,
    },
    SyncVolume {
        volume: usize,
        crash_after: Option<usize>,
    },
    RecreateClaim {
        claim: usize,
    },
}

fn claim_spec(volumes: usize) -> impl Strategy<Value = ClaimSpec> {
    (
        0..SIZES.len(),
        0..MODE_SETS.len(),
        prop::option::of(0..CLASSES.len()),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.3, 0..volumes),
    )
        .prop_map(|(size, modes, class, block, names_volume)| ClaimSpec {
            size,
            modes,
            class,
            block,
            names_volume,
        })
}

fn volume_spec(claims: usize) -> impl Strategy<Value = VolumeSpec> {
    let pre_bound = prop_oneof![
        4 => Just(PreBound::No),
        1 => (0..claims).prop_map(PreBound::ByName),
        1 => (0..claims).prop_map(PreBound::ByUid),
        1 => (0..claims).prop_map(PreBound::ToEarlierClaim),
    ];
    (
        0..SIZES.len(),
        0..MODE_SETS.len(),
        0..CLASSES.len(),
        prop::bool::weighted(0.15),
        pre_bound,
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(size, modes, class, block, pre_bound, delete_policy, pending)| VolumeSpec {
                size,
                modes,
                class,
                block,
                pre_bound,
                delete_policy,
                pending,
            },
        )
}

fn steps(claims: usize, volumes: usize) -> impl Strategy<Value = Vec<Step>> {
    let crash = prop::option::weighted(0.4, 0..4usize);
    let step = prop_oneof![
        5 => (0..claims, crash.clone()).prop_map(|(claim, crash_after)| Step::SyncClaim { claim, crash_after }),
        4 => (0..volumes, crash).prop_map(|(volume, crash_after)| Step::SyncVolume { volume, crash_after }),
        1 => (0..claims).prop_map(|claim| Step::RecreateClaim { claim }),
    ];
    prop::collection::vec(step, 0..40)
}

fn scenario() -> impl Strategy<Value = (Vec<ClaimSpec>, Vec<VolumeSpec>, Vec<Step>)> {
    (1..=3usize, 1..=4usize).prop_flat_map(|(claims, volumes)| {
        (
            prop::collection::vec(claim_spec(volumes), claims),
            prop::collection::vec(volume_spec(claims), volumes),
            steps(claims, volumes),
        )
    })
}

fn claim_name(i: usize) -> String {
    format!("claim-{i}")
}

fn volume_name(i: usize) -> String {
    format!("volume-{i}")
}

fn build_claim(i: usize, spec: &ClaimSpec, generation: usize) -> PersistentVolumeClaim {
    let mut claim = mk_claim(
        &claim_name(i),
        &format!("uid-{i}-{generation}"),
        SIZES[spec.size],
    )
    .modes(MODE_SETS[spec.modes]);
    if let Some(class) = spec.class {
        claim = claim.class(CLASSES[class]);
    }
    if spec.block {
        claim = claim.mode(BLOCK);
    }
    if let Some(volume) = spec.names_volume {
        claim = claim.volume(&volume_name(volume));
    }
    claim
}

fn build_volume(i: usize, spec: &VolumeSpec) -> PersistentVolume {
    let mut volume = mk_volume(&volume_name(i), SIZES[spec.size])
        .modes(MODE_SETS[spec.modes])
        .class(CLASSES[spec.class]);
    if spec.block {
        volume = volume.mode(BLOCK);
    }
    if spec.delete_policy {
        volume = volume.policy(DELETE);
    }
    if spec.pending {
        volume = volume.phase(PENDING);
    }
    match spec.pre_bound {
        PreBound::No => volume,
        PreBound::ByName(c) => volume.bound_to(&claim_name(c), ""),
        PreBound::ByUid(c) => volume.bound_to(&claim_name(c), &format!("uid-{c}-0")),
        PreBound::ToEarlierClaim(c) => volume.bound_to(&claim_name(c), "uid-gone"),
    }
}

fn has_bind_completed(claim: &PersistentVolumeClaim) -> bool {
    claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED))
}

fn volume_name_of(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The claimRef as (namespace, name, uid).
fn claim_ref(volume: &PersistentVolume) -> Option<(&str, &str, &str)> {
    let r = volume.spec.as_ref()?.claim_ref.as_ref()?;
    Some((
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or(""),
        r.uid.as_deref().unwrap_or(""),
    ))
}

fn uid_of(claim: &PersistentVolumeClaim) -> &str {
    claim.metadata.uid.as_deref().unwrap_or("")
}

fn points_at(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    claim_ref(volume).is_some_and(|(ns, name, uid)| {
        ns == NS && Some(name) == claim.metadata.name.as_deref() && uid == uid_of(claim)
    })
}

fn check_always(cluster: &ObjectSet) -> Result<(), TestCaseError> {
    for claim in cluster.claims() {
        if claim_phase(claim) == BOUND {
            let name = volume_name_of(claim);
            prop_assert!(
                has_bind_completed(claim),
                "Bound claim without bind-completed: {claim:?}"
            );
            let volume = cluster.volume(name);
            prop_assert!(
                volume.is_some(),
                "Bound claim names a missing volume {name:?}"
            );
            let volume = volume.expect("checked");
            prop_assert!(
                points_at(volume, claim),
                "Bound claim's volume points elsewhere: {volume:?}"
            );
            prop_assert_eq!(volume_phase(volume), BOUND);
        }
    }
    for volume in cluster.volumes() {
        let name = volume.metadata.name.as_deref();
        let bookings = cluster
            .claims()
            .filter(|c| has_bind_completed(c) && Some(volume_name_of(c)) == name)
            .count();
        prop_assert!(
            bookings <= 1,
            "{bookings} claims completed binding to {name:?}"
        );
    }
    Ok(())
}

/// Applies one write after checking that it steals nothing.
fn apply_checked(cluster: &mut ObjectSet, write: &Write) -> Result<(), TestCaseError> {
    match write {
        Write::UpdateClaim(new) => {
            let name = new.metadata.name.as_deref().unwrap_or("");
            let old = cluster.claim(NS, name).expect("claim exists");
            let before = volume_name_of(old);
            prop_assert!(
                before.is_empty() || before == volume_name_of(new),
                "claim {name} moved from {before:?} to {:?}",
                volume_name_of(new)
            );
        }
        Write::UpdateVolume(new) => {
            let name = new.metadata.name.as_deref().unwrap_or("");
            let old = cluster.volume(name).expect("volume exists");
            if let Some((ns, claim, uid)) = claim_ref(old)
                && !uid.is_empty()
            {
                let allowed = match claim_ref(new) {
                    None => true,
                    Some((new_ns, new_claim, new_uid)) => {
                        new_ns == ns && new_claim == claim && (new_uid == uid || new_uid.is_empty())
                    }
                };
                prop_assert!(
                    allowed,
                    "volume {name} taken from {claim}/{uid}: {:?}",
                    claim_ref(new)
                );
            }
        }
        _ => {}
    }
    cluster.apply(write).expect("the objects exist");
    Ok(())
}

fn sync_once(
    cluster: &mut ObjectSet,
    step: &Step,
    classes: &[StorageClass],
    options: &SyncOptions,
) -> Result<bool, TestCaseError> {
    let (plan, crash_after) = match *step {
        Step::SyncClaim { claim, crash_after } => {
            let Some(claim) = cluster.claim(NS, &claim_name(claim)).cloned() else {
                return Ok(false);
            };
            let context = ClaimContext::new(cluster.volumes(), options).with_classes(classes);
            (sync_claim(&claim, &context), crash_after)
        }
        Step::SyncVolume {
            volume,
            crash_after,
        } => {
            let Some(volume) = cluster.volume(&volume_name(volume)).cloned() else {
                return Ok(false);
            };
            (
                sync_volume(&volume, cluster.claim_lookup(&volume), options),
                crash_after,
            )
        }
        Step::RecreateClaim { .. } => unreachable!("not a sync"),
    };
    let limit = crash_after.unwrap_or(usize::MAX).min(plan.writes.len());
    for write in &plan.writes[..limit] {
        apply_checked(cluster, write)?;
    }
    Ok(plan.changes_objects())
}

fn check_fixpoint(cluster: &ObjectSet) -> Result<(), TestCaseError> {
    for volume in cluster.volumes() {
        let Some((_, claim, uid)) = claim_ref(volume) else {
            continue;
        };
        let Some(claim) = cluster
            .claim(NS, claim)
            .filter(|c| !uid.is_empty() && uid_of(c) == uid)
        else {
            continue;
        };
        let named = volume_name_of(claim);
        prop_assert!(
            named.is_empty() || Some(named) == volume.metadata.name.as_deref(),
            "volume {:?} bound to a claim naming {named:?}",
            volume.metadata.name
        );
        if Some(named) == volume.metadata.name.as_deref() {
            prop_assert_eq!(claim_phase(claim), BOUND, "claim of a complete pair");
            prop_assert_eq!(volume_phase(volume), BOUND, "volume of a complete pair");
            prop_assert!(has_bind_completed(claim));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn syncing_with_crashes_converges_and_never_mispairs((claims, volumes, steps) in scenario()) {
        let classes = storage_classes();
        let options = SyncOptions::default();
        let mut generation = vec![0usize; claims.len()];
        let mut cluster = ObjectSet::new(
            volumes.iter().enumerate().map(|(i, spec)| build_volume(i, spec)),
            claims.iter().enumerate().map(|(i, spec)| build_claim(i, spec, 0)),
        );
        check_always(&cluster)?;
        for step in &steps {
            if let Step::RecreateClaim { claim } = *step {
                cluster.delete_claim(NS, &claim_name(claim));
                generation[claim] += 1;
                cluster.put_claim(build_claim(claim, &claims[claim], generation[claim]));
            } else {
                sync_once(&mut cluster, step, &classes, &options)?;
            }
            check_always(&cluster)?;
        }

        // Periodic resync without crashes until nothing changes.
        let mut stable = false;
        for _ in 0..12 {
            let mut changed = false;
            for claim in 0..claims.len() {
                changed |= sync_once(&mut cluster, &Step::SyncClaim { claim, crash_after: None }, &classes, &options)?;
                check_always(&cluster)?;
            }
            for volume in 0..volumes.len() {
                changed |= sync_once(&mut cluster, &Step::SyncVolume { volume, crash_after: None }, &classes, &options)?;
                check_always(&cluster)?;
            }
            if !changed {
                stable = true;
                break;
            }
        }
        prop_assert!(stable, "no fixpoint: {cluster:?}");
        check_fixpoint(&cluster)?;
    }
}
