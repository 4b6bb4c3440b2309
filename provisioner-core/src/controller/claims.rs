//! The claim reconciler: carries out [`decide_claim`] against the API server and backend.
//!
//! The steps are described in the [module documentation](super).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tokio::time::Instant;

use super::context::{Context, is_conflict};
use super::observe::{Checkpoint, Outcome, ProvisionLabels};
use super::track::Operation;
use crate::binding::predicates::claim_class;
use crate::events::{EventType, reasons};
use crate::plan::claim::{
    ClaimAction, ClaimView, IgnoreReason, Refusal, claim_fingerprint, data_source, decide_claim,
    new_record,
};
use crate::plan::record::{
    ProvisioningRecord, has_provisioning_finalizer, is_in_flight, read_record,
    volume_belongs_to_claim, with_record, without_record, without_selected_node,
};
use crate::plan::retry::{FailureKind, Gate};
use crate::plan::volume::{VolumeParts, build_volume, is_ours};
use crate::provisioner::{
    ClaimIdentity, DeleteError, DeleteOutcome, DeleteRequest, ProvisionError, ProvisionRequest,
    Provisioner,
};

/// How often one reconcile re-reads a claim that changed under it before requeueing.
const STALE_READS: usize = 4;

/// The result of one pass over a claim.
enum Step {
    /// Finished with this action.
    Done(Action),
    /// The claim changed under us; decide again on this fresh copy.
    Stale(Arc<PersistentVolumeClaim>),
}

/// Reconciles one claim. Never fails: failures are retried through the returned action.
pub(crate) async fn reconcile_claim<P: Provisioner>(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context<P>>,
) -> Result<Action, std::convert::Infallible> {
    let pass = ctx.claim_queue.start(&*claim);
    let action = if ctx.is_leader() {
        ctx.caches_ready().await;
        // Losing leadership drops the work wherever it is, exactly like a crash, which the
        // in-cluster record makes safe.
        tokio::select! {
            action = sync_claim(claim, &ctx) => action,
            () = ctx.leadership_lost() => Action::await_change(),
        }
    } else {
        // Woken again when leadership is gained.
        Action::await_change()
    };
    pass.finish(&action);
    Ok(action)
}

async fn sync_claim<P: Provisioner>(
    mut claim: Arc<PersistentVolumeClaim>,
    ctx: &Context<P>,
) -> Action {
    for _ in 0..STALE_READS {
        match step(claim, ctx).await {
            Step::Done(action) => return action,
            Step::Stale(fresh) => claim = fresh,
        }
    }
    Action::requeue(ctx.config.provision_retry.initial_backoff)
}

fn key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    )
}

fn labels(claim: &PersistentVolumeClaim) -> ProvisionLabels {
    ProvisionLabels {
        class: claim
            .spec
            .as_ref()
            .and_then(|spec| spec.storage_class_name.clone())
            .unwrap_or_default(),
        source: data_source(claim)
            .map(|source| source.kind)
            .unwrap_or_default(),
    }
}

