//! The provisioning controller against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager's PV binder, kube-scheduler, kwok nodes), running as a
//! ServiceAccount bound to the seed scenario's RBAC.

mod controller_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use provisioner_core::controller::{Checkpoint, CheckpointHook};
use provisioner_core::plan::keys::{
    PROVISIONED_BY, PROVISIONING_FINALIZER, PROVISIONING_RECORD, SELECTED_NODE,
};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use controller_support::{Failure, Harness, wait_for};

fn spec(pv: &PersistentVolume) -> &k8s_openapi::api::core::v1::PersistentVolumeSpec {
    pv.spec.as_ref().expect("volume spec")
}

fn assert_no_record(claim: &k8s_openapi::api::core::v1::PersistentVolumeClaim) {
    assert!(
        !claim.annotations().contains_key(PROVISIONING_RECORD),
        "record left on {}",
        claim.name_any()
    );
    assert!(
        !claim
            .finalizers()
            .iter()
            .any(|f| f == PROVISIONING_FINALIZER),
        "finalizer left on {}",
        claim.name_any()
    );
}

#[tokio::test]
async fn provisions_a_claim_and_deletes_the_released_volume() -> anyhow::Result<()> {
    let harness = Harness::new("happy").await?;
    let class = harness
        .create_class(json!({ "mountOptions": ["nfsvers=4.1"], "parameters": { "tier": "slow" } }))
        .await?;
    let _controller = harness.start(Harness::fast_config());
    let claim = harness
        .create_claim(
            &class,
            json!({ "spec": { "accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem" } }),
        )
        .await?;
    let uid = claim.uid().context("uid")?;

    let bound = harness.wait_bound(&claim.name_any()).await?;
    let volume_name = format!("pvc-{uid}");
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(volume_name.as_str())
    );
    // The PV controller may bind before the record is cleared, the last step.
    let cleared = harness.wait_record_cleared(&claim.name_any()).await?;
    assert_no_record(&cleared);

    let volumes = harness.volumes_of(&uid).await?;
    assert_eq!(volumes.len(), 1);
    let pv = &volumes[0];
    assert_eq!(pv.name_any(), volume_name);
    assert_eq!(pv.annotations()[PROVISIONED_BY], harness.name);
    assert_eq!(pv.annotations()["test.provisioner-rs.io/tier"], "slow");
    let recorded: serde_json::Value = serde_json::from_str(&pv.annotations()[PROVISIONING_RECORD])?;
    assert_eq!(recorded["parameters"]["tier"], "slow");
    let spec = spec(pv);
    let claim_ref = spec.claim_ref.as_ref().unwrap();
    assert_eq!(claim_ref.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        claim_ref.namespace.as_deref(),
        Some(harness.namespace.as_str())
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.mount_options, Some(vec!["nfsvers=4.1".to_owned()]));
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(spec.capacity.as_ref().unwrap()["storage"].0, "50Mi");
    assert!(spec.host_path.is_some());

    let events = harness.events_about(&harness.namespace, &uid).await?;
    let reasons: BTreeSet<_> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    assert!(reasons.contains("Provisioning"), "events: {reasons:?}");
    assert!(
        reasons.contains("ProvisioningSucceeded"),
        "events: {reasons:?}"
    );
    let succeeded = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("ProvisioningSucceeded"))
        .unwrap();
    assert_eq!(
        succeeded.message.as_deref(),
        Some(format!("Successfully provisioned volume {volume_name}").as_str())
    );
    assert_eq!(
        harness.backend.state().assets,
        BTreeSet::from([volume_name.clone()])
    );

    // Deleting the claim releases the volume; its asset and object go.
    harness.delete_claim(&claim.name_any()).await?;
    harness.wait_volume_gone(&volume_name).await?;
    let state = harness.backend.snapshot();
    assert!(state.assets.is_empty());
    assert_eq!(state.delete_calls, 1, "one delete per volume");
    assert_eq!(state.created, 1);
    Ok(())
}

