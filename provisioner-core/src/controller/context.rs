//! State shared by the claim and volume reconcilers, and the thin API layer they use.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::Config;
use super::observe::{ApiRequest, Checkpoint, CheckpointHook, Observer};
use super::track::QueueTracker;
use crate::events::{EventRecorder, EventType, with_timeout};
use crate::plan::ProvisionerNames;
use crate::plan::record::ProvisioningRecord;
use crate::plan::retry::{FailureKind, Gate, RetryPolicy, RetryState};
use crate::provisioner::{ProvisionedVolume, Provisioner};

/// What the controller remembers about a claim between attempts. Losing it (a restart) only
/// costs an extra backend call: everything needed for safety is on the claim.
#[derive(Debug)]
pub(crate) struct ClaimMemory {
    pub(crate) retry: RetryState,
    /// The backend's answer for this record, kept so a failed PersistentVolume create is
    /// retried without calling the backend again.
    pub(crate) provisioned: Option<(ProvisioningRecord, ProvisionedVolume)>,
    /// The last refusal reported for this fingerprint, so it is reported once per change.
    pub(crate) reported: Option<(u64, String)>,
}

/// What the controller remembers about a volume between attempts.
#[derive(Debug)]
pub(crate) struct VolumeMemory {
    pub(crate) retry: RetryState,
    /// The asset is gone; only the PersistentVolume object remains to delete. Stops a second
    /// backend delete when the object's own update events come back (the Go library's #176).
    pub(crate) asset_deleted: bool,
}

/// Everything the reconcilers share.
pub(crate) struct Context<P> {
    pub(crate) client: Client,
    pub(crate) provisioner: Arc<P>,
    pub(crate) config: Config,
    pub(crate) names: ProvisionerNames,
    pub(crate) claims: Store<PersistentVolumeClaim>,
    pub(crate) volumes: Store<PersistentVolume>,
    pub(crate) classes: Store<StorageClass>,
    pub(crate) recorder: EventRecorder,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) checkpoints: Option<CheckpointHook>,
    pub(crate) leadership: watch::Receiver<bool>,
    pub(crate) claim_memory: Mutex<HashMap<String, ClaimMemory>>,
    pub(crate) volume_memory: Mutex<HashMap<String, VolumeMemory>>,
    /// Per claim UID, resourceVersions known to be outdated (replaced by our own writes, or
    /// met as conflicts). The cache can hand a reconcile such a version after the newer one
    /// was written but before its watch event arrived; acting on it would repeat work (a
    /// second backend call on a node the scheduler already gave up). The newer version's
    /// event is still coming and triggers the claim again.
    pub(crate) outdated: Mutex<HashMap<String, OutdatedVersions>>,
    pub(crate) claim_queue: QueueTracker,
    pub(crate) volume_queue: QueueTracker,
}

/// How many outdated versions are remembered per claim.
const OUTDATED_VERSIONS: usize = 8;

/// The outdated versions of one claim, until the cache catches up.
#[derive(Debug, Default)]
pub(crate) struct OutdatedVersions {
    versions: VecDeque<String>,
    /// The version our last successful write produced. Once the cache hands it over, it can
    /// never hand an older one again (a reflector only moves forward), so the entry goes.
    latest_written: Option<String>,
}

/// What [`OutdatedVersions::check`] finds about a cached version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VersionCheck {
    /// Replaced already: do not act on it.
    Outdated,
    /// Not known to be outdated.
    Current,
    /// Our last write: not outdated, and nothing older can come back, so the entry can go.
    CaughtUp,
}

impl OutdatedVersions {
    /// Notes that `version` was replaced (by `written`, when our write did it).
    pub(crate) fn mark(&mut self, version: String, written: Option<String>) {
        if !self.versions.contains(&version) {
            if self.versions.len() == OUTDATED_VERSIONS {
                self.versions.pop_front();
            }
            self.versions.push_back(version);
        }
        if written.is_some() {
            self.latest_written = written;
        }
    }

