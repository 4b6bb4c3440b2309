//! The volume reconciler: deletes the assets of Released volumes and manages the optional
//! PersistentVolume finalizer, carrying out [`decide_volume`].
//!
//! Deleting: the backend deletes the asset ([`Checkpoint::VolumeAssetDeleted`]), then the
//! PersistentVolume object is deleted (with a UID precondition, so a new volume of the same
//! name is never touched), then the finalizer, if any, is removed. The asset deletion is
//! remembered, so the object's own update events do not call the backend twice; after a
//! restart a second call can happen, which is why backends' deletes must be idempotent.

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tokio::time::Instant;

use super::context::Context;
use super::observe::{Checkpoint, DeleteLabels, Outcome};
use super::track::Operation;
use crate::events::{EventType, reasons};
use crate::plan::keys::VOLUME_FINALIZER;
use crate::plan::record::read_record;
use crate::plan::retry::{FailureKind, Gate};
use crate::plan::volume::{VolumeAction, decide_volume, has_volume_finalizer};
use crate::provisioner::{ClaimIdentity, DeleteError, DeleteOutcome, DeleteRequest, Provisioner};

/// Reconciles one volume. Never fails: failures are retried through the returned action.
pub(crate) async fn reconcile_volume<P: Provisioner>(
    volume: Arc<PersistentVolume>,
    ctx: Arc<Context<P>>,
) -> Result<Action, std::convert::Infallible> {
    let pass = ctx.volume_queue.start(&*volume);
    let action = if ctx.is_leader() {
        ctx.caches_ready().await;
        tokio::select! {
            action = sync_volume(volume, &ctx) => action,
            () = ctx.leadership_lost() => Action::await_change(),
        }
    } else {
        Action::await_change()
    };
    pass.finish(&action);
    Ok(action)
}

/// What makes a failing deletion worth retrying at once: any change to the volume.
fn fingerprint(volume: &PersistentVolume) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    volume.resource_version().hash(&mut hasher);
    hasher.finish()
}

async fn sync_volume<P: Provisioner>(volume: Arc<PersistentVolume>, ctx: &Context<P>) -> Action {
    let allowed = ctx.provisioner.should_delete(&volume);
    let action = decide_volume(&volume, &ctx.names, ctx.config.volume_finalizer, allowed);
    tracing::debug!(volume = %volume.name_any(), ?action, "volume decision");
    match action {
        VolumeAction::Ignore => Action::await_change(),
        VolumeAction::AddFinalizer => {
            let mut finalizers = volume.finalizers().to_vec();
            finalizers.push(VOLUME_FINALIZER.to_owned());
            set_finalizers(ctx, &volume, &finalizers).await
        }
        VolumeAction::RemoveFinalizer => {
            let finalizers: Vec<String> = volume
                .finalizers()
                .iter()
                .filter(|f| *f != VOLUME_FINALIZER)
                .cloned()
                .collect();
            set_finalizers(ctx, &volume, &finalizers).await
        }
        VolumeAction::Delete => delete(ctx, &volume).await,
    }
}

async fn set_finalizers<P: Provisioner>(
    ctx: &Context<P>,
    volume: &PersistentVolume,
    finalizers: &[String],
) -> Action {
    match ctx.set_volume_finalizers(volume, finalizers).await {
        // The resulting update event brings the volume back.
        Ok(()) => Action::await_change(),
        Err(error) => {
            tracing::warn!(
                volume = %volume.name_any(), %error,
                "updating the volume finalizer failed (the option needs `patch` on persistentvolumes)"
            );
            retry_later(ctx, volume, false).await
        }
    }
}

async fn retry_later<P: Provisioner>(
    ctx: &Context<P>,
    volume: &PersistentVolume,
    may_give_up: bool,
) -> Action {
    let uid = volume.uid().unwrap_or_default();
    let mut policy = ctx.config.delete_retry;
    if !may_give_up {
        policy.failure_threshold = 0;
    }
    let delay = ctx.with_volume_memory(&uid, fingerprint(volume), |memory| {
        ctx.after_failure(&mut memory.retry, FailureKind::Transient, &policy)
    });
    match delay {
        Some(delay) => Action::requeue(delay),
        None => {
            tracing::warn!(volume = %volume.name_any(), "giving up deleting until the volume changes");
            Action::await_change()
        }
    }
}

