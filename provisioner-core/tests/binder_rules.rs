//! The state machines' rules beyond upstream's binder table: provisioning trigger, default
//! class, delayed binding events, reclaim policies, the bind write rules, the annotation
//! matrix and the typed named-volume outcomes.

mod binder_support;

use std::collections::BTreeSet;

use binder_support::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use provisioner_core::binding::sync::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED as BC, ANN_BOUND_BY_CONTROLLER as BBC,
    ANN_MIGRATED_TO, ANN_PRE_RESIZE_CAPACITY, ANN_PROVISIONED_BY, ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER, ClaimContext, ClaimKey, EventObject, EventType, NamedVolumeOutcome,
    ObjectSet, Operation, Plan, SyncError, SyncOptions, Then, VolumeMismatch, Write, bind,
    check_volume_satisfy_claim, named_volume_outcome, sync_claim, sync_volume,
};

fn claim_plan(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
    options: &SyncOptions,
) -> Plan {
    sync_claim(
        claim,
        &ClaimContext::new(volumes, options).with_classes(classes),
    )
}

fn volume_plan(cluster: &ObjectSet, name: &str, options: &SyncOptions) -> Plan {
    let volume = cluster.volume(name).expect("volume");
    sync_volume(volume, cluster.claim_lookup(volume), options)
}

fn events(plan: &Plan) -> Vec<(EventType, String, String)> {
    plan.events()
        .map(|e| (e.event_type, e.reason.clone(), e.message.clone()))
        .collect()
}

fn applied(mut cluster: ObjectSet, plan: &Plan) -> ObjectSet {
    plan.apply(|w| cluster.apply(w)).expect("applies");
    cluster
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

// --- Unbound claims: delayed binding, default class, provisioning -----------------------

#[test]
fn class_without_binding_mode_is_an_error() {
    let claim = mk_claim("c", "u", "1Gi").class("odd");
    let plan = claim_plan(
        &claim,
        &[],
        &[mk_class("odd", "example.com/nfs", None)],
        &SyncOptions::default(),
    );
    assert!(plan.writes.is_empty());
    assert_eq!(
        plan.then,
        Then::Retry(SyncError::ClassWithoutBindingMode {
            class: "odd".into()
        })
    );
}

#[test]
fn unknown_class_binds_immediately_and_fails_provisioning() {
    let claim = mk_claim("c", "u", "1Gi").class("missing");
    let plan = claim_plan(&claim, &[], &[], &SyncOptions::default());
    assert_eq!(
        events(&plan),
        [(
            EventType::Warning,
            "ProvisioningFailed".to_owned(),
            "storageclass.storage.k8s.io \"missing\" not found".to_owned()
        )]
    );
    assert!(
        !plan.changes_objects(),
        "provisioning leaves the status alone"
    );
}

#[test]
fn waiting_for_a_consumer_names_unscheduled_pods() {
    let claim = mk_claim("c", "u", "1Gi").class("wait").phase(BOUND);
    let classes = [mk_class(
        "wait",
        "example.com/nfs",
        Some("WaitForFirstConsumer"),
    )];
    let options = SyncOptions::default();
    let expectations: [(&[String], &str, &str); 3] = [
        (
            &[],
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        ),
        (
            &["web-0".to_owned()],
            "WaitForPodScheduled",
            "waiting for pod web-0 to be scheduled",
        ),
        (
            &["web-0".to_owned(), "web-1".to_owned()],
            "WaitForPodScheduled",
            "waiting for pods web-0,web-1 to be scheduled",
        ),
    ];
    for (pods, reason, message) in expectations {
        let context = ClaimContext::new(&[][..], &options)
            .with_classes(&classes)
            .with_unscheduled_pods(pods);
        let plan = sync_claim(&claim, &context);
        assert_eq!(
            events(&plan),
            [(EventType::Normal, reason.to_owned(), message.to_owned())]
        );
        // Then the claim is set Pending (its bound-looking status cleared).
        let Some(Write::UpdateClaimStatus(after)) = plan.writes.last() else {
            panic!("expected a status write, got {:?}", plan.writes);
        };
        let status = after.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some(PENDING));
        assert_eq!(
            (status.access_modes.as_ref(), status.capacity.as_ref()),
            (None, None)
        );
    }
}