    /// Checks a cached version. An outdated version stays outdated even if it is also what
    /// our last write answered: a write that removes the last finalizer of a claim being
    /// deleted answers with the version it replaced.
    pub(crate) fn check(&self, version: &str) -> VersionCheck {
        if self.versions.iter().any(|known| known == version) {
            VersionCheck::Outdated
        } else if self.latest_written.as_deref() == Some(version) {
            VersionCheck::CaughtUp
        } else {
            VersionCheck::Current
        }
    }
}

/// Locks a memory map; the maps hold no invariant a panic elsewhere could break.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A sample in `[0, 1)` for backoff jitter. `RandomState` is seeded randomly per instance,
/// which is all the randomness jitter needs.
pub(crate) fn jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// An API error's HTTP status, if it is one.
pub(crate) fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

pub(crate) fn is_conflict(error: &kube::Error) -> bool {
    status_code(error) == Some(409)
}

pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    status_code(error) == Some(404)
}

/// The reference an Event about `object` points at.
pub(crate) fn reference_to<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: object.meta().name.clone(),
        namespace: object.meta().namespace.clone(),
        uid: object.meta().uid.clone(),
        resource_version: object.meta().resource_version.clone(),
        field_path: None,
    }
}

impl<P: Provisioner> Context<P> {
    /// Whether this instance may act now.
    pub(crate) fn is_leader(&self) -> bool {
        *self.leadership.borrow()
    }

