//! The backend contract: what a storage back end implements to become a dynamic provisioner.
//!
//! A backend implements [`Provisioner`]: it parses a StorageClass's parameters into its own
//! typed [`Provisioner::Parameters`], creates an asset for a claim
//! ([`Provisioner::provision`]) and deletes it again ([`Provisioner::delete`]). Everything
//! else — which claims to act on, the PersistentVolume object, binding, retries, Events and
//! crash safety — is the controller's job ([`crate::controller`]).
//!
//! # The contract in one place
//!
//! - **Parse first.** [`Provisioner::parse_parameters`] runs before any side effect. A bad
//!   parameter fails with a [`ParameterError`] naming it; the claim gets a
//!   `ProvisioningFailed` Event and waits until the claim or its class changes.
//! - **Provision is idempotent per volume name.** The controller may call
//!   [`Provisioner::provision`] again with the same [`ProvisionRequest::volume_name`] after a
//!   timeout, a crash or a restart. A second call must return the asset the first one created
//!   (or finish creating it), never create a second one.
//! - **Delete is idempotent.** Deleting an asset that does not exist is a success.
//! - **Delete never needs the StorageClass.** [`DeleteRequest`] carries the class parameters
//!   as they were when the volume was provisioned, and either the PersistentVolume (with the
//!   labels and annotations the backend returned in [`ProvisionedVolume`]) or — when no
//!   PersistentVolume was saved: the claim was deleted mid-provisioning, or the class changed
//!   between two failed attempts — the claim object itself ([`DeleteRequest::claim_object`]),
//!   so names rendered from its labels and annotations can be rendered again. A backend must
//!   be able to find its asset from those.
//! - **A delete can let go without deleting.** [`DeleteOutcome::Forgotten`] tells the
//!   controller the asset stays where it is (for example, on a node that no longer exists)
//!   but must not hold up the PersistentVolume; the controller reports the backend's message
//!   in a Warning Event and carries on as after a delete.
//! - **Errors say what to do next.** [`ProvisionError`] and [`DeleteError`] variants each
//!   map to one controller behaviour, documented on the variant.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use k8s_openapi::api::core::v1::HostPathVolumeSource;
//! use provisioner_core::provisioner::{
//!     DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError,
//!     ProvisionRequest, ProvisionedVolume, Provisioner,
//! };
//!
//! /// Parameters of this backend's StorageClasses.
//! #[derive(Clone, Debug)]
//! struct DirParameters {
//!     mode: u32,
//! }
//!
//! struct DirBackend;
//!
//! impl Provisioner for DirBackend {
//!     type Parameters = DirParameters;
//!
//!     fn parse_parameters(
//!         &self,
//!         raw: &BTreeMap<String, String>,
//!     ) -> Result<DirParameters, ParameterError> {
//!         let mode = match raw.get("mode") {
//!             None => 0o777,
//!             Some(text) => u32::from_str_radix(text, 8)
//!                 .map_err(|_| ParameterError::invalid("mode", "expected an octal number"))?,
//!         };
//!         ParameterError::reject_unknown(raw, &["mode"])?;
//!         Ok(DirParameters { mode })
//!     }
//!
//!     async fn provision(
//!         &self,
//!         request: ProvisionRequest<DirParameters>,
//!     ) -> Result<ProvisionedVolume, ProvisionError> {
//!         let path = format!("/srv/volumes/{}", request.volume_name);
//!         // create `path` with `request.parameters.mode` here (idempotently)
//!         Ok(ProvisionedVolume::host_path(HostPathVolumeSource {
//!             path,
//!             type_: Some("DirectoryOrCreate".into()),
//!         }))
//!     }
//!
//!     async fn delete(
//!         &self,
//!         request: DeleteRequest<DirParameters>,
//!     ) -> Result<DeleteOutcome, DeleteError> {
//!         let _path = format!("/srv/volumes/{}", request.volume_name);
//!         // remove `_path` here; a missing directory is a success
//!         Ok(DeleteOutcome::Deleted)
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, HostPathVolumeSource, LocalVolumeSource, NFSVolumeSource,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, TypedObjectReference,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A boxed error from a backend, kept as the `source` of [`ProvisionError`] and
/// [`DeleteError`] variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage back end that the generic controller drives.
///
/// Implementors write the two async methods as plain `async fn`; the returned futures must be
/// `Send` because the controller runs many operations concurrently on a multi-threaded
/// runtime. See the [module documentation](self) for the full contract (idempotency,
/// parameters, what a delete receives).
///
/// The optional hooks default to: no block volumes, no data sources, act on every claim and
/// delete every volume the controller considers ours.
#[diagnostic::on_unimplemented(
    note = "a backend implements `parse_parameters`, `provision` and `delete`; see the `provisioner_core::provisioner` module docs"
)]
pub trait Provisioner: Send + Sync + 'static {
    /// The backend's StorageClass parameters, parsed and validated.
    ///
    /// It is handed to every [`provision`](Provisioner::provision) and, re-parsed from what
    /// was recorded at provisioning time, to every [`delete`](Provisioner::delete).
    type Parameters: Clone + Debug + Send + Sync + 'static;

    /// Parses a StorageClass's `parameters` (an absent map is passed as empty).
    ///
    /// Runs before any side effect, without I/O. Return a [`ParameterError`] that names the
    /// offending parameter; the controller reports it in a `ProvisioningFailed` Event and does
    /// not retry until the claim or the class changes.
    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<Self::Parameters, ParameterError>;

    /// Creates (or finds, when it already exists) the asset for one claim.
    ///
    /// Must be idempotent per [`ProvisionRequest::volume_name`]. The controller runs it under
    /// a timeout and drops the future when the timeout expires, the process shuts down or
    /// leadership is lost; a later call with the same name must pick up from there.
    fn provision(
        &self,
        request: ProvisionRequest<Self::Parameters>,
    ) -> impl Future<Output = Result<ProvisionedVolume, ProvisionError>> + Send;

    /// Deletes the asset behind a volume. Deleting an asset that is already gone succeeds
    /// ([`DeleteOutcome::Deleted`]).
    ///
    /// The PersistentVolume object itself is deleted by the controller afterwards, also after
    /// [`DeleteOutcome::Forgotten`]. The controller runs the call under a timeout and drops
    /// the future when it expires.
    fn delete(
        &self,
        request: DeleteRequest<Self::Parameters>,
    ) -> impl Future<Output = Result<DeleteOutcome, DeleteError>> + Send;

    /// Whether the backend can provision `volumeMode: Block` claims. Defaults to `false`:
    /// such claims get a `ProvisioningFailed` Event and are not retried.
    fn supports_block(&self) -> bool {
        false
    }

    /// Whether the backend can pre-populate a volume from this data source (a
    /// PersistentVolumeClaim clone or a VolumeSnapshot). Defaults to `false`: such claims
    /// get a `ProvisioningFailed` Event and are not retried. Claims whose `dataSourceRef`
    /// names any other kind belong to a volume populator and are skipped silently.
    fn supports_data_source(&self, source: &TypedObjectReference) -> bool {
        let _ = source;
        false
    }

    /// A last say on whether this instance acts on a claim the controller would provision
    /// (for example, one instance per node serving only its own node). Defaults to `true`.
    /// `false` skips the claim silently, before anything is written; it is asked again for a
    /// claim another instance marked in flight, so only the instance that accepts it resumes
    /// it. (Clean-up never asks: a deleted claim's asset, and the asset of a record that went
    /// stale, are offered to every instance's [`delete`](Provisioner::delete).)
    fn should_provision(&self, claim: &PersistentVolumeClaim) -> bool {
        let _ = claim;
        true
    }

    /// A last say on whether to delete a Released volume the controller considers ours.
    /// Defaults to `true`. `false` leaves the volume and its asset alone.
    fn should_delete(&self, volume: &PersistentVolume) -> bool {
        let _ = volume;
        true
    }
}