#[test]
fn selected_node_hands_a_delayed_claim_to_provisioning() {
    let claim = mk_claim("c", "u", "1Gi")
        .class("wait")
        .ann_value(ANN_SELECTED_NODE, "node-1");
    let classes = [mk_class(
        "wait",
        "example.com/nfs",
        Some("WaitForFirstConsumer"),
    )];
    let plan = claim_plan(&claim, &[], &classes, &SyncOptions::default());
    let reasons: Vec<_> = plan.events().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["ExternalProvisioning"]);
}

#[test]
fn delayed_claim_ignores_free_volumes() {
    let volume = mk_volume("v", "1Gi").class("wait");
    let claim = mk_claim("c", "u", "1Gi")
        .class("wait")
        .ann_value(ANN_SELECTED_NODE, "node-1");
    let classes = [mk_class(
        "wait",
        "example.com/nfs",
        Some("WaitForFirstConsumer"),
    )];
    let plan = claim_plan(&claim, &[volume], &classes, &SyncOptions::default());
    assert!(
        !plan
            .writes
            .iter()
            .any(|w| matches!(w, Write::UpdateVolume(_))),
        "the scheduler, not the PV controller, binds free volumes of delayed claims"
    );
}

#[test]
fn external_provisioning_sets_both_annotations_once_and_reports_every_sync() {
    let claim = mk_claim("c", "u", "1Gi").class("nfs");
    let classes = [mk_class("nfs", "example.com/nfs", Some("Immediate"))];
    let options = SyncOptions::default();
    let first = claim_plan(&claim, &[], &classes, &options);
    let [Write::UpdateClaim(annotated), Write::Event(event)] = first.writes.as_slice() else {
        panic!(
            "expected the annotation write and an event, got {:?}",
            first.writes
        );
    };
    assert_eq!(
        annotation(&annotated.metadata, ANN_STORAGE_PROVISIONER),
        Some("example.com/nfs")
    );
    assert_eq!(
        annotation(&annotated.metadata, ANN_BETA_STORAGE_PROVISIONER),
        Some("example.com/nfs")
    );
    assert_eq!(event.reason, "ExternalProvisioning");
    assert_eq!(
        event.message,
        "Waiting for a volume to be created either by the external provisioner 'example.com/nfs' \
         or manually by the system administrator. If volume creation is delayed, please verify \
         that the provisioner is running and correctly registered."
    );
    assert_eq!(
        event.object,
        EventObject::Claim(ClaimKey {
            namespace: NS.into(),
            name: "c".into()
        })
    );

    let second = claim_plan(annotated, &[], &classes, &options);
    let reasons: Vec<_> = second.events().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["ExternalProvisioning"]);
    assert!(
        !second.changes_objects(),
        "the annotations are already there"
    );
}

#[test]
fn kubernetes_io_provisioner_without_a_plugin_fails() {
    let claim = mk_claim("c", "u", "1Gi").class("local");
    let classes = [mk_class(
        "local",
        "kubernetes.io/no-provisioner",
        Some("Immediate"),
    )];
    let plan = claim_plan(&claim, &[], &classes, &SyncOptions::default());
    assert_eq!(
        events(&plan),
        [(
            EventType::Warning,
            "ProvisioningFailed".to_owned(),
            "no volume plugin matched name: kubernetes.io/no-provisioner".to_owned()
        )]
    );
    assert!(!plan.changes_objects());
}

