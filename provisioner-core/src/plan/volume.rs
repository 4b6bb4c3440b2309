//! What to do with a PersistentVolume ([`decide_volume`]) and how a provisioned one is built
//! ([`build_volume`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::keys::{
    MIGRATED_TO, PHASE_RELEASED, PROVISIONED_BY, PROVISIONING_RECORD, RECLAIM_DELETE,
    VOLUME_FINALIZER,
};
use super::record::ProvisioningRecord;
use super::{ProvisionerNames, annotation};
use crate::binding::predicates::{STORAGE_RESOURCE, claim_class};
use crate::provisioner::ProvisionedVolume;

/// What to do with a PersistentVolume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeAction {
    /// Nothing.
    Ignore,
    /// Delete the asset, then the PersistentVolume (then drop the finalizer, if it has ours).
    Delete,
    /// Add [`VOLUME_FINALIZER`] (the option is on and a bound Delete volume lacks it).
    AddFinalizer,
    /// Remove [`VOLUME_FINALIZER`] (the option is off, or the policy is no longer Delete).
    RemoveFinalizer,
}

/// Whether this provisioner (or an alias) provisioned the volume: `provisioned-by`, or
/// `migrated-to` for migrated in-tree volumes.
pub fn is_ours(volume: &PersistentVolume, names: &ProvisionerNames) -> bool {
    let annotations = volume.metadata.annotations.as_ref();
    [PROVISIONED_BY, MIGRATED_TO]
        .into_iter()
        .filter_map(|key| annotation(annotations, key))
        .any(|name| names.is_known(name))
}

/// Whether the volume carries [`VOLUME_FINALIZER`].
pub fn has_volume_finalizer(volume: &PersistentVolume) -> bool {
    volume
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| finalizers.iter().any(|f| f == VOLUME_FINALIZER))
}

/// Decides what to do with a PersistentVolume.
///
/// Only volumes this provisioner owns are touched. The asset of a `Released` volume with
/// reclaim policy `Delete` is deleted, unless the backend's `should_delete` says no;
/// `Retain` (and `Recycle`) volumes are left alone. Without the finalizer option, a volume
/// being deleted is left alone (its asset is the user's business); with it, a volume being
/// deleted that still has the finalizer is deleted once Released, and the finalizer follows
/// the reclaim policy.
pub fn decide_volume(
    volume: &PersistentVolume,
    names: &ProvisionerNames,
    finalizer_enabled: bool,
    backend_allows_delete: bool,
) -> VolumeAction {
    if !is_ours(volume, names) {
        return VolumeAction::Ignore;
    }
    let spec = volume.spec.as_ref();
    let reclaim_delete = spec.and_then(|spec| spec.persistent_volume_reclaim_policy.as_deref())
        == Some(RECLAIM_DELETE);
    let phase = volume
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("");
    let deleting = volume.metadata.deletion_timestamp.is_some();
    let has_finalizer = has_volume_finalizer(volume);

    if has_finalizer && (!finalizer_enabled || !reclaim_delete) {
        return VolumeAction::RemoveFinalizer;
    }
    if deleting && !has_finalizer {
        return VolumeAction::Ignore;
    }
    if phase == PHASE_RELEASED && reclaim_delete {
        return if backend_allows_delete {
            VolumeAction::Delete
        } else {
            VolumeAction::Ignore
        };
    }
    if finalizer_enabled && reclaim_delete && !has_finalizer && !deleting {
        return VolumeAction::AddFinalizer;
    }
    VolumeAction::Ignore
}

/// Everything [`build_volume`] combines.
#[derive(Clone, Copy, Debug)]
pub struct VolumeParts<'a> {
    /// The volume name.
    pub volume_name: &'a str,
    /// The claim it is for.
    pub claim: &'a PersistentVolumeClaim,
    /// The claim's class.
    pub class: &'a StorageClass,
    /// What the backend returned.
    pub provisioned: &'a ProvisionedVolume,
    /// The provisioning record, copied onto the volume so deleting it needs no StorageClass.
    pub record: &'a ProvisioningRecord,
    /// Whether to add [`VOLUME_FINALIZER`].
    pub finalizer: bool,
}