/// Everything a backend needs to create one asset.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProvisionRequest<P> {
    /// The name the PersistentVolume will have (`pvc-<claim uid>` by default). Use it as
    /// the idempotency key.
    pub volume_name: String,
    /// The claim being provisioned, as last seen by the controller. Read-only.
    pub claim: Arc<PersistentVolumeClaim>,
    /// The claim's StorageClass.
    pub storage_class: Arc<StorageClass>,
    /// The class's parameters, parsed by [`Provisioner::parse_parameters`].
    pub parameters: P,
    /// The node the scheduler chose (`volume.kubernetes.io/selected-node`), for
    /// WaitForFirstConsumer classes.
    pub selected_node: Option<String>,
}

impl<P> ProvisionRequest<P> {
    /// A request for `volume_name`, without a selected node.
    pub fn new(
        volume_name: impl Into<String>,
        claim: Arc<PersistentVolumeClaim>,
        storage_class: Arc<StorageClass>,
        parameters: P,
    ) -> Self {
        Self {
            volume_name: volume_name.into(),
            claim,
            storage_class,
            parameters,
            selected_node: None,
        }
    }

    /// Sets the node the scheduler selected.
    #[must_use]
    pub fn with_selected_node(mut self, node: impl Into<String>) -> Self {
        self.selected_node = Some(node.into());
        self
    }

