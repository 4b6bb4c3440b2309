//! The generic provisioning controller: turns a [`Provisioner`] into a working dynamic
//! provisioner against the API server.
//!
//! [`ProvisionController`] watches claims, PersistentVolumes and StorageClasses into
//! kube-runtime reflector caches and drives two kube-runtime appliers: one provisions claims,
//! one deletes Released volumes. What to do is decided by the pure functions in
//! [`crate::plan`]; this module only carries the decisions out.
//!
//! # How a claim is provisioned
//!
//! Each step ends at a [`Checkpoint`]:
//!
//! 1. The in-flight record and finalizer are written onto the claim, conditional on the
//!    claim's `resourceVersion` ([`Checkpoint::RecordSaved`]). A conflict means the cache
//!    was stale: the controller decides again on a fresh read.
//! 2. If the claim already carried a record (an earlier attempt, maybe by a process that
//!    died), the PersistentVolume is read live: if it exists and carries the claim's UID,
//!    the controller skips to step 5.
//! 3. The backend is called (idempotent per volume name) under a timeout
//!    ([`Checkpoint::AssetProvisioned`]).
//! 4. The PersistentVolume is created. `AlreadyExists` is success only if the existing
//!    volume's `claimRef` carries the claim's UID ([`Checkpoint::VolumeCreated`]).
//! 5. The record and finalizer are removed ([`Checkpoint::RecordCleared`]).
//!
//! A claim deleted while in flight keeps the finalizer; the controller then reads the
//! PersistentVolume live and, if there is none of its own, deletes the asset with the
//! recorded data and the claim object ([`Checkpoint::OrphanDeleted`]) before removing the
//! finalizer.
//!
//! A claim whose record no longer matches what step 1 would write (the class was replaced
//! with other parameters, the scheduler picked another node after a reschedule) is not
//! overwritten: the asset made under the old record is deleted the same way
//! ([`Checkpoint::StaleAssetDeleted`]), then the old record is removed, and the claim starts
//! again at step 1.
//!
//! Several instances of one provisioner (one per node) share the claims: an instance whose
//! [`Provisioner::should_provision`] declines a claim never resumes it, but every instance
//! offers a deleted claim's asset and a stale record's asset to its backend, which deletes
//! the assets it owns and answers [`DeleteError::Ignored`](crate::provisioner::DeleteError)
//! for the others.
//!
//! A Released volume with reclaim policy `Delete` has its asset deleted
//! ([`Checkpoint::VolumeAssetDeleted`]), then the object (with a UID precondition), then
//! the optional finalizer.
//!
//! # Guarantees
//!
//! - **At most one volume per claim, and no leaked asset**, whatever happens between two
//!   steps (process killed, claim deleted, PersistentVolume create failing, stale caches):
//!   in-flight state lives on the claim (see [`crate::plan::record`]), the volume name is
//!   deterministic, and `AlreadyExists` is accepted only for a volume whose `claimRef`
//!   carries the claim's UID.
//! - **Never stuck**: every backend and API call has a timeout, each queue runs up to
//!   [`Config::concurrency`] operations at once, and the same object is never worked on
//!   twice at the same time.
//! - **Retries as configured**: per-object exponential backoff with jitter; failure
//!   thresholds are exact and reset when the claim or its StorageClass changes; a
//!   StorageClass being created or updated wakes the claims waiting for it. Clean-ups (a
//!   deleted claim's asset, a stale record's asset) back off the same way but never give up.
//! - **Bounded memory**: what the controller remembers per claim or volume (retry state,
//!   the backend's last answer, outdated versions) is dropped when the object is deleted,
//!   and after every relist of the watch for objects no longer listed, so deletions missed
//!   while the watch was disconnected do not leave entries behind.
//!
//! # Permissions
//!
//! The controller works under the RBAC every external provisioner has been deployed with
//! (the seed scenario's): `persistentvolumes` get/list/watch/create/delete,
//! `persistentvolumeclaims` get/list/watch/update, `storageclasses` get/list/watch,
//! core `events` create/patch. Claims are only ever replaced with their `resourceVersion`
//! (never patched). [`Config::volume_finalizer`] additionally needs `patch` on
//! `persistentvolumes`.
//!
//! # Running it
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use provisioner_core::provisioner::*;
//! # struct MyBackend;
//! # impl Provisioner for MyBackend {
//! #     type Parameters = ();
//! #     fn parse_parameters(&self, _: &BTreeMap<String, String>) -> Result<(), ParameterError> { Ok(()) }
//! #     async fn provision(&self, _: ProvisionRequest<()>) -> Result<ProvisionedVolume, ProvisionError> { unimplemented!() }
//! #     async fn delete(&self, _: DeleteRequest<()>) -> Result<DeleteOutcome, DeleteError> { Ok(DeleteOutcome::Deleted) }
//! # }
//! use provisioner_core::controller::{Config, ProvisionController};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! ProvisionController::new(client, "example.com/my-backend", MyBackend)
//!     .config(Config::default().concurrency(64))
//!     .graceful_shutdown_on(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .run()
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod claims;
mod config;
mod context;
mod observe;
mod track;
mod volumes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::{self as runtime_controller, Action, applier};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

