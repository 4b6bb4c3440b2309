//! Where the leader record lives: a `coordination.k8s.io/v1` Lease, or (when Leases are
//! forbidden) the annotation of a core/v1 Endpoints object as client-go's `EndpointsLock`
//! kept it. Thin I/O; every write is conditional on the `resourceVersion` read.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use super::record::{ENDPOINTS_RECORD_ANNOTATION, LeaderRecord};
use crate::events::with_timeout;

/// Why a lock operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// RBAC does not allow the operation.
    #[error("{lock}: forbidden: {message}")]
    Forbidden {
        /// The lock ([`LeaderLock::describe`]).
        lock: String,
        /// The API server's message.
        message: String,
    },
    /// The lock changed since it was read (or was created meanwhile): read it again.
    #[error("{lock} was changed by another participant")]
    Conflict {
        /// The lock.
        lock: String,
    },
    /// Any other failure (network, timeout, server error).
    #[error("{lock}: {source}")]
    Api {
        /// The lock.
        lock: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The Endpoints annotation does not hold a leader record.
    #[error("{lock}: annotation {ENDPOINTS_RECORD_ANNOTATION} is not a leader record: {source}")]
    Record {
        /// The lock.
        lock: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl LockError {
    fn from_api(lock: &str, error: kube::Error) -> Self {
        let lock = lock.to_owned();
        match error {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                lock,
                message: status.message,
            },
            kube::Error::Api(status) if status.code == 409 => Self::Conflict { lock },
            source => Self::Api { lock, source },
        }
    }

    /// Whether RBAC forbade the operation.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }
}

/// The record as stored, with what is needed to overwrite it conditionally and to refer to
/// the object in Events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredRecord {
    /// The record (the empty record when an Endpoints object has no annotation yet).
    pub record: LeaderRecord,
    /// The object's metadata as read or written (its `resourceVersion` guards the next
    /// write).
    pub metadata: ObjectMeta,
}

/// A place to keep the leader record. Implementations do one API call per method, each
/// under a timeout, and write only conditionally on [`StoredRecord::metadata`]'s
/// `resourceVersion`.
pub trait LeaderLock: Send + Sync {
    /// The lock for messages: `Lease <namespace>/<name>`.
    fn describe(&self) -> String;

    /// Reads the record; `None` when the object does not exist.
    fn get(&self) -> BoxFuture<'_, Result<Option<StoredRecord>, LockError>>;

    /// Creates the object holding `record`. [`LockError::Conflict`] if it exists.
    fn create<'a>(
        &'a self,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>>;

    /// Overwrites the record read as `current` with `record`. [`LockError::Conflict`] if
    /// the object changed since.
    fn update<'a>(
        &'a self,
        current: &'a StoredRecord,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>>;

    /// A reference to the lock object for Events about it.
    fn reference(&self, stored: &StoredRecord) -> ObjectReference;
}

fn reference<K: Resource<DynamicType = ()>>(metadata: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        resource_version: metadata.resource_version.clone(),
        field_path: None,
    }
}

fn new_metadata(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    }
}

/// The record in a `coordination.k8s.io/v1` Lease (needs `leases` get, create, update).
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    timeout: Duration,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl LeaseLock {
    /// The Lease `namespace/name`; each API call is limited to `timeout`.
    pub fn new(client: Client, namespace: &str, name: &str, timeout: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            timeout,
        }
    }

    fn stored(&self, lease: Lease) -> StoredRecord {
        StoredRecord {
            record: lease
                .spec
                .as_ref()
                .map(LeaderRecord::from_lease_spec)
                .unwrap_or_default(),
            metadata: lease.metadata,
        }
    }
}