    /// The claim's namespace ("" when absent, which the API server never allows).
    pub fn claim_namespace(&self) -> &str {
        self.claim.metadata.namespace.as_deref().unwrap_or("")
    }

    /// The claim's name.
    pub fn claim_name(&self) -> &str {
        self.claim.metadata.name.as_deref().unwrap_or("")
    }

    /// The storage the claim requests (`spec.resources.requests.storage`).
    pub fn requested_storage(&self) -> Option<&Quantity> {
        self.claim
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get(crate::binding::predicates::STORAGE_RESOURCE)
    }
}

/// What a backend returns for a provisioned asset; the controller builds the
/// PersistentVolume from it.
///
/// The controller sets the name, `claimRef`, `storageClassName`, reclaim policy, mount
/// options, access modes, volume mode, VolumeAttributesClass and the
/// `pv.kubernetes.io/provisioned-by` annotation itself; those fields of [`Self::source`] are
/// ignored.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ProvisionedVolume {
    /// A spec carrying the volume source (exactly one of `nfs`, `host_path`, `local`, `csi`,
    /// …).
    pub source: PersistentVolumeSpec,
    /// The capacity to publish; the claim's request when `None`.
    pub capacity: Option<Quantity>,
    /// Where the volume can be used (required for `local` volumes).
    pub node_affinity: Option<VolumeNodeAffinity>,
    /// Labels for the PersistentVolume.
    pub labels: BTreeMap<String, String>,
    /// Annotations for the PersistentVolume: the place to record what
    /// [`Provisioner::delete`] will need besides the class parameters.
    pub annotations: BTreeMap<String, String>,
}

impl ProvisionedVolume {
    /// A volume with an arbitrary source: set one source field of `source`.
    pub fn from_spec(source: PersistentVolumeSpec) -> Self {
        Self {
            source,
            ..Self::default()
        }
    }

    /// An NFS volume.
    pub fn nfs(source: NFSVolumeSource) -> Self {
        Self::from_spec(PersistentVolumeSpec {
            nfs: Some(source),
            ..PersistentVolumeSpec::default()
        })
    }

    /// A hostPath volume.
    pub fn host_path(source: HostPathVolumeSource) -> Self {
        Self::from_spec(PersistentVolumeSpec {
            host_path: Some(source),
            ..PersistentVolumeSpec::default()
        })
    }

    /// A local volume; give it a node affinity with [`Self::with_node_affinity`].
    pub fn local(source: LocalVolumeSource) -> Self {
        Self::from_spec(PersistentVolumeSpec {
            local: Some(source),
            ..PersistentVolumeSpec::default()
        })
    }

    /// A CSI volume.
    pub fn csi(source: CSIPersistentVolumeSource) -> Self {
        Self::from_spec(PersistentVolumeSpec {
            csi: Some(source),
            ..PersistentVolumeSpec::default()
        })
    }

    /// Publishes this capacity instead of the claim's request.
    #[must_use]
    pub fn with_capacity(mut self, capacity: Quantity) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Restricts the volume to the nodes this affinity selects.
    #[must_use]
    pub fn with_node_affinity(mut self, affinity: VolumeNodeAffinity) -> Self {
        self.node_affinity = Some(affinity);
        self
    }