pub use config::{Config, VolumeNamer};
pub use observe::{
    ApiRequest, Checkpoint, CheckpointHook, DeleteLabels, NoopObserver, Observer, Outcome,
    ProvisionLabels, QueueDepth, QueueKind,
};

use crate::binding::predicates::claim_class;
use crate::events::EventRecorder;
use crate::plan::ProvisionerNames;
use crate::provisioner::Provisioner;
use context::Context;
use track::QueueTracker;

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The provisioner name is empty.
    #[error("the provisioner name must not be empty")]
    EmptyName,
}

/// Whether the controller's caches hold a full list of claims, volumes and classes; for
/// readiness probes. Cheap to clone.
#[derive(Clone)]
pub struct CacheStatus {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

impl std::fmt::Debug for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStatus")
            .field("synced", &self.is_synced())
            .finish()
    }
}

impl CacheStatus {
    /// Whether all three caches are synced now.
    pub fn is_synced(&self) -> bool {
        self.synced().now_or_never().is_some()
    }

    /// Completes once all three caches are synced.
    pub async fn synced(&self) {
        let _ = futures::join!(
            self.claims.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.classes.wait_until_ready()
        );
    }

    /// How many claims the cache holds.
    pub fn claims(&self) -> usize {
        self.claims.len()
    }
}

/// The provisioning controller for one backend. Build it, then [`run`](Self::run) it.
pub struct ProvisionController<P> {
    client: Client,
    name: String,
    provisioner: Arc<P>,
    config: Config,
    observer: Arc<dyn Observer>,
    checkpoints: Option<CheckpointHook>,
    leadership: Option<watch::Receiver<bool>>,
    shutdown: Option<BoxFuture<'static, ()>>,
    claims: (Store<PersistentVolumeClaim>, Writer<PersistentVolumeClaim>),
    volumes: (Store<PersistentVolume>, Writer<PersistentVolume>),
    classes: (Store<StorageClass>, Writer<StorageClass>),
}