#[tokio::test]
async fn retain_keeps_the_released_volume_and_its_asset() -> anyhow::Result<()> {
    let harness = Harness::new("retain").await?;
    let retain = harness
        .create_class(json!({ "reclaimPolicy": "Retain" }))
        .await?;
    let delete = harness.create_class(json!({})).await?;
    let _controller = harness.start(Harness::fast_config());
    let kept = harness.create_claim(&retain, json!({})).await?;
    harness.wait_bound(&kept.name_any()).await?;
    let kept_volume = format!("pvc-{}", kept.uid().unwrap());

    harness.delete_claim(&kept.name_any()).await?;
    let volumes = Api::<PersistentVolume>::all(harness.admin.clone());
    wait_for("retained volume Released", || async {
        let pv = volumes.get(&kept_volume).await?;
        Ok((pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")).then_some(()))
    })
    .await?;

    // A Delete volume released after it is deleted: by then the controller has seen the
    // Retain one Released and must have left it alone.
    let gone = harness.create_claim(&delete, json!({})).await?;
    harness.wait_bound(&gone.name_any()).await?;
    harness.delete_claim(&gone.name_any()).await?;
    harness
        .wait_volume_gone(&format!("pvc-{}", gone.uid().unwrap()))
        .await?;

    assert!(
        volumes.get_opt(&kept_volume).await?.is_some(),
        "Retain volume kept"
    );
    let state = harness.backend.snapshot();
    assert_eq!(state.assets, BTreeSet::from([kept_volume]));
    assert_eq!(state.delete_calls, 1);
    Ok(())
}

#[tokio::test]
async fn wait_for_first_consumer_provisions_on_the_node_the_scheduler_picked() -> anyhow::Result<()>
{
    let harness = Harness::new("wffc").await?;
    let class = harness
        .create_class(json!({ "volumeBindingMode": "WaitForFirstConsumer" }))
        .await?;
    let _controller = harness.start(Harness::fast_config());
    let claim = harness.create_claim(&class, json!({})).await?;
    // Without a consumer, nothing happens. A pod then makes the scheduler pick a node.
    assert_eq!(harness.backend.state().provision_calls, 0);
    create_pod(&harness, &claim.name_any()).await?;

    let bound = harness.wait_bound(&claim.name_any()).await?;
    let node = bound.annotations()[SELECTED_NODE].clone();
    assert!(node == "node-a" || node == "node-b", "selected {node}");
    let state = harness.backend.snapshot();
    assert_eq!(
        state.nodes,
        vec![Some(node.clone())],
        "one call, on the selected node"
    );
    let pv = &harness.volumes_of(&claim.uid().unwrap()).await?[0];
    let recorded: serde_json::Value = serde_json::from_str(&pv.annotations()[PROVISIONING_RECORD])?;
    assert_eq!(recorded["selectedNode"], node.as_str());
    Ok(())
}

#[tokio::test]
async fn reschedule_removes_the_selected_node_and_provisions_after_the_new_pick()
-> anyhow::Result<()> {
    let harness = Harness::new("resched").await?;
    let class = harness
        .create_class(json!({ "volumeBindingMode": "WaitForFirstConsumer" }))
        .await?;
    harness
        .backend
        .state()
        .fail_next
        .push_back(Failure::Reschedule);
    let _controller = harness.start(Harness::fast_config());
    let claim = harness.create_claim(&class, json!({})).await?;
    create_pod(&harness, &claim.name_any()).await?;

    harness
        .wait_claim_event(&claim, "ProvisioningFailed", "node is full")
        .await?;
    let bound = harness.wait_bound(&claim.name_any()).await?;
    let state = harness.backend.snapshot();
    assert_eq!(
        state.provision_calls, 2,
        "rescheduled once, then provisioned"
    );
    assert!(state.nodes.iter().all(Option::is_some));
    assert_eq!(state.created, 1);
    assert!(
        bound.annotations().contains_key(SELECTED_NODE),
        "the scheduler picked again"
    );
    Ok(())
}

#[tokio::test]
async fn block_claims_are_refused_with_an_event_and_no_retries() -> anyhow::Result<()> {
    let harness = Harness::new("block").await?;
    let class = harness.create_class(json!({})).await?;
    let _controller = harness.start(Harness::fast_config());
    let block = harness
        .create_claim(&class, json!({ "spec": { "volumeMode": "Block" } }))
        .await?;
    let event = harness
        .wait_claim_event(
            &block,
            "ProvisioningFailed",
            "does not support block volume provisioning",
        )
        .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // A filesystem claim provisioned afterwards shows the controller kept working; the
    // block claim was never sent to the backend nor marked in flight.
    let plain = harness.create_claim(&class, json!({})).await?;
    harness.wait_bound(&plain.name_any()).await?;
    assert_eq!(harness.backend.state().provision_calls, 1);
    let block = harness.claims().get(&block.name_any()).await?;
    assert_no_record(&block);
    assert!(block.spec.as_ref().unwrap().volume_name.is_none());
    let events = harness
        .events_about(&harness.namespace, &block.uid().unwrap())
        .await?;
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
        .collect();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].count, Some(1), "reported once, not retried");
    Ok(())
}

#[tokio::test]
async fn a_bad_parameter_is_named_and_fixing_the_class_provisions() -> anyhow::Result<()> {
    let harness = Harness::new("param").await?;
    let _controller = harness.start(Harness::fast_config());
    // StorageClass parameters are immutable: the fix is a new class of the same name.
    let class = harness
        .create_class(json!({ "parameters": { "tier": "platinum" } }))
        .await?;
    let claim = harness.create_claim(&class, json!({})).await?;
    harness
        .wait_claim_event(
            &claim,
            "ProvisioningFailed",
            "invalid StorageClass parameter \"tier\"",
        )
        .await?;
    assert_eq!(
        harness.backend.state().provision_calls,
        0,
        "parsed before any side effect"
    );

    let classes = Api::<k8s_openapi::api::storage::v1::StorageClass>::all(harness.admin.clone());
    classes.delete(&class, &DeleteParams::default()).await?;
    let fixed: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
        "metadata": { "name": class },
        "provisioner": harness.name,
        "parameters": { "tier": "fast" },
    }))?;
    classes.create(&PostParams::default(), &fixed).await?;
    harness.wait_bound(&claim.name_any()).await?;
    Ok(())
}