#[test]
fn in_tree_plugin_starts_a_provisioning_operation() {
    let claim = mk_claim("c", "u", "1Gi").class("hp");
    let classes = [mk_class("hp", "kubernetes.io/host-path", Some("Immediate"))];
    let options = SyncOptions {
        in_tree_plugins: BTreeSet::from(["kubernetes.io/host-path".to_owned()]),
        ..SyncOptions::default()
    };
    let plan = claim_plan(&claim, &[], &classes, &options);
    assert!(plan.writes.is_empty());
    assert_eq!(
        plan.then,
        Then::Start(Operation::ProvisionInTree {
            claim: ClaimKey {
                namespace: NS.into(),
                name: "c".into()
            },
            plugin: "kubernetes.io/host-path".into(),
            class: "hp".into(),
        })
    );
}

#[test]
fn dynamic_provisioning_off_only_waits() {
    let claim = mk_claim("c", "u", "1Gi").class("nfs");
    let classes = [mk_class("nfs", "example.com/nfs", Some("Immediate"))];
    let options = SyncOptions {
        dynamic_provisioning: false,
        ..SyncOptions::default()
    };
    assert_eq!(claim_plan(&claim, &[], &classes, &options), Plan::default());
}

#[test]
fn claim_without_any_class_gets_the_newest_default_class() {
    let classes = [
        as_default(mk_class("old", "example.com/a", Some("Immediate")), 1_000),
        as_default(mk_class("b-new", "example.com/b", Some("Immediate")), 2_000),
        as_default(mk_class("a-new", "example.com/c", Some("Immediate")), 2_000),
        mk_class("plain", "example.com/d", Some("Immediate")),
    ];
    let claim = mk_claim("c", "u", "1Gi");
    let plan = claim_plan(&claim, &[], &classes, &SyncOptions::default());
    let [Write::UpdateClaim(updated)] = plan.writes.as_slice() else {
        panic!("expected only the class assignment, got {:?}", plan.writes);
    };
    let class = updated
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    assert_eq!(class, Some("a-new"), "newest first, then by name");

    // A claim that asked for "" explicitly keeps it.
    let explicit = mk_claim("c", "u", "1Gi").class("");
    let plan = claim_plan(&explicit, &[], &classes, &SyncOptions::default());
    assert!(plan.events().any(|e| e.reason == "FailedBinding"));
}

// --- Named volumes ------------------------------------------------------------------------

#[test]
fn named_volume_mismatches_come_in_upstream_order_with_typed_reasons() {
    let claim = mk_claim("c", "u", "2Gi")
        .class("gold")
        .vac("fast")
        .mode(BLOCK)
        .modes(&[RWX])
        .volume("v");
    let fits = mk_volume("v", "2Gi")
        .class("gold")
        .vac("fast")
        .mode(BLOCK)
        .modes(&[RWX]);
    assert_eq!(check_volume_satisfy_claim(&fits, &claim, true), Ok(()));

    let mut deleting = fits.clone().class("silver");
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let cases: Vec<(PersistentVolume, VolumeMismatch, &str, &str)> = vec![
        (
            deleting,
            VolumeMismatch::BeingDeleted,
            "the volume is marked for deletion \"v\"",
            "the volume is being deleted",
        ),
        (
            fits.clone().class("silver").vac("slow"),
            VolumeMismatch::StorageClass {
                volume: "silver".into(),
                claim: "gold".into(),
            },
            "storageClassName does not match",
            "the volume's storage class \"silver\" is not the claim's \"gold\"",
        ),
        (
            fits.clone().vac("slow").mode(FILESYSTEM),
            VolumeMismatch::AttributesClass {
                volume: "slow".into(),
                claim: "fast".into(),
            },
            "volumeAttributesClassName does not match",
            "the volume's VolumeAttributesClass \"slow\" is not the claim's \"fast\"",
        ),
        (
            fits.clone().mode(FILESYSTEM).modes(&[RWO]),
            VolumeMismatch::VolumeMode {
                volume: FILESYSTEM.into(),
                claim: BLOCK.into(),
            },
            "incompatible volumeMode",
            "the volume's mode is Filesystem but the claim asks for Block",
        ),
        (
            fits.clone().modes(&[RWO, ROX]),
            VolumeMismatch::AccessModes {
                missing: vec![RWX.into()],
            },
            "incompatible accessMode",
            "the volume does not offer the access mode(s) ReadWriteMany the claim asks for",
        ),
    ];
    for (volume, mismatch, kubernetes, operator) in cases {
        let got = check_volume_satisfy_claim(&volume, &claim, true).expect_err("mismatch");
        assert_eq!(got, mismatch);
        assert_eq!(got.kubernetes_message("v"), kubernetes);
        assert_eq!(got.to_string(), operator);
        assert_eq!(
            got.event_message("v"),
            format!("Cannot bind to requested volume \"v\": {kubernetes}")
        );
    }

    let small = check_volume_satisfy_claim(
        &fits.clone().class("silver"),
        &mk_claim("c", "u", "3Gi").class("gold"),
        true,
    );
    assert!(
        matches!(small, Err(VolumeMismatch::TooSmall { .. })),
        "size comes before class: {small:?}"
    );
}