impl<P> std::fmt::Debug for ProvisionController<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionController")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<P: Provisioner> ProvisionController<P> {
    /// A controller provisioning for StorageClasses whose `provisioner` is `name` (or one of
    /// [`Config::aliases`]), with `provisioner` as the backend.
    pub fn new(client: Client, name: impl Into<String>, provisioner: P) -> Self {
        Self {
            client,
            name: name.into(),
            provisioner: Arc::new(provisioner),
            config: Config::default(),
            observer: Arc::new(NoopObserver),
            checkpoints: None,
            leadership: None,
            shutdown: None,
            claims: reflector::store(),
            volumes: reflector::store(),
            classes: reflector::store(),
        }
    }

    /// Replaces the settings.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Works only while `leadership` holds `true`. Losing it drops the operations in flight
    /// (safe: their state is in the cluster) and stops new ones; gaining it looks at every
    /// cached object again. Without this, the controller always works.
    #[must_use]
    pub fn leadership(mut self, leadership: watch::Receiver<bool>) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// Stops taking new work when `signal` completes; [`run`](Self::run) returns once the
    /// operations in flight have finished. Bound that wait with a timeout of your own:
    /// dropping the `run` future is safe.
    #[must_use]
    pub fn graceful_shutdown_on(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(signal.boxed());
        self
    }

    /// Reports what the controller does (metrics, request accounting).
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Awaits `hook` after every [`Checkpoint`] (tracing; crash tests).
    #[must_use]
    pub fn checkpoint_hook(mut self, hook: CheckpointHook) -> Self {
        self.checkpoints = Some(hook);
        self
    }

    /// A handle telling whether the caches are synced, usable while the controller runs.
    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus {
            claims: self.claims.0.clone(),
            volumes: self.volumes.0.clone(),
            classes: self.classes.0.clone(),
        }
    }

    /// Runs until the graceful-shutdown signal (forever without one).
    pub async fn run(self) -> Result<(), Error> {
        if self.name.is_empty() {
            return Err(Error::EmptyName);
        }
        let names =
            ProvisionerNames::new(self.name.clone()).with_aliases(self.config.aliases.clone());
        let leadership = self.leadership.unwrap_or_else(|| watch::channel(true).1);
        let component = match &self.config.identity {
            Some(identity) => format!("{}_{identity}", self.name),
            None => self.name.clone(),
        };
        let recorder = EventRecorder::new(
            self.client.clone(),
            component,
            self.config.identity.clone(),
            self.config.api_timeout,
        );
        let concurrency = self.config.concurrency;
        let (claim_store, claim_writer) = self.claims;
        let (volume_store, volume_writer) = self.volumes;
        let (class_store, class_writer) = self.classes;
        let ctx = Arc::new(Context {
            client: self.client.clone(),
            provisioner: self.provisioner,
            config: self.config,
            names,
            claims: claim_store.clone(),
            volumes: volume_store.clone(),
            classes: class_store.clone(),
            recorder,
            observer: self.observer.clone(),
            checkpoints: self.checkpoints,
            leadership: leadership.clone(),
            claim_memory: Mutex::new(HashMap::new()),
            volume_memory: Mutex::new(HashMap::new()),
            outdated: Mutex::new(HashMap::new()),
            claim_queue: QueueTracker::new(QueueKind::Claims, self.observer.clone()),
            volume_queue: QueueTracker::new(QueueKind::Volumes, self.observer.clone()),
        });
        let shutdown = self
            .shutdown
            .unwrap_or_else(|| std::future::pending().boxed())
            .shared();

        // Claims are looked at when they change, when their class is created or changes, and
        // when leadership is gained.
        let forget = ctx.clone();
        let from_claims =
            cached_events(Api::all(self.client.clone()), claim_writer).filter_map(move |event| {
                let refs = match event {
                    watcher::Event::Apply(claim) | watcher::Event::InitApply(claim) => {
                        Some(vec![ObjectRef::from(&claim)])
                    }
                    watcher::Event::Delete(claim) => {
                        forget.forget_deleted_claim(&claim.uid().unwrap_or_default());
                        None
                    }
                    watcher::Event::InitDone => {
                        forget.forget_unlisted_claims();
                        None
                    }
                    watcher::Event::Init => None,
                };
                futures::future::ready(refs)
            });
        let waiting = claim_store.clone();
        let from_classes =
            cached_events(Api::<StorageClass>::all(self.client.clone()), class_writer).filter_map(
                move |event| {
                    let refs = match event {
                        watcher::Event::Apply(class) | watcher::Event::InitApply(class) => {
                            Some(claims_of_class(&waiting, &class.name_any()))
                        }
                        _ => None,
                    };
                    futures::future::ready(refs)
                },
            );
        let all_claims = claim_store.clone();
        let claims_on_leadership = leadership_gained(leadership.clone()).map(move |()| {
            all_claims
                .state()
                .iter()
                .map(|claim| ObjectRef::from(&**claim))
                .collect()
        });
        let queued = ctx.clone();
        let claim_queue = stream::select(
            from_claims,
            stream::select(from_classes, claims_on_leadership),
        )
        .flat_map(stream::iter)
        .map(move |claim| {
            queued
                .claim_queue
                .triggered(claim.namespace.as_deref(), &claim.name);
            Ok::<_, Infallible>(claim)
        })
        .take_until(shutdown.clone());

        // Volumes are looked at when they change and when leadership is gained.
        let forget = ctx.clone();
        let from_volumes =
            cached_events(Api::all(self.client.clone()), volume_writer).filter_map(move |event| {
                let refs = match event {
                    watcher::Event::Apply(volume) | watcher::Event::InitApply(volume) => {
                        Some(vec![ObjectRef::from(&volume)])
                    }
                    watcher::Event::Delete(volume) => {
                        forget.forget_volume(&volume.uid().unwrap_or_default());
                        None
                    }
                    watcher::Event::InitDone => {
                        forget.forget_unlisted_volumes();
                        None
                    }
                    watcher::Event::Init => None,
                };
                futures::future::ready(refs)
            });
        let all_volumes = volume_store.clone();
        let volumes_on_leadership = leadership_gained(leadership.clone()).map(move |()| {
            all_volumes
                .state()
                .iter()
                .map(|volume| ObjectRef::from(&**volume))
                .collect()
        });
        let queued = ctx.clone();
        let volume_queue = stream::select(from_volumes, volumes_on_leadership)
            .flat_map(stream::iter)
            .map(move |volume| {
                queued
                    .volume_queue
                    .triggered(volume.namespace.as_deref(), &volume.name);
                Ok::<_, Infallible>(volume)
            })
            .take_until(shutdown.clone());

        let observer = self.observer;
        let leading = *leadership.borrow();
        observer.leadership_changed(leading);
        let leadership_reports = leadership_changes(leadership, leading)
            .take_until(shutdown)
            .for_each(move |leading| {
                observer.leadership_changed(leading);
                futures::future::ready(())
            });

        let applier_config = runtime_controller::Config::default().concurrency(concurrency);
        let claim_results = ctx.clone();
        let claims = applier(
            |claim, ctx| claims::reconcile_claim(claim, ctx).boxed(),
            |_, never: &Infallible, _| match *never {},
            ctx.clone(),
            claim_store,
            claim_queue,
            applier_config.clone(),
        )
        .for_each(move |result| applier_result(&claim_results.claim_queue, result));
        let volume_results = ctx.clone();
        let volumes = applier(
            |volume, ctx| volumes::reconcile_volume(volume, ctx).boxed(),
            |_, never: &Infallible, _| match *never {},
            ctx,
            volume_store,
            volume_queue,
            applier_config,
        )
        .for_each(move |result| applier_result(&volume_results.volume_queue, result));
        futures::join!(claims, volumes, leadership_reports);
        Ok(())
    }
}