#[tokio::test]
async fn a_class_created_after_its_claim_wakes_the_claim() -> anyhow::Result<()> {
    let harness = Harness::new("late-class").await?;
    let _controller = harness.start(Harness::fast_config());
    let class = testenv::unique_name("later");
    // Usually the PV controller names the provisioner on the claim only once the class
    // exists. A claim that already names it (its class was deleted and is being recreated)
    // is reported, then woken by the class's creation.
    let named = harness
        .create_claim(
            &class,
            json!({ "metadata": { "annotations": { "volume.kubernetes.io/storage-provisioner": harness.name } } }),
        )
        .await?;
    let unnamed = harness.create_claim(&class, json!({})).await?;
    harness
        .wait_claim_event(
            &named,
            "ProvisioningFailed",
            &format!("\"{class}\" not found"),
        )
        .await?;

    let created: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
        "metadata": { "name": class },
        "provisioner": harness.name,
    }))?;
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(harness.admin.clone())
        .create(&PostParams::default(), &created)
        .await?;
    harness.wait_bound(&named.name_any()).await?;
    harness.wait_bound(&unnamed.name_any()).await?;
    Ok(())
}

#[tokio::test]
async fn failures_back_off_and_stop_exactly_at_the_threshold_until_the_claim_changes()
-> anyhow::Result<()> {
    let harness = Harness::new("threshold").await?;
    let class = harness.create_class(json!({})).await?;
    harness.backend.state().fail_always = Some(Failure::Final);
    let _controller = harness.start(Harness::fast_config().failure_threshold(3));
    let claim = harness.create_claim(&class, json!({})).await?;

    harness
        .wait_claim_event(
            &claim,
            "ProvisioningFailed",
            "Giving up after 3 failed attempts",
        )
        .await?;
    assert_eq!(harness.backend.state().provision_calls, 3);
    let failed = harness
        .events_about(&harness.namespace, &claim.uid().unwrap())
        .await?
        .into_iter()
        .find(|e| e.message.as_deref() == Some("backend is broken"))
        .context("failure event")?;
    assert_eq!(failed.count, Some(3), "repeats are one Event with a count");

    // Editing the claim is a new chance: another full budget of attempts.
    harness.backend.state().fail_always = None;
    harness
        .backend
        .state()
        .fail_next
        .extend([Failure::Final, Failure::Final]);
    let label = json!({ "metadata": { "labels": { "retry": "please" } } });
    harness
        .claims()
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await?;
    harness.wait_bound(&claim.name_any()).await?;
    let state = harness.backend.snapshot();
    assert_eq!(state.provision_calls, 6, "3, then 2 failures and a success");
    assert_eq!(state.created, 1);
    Ok(())
}

#[tokio::test]
async fn infeasible_requests_wait_until_the_claim_changes() -> anyhow::Result<()> {
    let harness = Harness::new("infeasible").await?;
    let class = harness.create_class(json!({})).await?;
    harness
        .backend
        .state()
        .fail_next
        .push_back(Failure::Infeasible);
    let _controller = harness.start(Harness::fast_config());
    let claim = harness.create_claim(&class, json!({})).await?;
    harness
        .wait_claim_event(
            &claim,
            "ProvisioningFailed",
            "infeasible error. Retries will be delayed",
        )
        .await?;
    // The default infeasible delay is 5 minutes; a change to the claim ends it now.
    let label = json!({ "metadata": { "labels": { "size": "fixed" } } });
    harness
        .claims()
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await?;
    harness.wait_bound(&claim.name_any()).await?;
    assert_eq!(harness.backend.state().provision_calls, 2);
    Ok(())
}

/// Kills the controller right after `checkpoint` of one claim, starts a fresh one, and
/// checks the claim ends up with exactly one volume and one asset.
async fn crash_after(checkpoint: Checkpoint) -> anyhow::Result<()> {
    let harness = Harness::new(&format!("crash-{checkpoint:?}")).await?;
    let class = harness.create_class(json!({})).await?;
    let (crashing, mut frozen) = harness.start_crashing_at(Harness::fast_config(), checkpoint);
    let claim = harness.create_claim(&class, json!({})).await?;
    let key = frozen.recv().await.context("checkpoint reached")?;
    assert_eq!(key, format!("{}/{}", harness.namespace, claim.name_any()));
    crashing.kill().await;

    let _restarted = harness.start(Harness::fast_config());
    let bound = harness.wait_bound(&claim.name_any()).await?;
    let uid = claim.uid().unwrap();
    let volume_name = format!("pvc-{uid}");
    // Clearing the record is the last step; wait for it after a crash just before it.
    let cleared = harness.wait_record_cleared(&claim.name_any()).await?;
    assert_no_record(&cleared);
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(volume_name.as_str())
    );
    assert_eq!(
        harness.volumes_of(&uid).await?.len(),
        1,
        "exactly one volume after {checkpoint}"
    );
    let state = harness.backend.snapshot();
    assert_eq!(
        state.assets,
        BTreeSet::from([volume_name]),
        "one asset after {checkpoint}"
    );
    assert_eq!(state.created, 1, "never created twice after {checkpoint}");
    Ok(())
}