impl LeaderLock for LeaseLock {
    fn describe(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.name)
    }

    fn get(&self) -> BoxFuture<'_, Result<Option<StoredRecord>, LockError>> {
        async move {
            with_timeout(self.timeout, self.api.get_opt(&self.name))
                .await
                .map(|lease| lease.map(|lease| self.stored(lease)))
                .map_err(|error| LockError::from_api(&self.describe(), error))
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>> {
        async move {
            let lease = Lease {
                metadata: new_metadata(&self.namespace, &self.name),
                spec: Some(record.to_lease_spec()),
            };
            with_timeout(
                self.timeout,
                self.api.create(&PostParams::default(), &lease),
            )
            .await
            .map(|lease| self.stored(lease))
            .map_err(|error| match error {
                kube::Error::Api(status) if status.code == 409 => LockError::Conflict {
                    lock: self.describe(),
                },
                error => LockError::from_api(&self.describe(), error),
            })
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        current: &'a StoredRecord,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>> {
        async move {
            // A replace of the whole object as read: labels and annotations others put on
            // the Lease survive, and `resourceVersion` makes the write conditional.
            let lease = Lease {
                metadata: current.metadata.clone(),
                spec: Some(record.to_lease_spec()),
            };
            with_timeout(
                self.timeout,
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await
            .map(|lease| self.stored(lease))
            .map_err(|error| LockError::from_api(&self.describe(), error))
        }
        .boxed()
    }

    fn reference(&self, stored: &StoredRecord) -> ObjectReference {
        reference::<Lease>(&stored.metadata)
    }
}

/// The record in the `control-plane.alpha.kubernetes.io/leader` annotation of a core/v1
/// Endpoints object, as client-go's `EndpointsLock` (and the Go provisioner library up to
/// v8, which nfs-subdir-external-provisioner v4 uses) kept it. Needs `endpoints` get,
/// create and patch: the grant of the seed scenario's RBAC.
#[derive(Clone)]
pub struct EndpointsLock {
    api: Api<Endpoints>,
    namespace: String,
    name: String,
    timeout: Duration,
}

impl std::fmt::Debug for EndpointsLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl EndpointsLock {
    /// The Endpoints `namespace/name`; each API call is limited to `timeout`.
    pub fn new(client: Client, namespace: &str, name: &str, timeout: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            timeout,
        }
    }

    fn stored(&self, endpoints: Endpoints) -> Result<StoredRecord, LockError> {
        let record = match endpoints
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(ENDPOINTS_RECORD_ANNOTATION))
        {
            Some(value) => {
                LeaderRecord::from_annotation(value).map_err(|source| LockError::Record {
                    lock: self.describe(),
                    source,
                })?
            }
            None => LeaderRecord::default(),
        };
        Ok(StoredRecord {
            record,
            metadata: endpoints.metadata,
        })
    }
}

impl LeaderLock for EndpointsLock {
    fn describe(&self) -> String {
        format!("Endpoints {}/{}", self.namespace, self.name)
    }

    fn get(&self) -> BoxFuture<'_, Result<Option<StoredRecord>, LockError>> {
        async move {
            let endpoints = with_timeout(self.timeout, self.api.get_opt(&self.name))
                .await
                .map_err(|error| LockError::from_api(&self.describe(), error))?;
            endpoints
                .map(|endpoints| self.stored(endpoints))
                .transpose()
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>> {
        async move {
            let mut metadata = new_metadata(&self.namespace, &self.name);
            metadata.annotations = Some(
                [(
                    ENDPOINTS_RECORD_ANNOTATION.to_owned(),
                    record.to_annotation(),
                )]
                .into(),
            );
            let endpoints = Endpoints {
                metadata,
                ..Endpoints::default()
            };
            let created = with_timeout(
                self.timeout,
                self.api.create(&PostParams::default(), &endpoints),
            )
            .await
            .map_err(|error| match error {
                kube::Error::Api(status) if status.code == 409 => LockError::Conflict {
                    lock: self.describe(),
                },
                error => LockError::from_api(&self.describe(), error),
            })?;
            self.stored(created)
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        current: &'a StoredRecord,
        record: &'a LeaderRecord,
    ) -> BoxFuture<'a, Result<StoredRecord, LockError>> {
        async move {
            // A merge patch of the one annotation, carrying the resourceVersion read: the API
            // server refuses it with a conflict if the object changed since.
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": current.metadata.resource_version,
                    "annotations": { ENDPOINTS_RECORD_ANNOTATION: record.to_annotation() },
                }
            });
            let patched = with_timeout(
                self.timeout,
                self.api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
            .map_err(|error| LockError::from_api(&self.describe(), error))?;
            self.stored(patched)
        }
        .boxed()
    }

    fn reference(&self, stored: &StoredRecord) -> ObjectReference {
        reference::<Endpoints>(&stored.metadata)
    }
}