    /// Adds a label to the PersistentVolume.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an annotation to the PersistentVolume.
    #[must_use]
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
}

/// The claim a volume was provisioned for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimIdentity {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
    /// The claim's UID.
    pub uid: String,
}

impl ClaimIdentity {
    /// A claim identity.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// Everything a backend gets to delete one asset; it never needs the live StorageClass.
///
/// Two kinds of deletes reach a backend: a Released PersistentVolume
/// ([`volume`](Self::volume) is set), and an asset whose PersistentVolume was never saved
/// ([`volume`](Self::volume) is `None`, [`claim_object`](Self::claim_object) is set): its
/// claim was deleted while provisioning was in flight, or the claim's StorageClass changed
/// between two failed attempts, so the asset made under the old parameters is deleted before
/// the next attempt provisions under the new ones.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeleteRequest<P> {
    /// The volume name the asset was provisioned under.
    pub volume_name: String,
    /// The claim the asset was provisioned for.
    pub claim: ClaimIdentity,
    /// The claim object, for an asset whose PersistentVolume was never saved: the claim still
    /// exists then (the controller's in-flight finalizer holds it even when it is being
    /// deleted), with the labels and annotations a directory name may have been rendered
    /// from. `None` for a Released PersistentVolume, whose claim is normally gone: everything
    /// needed then is on [`Self::volume`].
    pub claim_object: Option<Arc<PersistentVolumeClaim>>,
    /// The name of the StorageClass the asset was provisioned from (it may no longer exist).
    pub storage_class_name: String,
    /// The class parameters recorded when the asset was provisioned, parsed again by
    /// [`Provisioner::parse_parameters`]. `None` for volumes this library did not provision
    /// (for example, ones created by an older provisioner whose name is configured as an
    /// alias).
    pub parameters: Option<P>,
    /// The PersistentVolume being reclaimed, with the labels and annotations the backend
    /// returned. `None` when no PersistentVolume was saved for the asset (see the type's
    /// documentation): the asset may or may not exist and must be found from the other
    /// fields.
    pub volume: Option<Arc<PersistentVolume>>,
    /// The node recorded at provisioning time for WaitForFirstConsumer classes; for a saved
    /// PersistentVolume its node affinity says the same.
    pub selected_node: Option<String>,
}

impl<P> DeleteRequest<P> {
    /// A request to delete the asset behind `volume_name`.
    pub fn new(
        volume_name: impl Into<String>,
        claim: ClaimIdentity,
        storage_class_name: impl Into<String>,
    ) -> Self {
        Self {
            volume_name: volume_name.into(),
            claim,
            storage_class_name: storage_class_name.into(),
            claim_object: None,
            parameters: None,
            volume: None,
            selected_node: None,
        }
    }

    /// Sets the claim object (for an asset without a saved PersistentVolume).
    #[must_use]
    pub fn with_claim_object(mut self, claim: Arc<PersistentVolumeClaim>) -> Self {
        self.claim_object = Some(claim);
        self
    }

    /// The claim object's labels (empty when the request has no claim object or the claim
    /// has none).
    pub fn claim_labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.claim_object
            .as_ref()
            .and_then(|claim| claim.metadata.labels.as_ref())
            .unwrap_or(&EMPTY)
    }

    /// The claim object's annotations (empty when the request has no claim object or the
    /// claim has none).
    pub fn claim_annotations(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.claim_object
            .as_ref()
            .and_then(|claim| claim.metadata.annotations.as_ref())
            .unwrap_or(&EMPTY)
    }

    /// Sets the recorded parameters.
    #[must_use]
    pub fn with_parameters(mut self, parameters: P) -> Self {
        self.parameters = Some(parameters);
        self
    }

    /// Sets the PersistentVolume being reclaimed.
    #[must_use]
    pub fn with_volume(mut self, volume: Arc<PersistentVolume>) -> Self {
        self.volume = Some(volume);
        self
    }

    /// Sets the recorded node.
    #[must_use]
    pub fn with_selected_node(mut self, node: impl Into<String>) -> Self {
        self.selected_node = Some(node.into());
        self
    }
}