#[tokio::test]
async fn crash_after_saving_the_record() -> anyhow::Result<()> {
    crash_after(Checkpoint::RecordSaved).await
}

#[tokio::test]
async fn crash_after_the_backend_created_the_asset() -> anyhow::Result<()> {
    crash_after(Checkpoint::AssetProvisioned).await
}

#[tokio::test]
async fn crash_after_creating_the_volume() -> anyhow::Result<()> {
    crash_after(Checkpoint::VolumeCreated).await
}

#[tokio::test]
async fn crash_after_clearing_the_record() -> anyhow::Result<()> {
    crash_after(Checkpoint::RecordCleared).await
}

#[tokio::test]
async fn a_claim_deleted_while_the_controller_is_down_mid_provisioning_leaks_nothing()
-> anyhow::Result<()> {
    let harness = Harness::new("crash-delete").await?;
    let class = harness.create_class(json!({})).await?;
    let (crashing, mut frozen) =
        harness.start_crashing_at(Harness::fast_config(), Checkpoint::AssetProvisioned);
    // Backends may name assets after claim labels (an NFS pathPattern): the clean-up gets
    // the claim object, which the in-flight finalizer keeps.
    let claim = harness
        .create_claim(
            &class,
            json!({ "metadata": { "labels": { "team": "db" } } }),
        )
        .await?;
    frozen.recv().await.context("asset created")?;
    crashing.kill().await;
    assert_eq!(harness.backend.state().assets.len(), 1);

    // The Go library's EP#486: deleted while nobody watches. The finalizer keeps the claim.
    harness.delete_claim(&claim.name_any()).await?;
    let _restarted = harness.start(Harness::fast_config());
    harness.wait_claim_gone(&claim.name_any()).await?;
    let state = harness.backend.snapshot();
    assert!(
        state.assets.is_empty(),
        "asset cleaned up: {:?}",
        state.assets
    );
    assert_eq!(state.orphan_deletes, 1);
    assert_eq!(
        state.orphan_claim_labels,
        vec![Some(BTreeMap::from([("team".to_owned(), "db".to_owned())]))]
    );
    assert!(harness.volumes_of(&claim.uid().unwrap()).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_claim_deleted_while_provisioning_is_in_flight_leaks_nothing() -> anyhow::Result<()> {
    let harness = Harness::new("inflight-delete").await?;
    let class = harness.create_class(json!({})).await?;
    // Hold the operation right after the backend created the asset.
    let (reached_tx, mut reached) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    let hook: CheckpointHook = Arc::new(move |checkpoint, _| {
        if checkpoint == Checkpoint::AssetProvisioned {
            let _ = reached_tx.send(());
            let hold = hold.clone();
            async move { hold.notified().await }.boxed()
        } else {
            std::future::ready(()).boxed()
        }
    });
    let _controller = controller_support::Running::spawn(
        harness
            .controller(Harness::fast_config())
            .checkpoint_hook(hook),
    );
    let claim = harness.create_claim(&class, json!({})).await?;
    reached.recv().await.context("asset created")?;
    harness.delete_claim(&claim.name_any()).await?;
    let claims = harness.claims();
    wait_for("claim marked deleted", || async {
        let claim = claims.get(&claim.name_any()).await?;
        Ok(claim.metadata.deletion_timestamp.is_some().then_some(()))
    })
    .await?;
    release.notify_one();

    // The volume is saved for the deleted claim, is Released at once, and goes with its
    // asset.
    harness.wait_claim_gone(&claim.name_any()).await?;
    let volume_name = format!("pvc-{}", claim.uid().unwrap());
    harness.wait_volume_gone(&volume_name).await?;
    let state = harness.backend.snapshot();
    assert!(state.assets.is_empty(), "leaked: {:?}", state.assets);
    assert_eq!(state.created, 1);
    Ok(())
}

#[tokio::test]
async fn a_crash_after_deleting_an_asset_deletes_the_volume_on_restart() -> anyhow::Result<()> {
    let harness = Harness::new("crash-reclaim").await?;
    let class = harness.create_class(json!({})).await?;
    let (crashing, mut frozen) =
        harness.start_crashing_at(Harness::fast_config(), Checkpoint::VolumeAssetDeleted);
    let claim = harness.create_claim(&class, json!({})).await?;
    harness.wait_bound(&claim.name_any()).await?;
    harness.delete_claim(&claim.name_any()).await?;
    let volume_name = frozen.recv().await.context("asset deleted")?;
    crashing.kill().await;
    assert!(harness.backend.state().assets.is_empty());

    let _restarted = harness.start(Harness::fast_config());
    harness.wait_volume_gone(&volume_name).await?;
    let state = harness.backend.snapshot();
    // The restarted process cannot know the asset is gone: a second, harmless delete.
    assert_eq!(state.delete_calls, 2);
    assert!(state.assets.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_failing_volume_create_never_duplicates_or_leaks_the_asset() -> anyhow::Result<()> {
    let harness = Harness::new("pv-create").await?;
    let class = harness.create_class(json!({})).await?;
    let policy = deny_volume_creation(&harness).await?;
    let _controller = harness.start(Harness::fast_config());
    let kept = harness.create_claim(&class, json!({})).await?;
    let dropped = harness.create_claim(&class, json!({})).await?;

    for claim in [&kept, &dropped] {
        wait_for("three failed volume creates", || async {
            let events = harness
                .events_about(&harness.namespace, &claim.uid().unwrap())
                .await?;
            Ok(events
                .into_iter()
                .find(|e| {
                    e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("Error creating provisioned PV object"))
                        && e.count.unwrap_or(0) >= 3
                })
                .map(drop))
        })
        .await?;
    }
    {
        let state = harness.backend.snapshot();
        assert_eq!(state.assets.len(), 2);
        assert_eq!(
            state.provision_calls, 2,
            "retries reuse the backend's answer"
        );
    }

    // One claim is given up while failing: its asset is cleaned up.
    harness.delete_claim(&dropped.name_any()).await?;
    harness.wait_claim_gone(&dropped.name_any()).await?;
    // The other gets its volume once creation works again.
    lift_denial(&harness, &policy).await?;
    harness.wait_bound(&kept.name_any()).await?;

    let state = harness.backend.snapshot();
    let kept_volume = format!("pvc-{}", kept.uid().unwrap());
    assert_eq!(state.assets, BTreeSet::from([kept_volume]));
    assert_eq!(state.created, 2);
    assert_eq!(harness.volumes_of(&kept.uid().unwrap()).await?.len(), 1);
    assert!(
        harness
            .volumes_of(&dropped.uid().unwrap())
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn a_volume_of_the_same_name_for_another_claim_is_never_taken() -> anyhow::Result<()> {
    let harness = Harness::new("taken").await?;
    let class = harness.create_class(json!({})).await?;
    // Hold the first attempt right after its record is saved; meanwhile someone creates a
    // volume of the claim's volume name for another claim. The controller then meets it as
    // AlreadyExists on create, with a cache that did not show it when it decided.
    let (reached_tx, mut reached) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let hold = release.clone();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hook: CheckpointHook = Arc::new(move |checkpoint, _| {
        let hold = hold.clone();
        if checkpoint == Checkpoint::RecordSaved
            && first.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = reached_tx.send(());
            async move { hold.notified().await }.boxed()
        } else {
            std::future::ready(()).boxed()
        }
    });
    let _controller = controller_support::Running::spawn(
        harness
            .controller(Harness::fast_config())
            .checkpoint_hook(hook),
    );
    let claim = harness.create_claim(&class, json!({})).await?;
    reached.recv().await.context("record saved")?;
    let volume_name = format!("pvc-{}", claim.uid().unwrap());
    let other_uid = "00000000-0000-0000-0000-000000000000";
    let squatter: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": volume_name },
        "spec": {
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "hostPath": { "path": "/srv/someone-else" },
            "storageClassName": "",
            "claimRef": { "namespace": "elsewhere", "name": "other", "uid": other_uid },
        },
    }))?;
    let volumes = Api::<PersistentVolume>::all(harness.admin.clone());
    volumes.create(&PostParams::default(), &squatter).await?;
    release.notify_one();

    harness
        .wait_claim_event(
            &claim,
            "ProvisioningFailed",
            "already exists and belongs to another claim",
        )
        .await?;
    let pv = volumes.get(&volume_name).await?;
    assert_eq!(
        spec(&pv).claim_ref.as_ref().unwrap().uid.as_deref(),
        Some(other_uid),
        "the other claim's volume is untouched"
    );
    let events = harness
        .events_about(&harness.namespace, &claim.uid().unwrap())
        .await?;
    assert!(
        events.iter().any(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Error creating provisioned PV object"))),
        "the AlreadyExists was not taken as success"
    );
    assert!(
        harness
            .claims()
            .get(&claim.name_any())
            .await?
            .spec
            .unwrap()
            .volume_name
            .is_none()
    );

    // The asset made under that name is ours (the squatter is nobody's provisioning): it
    // goes with the claim.
    assert_eq!(harness.backend.state().assets.len(), 1);
    harness.delete_claim(&claim.name_any()).await?;
    harness.wait_claim_gone(&claim.name_any()).await?;
    assert!(harness.backend.state().assets.is_empty());
    assert!(volumes.get_opt(&volume_name).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn a_hung_backend_call_times_out_without_blocking_other_claims() -> anyhow::Result<()> {
    let harness = Harness::new("hung").await?;
    let class = harness.create_class(json!({})).await?;
    harness.backend.state().hang_next = 1;
    let config = Harness::fast_config()
        .concurrency(2)
        .provision_timeout(std::time::Duration::from_secs(2));
    let _controller = harness.start(config);
    let stuck = harness.create_claim(&class, json!({})).await?;
    wait_for("the first call to hang", || async {
        Ok((harness.backend.state().provision_calls == 1).then_some(()))
    })
    .await?;
    // While that call hangs, another claim is provisioned.
    let other = harness.create_claim(&class, json!({})).await?;
    harness.wait_bound(&other.name_any()).await?;
    // The hung call is abandoned at its timeout and retried.
    harness
        .wait_claim_event(&stuck, "ProvisioningFailed", "timed out")
        .await?;
    harness.wait_bound(&stuck.name_any()).await?;
    let state = harness.backend.snapshot();
    assert_eq!(state.created, 2);
    assert_eq!(state.provision_calls, 3);
    Ok(())
}

#[tokio::test]
async fn the_volume_finalizer_honours_the_reclaim_policy_when_the_volume_is_deleted_first()
-> anyhow::Result<()> {
    // The option needs `patch` on PersistentVolumes, beyond the seed's RBAC.
    let patch_volumes =
        json!([{ "apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["patch"] }]);
    let harness = Harness::with_extra_rules("pv-finalizer", patch_volumes).await?;
    let class = harness.create_class(json!({})).await?;
    let _controller = harness.start(Harness::fast_config().volume_finalizer(true));
    let claim = harness.create_claim(&class, json!({})).await?;
    harness.wait_bound(&claim.name_any()).await?;
    let volume_name = format!("pvc-{}", claim.uid().unwrap());
    let volumes = Api::<PersistentVolume>::all(harness.admin.clone());
    let pv = volumes.get(&volume_name).await?;
    assert!(
        pv.finalizers()
            .iter()
            .any(|f| f == "external-provisioner.volume.kubernetes.io/finalizer")
    );

    // Deleting the volume while bound must not lose the asset: it is deleted once the
    // claim goes and the volume is Released.
    volumes
        .delete(&volume_name, &DeleteParams::default())
        .await?;
    assert!(
        volumes.get_opt(&volume_name).await?.is_some(),
        "held while bound"
    );
    harness.delete_claim(&claim.name_any()).await?;
    harness.wait_volume_gone(&volume_name).await?;
    let state = harness.backend.snapshot();
    assert!(state.assets.is_empty());
    assert_eq!(state.delete_calls, 1);
    Ok(())
}

/// Fails once after creating an asset in the "slow" tier, swaps the class for one in the
/// "fast" tier, and checks the slow asset is deleted before the fast one is made. With
/// `crash`, the first controller is killed right after deleting the slow asset, before the
/// record is replaced.
async fn class_change_between_failed_attempts(crash: bool) -> anyhow::Result<()> {
    let harness = Harness::new(if crash { "restale" } else { "stale" }).await?;
    let class = harness
        .create_class(json!({ "parameters": { "tier": "slow" } }))
        .await?;
    harness.backend.state().fail_always = Some(Failure::AfterCreate);
    let config = Harness::fast_config().failure_threshold(1);
    let (first, mut frozen) = if crash {
        let (running, frozen) = harness.start_crashing_at(config, Checkpoint::StaleAssetDeleted);
        (running, Some(frozen))
    } else {
        (harness.start(config), None)
    };
    let claim = harness.create_claim(&class, json!({})).await?;
    let volume_name = format!("pvc-{}", claim.uid().unwrap());
    harness
        .wait_claim_event(
            &claim,
            "ProvisioningFailed",
            "Giving up after 1 failed attempts",
        )
        .await?;
    assert_eq!(
        harness.backend.state().tiered,
        BTreeSet::from([("slow".to_owned(), volume_name.clone())])
    );

    // StorageClass parameters are immutable: the fix is a new class of the same name.
    harness.backend.state().fail_always = None;
    let classes = Api::<k8s_openapi::api::storage::v1::StorageClass>::all(harness.admin.clone());
    classes.delete(&class, &DeleteParams::default()).await?;
    let fast: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
        "metadata": { "name": class },
        "provisioner": harness.name,
        "reclaimPolicy": "Delete",
        "parameters": { "tier": "fast" },
    }))?;
    classes.create(&PostParams::default(), &fast).await?;

    if let Some(frozen) = frozen.as_mut() {
        frozen.recv().await.context("stale asset deleted")?;
        first.kill().await;
        let record = harness.claims().get(&claim.name_any()).await?.annotations()
            [PROVISIONING_RECORD]
            .clone();
        assert!(
            record.contains("slow"),
            "the old record stays until then: {record}"
        );
        let _restarted = harness.start(Harness::fast_config());
        harness.wait_bound(&claim.name_any()).await?;
    } else {
        harness.wait_bound(&claim.name_any()).await?;
        drop(first);
    }

    let state = harness.backend.snapshot();
    assert_eq!(
        state.tiered,
        BTreeSet::from([("fast".to_owned(), volume_name.clone())]),
        "the slow asset was deleted, not stranded"
    );
    assert!(!state.deleted.is_empty());
    assert!(
        state
            .deleted
            .iter()
            .all(|deleted| *deleted == ("slow".to_owned(), volume_name.clone())),
        "deleted with the recorded parameters: {:?}",
        state.deleted
    );
    // After a crash between deleting and replacing the record, the delete is repeated.
    assert_eq!(state.deleted.len(), if crash { 2 } else { 1 });
    let pv = &harness.volumes_of(&claim.uid().unwrap()).await?[0];
    assert_eq!(pv.annotations()["test.provisioner-rs.io/tier"], "fast");
    let cleared = harness.wait_record_cleared(&claim.name_any()).await?;
    assert_no_record(&cleared);
    Ok(())
}

#[tokio::test]
async fn a_class_changed_between_failed_attempts_deletes_the_old_asset_first() -> anyhow::Result<()>
{
    class_change_between_failed_attempts(false).await
}

#[tokio::test]
async fn a_crash_while_retiring_a_stale_record_deletes_again_and_leaks_nothing()
-> anyhow::Result<()> {
    class_change_between_failed_attempts(true).await
}

#[tokio::test]
async fn a_forgotten_asset_is_reported_on_the_volume_and_the_volume_goes() -> anyhow::Result<()> {
    let harness = Harness::new("forgotten").await?;
    let class = harness.create_class(json!({})).await?;
    harness.backend.state().forget_deletes = true;
    let _controller = harness.start(Harness::fast_config());
    let claim = harness.create_claim(&class, json!({})).await?;
    harness.wait_bound(&claim.name_any()).await?;
    let volume_name = format!("pvc-{}", claim.uid().unwrap());
    let volume = Api::<PersistentVolume>::all(harness.admin.clone())
        .get(&volume_name)
        .await?;

    harness.delete_claim(&claim.name_any()).await?;
    harness.wait_volume_gone(&volume_name).await?;
    let events = harness
        .events_about("default", &volume.uid().context("volume uid")?)
        .await?;
    let forgotten = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("VolumeForgotten"))
        .context("a VolumeForgotten Event on the volume")?;
    assert_eq!(forgotten.type_.as_deref(), Some("Warning"));
    assert_eq!(
        forgotten.message.as_deref(),
        Some(controller_support::FORGOTTEN)
    );
    let state = harness.backend.snapshot();
    assert_eq!(state.delete_calls, 1);
    assert_eq!(
        state.assets,
        BTreeSet::from([volume_name]),
        "the backend kept the data"
    );
    Ok(())
}

#[tokio::test]
async fn an_ignored_claim_keeps_its_record_for_the_instance_that_owns_it() -> anyhow::Result<()> {
    let harness = Harness::new("ignored").await?;
    let class = harness.create_class(json!({})).await?;
    // An instance that accepts the claim but, when called, leaves it to another one.
    let _stranger = harness.start_ignoring(Harness::fast_config());
    let claim = harness.create_claim(&class, json!({})).await?;
    harness
        .wait_backend("the claim ignored", |state| state.ignored_provisions >= 1)
        .await?;
    let marked = harness.claims().get(&claim.name_any()).await?;
    assert!(
        marked.annotations().contains_key(PROVISIONING_RECORD),
        "the record stays for the owner"
    );
    let events = harness
        .events_about(&harness.namespace, &claim.uid().unwrap())
        .await?;
    assert!(
        events.iter().all(|e| e.type_.as_deref() == Some("Normal")),
        "ignoring is silent: {events:?}"
    );

    // The owning instance resumes from the record.
    let _owner = harness.start(Harness::fast_config());
    harness.wait_bound(&claim.name_any()).await?;
    let cleared = harness.wait_record_cleared(&claim.name_any()).await?;
    assert_no_record(&cleared);
    let state = harness.backend.snapshot();
    assert_eq!(state.created, 1);
    assert_eq!(harness.volumes_of(&claim.uid().unwrap()).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_deleted_claim_whose_clean_up_is_ignored_waits_for_the_owner_and_leaks_nothing()
-> anyhow::Result<()> {
    let harness = Harness::new("ignored-delete").await?;
    let class = harness.create_class(json!({})).await?;
    // The owner dies right after creating the asset; the other instance ignores the claim.
    let _stranger = harness.start_ignoring(Harness::fast_config());
    let (owner, mut frozen) =
        harness.start_crashing_at(Harness::fast_config(), Checkpoint::AssetProvisioned);
    let claim = harness.create_claim(&class, json!({})).await?;
    frozen.recv().await.context("asset created")?;
    owner.kill().await;

    harness.delete_claim(&claim.name_any()).await?;
    harness
        .wait_backend("the clean-up ignored", |state| state.ignored_deletes >= 1)
        .await?;
    let held = harness.claims().get(&claim.name_any()).await?;
    assert!(
        held.finalizers()
            .iter()
            .any(|f| f == PROVISIONING_FINALIZER),
        "the claim is held until its asset is cleaned up"
    );
    assert_eq!(harness.backend.state().assets.len(), 1);

    let _owner = harness.start(Harness::fast_config());
    harness.wait_claim_gone(&claim.name_any()).await?;
    let state = harness.backend.snapshot();
    assert!(state.assets.is_empty(), "leaked: {:?}", state.assets);
    assert_eq!(state.created, 1);
    assert_eq!(state.orphan_deletes, 1);
    assert!(harness.volumes_of(&claim.uid().unwrap()).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_observer_sees_operations_queues_and_leadership() -> anyhow::Result<()> {
    let harness = Harness::new("observer").await?;
    let class = harness.create_class(json!({})).await?;
    let observer = Arc::new(controller_support::CountingObserver::default());
    let (leadership, follower) = tokio::sync::watch::channel(false);
    let _controller = controller_support::Running::spawn(
        harness
            .controller(Harness::fast_config())
            .leadership(follower)
            .observer(observer.clone()),
    );
    let claim = harness.create_claim(&class, json!({})).await?;
    wait_for("the claim queued", || async {
        Ok((observer.snapshot().max_claims_queued >= 1).then_some(()))
    })
    .await?;

    leadership.send(true)?;
    harness.wait_bound(&claim.name_any()).await?;
    harness.delete_claim(&claim.name_any()).await?;
    harness
        .wait_volume_gone(&format!("pvc-{}", claim.uid().unwrap()))
        .await?;
    leadership.send(false)?;

    wait_for("leadership reported", || async {
        Ok((observer.snapshot().leadership == [false, true, false]).then_some(()))
    })
    .await?;
    // Every operation started has finished, and the queues drain (the controller watches
    // every claim and volume of the cluster, so other tests' objects pass through too).
    let settled = wait_for("queues drained", || async {
        let seen = observer.snapshot();
        let drained = seen.claims_depth.running == 0
            && seen.claims_depth.queued == 0
            && seen.volumes_depth.running == 0
            && seen.volumes_depth.queued == 0;
        Ok(drained.then_some(seen))
    })
    .await?;
    assert!(settled.provisions_started >= 1);
    assert_eq!(settled.provisions_started, settled.provisions_finished);
    assert!(settled.deletes_started >= 1);
    assert_eq!(settled.deletes_started, settled.deletes_finished);
    assert_eq!(settled.claims_depth.retrying, 0);
    Ok(())
}

async fn create_pod(harness: &Harness, claim: &str) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": testenv::unique_name("consumer") },
        "spec": {
            "containers": [{ "name": "app", "image": "registry.invalid/app" }],
            "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": claim } }],
        },
    }))?;
    Api::<Pod>::namespaced(harness.admin.clone(), &harness.namespace)
        .create(&PostParams::default(), &pod)
        .await?;
    Ok(())
}

