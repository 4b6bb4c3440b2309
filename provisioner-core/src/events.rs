//! Kubernetes Events on claims and volumes, written as core/v1 Events.
//!
//! kube-runtime's `events::Recorder` writes `events.k8s.io/v1` Events; the RBAC every
//! provisioner deployment already has (including the seed scenario's) grants `create`,
//! `update` and `patch` on core `events` only, so this module writes core/v1 Events itself.
//! Like client-go's event correlator, a repeat of the same Event (same object, type, reason
//! and message) patches `count` and `lastTimestamp` of the first one instead of creating a
//! new object, so a retrying claim does not flood the namespace.
//!
//! Publishing never fails: an Event that cannot be written is logged and dropped, because
//! observability must never break provisioning.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// Event reasons, identical to the Go provisioner library's so alerts and `kubectl describe`
/// habits carry over.
pub mod reasons {
    /// Normal, on a claim: the backend is being called.
    pub const PROVISIONING: &str = "Provisioning";
    /// Normal, on a claim: the PersistentVolume was created.
    pub const PROVISIONING_SUCCEEDED: &str = "ProvisioningSucceeded";
    /// Warning, on a claim: provisioning failed (including every case the controller refuses:
    /// class not found, unknown provisioner, block or data source unsupported, bad parameter).
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    /// Warning, on a claim: deleting the asset of a claim deleted mid-provisioning failed.
    pub const PROVISIONING_CLEANUP_FAILED: &str = "ProvisioningCleanupFailed";
    /// Warning, on a volume: deleting its asset failed.
    pub const VOLUME_FAILED_DELETE: &str = "VolumeFailedDelete";
    /// Normal, on a volume: its asset cannot be deleted yet because it is in use.
    pub const VOLUME_DELETE: &str = "VolumeDelete";
    /// Warning, on a volume (or on the claim of an interrupted provisioning): the backend let
    /// go of the asset without deleting it
    /// ([`DeleteOutcome::Forgotten`](crate::provisioner::DeleteOutcome::Forgotten)); the
    /// message says where it stays. Not a Go library reason: it has no such outcome.
    pub const VOLUME_FORGOTTEN: &str = "VolumeForgotten";
}

/// The Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Expected progress.
    Normal,
    /// Something an operator may need to act on.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// How many distinct Events the correlator remembers before forgetting the oldest.
const CORRELATION_CAPACITY: usize = 4096;

/// Identity of a repeatable Event: involved object UID, type, reason, message.
type CorrelationKey = (String, EventType, &'static str, String);

/// An Event already written, so a repeat can patch it.
#[derive(Clone, Debug)]
struct WrittenEvent {
    namespace: String,
    name: String,
    count: i32,
}

/// Writes core/v1 Events, correlating repeats.
pub struct EventRecorder {
    client: Client,
    source: EventSource,
    timeout: Duration,
    written: Mutex<Correlation>,
    sequence: AtomicU64,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Correlation {
    events: HashMap<CorrelationKey, WrittenEvent>,
    order: VecDeque<CorrelationKey>,
}

impl EventRecorder {
    /// A recorder reporting as `component` (the Go library uses `<provisioner>_<identity>`)
    /// from `host`, giving each API call `timeout`.
    pub fn new(
        client: Client,
        component: impl Into<String>,
        host: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            source: EventSource {
                component: Some(component.into()),
                host,
            },
            timeout,
            written: Mutex::new(Correlation::default()),
            sequence: AtomicU64::new(0),
        }
    }

    /// Publishes an Event about `object`. Never fails; problems are logged.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: &str,
    ) {
        let key: CorrelationKey = (
            object.uid.clone().unwrap_or_default(),
            type_,
            reason,
            message.to_owned(),
        );
        let previous = self.lock().events.get(&key).cloned();
        let now = Time(Timestamp::now());
        let outcome = match previous {
            Some(written) => match self.bump(&written, &now).await {
                Ok(()) => Ok(WrittenEvent {
                    count: written.count + 1,
                    ..written
                }),
                // Expired or deleted meanwhile: start a new one.
                Err(_) => self.create(object, type_, reason, message, &now).await,
            },
            None => self.create(object, type_, reason, message, &now).await,
        };
        match outcome {
            Ok(written) => self.remember(key, written),
            Err(error) => tracing::warn!(
                %error, reason, object = ?object.name, "could not write Event"
            ),
        }
    }

    async fn create(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: &str,
        now: &Time,
    ) -> Result<WrittenEvent, kube::Error> {
        // Cluster-scoped objects (PersistentVolumes) get their Events in "default", as
        // client-go does.
        let namespace = object
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let name = format!(
            "{}.{:x}{:04x}",
            object.name.as_deref().unwrap_or("unknown"),
            now.0.as_nanosecond(),
            self.sequence.fetch_add(1, Ordering::Relaxed) & 0xffff
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(type_.as_str().to_owned()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            source: Some(self.source.clone()),
            reporting_component: self.source.component.clone(),
            reporting_instance: self.source.host.clone(),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        with_timeout(self.timeout, api.create(&PostParams::default(), &event)).await?;
        Ok(WrittenEvent {
            namespace,
            name,
            count: 1,
        })
    }

    async fn bump(&self, written: &WrittenEvent, now: &Time) -> Result<(), kube::Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &written.namespace);
        let patch = serde_json::json!({
            "count": written.count + 1,
            "lastTimestamp": now,
        });
        with_timeout(
            self.timeout,
            api.patch(
                &written.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await
        .map(drop)
    }

    fn remember(&self, key: CorrelationKey, written: WrittenEvent) {
        let mut correlation = self.lock();
        if correlation.events.insert(key.clone(), written).is_none() {
            correlation.order.push_back(key);
            if correlation.order.len() > CORRELATION_CAPACITY
                && let Some(oldest) = correlation.order.pop_front()
            {
                correlation.events.remove(&oldest);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Correlation> {
        // The map holds no invariant a panic could break; keep going with its contents.
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs an API call under a timeout, turning expiry into a client error.
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(
            format!("API call timed out after {timeout:?}").into(),
        )),
    }
}