    /// Completes when leadership is lost (never, if it is never lost).
    pub(crate) async fn leadership_lost(&self) {
        let mut leadership = self.leadership.clone();
        // A closed channel means nobody can revoke leadership any more.
        if leadership.wait_for(|leading| !*leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until all three caches hold a full list, so "not in the cache" means "not in
    /// the cluster, as of the list".
    pub(crate) async fn caches_ready(&self) {
        let _ = futures::join!(
            self.claims.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.classes.wait_until_ready()
        );
    }

    pub(crate) async fn checkpoint(&self, checkpoint: Checkpoint, key: &str) {
        tracing::trace!(%checkpoint, key, "checkpoint");
        if let Some(hook) = &self.checkpoints {
            hook(checkpoint, key).await;
        }
    }

    pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &'static str,
        message: &str,
    ) {
        self.count("create", "events");
        self.recorder
            .publish(&reference_to(object), type_, reason, message)
            .await;
    }

    fn count(&self, verb: &'static str, resource: &'static str) {
        self.observer.api_request(ApiRequest { verb, resource });
    }

    fn timeout(&self) -> Duration {
        self.config.api_timeout
    }

    fn claim_api(&self, namespace: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn volume_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    pub(crate) async fn get_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, kube::Error> {
        self.count("get", "persistentvolumeclaims");
        with_timeout(self.timeout(), self.claim_api(namespace).get_opt(name)).await
    }

    /// Replaces the claim; conditional on its `resourceVersion`.
    pub(crate) async fn replace_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, kube::Error> {
        self.count("update", "persistentvolumeclaims");
        let namespace = claim.namespace().unwrap_or_default();
        let result = with_timeout(
            self.timeout(),
            self.claim_api(&namespace)
                .replace(&claim.name_any(), &PostParams::default(), claim),
        )
        .await;
        match &result {
            Ok(saved) => self.mark_outdated(claim, saved.resource_version()),
            Err(error) if is_conflict(error) => self.mark_outdated(claim, None),
            Err(_) => {}
        }
        result
    }

    /// Notes that this version of the claim has been replaced (by `written`, when our write
    /// did it).
    pub(crate) fn mark_outdated(&self, claim: &PersistentVolumeClaim, written: Option<String>) {
        let (Some(uid), Some(version)) = (claim.uid(), claim.resource_version()) else {
            return;
        };
        lock(&self.outdated)
            .entry(uid)
            .or_default()
            .mark(version, written);
    }

    /// Whether this cached version of the claim is known to be outdated.
    pub(crate) fn is_outdated(&self, claim: &PersistentVolumeClaim) -> bool {
        let (Some(uid), Some(version)) = (claim.uid(), claim.resource_version()) else {
            return false;
        };
        let mut outdated = lock(&self.outdated);
        let Some(entry) = outdated.get(&uid) else {
            return false;
        };
        match entry.check(&version) {
            VersionCheck::Outdated => true,
            VersionCheck::Current => false,
            VersionCheck::CaughtUp => {
                outdated.remove(&uid);
                false
            }
        }
    }

    /// Forgets everything about a claim that is gone from the cluster.
    pub(crate) fn forget_deleted_claim(&self, uid: &str) {
        self.forget_claim(uid);
        lock(&self.outdated).remove(uid);
    }

    /// After the claim watch listed everything again (it may have missed deletions while
    /// disconnected), forgets the claims that are no longer in the cache.
    pub(crate) fn forget_unlisted_claims(&self) {
        let live: HashSet<String> = self
            .claims
            .state()
            .iter()
            .filter_map(|claim| claim.uid())
            .collect();
        lock(&self.claim_memory).retain(|uid, _| live.contains(uid));
        lock(&self.outdated).retain(|uid, _| live.contains(uid));
    }

    /// [`Self::forget_unlisted_claims`] for volumes.
    pub(crate) fn forget_unlisted_volumes(&self) {
        let live: HashSet<String> = self
            .volumes
            .state()
            .iter()
            .filter_map(|volume| volume.uid())
            .collect();
        lock(&self.volume_memory).retain(|uid, _| live.contains(uid));
    }

    /// Applies `edit` to the claim and saves it, re-reading and re-applying on conflicts.
    /// `edit` returns `None` when the claim needs no change. Returns the saved claim, or
    /// `None` if the claim is gone.
    pub(crate) async fn edit_claim(
        &self,
        claim: &PersistentVolumeClaim,
        edit: impl Fn(&PersistentVolumeClaim) -> Option<PersistentVolumeClaim>,
    ) -> Result<Option<PersistentVolumeClaim>, kube::Error> {
        const ATTEMPTS: usize = 5;
        let namespace = claim.namespace().unwrap_or_default();
        let name = claim.name_any();
        let mut current = claim.clone();
        for _ in 0..ATTEMPTS {
            let Some(edited) = edit(&current) else {
                return Ok(Some(current));
            };
            match self.replace_claim(&edited).await {
                Ok(saved) => return Ok(Some(saved)),
                Err(error) if is_not_found(&error) => return Ok(None),
                Err(error) if is_conflict(&error) => {
                    match self.get_claim(&namespace, &name).await? {
                        Some(fresh) if fresh.uid() == claim.uid() => current = fresh,
                        // Gone, or replaced by a new claim of the same name.
                        _ => return Ok(None),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        // Another writer keeps winning; report it as a conflict so the caller retries later.
        Err(kube::Error::Api(Box::new(
            kube::core::Status::failure("the claim kept changing while being updated", "Conflict")
                .with_code(409),
        )))
    }

    pub(crate) async fn get_volume(
        &self,
        name: &str,
    ) -> Result<Option<PersistentVolume>, kube::Error> {
        self.count("get", "persistentvolumes");
        with_timeout(self.timeout(), self.volume_api().get_opt(name)).await
    }

    pub(crate) async fn create_volume(
        &self,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolume, kube::Error> {
        self.count("create", "persistentvolumes");
        with_timeout(
            self.timeout(),
            self.volume_api().create(&PostParams::default(), volume),
        )
        .await
    }

    /// Deletes the volume object if it still has this UID. Returns the object when it
    /// lingers (finalizers), `None` when it is gone.
    pub(crate) async fn delete_volume(
        &self,
        name: &str,
        uid: &str,
    ) -> Result<Option<PersistentVolume>, kube::Error> {
        self.count("delete", "persistentvolumes");
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match with_timeout(self.timeout(), self.volume_api().delete(name, &params)).await {
            Ok(either) => Ok(either.left()),
            Err(error) if is_not_found(&error) => Ok(None),
            // The UID precondition failed: a new volume of the same name, not ours to delete.
            Err(error) if is_conflict(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sets the volume's finalizers, conditional on its `resourceVersion`.
    pub(crate) async fn set_volume_finalizers(
        &self,
        volume: &PersistentVolume,
        finalizers: &[String],
    ) -> Result<(), kube::Error> {
        self.count("patch", "persistentvolumes");
        let patch = serde_json::json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": volume.resource_version(),
            }
        });
        let result = with_timeout(
            self.timeout(),
            self.volume_api().patch(
                &volume.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Reads (creating if needed) a claim's memory and runs `f` on it.
    pub(crate) fn with_claim_memory<T>(
        &self,
        uid: &str,
        fingerprint: u64,
        f: impl FnOnce(&mut ClaimMemory) -> T,
    ) -> T {
        let mut memory = lock(&self.claim_memory);
        let entry = memory.entry(uid.to_owned()).or_insert_with(|| ClaimMemory {
            retry: RetryState::new(fingerprint),
            provisioned: None,
            reported: None,
        });
        if entry.retry.observe(fingerprint) {
            entry.provisioned = None;
        }
        f(entry)
    }

    pub(crate) fn forget_claim(&self, uid: &str) {
        lock(&self.claim_memory).remove(uid);
    }

    pub(crate) fn with_volume_memory<T>(
        &self,
        uid: &str,
        fingerprint: u64,
        f: impl FnOnce(&mut VolumeMemory) -> T,
    ) -> T {
        let mut memory = lock(&self.volume_memory);
        let entry = memory
            .entry(uid.to_owned())
            .or_insert_with(|| VolumeMemory {
                retry: RetryState::new(fingerprint),
                asset_deleted: false,
            });
        entry.retry.observe(fingerprint);
        f(entry)
    }

    pub(crate) fn forget_volume(&self, uid: &str) {
        lock(&self.volume_memory).remove(uid);
    }

    /// Records a failure in `retry` and turns the resulting gate into a requeue delay
    /// (`None`: gave up until the object changes).
    pub(crate) fn after_failure(
        &self,
        retry: &mut RetryState,
        kind: FailureKind,
        policy: &RetryPolicy,
    ) -> Option<Duration> {
        let now = Instant::now();
        match retry.record_failure(now, kind, policy, jitter()) {
            Gate::Proceed => Some(Duration::ZERO),
            Gate::NotBefore(at) => {
                let delay = at - now;
                self.observer.retry_scheduled(delay);
                Some(delay)
            }
            Gate::GaveUp => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_versions(marks: &[(&str, Option<&str>)]) -> OutdatedVersions {
        let mut versions = OutdatedVersions::default();
        for (version, written) in marks {
            versions.mark((*version).to_owned(), written.map(str::to_owned));
        }
        versions
    }

    #[test]
    fn replaced_versions_are_outdated_until_our_last_write_is_seen() {
        // Our write replaced 5 with 7; a conflict showed 6 was stale too.
        let versions = mk_versions(&[("5", Some("7")), ("6", None)]);
        assert_eq!(versions.check("5"), VersionCheck::Outdated);
        assert_eq!(versions.check("6"), VersionCheck::Outdated);
        assert_eq!(versions.check("7"), VersionCheck::CaughtUp);
        assert_eq!(versions.check("9"), VersionCheck::Current);
    }

    #[test]
    fn a_write_answering_with_the_replaced_version_keeps_it_outdated() {
        // Removing the last finalizer of a claim being deleted answers with version 8 itself.
        let versions = mk_versions(&[("8", Some("8"))]);
        assert_eq!(versions.check("8"), VersionCheck::Outdated);
    }

    #[test]
    fn only_the_latest_versions_are_kept() {
        let marks: Vec<String> = (0..20).map(|n| n.to_string()).collect();
        let mut versions = OutdatedVersions::default();
        for mark in &marks {
            versions.mark(mark.clone(), None);
        }
        assert_eq!(versions.versions.len(), OUTDATED_VERSIONS);
        assert_eq!(versions.check("19"), VersionCheck::Outdated);
        assert_eq!(versions.check("0"), VersionCheck::Current);
    }
}