/// How a successful [`Provisioner::delete`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeleteOutcome {
    /// The asset is gone (deleted now, or it never existed or was already deleted). For an
    /// archiving backend, archived counts as deleted: the volume's own asset no longer exists.
    Deleted,
    /// The asset was not deleted and the backend lets go of it: the controller goes on as
    /// after [`Deleted`](Self::Deleted) (deletes the PersistentVolume object, or releases the
    /// claim of an interrupted provisioning) and reports `message` in a Warning
    /// `VolumeForgotten` Event on that object. For example: the asset is on a node that no
    /// longer exists, and the policy is to keep its data rather than block the volume.
    Forgotten {
        /// Why the asset was not deleted and where it stays, for operators.
        message: String,
    },
}

impl DeleteOutcome {
    /// [`DeleteOutcome::Forgotten`] with this message.
    pub fn forgotten(message: impl Into<String>) -> Self {
        Self::Forgotten {
            message: message.into(),
        }
    }
}

/// A StorageClass parameter the backend cannot accept. The controller names the parameter
/// in a `ProvisioningFailed` Event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid StorageClass parameter {parameter:?}: {reason}")]
#[non_exhaustive]
pub struct ParameterError {
    /// The parameter's key.
    pub parameter: String,
    /// Why it is rejected.
    pub reason: String,
}

impl ParameterError {
    /// `parameter` has a value the backend cannot use.
    pub fn invalid(parameter: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            parameter: parameter.into(),
            reason: reason.into(),
        }
    }

    /// A required `parameter` is absent.
    pub fn missing(parameter: impl Into<String>) -> Self {
        Self::invalid(parameter, "required but not set")
    }

    /// `parameter` is not one the backend knows (a typo is better reported than ignored).
    pub fn unknown(parameter: impl Into<String>) -> Self {
        Self::invalid(parameter, "unknown parameter")
    }

    /// Fails with [`Self::unknown`] for the first key of `raw` not in `known`.
    pub fn reject_unknown(raw: &BTreeMap<String, String>, known: &[&str]) -> Result<(), Self> {
        match raw.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(Self::unknown(key.clone())),
            None => Ok(()),
        }
    }
}