#[test]
fn named_volume_size_compares_whole_bytes_rounded_up() {
    // 1500m rounds up to 2 bytes: enough for a 2-byte request (exact comparison would say no).
    let volume = mk_volume("v", "1500m");
    assert_eq!(
        check_volume_satisfy_claim(&volume, &mk_claim("c", "u", "2"), true),
        Ok(())
    );
    assert!(check_volume_satisfy_claim(&volume, &mk_claim("c", "u", "3"), true).is_err());
}

#[test]
fn any_volume_attributes_class_is_refused_with_the_gate_off() {
    let claim = mk_claim("c", "u", "1Gi").volume("v");
    let volume = mk_volume("v", "1Gi").vac("gold");
    assert_eq!(
        check_volume_satisfy_claim(&volume, &claim, false),
        Err(VolumeMismatch::AttributesClassDisabled)
    );
    assert_eq!(
        check_volume_satisfy_claim(&volume, &claim.clone().vac("gold"), true),
        Ok(())
    );
}

#[test]
fn named_volume_outcomes() {
    let claim = mk_claim("c", "uid-c", "1Gi").volume("v");
    assert_eq!(
        named_volume_outcome(&claim, None, true),
        NamedVolumeOutcome::VolumeNotFound
    );
    assert_eq!(
        named_volume_outcome(&claim, Some(&mk_volume("v", "1Gi")), true),
        NamedVolumeOutcome::Bindable
    );
    for uid in ["", "uid-c"] {
        let volume = mk_volume("v", "1Gi").bound_to("c", uid);
        assert_eq!(
            named_volume_outcome(&claim, Some(&volume), true),
            NamedVolumeOutcome::BoundToThisClaim
        );
    }
    // Bound to this claim: no checks at all (even a too small volume binds).
    let small = mk_volume("v", "1Ki").bound_to("c", "");
    assert!(named_volume_outcome(&claim, Some(&small), true).binds());

    let other = mk_volume("v", "1Gi").bound_to("c", "uid-old");
    let outcome = named_volume_outcome(&claim, Some(&other), true);
    assert_eq!(
        outcome,
        NamedVolumeOutcome::BoundToOtherClaim {
            other: ClaimKey {
                namespace: NS.into(),
                name: "c".into()
            },
            claim_bound_by_controller: false,
        }
    );
    assert_eq!(
        outcome.to_string(),
        "the volume is already bound to a different claim, default/c"
    );
    let plan = claim_plan(
        &claim,
        std::slice::from_ref(&other),
        &[],
        &SyncOptions::default(),
    );
    assert_eq!(
        events(&plan),
        [(
            EventType::Warning,
            "FailedBinding".to_owned(),
            "volume \"v\" already bound to a different claim.".to_owned()
        )]
    );
    assert_eq!(plan.then, Then::Done);

    let by_controller = claim.clone().ann(BBC);
    let outcome = named_volume_outcome(&by_controller, Some(&other), true);
    assert!(matches!(
        outcome,
        NamedVolumeOutcome::BoundToOtherClaim {
            claim_bound_by_controller: true,
            ..
        }
    ));
    let plan = claim_plan(&by_controller, &[other], &[], &SyncOptions::default());
    assert!(matches!(
        plan.then,
        Then::Retry(SyncError::VolumeClaimedByOther { .. })
    ));
    assert!(!plan.changes_objects());
}