/// A watch of all objects of a kind, applied to a reflector cache (without `managedFields`,
/// which the controller never reads), with watch errors retried and logged.
fn cached_events<K>(api: Api<K>, writer: Writer<K>) -> BoxStream<'static, watcher::Event<K>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                    None
                }
            })
        })
        .boxed()
}

/// The unbound claims of a class: the ones a class change may unblock.
fn claims_of_class(
    claims: &Store<PersistentVolumeClaim>,
    class: &str,
) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    claims
        .state()
        .iter()
        .filter(|claim| claim_class(claim) == class)
        .filter(|claim| {
            claim
                .spec
                .as_ref()
                .and_then(|spec| spec.volume_name.as_deref())
                .is_none_or(str::is_empty)
        })
        .map(|claim| ObjectRef::from(&**claim))
        .collect()
}

/// Yields each time leadership turns from lost to held.
fn leadership_gained(leadership: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    let leading = *leadership.borrow();
    leadership_changes(leadership, leading)
        .filter_map(|leading| futures::future::ready(leading.then_some(())))
}

/// Yields the new value each time leadership changes from `last` (repeats skipped); ends
/// when the sender is gone.
fn leadership_changes(
    leadership: watch::Receiver<bool>,
    last: bool,
) -> impl Stream<Item = bool> + Send + 'static {
    stream::unfold((leadership, last), |(mut leadership, last)| async move {
        loop {
            leadership.changed().await.ok()?;
            let leading = *leadership.borrow_and_update();
            if leading != last {
                return Some((leading, (leadership, leading)));
            }
        }
    })
}

/// Handles what an applier reports after each pass.
fn applier_result<K, E1, E2>(
    queue: &QueueTracker,
    result: Result<(ObjectRef<K>, Action), runtime_controller::Error<E1, E2>>,
) -> futures::future::Ready<()>
where
    K: Resource,
    E1: std::error::Error,
    E2: std::error::Error,
{
    match result {
        Ok(_) => {}
        // Deleted between the trigger and the pass: the applier drops the request.
        Err(runtime_controller::Error::ObjectNotFound(object)) => {
            queue.forget(object.namespace.as_deref(), &object.name);
        }
        Err(error) => tracing::debug!(%error, "applier"),
    }
    futures::future::ready(())
}