async fn step<P: Provisioner>(claim: Arc<PersistentVolumeClaim>, ctx: &Context<P>) -> Step {
    if ctx.is_outdated(&claim) {
        tracing::debug!(claim = %key(&claim), "cached claim is outdated; waiting for the newer one");
        return Step::Done(Action::await_change());
    }
    let uid = claim.uid().unwrap_or_default();
    let volume_name = (ctx.config.volume_namer)(&claim);
    let class = ctx.classes.get(&ObjectRef::new(claim_class(&claim)));
    let volume = ctx.volumes.get(&ObjectRef::new(&volume_name));
    let action = decide_claim(
        ClaimView {
            claim: &claim,
            class: class.as_deref(),
            volume: volume.as_deref(),
            volume_name: &volume_name,
            names: &ctx.names,
        },
        ctx.provisioner.as_ref(),
    );
    let fingerprint = claim_fingerprint(&claim, class.as_deref());
    tracing::debug!(claim = %key(&claim), version = ?claim.metadata.resource_version, ?action, "claim decision");
    match action {
        ClaimAction::Ignore(reason) => {
            // Nothing left to retry or report for these (another instance's claim
            // included); entries for the others go with the claim.
            if matches!(
                reason,
                IgnoreReason::AlreadyBound
                    | IgnoreReason::VolumeExists
                    | IgnoreReason::NotOurs
                    | IgnoreReason::DeclinedByBackend
            ) {
                ctx.forget_claim(&uid);
            }
            Step::Done(Action::await_change())
        }
        ClaimAction::Refuse(refusal) => {
            report_refusal(ctx, &claim, fingerprint, &refusal).await;
            Step::Done(Action::await_change())
        }
        ClaimAction::ClearRecord => clear_record(ctx, &claim, fingerprint, None).await,
        ClaimAction::CleanUp(record) => {
            clean_up(ctx, &claim, record, &volume_name, fingerprint).await
        }
        ClaimAction::RetireRecord(stale) => retire_record(ctx, &claim, stale, fingerprint).await,
        ClaimAction::Provision => {
            let class = class.expect("decide_claim provisions only with a class");
            provision(ctx, claim, class, volume_name, fingerprint).await
        }
    }
}

/// Reports a refusal once per claim/class version: the same refusal for an unchanged claim
/// is not repeated on every unrelated update.
async fn report_refusal<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
    refusal: &Refusal,
) {
    let message = refusal.to_string();
    let uid = claim.uid().unwrap_or_default();
    let first = ctx.with_claim_memory(&uid, fingerprint, |memory| {
        let entry = Some((fingerprint, message.clone()));
        let first = memory.reported != entry;
        memory.reported = entry;
        first
    });
    if first {
        tracing::info!(claim = %key(claim), %message, "not provisioning");
        ctx.publish(
            claim,
            EventType::Warning,
            reasons::PROVISIONING_FAILED,
            &message,
        )
        .await;
    }
}

/// Counts a failed attempt and says when to retry.
async fn failure<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
    kind: FailureKind,
) -> Step {
    let uid = claim.uid().unwrap_or_default();
    let policy = ctx.config.provision_retry;
    let (delay, failures) = ctx.with_claim_memory(&uid, fingerprint, |memory| {
        (
            ctx.after_failure(&mut memory.retry, kind, &policy),
            memory.retry.failures(),
        )
    });
    match delay {
        Some(delay) => Step::Done(Action::requeue(delay)),
        None => {
            let message = format!(
                "Giving up after {failures} failed attempts; edit the claim or its StorageClass to retry"
            );
            ctx.publish(
                claim,
                EventType::Warning,
                reasons::PROVISIONING_FAILED,
                &message,
            )
            .await;
            Step::Done(Action::await_change())
        }
    }
}

/// Re-reads the claim after a conflict.
async fn reread<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
) -> Step {
    let namespace = claim.namespace().unwrap_or_default();
    match ctx.get_claim(&namespace, &claim.name_any()).await {
        Ok(Some(fresh)) if fresh.uid() == claim.uid() => Step::Stale(Arc::new(fresh)),
        Ok(_) => Step::Done(Action::await_change()),
        Err(error) => {
            tracing::warn!(claim = %key(claim), %error, "reading claim failed");
            failure(ctx, claim, fingerprint, FailureKind::Transient).await
        }
    }
}