// --- bind ----------------------------------------------------------------------------------

/// Who ends up with `bound-by-controller`, by who set which pointer (upstream 1-1, 1-5/1-6,
/// 2-3/1-15, 2-4/2-5).
#[test]
fn annotation_matrix() {
    struct Row {
        name: &'static str,
        volume: PersistentVolume,
        claim: PersistentVolumeClaim,
        volume_annotated: bool,
        claim_annotated: bool,
    }
    let rows = [
        Row {
            name: "controller picked the volume",
            volume: mk_volume("v", "1Gi"),
            claim: mk_claim("c", "u", "1Gi"),
            volume_annotated: true,
            claim_annotated: true,
        },
        Row {
            name: "user pre-bound the volume by name",
            volume: mk_volume("v", "1Gi").bound_to("c", ""),
            claim: mk_claim("c", "u", "1Gi"),
            volume_annotated: false,
            claim_annotated: true,
        },
        Row {
            name: "user pre-bound the volume by name and UID",
            volume: mk_volume("v", "1Gi").bound_to("c", "u"),
            claim: mk_claim("c", "u", "1Gi"),
            volume_annotated: false,
            claim_annotated: true,
        },
        Row {
            name: "user named the volume in the claim",
            volume: mk_volume("v", "1Gi"),
            claim: mk_claim("c", "u", "1Gi").volume("v"),
            volume_annotated: true,
            claim_annotated: false,
        },
        Row {
            name: "user pre-bound both sides",
            volume: mk_volume("v", "1Gi").bound_to("c", ""),
            claim: mk_claim("c", "u", "1Gi").volume("v"),
            volume_annotated: false,
            claim_annotated: false,
        },
    ];
    for row in rows {
        let mut cluster = ObjectSet::new([row.volume], [row.claim]);
        let claim = cluster.claim(NS, "c").cloned().expect("claim");
        let plan = claim_plan(&claim, cluster.volumes(), &[], &SyncOptions::default());
        cluster = applied(cluster, &plan);
        let volume = cluster.volume("v").expect("volume");
        let claim = cluster.claim(NS, "c").expect("claim");
        assert_eq!(
            annotation(&volume.metadata, BBC).is_some(),
            row.volume_annotated,
            "{}: volume",
            row.name
        );
        assert_eq!(
            annotation(&claim.metadata, BBC).is_some(),
            row.claim_annotated,
            "{}: claim",
            row.name
        );
        assert_eq!(
            annotation(&claim.metadata, BC),
            Some("yes"),
            "{}: bind-completed",
            row.name
        );
        assert_eq!(
            claim.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some(BOUND),
            "{}",
            row.name
        );
    }
}

#[test]
fn binding_a_bound_pair_writes_nothing() {
    let volume = mk_volume("v", "1Gi")
        .bound_to("c", "u")
        .phase(BOUND)
        .ann(BBC);
    let claim = mk_claim("c", "u", "1Gi")
        .volume("v")
        .phase(BOUND)
        .ann(BBC)
        .ann(BC);
    assert_eq!(bind(&volume, &claim, true), Plan::default());
}