/// Builds the PersistentVolume for a provisioned asset.
///
/// From the backend: the source, node affinity, capacity (else the claim's request), labels
/// and annotations. From the claim: `claimRef` (with UID, so the PV controller binds exactly
/// this claim), access modes, volume mode, VolumeAttributesClass, and storage class. From
/// the class: reclaim policy (default Delete), mount options and `provisioned-by` (the
/// class's provisioner, as the Go library sets it). The provisioning record goes on as an
/// annotation.
pub fn build_volume(parts: VolumeParts<'_>) -> PersistentVolume {
    let VolumeParts {
        volume_name,
        claim,
        class,
        provisioned,
        record,
        finalizer,
    } = parts;
    let claim_spec = claim.spec.clone().unwrap_or_default();

    let mut annotations: BTreeMap<String, String> = provisioned.annotations.clone();
    annotations.insert(PROVISIONED_BY.to_owned(), class.provisioner.clone());
    annotations.insert(PROVISIONING_RECORD.to_owned(), record.to_annotation());

    let capacity = provisioned.capacity.clone().or_else(|| {
        claim_spec
            .resources
            .as_ref()
            .and_then(|resources| resources.requests.as_ref())
            .and_then(|requests| requests.get(STORAGE_RESOURCE))
            .cloned()
    });

    let mut spec: PersistentVolumeSpec = provisioned.source.clone();
    spec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("PersistentVolumeClaim".to_owned()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        ..ObjectReference::default()
    });
    spec.storage_class_name = Some(claim_class(claim).to_owned());
    spec.persistent_volume_reclaim_policy = Some(
        class
            .reclaim_policy
            .clone()
            .unwrap_or_else(|| RECLAIM_DELETE.to_owned()),
    );
    spec.mount_options = class.mount_options.clone();
    spec.access_modes = claim_spec.access_modes.clone();
    spec.volume_mode = claim_spec.volume_mode.clone();
    spec.volume_attributes_class_name = claim_spec.volume_attributes_class_name.clone();
    spec.capacity = capacity.map(|quantity| [(STORAGE_RESOURCE.to_owned(), quantity)].into());
    if provisioned.node_affinity.is_some() {
        spec.node_affinity = provisioned.node_affinity.clone();
    }

    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name.to_owned()),
            labels: (!provisioned.labels.is_empty()).then(|| provisioned.labels.clone()),
            annotations: Some(annotations),
            finalizers: finalizer.then(|| vec![VOLUME_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::record::read_record;
    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, NodeSelector, PersistentVolumeClaimSpec, PersistentVolumeStatus,
        VolumeNodeAffinity, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NAME: &str = "example.com/dir";

    fn names() -> ProvisionerNames {
        ProvisionerNames::new(NAME).with_aliases(["old"])
    }

    fn mk_volume(by: &str, phase: &str, policy: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".into()),
                annotations: Some([(PROVISIONED_BY.to_owned(), by.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                persistent_volume_reclaim_policy: Some(policy.into()),
                ..PersistentVolumeSpec::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..PersistentVolumeStatus::default()
            }),
        }
    }

    fn with_finalizer(mut volume: PersistentVolume) -> PersistentVolume {
        volume.metadata.finalizers = Some(vec![VOLUME_FINALIZER.into()]);
        volume
    }

    fn deleting(mut volume: PersistentVolume) -> PersistentVolume {
        volume.metadata.deletion_timestamp = Some(Time(Default::default()));
        volume
    }

    #[test]
    fn released_delete_volumes_of_ours_are_deleted() {
        for by in [NAME, "old"] {
            let volume = mk_volume(by, "Released", "Delete");
            assert_eq!(
                decide_volume(&volume, &names(), false, true),
                VolumeAction::Delete
            );
        }
        let theirs = mk_volume("other", "Released", "Delete");
        assert_eq!(
            decide_volume(&theirs, &names(), false, true),
            VolumeAction::Ignore
        );
    }

    #[test]
    fn migrated_volumes_count_as_ours() {
        let mut volume = mk_volume("kubernetes.io/in-tree", "Released", "Delete");
        volume
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(MIGRATED_TO.into(), NAME.into());
        assert_eq!(
            decide_volume(&volume, &names(), false, true),
            VolumeAction::Delete
        );
    }

    #[test]
    fn retain_bound_and_vetoed_volumes_are_kept() {
        let retain = mk_volume(NAME, "Released", "Retain");
        assert_eq!(
            decide_volume(&retain, &names(), false, true),
            VolumeAction::Ignore
        );
        let bound = mk_volume(NAME, "Bound", "Delete");
        assert_eq!(
            decide_volume(&bound, &names(), false, true),
            VolumeAction::Ignore
        );
        let released = mk_volume(NAME, "Released", "Delete");
        assert_eq!(
            decide_volume(&released, &names(), false, false),
            VolumeAction::Ignore
        );
    }

    #[test]
    fn without_the_finalizer_option_a_deleted_volume_is_left_alone() {
        let volume = deleting(mk_volume(NAME, "Released", "Delete"));
        assert_eq!(
            decide_volume(&volume, &names(), false, true),
            VolumeAction::Ignore
        );
    }

    #[test]
    fn the_finalizer_follows_option_and_reclaim_policy() {
        let bound = mk_volume(NAME, "Bound", "Delete");
        assert_eq!(
            decide_volume(&bound, &names(), true, true),
            VolumeAction::AddFinalizer
        );
        assert_eq!(
            decide_volume(&with_finalizer(bound.clone()), &names(), true, true),
            VolumeAction::Ignore
        );
        // Switched off: roll back.
        assert_eq!(
            decide_volume(&with_finalizer(bound), &names(), false, true),
            VolumeAction::RemoveFinalizer
        );
        // Retain never keeps the finalizer (the Go library's stuck-Terminating complaint).
        let retain = with_finalizer(mk_volume(NAME, "Released", "Retain"));
        assert_eq!(
            decide_volume(&retain, &names(), true, true),
            VolumeAction::RemoveFinalizer
        );
        // A deleted, released volume with our finalizer: delete the asset.
        let gone = deleting(with_finalizer(mk_volume(NAME, "Released", "Delete")));
        assert_eq!(
            decide_volume(&gone, &names(), true, true),
            VolumeAction::Delete
        );
        // A deleted volume without it: nothing to hold.
        let gone = deleting(mk_volume(NAME, "Bound", "Delete"));
        assert_eq!(
            decide_volume(&gone, &names(), true, true),
            VolumeAction::Ignore
        );
    }

    fn mk_claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                resource_version: Some("5".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("fast".into()),
                access_modes: Some(vec!["ReadWriteMany".into()]),
                volume_mode: Some("Filesystem".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Quantity("50Mi".into()))].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    fn mk_class(policy: Option<&str>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some("fast".into()),
                ..ObjectMeta::default()
            },
            provisioner: NAME.into(),
            reclaim_policy: policy.map(str::to_owned),
            mount_options: Some(vec!["nfsvers=4.1".into()]),
            ..StorageClass::default()
        }
    }

    fn mk_record() -> ProvisioningRecord {
        ProvisioningRecord {
            volume_name: "pvc-u1".into(),
            storage_class: "fast".into(),
            provisioner: NAME.into(),
            parameters: BTreeMap::new(),
            selected_node: None,
        }
    }

    fn hostpath() -> ProvisionedVolume {
        ProvisionedVolume::host_path(HostPathVolumeSource {
            path: "/srv/pvc-u1".into(),
            type_: None,
        })
    }

    #[test]
    fn built_volume_carries_claim_class_and_backend_fields() {
        let claim = mk_claim();
        let class = mk_class(None);
        let provisioned = hostpath()
            .with_label("tier", "disk")
            .with_annotation("example.com/path", "/srv/pvc-u1")
            .with_node_affinity(VolumeNodeAffinity {
                required: Some(NodeSelector::default()),
            });
        let pv = build_volume(VolumeParts {
            volume_name: "pvc-u1",
            claim: &claim,
            class: &class,
            provisioned: &provisioned,
            record: &mk_record(),
            finalizer: false,
        });
        let spec = pv.spec.as_ref().unwrap();
        let claim_ref = spec.claim_ref.as_ref().unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(claim_ref.uid.as_deref(), Some("u1"));
        assert_eq!(claim_ref.namespace.as_deref(), Some("ns"));
        assert_eq!(claim_ref.name.as_deref(), Some("data"));
        assert_eq!(claim_ref.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.mount_options, Some(vec!["nfsvers=4.1".to_owned()]));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(
            spec.capacity.as_ref().unwrap()["storage"],
            Quantity("50Mi".into())
        );
        assert!(spec.host_path.is_some());
        assert!(spec.node_affinity.is_some());
        let annotations = pv.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[PROVISIONED_BY], NAME);
        assert_eq!(annotations["example.com/path"], "/srv/pvc-u1");
        assert_eq!(read_record(&pv.metadata).unwrap(), Some(mk_record()));
        assert_eq!(pv.metadata.labels.as_ref().unwrap()["tier"], "disk");
        assert_eq!(pv.metadata.finalizers, None);
    }

    #[test]
    fn backend_capacity_class_policy_and_finalizer_option_apply() {
        let claim = mk_claim();
        let class = mk_class(Some("Retain"));
        let provisioned = hostpath().with_capacity(Quantity("1Gi".into()));
        let pv = build_volume(VolumeParts {
            volume_name: "pvc-u1",
            claim: &claim,
            class: &class,
            provisioned: &provisioned,
            record: &mk_record(),
            finalizer: true,
        });
        let spec = pv.spec.as_ref().unwrap();
        assert_eq!(
            spec.capacity.as_ref().unwrap()["storage"],
            Quantity("1Gi".into())
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(
            pv.metadata.finalizers,
            Some(vec![VOLUME_FINALIZER.to_owned()])
        );
        assert!(pv.metadata.labels.is_none());
    }

    #[test]
    fn backend_cannot_override_claim_binding_fields() {
        let claim = mk_claim();
        let class = mk_class(None);
        let mut provisioned = hostpath();
        provisioned.source.storage_class_name = Some("sneaky".into());
        provisioned.source.claim_ref = Some(ObjectReference::default());
        provisioned
            .annotations
            .insert(PROVISIONED_BY.into(), "sneaky".into());
        let pv = build_volume(VolumeParts {
            volume_name: "pvc-u1",
            claim: &claim,
            class: &class,
            provisioned: &provisioned,
            record: &mk_record(),
            finalizer: false,
        });
        let spec = pv.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u1"));
        assert_eq!(pv.metadata.annotations.unwrap()[PROVISIONED_BY], NAME);
    }
}