async fn provision<P: Provisioner>(
    ctx: &Context<P>,
    claim: Arc<PersistentVolumeClaim>,
    class: Arc<StorageClass>,
    volume_name: String,
    fingerprint: u64,
) -> Step {
    let uid = claim.uid().unwrap_or_default();
    let claim_key = key(&claim);
    let raw_parameters = class.parameters.clone().unwrap_or_default();
    let parameters = match ctx.provisioner.parse_parameters(&raw_parameters) {
        Ok(parameters) => parameters,
        Err(error) => {
            let refusal = Refusal::InvalidParameter {
                class: class.name_any(),
                error,
            };
            report_refusal(ctx, &claim, fingerprint, &refusal).await;
            return Step::Done(Action::await_change());
        }
    };

    let now = Instant::now();
    let policy = ctx.config.provision_retry;
    match ctx.with_claim_memory(&uid, fingerprint, |memory| memory.retry.gate(now, &policy)) {
        Gate::Proceed => {}
        Gate::NotBefore(at) => return Step::Done(Action::requeue(at - now)),
        Gate::GaveUp => return Step::Done(Action::await_change()),
    }

    // Step 1: the in-flight record. `decide_claim` retires a record that differs from this
    // one first, so the claim carries none or this one.
    let record = new_record(&claim, &class, &volume_name);
    let resumed = is_in_flight(&claim);
    let recorded = read_record(&claim.metadata).ok().flatten();
    let claim = if recorded.as_ref() != Some(&record) || !has_provisioning_finalizer(&claim) {
        match ctx.replace_claim(&with_record(&claim, &record)).await {
            Ok(saved) => Arc::new(saved),
            Err(error) if is_conflict(&error) => return reread(ctx, &claim, fingerprint).await,
            Err(error) => {
                // Not found (deleted), forbidden (being deleted: no new finalizers), or a
                // transient failure: nothing was started, so just try again later.
                tracing::warn!(claim = %claim_key, %error, "saving the provisioning record failed");
                return failure(ctx, &claim, fingerprint, FailureKind::Transient).await;
            }
        }
    } else {
        claim
    };
    ctx.checkpoint(Checkpoint::RecordSaved, &claim_key).await;

    // Step 2: an earlier attempt may have got further than the cache shows.
    if resumed {
        match ctx.get_volume(&volume_name).await {
            Ok(Some(existing)) if volume_belongs_to_claim(&existing, &uid) => {
                return clear_record(ctx, &claim, fingerprint, None).await;
            }
            Ok(Some(_)) => {
                let refusal = Refusal::VolumeNameTaken {
                    volume: volume_name,
                };
                report_refusal(ctx, &claim, fingerprint, &refusal).await;
                return Step::Done(Action::await_change());
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(claim = %claim_key, %error, "reading the volume failed");
                return failure(ctx, &claim, fingerprint, FailureKind::Transient).await;
            }
        }
    }

    // Step 3: the backend.
    let operation = Operation::provision(ctx.observer.as_ref(), labels(&claim));
    let remembered = ctx.with_claim_memory(&uid, fingerprint, |memory| {
        memory
            .provisioned
            .as_ref()
            .filter(|(for_record, _)| *for_record == record)
            .map(|(_, provisioned)| provisioned.clone())
    });
    let provisioned = match remembered {
        Some(provisioned) => provisioned,
        None => {
            let message =
                format!("External provisioner is provisioning volume for claim \"{claim_key}\"");
            ctx.publish(&*claim, EventType::Normal, reasons::PROVISIONING, &message)
                .await;
            let mut request = ProvisionRequest::new(
                volume_name.clone(),
                claim.clone(),
                class.clone(),
                parameters,
            );
            request.selected_node = record.selected_node.clone();
            let timeout = ctx.config.provision_timeout;
            let result =
                match tokio::time::timeout(timeout, ctx.provisioner.provision(request)).await {
                    Ok(result) => result,
                    Err(_) => Err(ProvisionError::InBackground(
                        format!("provisioning timed out after {timeout:?}").into(),
                    )),
                };
            match result {
                Ok(provisioned) => {
                    ctx.with_claim_memory(&uid, fingerprint, |memory| {
                        memory.provisioned = Some((record.clone(), provisioned.clone()));
                    });
                    provisioned
                }
                Err(error) => {
                    operation.finish(Outcome::Failed(error.kind()));
                    return provision_failed(ctx, &claim, fingerprint, error).await;
                }
            }
        }
    };
    ctx.checkpoint(Checkpoint::AssetProvisioned, &claim_key)
        .await;

    // Step 4: the PersistentVolume.
    let volume = build_volume(VolumeParts {
        volume_name: &volume_name,
        claim: &claim,
        class: &class,
        provisioned: &provisioned,
        record: &record,
        finalizer: ctx.config.volume_finalizer,
    });
    if let Err(error) = ctx.create_volume(&volume).await {
        let exists = matches!(&error, kube::Error::Api(status) if status.is_already_exists());
        let accepted = exists
            && matches!(
                ctx.get_volume(&volume_name).await,
                Ok(Some(existing)) if volume_belongs_to_claim(&existing, &uid)
            );
        if !accepted {
            let message =
                format!("Error creating provisioned PV object for claim {claim_key}: {error}");
            tracing::warn!(claim = %claim_key, %error, "creating the volume failed");
            ctx.publish(
                &*claim,
                EventType::Warning,
                reasons::PROVISIONING_FAILED,
                &message,
            )
            .await;
            operation.finish(Outcome::Failed("api"));
            return failure(ctx, &claim, fingerprint, FailureKind::Transient).await;
        }
    }
    operation.finish(Outcome::Succeeded);
    ctx.checkpoint(Checkpoint::VolumeCreated, &claim_key).await;
    let message = format!("Successfully provisioned volume {volume_name}");
    ctx.publish(
        &*claim,
        EventType::Normal,
        reasons::PROVISIONING_SUCCEEDED,
        &message,
    )
    .await;
    tracing::info!(claim = %claim_key, volume = %volume_name, "provisioned");

    // Step 5.
    clear_record(ctx, &claim, fingerprint, None).await
}