#[test]
fn claim_ref_records_the_claims_resource_version() {
    let mut claim = mk_claim("c", "u", "1Gi");
    claim.metadata.resource_version = Some("42".into());
    let plan = bind(&mk_volume("v", "1Gi"), &claim, true);
    let Some(Write::UpdateVolume(volume)) = plan.writes.first() else {
        panic!("{:?}", plan.writes)
    };
    let claim_ref = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .expect("claimRef");
    assert_eq!(claim_ref.resource_version.as_deref(), Some("42"));
    assert_eq!(claim_ref.kind.as_deref(), Some("PersistentVolumeClaim"));
    assert_eq!(claim_ref.api_version.as_deref(), Some("v1"));
}

fn status_capacity(plan: &Plan) -> Option<String> {
    plan.writes.iter().rev().find_map(|w| match w {
        Write::UpdateClaimStatus(claim) => claim
            .status
            .as_ref()?
            .capacity
            .as_ref()?
            .get("storage")
            .map(|q| q.0.clone()),
        _ => None,
    })
}

#[test]
fn capacity_is_copied_only_when_becoming_bound() {
    let volume = mk_volume("v", "10Gi").bound_to("c", "u").phase(BOUND);
    let pending = mk_claim("c", "u", "1Gi").volume("v").ann(BC);
    assert_eq!(
        status_capacity(&bind(&volume, &pending, true)).as_deref(),
        Some("10Gi")
    );

    // Already Bound with another size (e.g. a filesystem smaller than its device): kept.
    let bound = mk_claim("c", "u", "1Gi")
        .volume("v")
        .ann(BC)
        .phase(BOUND)
        .status_capacity("9Gi");
    assert_eq!(bind(&volume, &bound, true), Plan::default());
}

#[test]
fn pre_resize_capacity_annotation_wins() {
    let volume = mk_volume("v", "10Gi").ann_value(ANN_PRE_RESIZE_CAPACITY, "8Gi");
    assert_eq!(
        status_capacity(&bind(&volume, &mk_claim("c", "u", "1Gi"), true)).as_deref(),
        Some("8Gi")
    );
    let unparsable = mk_volume("v", "10Gi").ann_value(ANN_PRE_RESIZE_CAPACITY, "eight");
    assert_eq!(
        status_capacity(&bind(&unparsable, &mk_claim("c", "u", "1Gi"), true)).as_deref(),
        Some("10Gi")
    );
}

#[test]
fn volume_without_capacity_stops_before_the_claim_status() {
    let mut volume = mk_volume("v", "1Gi");
    volume.spec.as_mut().expect("spec").capacity = None;
    let plan = bind(&volume, &mk_claim("c", "u", "1Gi"), true);
    assert_eq!(plan.writes.len(), 3);
    assert_eq!(
        plan.then,
        Then::Retry(SyncError::VolumeWithoutCapacity { volume: "v".into() })
    );
}

#[test]
fn current_volume_attributes_class_is_set_only_from_pending() {
    let volume = mk_volume("v", "1Gi")
        .vac("gold")
        .bound_to("c", "u")
        .phase(BOUND);
    let claim = mk_claim("c", "u", "1Gi").vac("gold").volume("v").ann(BC);
    let vac_of = |plan: &Plan| {
        plan.writes.iter().find_map(|w| match w {
            Write::UpdateClaimStatus(c) => c
                .status
                .as_ref()?
                .current_volume_attributes_class_name
                .clone(),
            _ => None,
        })
    };
    assert_eq!(
        vac_of(&bind(&volume, &claim, true)).as_deref(),
        Some("gold")
    );
    assert_eq!(vac_of(&bind(&volume, &claim, false)), None, "gate off");
    let lost = claim.clone().phase(LOST);
    assert_eq!(
        vac_of(&bind(&volume, &lost, true)),
        None,
        "Lost → Bound keeps the resizer's value"
    );
}

// --- Bound claims ------------------------------------------------------------------------------

