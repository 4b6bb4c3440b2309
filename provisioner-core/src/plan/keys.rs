//! Annotations and finalizers the controller reads and writes.
//!
//! The Kubernetes keys are fixed by Kubernetes and the Go provisioner library; the keys under
//! [`DOMAIN`] are this library's own and are part of its on-cluster format: changing one
//! would strand the in-flight records of a running cluster.

/// The domain of this library's own keys.
pub const DOMAIN: &str = "provisioner-rs.io";

/// On a claim: the provisioner the PV controller expects to provision it.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

/// On a claim: the beta form of [`STORAGE_PROVISIONER`], still set by the PV controller.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";

/// On a claim: the node the scheduler chose for a WaitForFirstConsumer class.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// On a PersistentVolume: the provisioner that created it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// On a PersistentVolume: the CSI driver an in-tree volume was migrated to.
pub const MIGRATED_TO: &str = "pv.kubernetes.io/migrated-to";

/// On a PersistentVolume (optional): keeps the object until its asset is deleted, honouring
/// the reclaim policy even when the PersistentVolume is deleted first (KEP-2644). The same
/// name as the Go library's, so volumes move between the two.
pub const VOLUME_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// On a claim and, after success, on its PersistentVolume: the provisioning record (JSON of
/// [`super::record::ProvisioningRecord`]).
pub const PROVISIONING_RECORD: &str = "provisioner-rs.io/provisioning";

/// On a claim: present from before the backend is first called until the PersistentVolume
/// exists, so a claim deleted mid-provisioning stays until its asset is cleaned up.
pub const PROVISIONING_FINALIZER: &str = "provisioner-rs.io/provisioning-in-progress";

/// `volumeBindingMode` that delays provisioning until a pod is scheduled.
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// `volumeMode` of raw block volumes.
pub const BLOCK_VOLUME_MODE: &str = "Block";

/// The reclaim policy that deletes the asset with the volume (and the default of
/// StorageClasses).
pub const RECLAIM_DELETE: &str = "Delete";

/// The phase of a volume whose claim is gone.
pub const PHASE_RELEASED: &str = "Released";