/// Handles a backend provisioning error.
async fn provision_failed<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
    error: ProvisionError,
) -> Step {
    let claim_key = key(claim);
    tracing::warn!(claim = %claim_key, kind = error.kind(), %error, "provisioning failed");
    match error {
        ProvisionError::Ignored(reason) => {
            tracing::debug!(claim = %claim_key, %reason, "backend ignored the claim");
            Step::Done(Action::await_change())
        }
        ProvisionError::Infeasible(_) => {
            let message = format!(
                "Volume provisioning failed with infeasible error. Retries will be delayed. {error}"
            );
            ctx.publish(
                claim,
                EventType::Warning,
                reasons::PROVISIONING_FAILED,
                &message,
            )
            .await;
            failure(ctx, claim, fingerprint, FailureKind::Infeasible).await
        }
        ProvisionError::Reschedule(_) if crate::plan::claim::selected_node(claim).is_some() => {
            ctx.publish(
                claim,
                EventType::Warning,
                reasons::PROVISIONING_FAILED,
                &error.to_string(),
            )
            .await;
            let edited = ctx
                .edit_claim(claim, |current| {
                    crate::plan::claim::selected_node(current)
                        .map(|_| without_selected_node(current))
                })
                .await;
            match edited {
                // The scheduler picks a node again; the claim update wakes us.
                Ok(_) => Step::Done(Action::await_change()),
                Err(error) => {
                    tracing::warn!(claim = %claim_key, %error, "removing the selected node failed");
                    failure(ctx, claim, fingerprint, FailureKind::Transient).await
                }
            }
        }
        other => {
            ctx.publish(
                claim,
                EventType::Warning,
                reasons::PROVISIONING_FAILED,
                &other.to_string(),
            )
            .await;
            failure(ctx, claim, fingerprint, FailureKind::Transient).await
        }
    }
}

/// Removes the in-flight record and finalizer: any record, or only `expected` (a record
/// retired with its asset must not take a newer record written meanwhile with it).
async fn clear_record<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
    expected: Option<&ProvisioningRecord>,
) -> Step {
    let uid = claim.uid().unwrap_or_default();
    let cleared = ctx
        .edit_claim(claim, |current| {
            let removable = match expected {
                None => is_in_flight(current),
                Some(expected) => read_record(&current.metadata)
                    .ok()
                    .flatten()
                    .is_some_and(|record| record == *expected),
            };
            removable.then(|| without_record(current))
        })
        .await;
    match cleared {
        Ok(_) => {
            ctx.checkpoint(Checkpoint::RecordCleared, &key(claim)).await;
            ctx.forget_claim(&uid);
            Step::Done(Action::await_change())
        }
        Err(error) => {
            tracing::warn!(claim = %key(claim), %error, "removing the provisioning record failed");
            failure(ctx, claim, fingerprint, FailureKind::Transient).await
        }
    }
}