async fn delete<P: Provisioner>(ctx: &Context<P>, volume: &Arc<PersistentVolume>) -> Action {
    let name = volume.name_any();
    let uid = volume.uid().unwrap_or_default();
    let labels = DeleteLabels {
        class: volume
            .spec
            .as_ref()
            .and_then(|spec| spec.storage_class_name.clone())
            .unwrap_or_default(),
    };
    let now = Instant::now();
    let policy = ctx.config.delete_retry;
    let (gate, asset_deleted) = ctx.with_volume_memory(&uid, fingerprint(volume), |memory| {
        (memory.retry.gate(now, &policy), memory.asset_deleted)
    });
    match gate {
        Gate::Proceed => {}
        Gate::NotBefore(at) => return Action::requeue(at - now),
        Gate::GaveUp => return Action::await_change(),
    }

    let operation = Operation::delete(ctx.observer.as_ref(), labels);
    if !asset_deleted {
        let request = match delete_request(ctx, volume) {
            Ok(request) => request,
            Err(message) => {
                ctx.publish(
                    &**volume,
                    EventType::Warning,
                    reasons::VOLUME_FAILED_DELETE,
                    &message,
                )
                .await;
                operation.finish(Outcome::Failed("parameters"));
                return retry_later(ctx, volume, true).await;
            }
        };
        let timeout = ctx.config.delete_timeout;
        let result = match tokio::time::timeout(timeout, ctx.provisioner.delete(request)).await {
            Ok(result) => result,
            Err(_) => Err(DeleteError::Failed(
                format!("deleting timed out after {timeout:?}").into(),
            )),
        };
        match result {
            Ok(outcome) => {
                if let DeleteOutcome::Forgotten { message } = &outcome {
                    tracing::warn!(volume = %name, %message, "the backend let go of the asset without deleting it");
                    ctx.publish(
                        &**volume,
                        EventType::Warning,
                        reasons::VOLUME_FORGOTTEN,
                        message,
                    )
                    .await;
                }
                ctx.with_volume_memory(&uid, fingerprint(volume), |memory| {
                    memory.asset_deleted = true;
                });
            }
            Err(DeleteError::Ignored(reason)) => {
                tracing::debug!(volume = %name, %reason, "backend ignored the deletion");
                operation.finish(Outcome::Failed("ignored"));
                return Action::await_change();
            }
            Err(error) => {
                let (type_, reason) = match &error {
                    DeleteError::InUse(_) => (EventType::Normal, reasons::VOLUME_DELETE),
                    _ => (EventType::Warning, reasons::VOLUME_FAILED_DELETE),
                };
                tracing::warn!(volume = %name, %error, "deleting the asset failed");
                ctx.publish(&**volume, type_, reason, &error.to_string())
                    .await;
                operation.finish(Outcome::Failed(error.kind()));
                return retry_later(ctx, volume, true).await;
            }
        }
        ctx.checkpoint(Checkpoint::VolumeAssetDeleted, &name).await;
    }

    let lingering = match ctx.delete_volume(&name, &uid).await {
        Ok(lingering) => lingering,
        Err(error) => {
            tracing::warn!(volume = %name, %error, "deleting the volume object failed");
            operation.finish(Outcome::Failed("api"));
            return retry_later(ctx, volume, false).await;
        }
    };
    if let Some(lingering) = lingering.filter(has_volume_finalizer) {
        let finalizers: Vec<String> = lingering
            .finalizers()
            .iter()
            .filter(|f| *f != VOLUME_FINALIZER)
            .cloned()
            .collect();
        if let Err(error) = ctx.set_volume_finalizers(&lingering, &finalizers).await {
            tracing::warn!(volume = %name, %error, "removing the volume finalizer failed");
            operation.finish(Outcome::Failed("api"));
            return retry_later(ctx, volume, false).await;
        }
    }
    operation.finish(Outcome::Succeeded);
    tracing::info!(volume = %name, "deleted");
    // Memory is dropped when the watch reports the volume gone.
    Action::await_change()
}

/// Builds the backend's delete request from the volume alone (never the StorageClass).
fn delete_request<P: Provisioner>(
    ctx: &Context<P>,
    volume: &Arc<PersistentVolume>,
) -> Result<DeleteRequest<P::Parameters>, String> {
    let claim_ref = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.clone())
        .unwrap_or_default();
    let identity = ClaimIdentity::new(
        claim_ref.namespace.unwrap_or_default(),
        claim_ref.name.unwrap_or_default(),
        claim_ref.uid.unwrap_or_default(),
    );
    let class = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.clone())
        .unwrap_or_default();
    let mut request =
        DeleteRequest::new(volume.name_any(), identity, class).with_volume(volume.clone());
    let record = read_record(&volume.metadata).map_err(|error| error.to_string())?;
    if let Some(record) = record {
        let parameters = ctx
            .provisioner
            .parse_parameters(&record.parameters)
            .map_err(|error| {
                format!("the parameters recorded at provisioning no longer parse: {error}")
            })?;
        request.parameters = Some(parameters);
        request.selected_node = record.selected_node;
    }
    Ok(request)
}