#[test]
fn lost_is_reported_once() {
    let claim = mk_claim("c", "u", "1Gi").volume("gone").phase(LOST).ann(BC);
    assert_eq!(
        claim_plan(&claim, &[], &[], &SyncOptions::default()),
        Plan::default()
    );
}

#[test]
fn lost_claim_comes_back_when_its_volume_returns() {
    let volume = mk_volume("v", "1Gi").bound_to("c", "u").phase(BOUND);
    let claim = mk_claim("c", "u", "1Gi").volume("v").phase(LOST).ann(BC);
    let cluster = applied(
        ObjectSet::new([volume.clone()], [claim.clone()]),
        &claim_plan(&claim, &[volume], &[], &SyncOptions::default()),
    );
    let phase = cluster
        .claim(NS, "c")
        .and_then(|c| c.status.as_ref()?.phase.clone());
    assert_eq!(phase.as_deref(), Some(BOUND));
}

// --- Volumes: reclaim ------------------------------------------------------------------------------

fn released(policy: &str) -> PersistentVolume {
    mk_volume("v", "1Gi")
        .bound_to("c", "u")
        .phase(BOUND)
        .policy(policy)
}

fn phase_of(cluster: &ObjectSet) -> (Option<String>, Option<String>) {
    let status = cluster
        .volume("v")
        .and_then(|v| v.status.clone())
        .unwrap_or_default();
    (status.phase, status.message)
}

#[test]
fn retain_only_releases() {
    let cluster = ObjectSet::new([released(RETAIN)], []);
    let plan = volume_plan(&cluster, "v", &SyncOptions::default());
    let cluster = applied(cluster, &plan);
    assert_eq!(phase_of(&cluster), (Some(RELEASED.into()), None));
    assert_eq!(plan.then, Then::Done);
    // Next sync: nothing more to do, ever.
    assert_eq!(
        volume_plan(&cluster, "v", &SyncOptions::default()),
        Plan::default()
    );
}

#[test]
fn recycle_without_recycler_fails_and_keeps_retrying() {
    let cluster = ObjectSet::new([released(RECYCLE)], []);
    let plan = volume_plan(&cluster, "v", &SyncOptions::default());
    let cluster = applied(cluster, &plan);
    assert_eq!(
        phase_of(&cluster),
        (
            Some(FAILED.into()),
            Some("No recycler plugin found for the volume!".into())
        )
    );
    let reasons: Vec<_> = plan.events().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["VolumeFailedRecycle"]);
    // Failed is not overwritten by Released, and the event is not repeated.
    assert_eq!(
        volume_plan(&cluster, "v", &SyncOptions::default()),
        Plan::default()
    );
}

#[test]
fn recycle_with_a_recycler_starts_it() {
    let options = SyncOptions {
        in_tree_plugins: BTreeSet::from(["kubernetes.io/nfs".to_owned()]),
        ..SyncOptions::default()
    };
    let cluster = ObjectSet::new([released(RECYCLE)], []);
    let plan = volume_plan(&cluster, "v", &options);
    assert_eq!(
        plan.then,
        Then::Start(Operation::Recycle {
            volume: "v".into(),
            plugin: "kubernetes.io/nfs".into()
        })
    );
}

#[test]
fn delete_is_left_to_the_external_provisioner() {
    for volume in [
        released(DELETE).ann_value(ANN_PROVISIONED_BY, "example.com/nfs"),
        released(DELETE).csi("example.com/csi"),
        released(DELETE).ann_value(ANN_MIGRATED_TO, "pd.csi.storage.gke.io"),
    ] {
        let cluster = ObjectSet::new([volume], []);
        let plan = volume_plan(&cluster, "v", &SyncOptions::default());
        let cluster = applied(cluster, &plan);
        assert_eq!(phase_of(&cluster).0.as_deref(), Some(RELEASED));
        assert_eq!(plan.then, Then::Done);
        assert_eq!(plan.events().count(), 0);
    }
}