/// Cleans up after a claim deleted mid-provisioning.
async fn clean_up<P: Provisioner>(
    ctx: &Context<P>,
    claim: &Arc<PersistentVolumeClaim>,
    record: Option<ProvisioningRecord>,
    volume_name: &str,
    fingerprint: u64,
) -> Step {
    let uid = claim.uid().unwrap_or_default();
    let claim_key = key(claim);
    if let Some(step) = cleanup_gate(ctx, claim, fingerprint) {
        return step;
    }
    let volume_name = record
        .as_ref()
        .map_or(volume_name, |record| record.volume_name.as_str())
        .to_owned();

    // A PersistentVolume of ours that exists keeps its asset: its reclaim policy decides (it
    // is Released once the claim is gone). The cache cannot be trusted to say it is absent.
    // A volume of that name that someone else made does not hold our asset.
    match ctx.get_volume(&volume_name).await {
        Ok(Some(existing))
            if volume_belongs_to_claim(&existing, &uid) || is_ours(&existing, &ctx.names) => {}
        Ok(_) => {
            if let Err(step) =
                delete_unsaved_asset(ctx, claim, record.as_ref(), &volume_name, fingerprint).await
            {
                return step;
            }
            ctx.checkpoint(Checkpoint::OrphanDeleted, &claim_key).await;
        }
        Err(error) => {
            tracing::warn!(claim = %claim_key, %error, "reading the volume failed");
            return cleanup_retry(ctx, claim, fingerprint).await;
        }
    }
    clear_record(ctx, claim, fingerprint, None).await
}

/// Retires a record that no longer matches what the next attempt would record: deletes the
/// asset made under it, then removes it (the next pass writes the new one). A crash between
/// the two repeats the (idempotent) delete.
async fn retire_record<P: Provisioner>(
    ctx: &Context<P>,
    claim: &Arc<PersistentVolumeClaim>,
    stale: ProvisioningRecord,
    fingerprint: u64,
) -> Step {
    let uid = claim.uid().unwrap_or_default();
    let claim_key = key(claim);
    if let Some(step) = cleanup_gate(ctx, claim, fingerprint) {
        return step;
    }
    // The attempt under the old record may have finished after all (the cache lags): then
    // its volume stands and only the record is left to clear.
    match ctx.get_volume(&stale.volume_name).await {
        Ok(Some(existing)) if volume_belongs_to_claim(&existing, &uid) => {
            return clear_record(ctx, claim, fingerprint, None).await;
        }
        Ok(Some(existing)) if is_ours(&existing, &ctx.names) => {
            let refusal = Refusal::VolumeNameTaken {
                volume: stale.volume_name.clone(),
            };
            report_refusal(ctx, claim, fingerprint, &refusal).await;
            return Step::Done(Action::await_change());
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(claim = %claim_key, %error, "reading the volume failed");
            return cleanup_retry(ctx, claim, fingerprint).await;
        }
    }
    tracing::info!(claim = %claim_key, volume = %stale.volume_name, "the provisioning record is stale (class or node changed); deleting what it recorded");
    if let Err(step) =
        delete_unsaved_asset(ctx, claim, Some(&stale), &stale.volume_name, fingerprint).await
    {
        return step;
    }
    ctx.checkpoint(Checkpoint::StaleAssetDeleted, &claim_key)
        .await;
    clear_record(ctx, claim, fingerprint, Some(&stale)).await
}

/// The retry gate of clean-ups, which never give up: a stuck claim is better than a leaked
/// asset.
fn cleanup_gate<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
) -> Option<Step> {
    let uid = claim.uid().unwrap_or_default();
    let now = Instant::now();
    let policy = ctx.config.provision_retry;
    match ctx.with_claim_memory(&uid, fingerprint, |memory| memory.retry.gate(now, &policy)) {
        Gate::NotBefore(at) => Some(Step::Done(Action::requeue(at - now))),
        Gate::Proceed | Gate::GaveUp => None,
    }
}