/// Why [`Provisioner::provision`] failed, and so what the controller does next.
///
/// Every variant except [`Ignored`](Self::Ignored) is reported in a `ProvisioningFailed`
/// Event on the claim. Whatever the variant, the claim keeps its in-flight record until a
/// PersistentVolume exists, the claim is deleted, or the next attempt would record something
/// else (the class's parameters or the selected node changed); in the last two cases the
/// asset is deleted with the recorded data first. So no variant can leak an asset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The attempt is over and nothing runs in the background. Retried with exponential
    /// backoff, counting towards the failure threshold.
    #[error("{0}")]
    Final(#[source] BoxError),
    /// The operation may still be running in the background (for example the backend's own
    /// call timed out). Retried with backoff like [`Final`](Self::Final); the next call with
    /// the same volume name must pick up the running operation.
    #[error("{0}")]
    InBackground(#[source] BoxError),
    /// The backend could not be reached, so nothing changed. Retried with backoff.
    #[error("{0}")]
    NoChange(#[source] BoxError),
    /// The selected node cannot host this volume: the controller removes
    /// `volume.kubernetes.io/selected-node` so the scheduler picks another node, then waits
    /// for the claim to change. Return it only when nothing runs in the background. Without a
    /// selected node it is treated as [`Final`](Self::Final).
    #[error("{0}")]
    Reschedule(#[source] BoxError),
    /// Another instance of this provisioner owns this claim (for example, the instance of
    /// the node the scheduler selected): no Event, no retry until the claim changes.
    ///
    /// Return it only when this call did nothing. The in-flight record stays on the claim —
    /// it names the provisioner, not the instance, and the controller never drops a record it
    /// cannot prove unused — so the owning instance resumes from it, and when the claim is
    /// deleted every instance is asked to [delete](Provisioner::delete) the recorded asset
    /// until one does. A backend that ignores a claim must therefore leave its clean-up to an
    /// instance that exists, and answer [`DeleteError::Ignored`] only for assets such an
    /// instance owns; a deleted claim keeps its finalizer until then (a stuck claim rather
    /// than a leaked asset). Make [`Provisioner::should_provision`] decline such claims too,
    /// so instances do not call each other's claims' backends.
    #[error("ignored: {0}")]
    Ignored(String),
    /// The request cannot succeed as it stands (for example, a size the backend can never
    /// offer). Retried only after a long delay, or as soon as the claim or its StorageClass
    /// changes.
    #[error("{0}")]
    Infeasible(#[source] BoxError),
}

impl ProvisionError {
    /// [`ProvisionError::Final`] from any error.
    pub fn final_error(error: impl Into<BoxError>) -> Self {
        Self::Final(error.into())
    }

    /// A short stable label for logs and metrics (`"final"`, `"background"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Final(_) => "final",
            Self::InBackground(_) => "background",
            Self::NoChange(_) => "no-change",
            Self::Reschedule(_) => "reschedule",
            Self::Ignored(_) => "ignored",
            Self::Infeasible(_) => "infeasible",
        }
    }
}

/// Why [`Provisioner::delete`] failed, and so what the controller does next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// Deleting failed: a Warning `VolumeFailedDelete` Event on the volume, retried with
    /// exponential backoff.
    #[error("{0}")]
    Failed(#[source] BoxError),
    /// The volume is still in use (for example still attached): a Normal `VolumeDelete`
    /// Event rather than a warning, retried with backoff.
    #[error("volume in use: {0}")]
    InUse(#[source] BoxError),
    /// Another instance of this provisioner deletes this asset: no Event, no retry until the
    /// object changes, and the PersistentVolume object (or the claim of an interrupted
    /// provisioning, held by its finalizer) is left to that instance.
    #[error("ignored: {0}")]
    Ignored(String),
}

impl DeleteError {
    /// [`DeleteError::Failed`] from any error.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Self::Failed(error.into())
    }

    /// A short stable label for logs and metrics (`"failed"`, `"in-use"`, `"ignored"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Failed(_) => "failed",
            Self::InUse(_) => "in-use",
            Self::Ignored(_) => "ignored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameter_error_names_the_parameter() {
        let error = ParameterError::invalid("archiveOnDelete", "expected true or false");
        assert_eq!(
            error.to_string(),
            "invalid StorageClass parameter \"archiveOnDelete\": expected true or false"
        );
    }

    #[test]
    fn reject_unknown_reports_the_first_unknown_key() {
        let known = ["a", "b"];
        assert_eq!(
            ParameterError::reject_unknown(&raw(&[("a", "1"), ("b", "2")]), &known),
            Ok(())
        );
        let error =
            ParameterError::reject_unknown(&raw(&[("a", "1"), ("typo", "2")]), &known).unwrap_err();
        assert_eq!(error.parameter, "typo");
    }

    #[test]
    fn provisioned_volume_constructors_set_one_source() {
        let volume = ProvisionedVolume::nfs(NFSVolumeSource {
            server: "127.0.0.1".into(),
            path: "/export/x".into(),
            read_only: None,
        })
        .with_label("l", "v")
        .with_annotation("a", "b");
        assert!(volume.source.nfs.is_some());
        assert!(volume.source.host_path.is_none());
        assert_eq!(volume.labels["l"], "v");
        assert_eq!(volume.annotations["a"], "b");
    }

    #[test]
    fn delete_requests_expose_the_claim_metadata_when_given() {
        let bare: DeleteRequest<()> =
            DeleteRequest::new("pvc-1", ClaimIdentity::new("ns", "c", "1"), "fast");
        assert!(bare.claim_labels().is_empty());
        assert!(bare.claim_annotations().is_empty());
        let claim = PersistentVolumeClaim {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some(raw(&[("team", "db")])),
                annotations: Some(raw(&[("path", "x")])),
                ..Default::default()
            },
            ..PersistentVolumeClaim::default()
        };
        let full = bare.with_claim_object(Arc::new(claim));
        assert_eq!(full.claim_labels()["team"], "db");
        assert_eq!(full.claim_annotations()["path"], "x");
    }

    #[test]
    fn error_kinds_are_stable_labels() {
        assert_eq!(ProvisionError::final_error("x").kind(), "final");
        assert_eq!(ProvisionError::Ignored("other".into()).kind(), "ignored");
        assert_eq!(DeleteError::failed("x").kind(), "failed");
    }
}