#[test]
fn delete_with_an_in_tree_plugin_starts_it() {
    let options = SyncOptions {
        in_tree_plugins: BTreeSet::from([MOCK_PLUGIN.to_owned()]),
        ..SyncOptions::default()
    };
    let cluster = ObjectSet::new([released(DELETE).ann(ANN_PROVISIONED_BY)], []);
    let plan = volume_plan(&cluster, "v", &options);
    assert_eq!(
        plan.then,
        Then::Start(Operation::Delete {
            volume: "v".into(),
            plugin: MOCK_PLUGIN.into()
        })
    );
}

#[test]
fn delete_by_a_missing_kubernetes_io_plugin_fails() {
    let cluster = ObjectSet::new([released(DELETE).ann(ANN_PROVISIONED_BY)], []);
    let cluster = applied(
        cluster.clone(),
        &volume_plan(&cluster, "v", &SyncOptions::default()),
    );
    assert_eq!(
        phase_of(&cluster),
        (
            Some(FAILED.into()),
            Some(format!("no volume plugin matched name: {MOCK_PLUGIN}"))
        )
    );
}

#[test]
fn unknown_reclaim_policy_fails() {
    let cluster = ObjectSet::new([released("Shred")], []);
    let plan = volume_plan(&cluster, "v", &SyncOptions::default());
    let cluster = applied(cluster, &plan);
    assert_eq!(
        phase_of(&cluster),
        (
            Some(FAILED.into()),
            Some("Volume has unrecognized PersistentVolumeReclaimPolicy".into())
        )
    );
    let reasons: Vec<_> = plan.events().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["VolumeUnknownReclaimPolicy"]);
}

#[test]
fn provisioned_volume_whose_claim_bound_elsewhere_is_released_for_deletion() {
    let volume = mk_volume("v", "1Gi")
        .bound_to("c", "u")
        .phase(BOUND)
        .policy(DELETE)
        .ann_value(ANN_PROVISIONED_BY, "example.com/nfs")
        .ann(BBC);
    let claim = mk_claim("c", "u", "1Gi")
        .volume("other")
        .phase(BOUND)
        .ann(BC);
    let cluster = ObjectSet::new([volume], [claim]);
    let cluster = applied(
        cluster.clone(),
        &volume_plan(&cluster, "v", &SyncOptions::default()),
    );
    let volume = cluster.volume("v").expect("volume");
    assert_eq!(phase_of(&cluster).0.as_deref(), Some(RELEASED));
    assert!(
        volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some(),
        "kept for the deleter"
    );
}

#[test]
fn unbinding_keeps_other_annotations() {
    let volume = mk_volume("v", "1Gi")
        .bound_to("c", "u")
        .phase(BOUND)
        .ann(BBC)
        .ann_value("team", "a");
    let claim = mk_claim("c", "u", "1Gi").volume("other").phase(BOUND);
    let cluster = ObjectSet::new([volume], [claim]);
    let cluster = applied(
        cluster.clone(),
        &volume_plan(&cluster, "v", &SyncOptions::default()),
    );
    let volume = cluster.volume("v").expect("volume");
    let annotations = volume.metadata.annotations.clone().expect("annotations");
    assert_eq!(
        annotations.into_iter().collect::<Vec<_>>(),
        [("team".to_owned(), "a".to_owned())]
    );
    assert_eq!(phase_of(&cluster).0.as_deref(), Some(AVAILABLE));
}

#[test]
fn volume_waiting_for_its_claim_enqueues_it() {
    let cluster = ObjectSet::new(
        [mk_volume("v", "1Gi").bound_to("c", "u").ann(BBC)],
        [mk_claim("c", "u", "1Gi")],
    );
    let plan = volume_plan(&cluster, "v", &SyncOptions::default());
    assert_eq!(
        plan.then,
        Then::EnqueueClaim(ClaimKey {
            namespace: NS.into(),
            name: "c".into()
        })
    );
    assert!(plan.writes.is_empty());
}