/// Deletes an asset whose PersistentVolume was never saved, with the recorded data and the
/// claim object.
async fn delete_unsaved_asset<P: Provisioner>(
    ctx: &Context<P>,
    claim: &Arc<PersistentVolumeClaim>,
    record: Option<&ProvisioningRecord>,
    volume_name: &str,
    fingerprint: u64,
) -> Result<(), Step> {
    let claim_key = key(claim);
    let identity = ClaimIdentity::new(
        claim.namespace().unwrap_or_default(),
        claim.name_any(),
        claim.uid().unwrap_or_default(),
    );
    let class_name = record.map_or_else(
        || claim_class(claim).to_owned(),
        |r| r.storage_class.clone(),
    );
    let mut request =
        DeleteRequest::new(volume_name, identity, class_name).with_claim_object(claim.clone());
    if let Some(record) = record {
        match ctx.provisioner.parse_parameters(&record.parameters) {
            Ok(parameters) => request.parameters = Some(parameters),
            Err(error) => {
                cleanup_failed(ctx, claim, volume_name, &error.to_string()).await;
                return Err(cleanup_retry(ctx, claim, fingerprint).await);
            }
        }
        request.selected_node = record.selected_node.clone();
    } else {
        let empty = BTreeMap::new();
        request.parameters = ctx.provisioner.parse_parameters(&empty).ok();
    }
    let timeout = ctx.config.delete_timeout;
    let result = match tokio::time::timeout(timeout, ctx.provisioner.delete(request)).await {
        Ok(result) => result,
        Err(_) => Err(DeleteError::Failed(
            format!("deleting timed out after {timeout:?}").into(),
        )),
    };
    match result {
        Ok(DeleteOutcome::Deleted) => {
            tracing::info!(claim = %claim_key, volume = %volume_name, "deleted an asset that has no PersistentVolume");
            Ok(())
        }
        Ok(DeleteOutcome::Forgotten { message }) => {
            tracing::warn!(claim = %claim_key, volume = %volume_name, %message, "the backend let go of an asset that has no PersistentVolume");
            ctx.publish(
                &**claim,
                EventType::Warning,
                reasons::VOLUME_FORGOTTEN,
                &message,
            )
            .await;
            Ok(())
        }
        Err(DeleteError::Ignored(reason)) => {
            // Another instance owns the asset; its deletion and record removal wake us.
            tracing::debug!(claim = %claim_key, %reason, "backend left the clean-up to another instance");
            Err(Step::Done(Action::await_change()))
        }
        Err(error) => {
            cleanup_failed(ctx, claim, volume_name, &error.to_string()).await;
            Err(cleanup_retry(ctx, claim, fingerprint).await)
        }
    }
}

async fn cleanup_failed<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    volume_name: &str,
    error: &str,
) {
    let message = format!(
        "Error cleaning provisioned volume {volume_name} for claim {}: {error}. Retrying.",
        key(claim)
    );
    ctx.publish(
        claim,
        EventType::Warning,
        reasons::PROVISIONING_CLEANUP_FAILED,
        &message,
    )
    .await;
}

/// Clean-up failures back off like any failure but never give up.
async fn cleanup_retry<P: Provisioner>(
    ctx: &Context<P>,
    claim: &PersistentVolumeClaim,
    fingerprint: u64,
) -> Step {
    let uid = claim.uid().unwrap_or_default();
    let policy = crate::plan::retry::RetryPolicy {
        failure_threshold: 0,
        ..ctx.config.provision_retry
    };
    let delay = ctx.with_claim_memory(&uid, fingerprint, |memory| {
        ctx.after_failure(&mut memory.retry, FailureKind::Transient, &policy)
    });
    Step::Done(Action::requeue(delay.unwrap_or(Duration::ZERO)))
}