/// Makes the API server refuse PersistentVolumes provisioned by this test's provisioner
/// (a ValidatingAdmissionPolicy), and waits until it does.
async fn deny_volume_creation(harness: &Harness) -> anyhow::Result<String> {
    let name = testenv::unique_name("deny-pv");
    let expression = format!(
        "!has(object.metadata.annotations) || !('{PROVISIONED_BY}' in object.metadata.annotations) || object.metadata.annotations['{PROVISIONED_BY}'] != '{}'",
        harness.name
    );
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["persistentvolumes"],
            }]},
            "validations": [{ "expression": expression, "message": "test: volume creation refused" }],
        },
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "policyName": name, "validationActions": ["Deny"] },
    }))?;
    Api::<ValidatingAdmissionPolicy>::all(harness.admin.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(harness.admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let probe: PersistentVolume = serde_json::from_value(json!({
        "metadata": { "name": testenv::unique_name("probe"), "annotations": { PROVISIONED_BY: harness.name } },
        "spec": { "capacity": { "storage": "1Mi" }, "accessModes": ["ReadWriteOnce"], "hostPath": { "path": "/probe" } },
    }))?;
    let volumes = Api::<PersistentVolume>::all(harness.admin.clone());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for("the admission policy in force", || async {
        Ok(volumes
            .create(&dry_run, &probe)
            .await
            .is_err()
            .then_some(()))
    })
    .await?;
    Ok(name)
}

async fn lift_denial(harness: &Harness, name: &str) -> anyhow::Result<()> {
    Api::<ValidatingAdmissionPolicyBinding>::all(harness.admin.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Api::<ValidatingAdmissionPolicy>::all(harness.admin.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}
