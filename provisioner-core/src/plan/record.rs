//! The in-flight provisioning record: what makes provisioning crash-safe.
//!
//! Before the backend is first called for a claim, the controller writes onto the claim, in
//! one conditional update (with the claim's `resourceVersion`):
//!
//! - the annotation [`PROVISIONING_RECORD`]: the volume name, the StorageClass name,
//!   provisioner and parameters, and the selected node — everything the backend needs to
//!   delete the asset without the StorageClass;
//! - the finalizer [`PROVISIONING_FINALIZER`], so a claim deleted while provisioning is in
//!   flight stays until the asset is cleaned up.
//!
//! The update fails with a conflict when the controller's view of the claim is stale, and the
//! API server refuses new finalizers on a claim that is being deleted, so a successful write
//! proves the claim was current, alive and unbound at that moment. Both are removed in one
//! update once the PersistentVolume exists (the record is copied onto the PersistentVolume
//! for later deletes), or after the asset was deleted: for a claim deleted mid-flight, or
//! for a record gone stale (the next attempt would record other parameters or another
//! node). A record is never overwritten with a different one: that would strand the asset
//! the old one describes.
//!
//! [`PROVISIONING_RECORD`]: super::keys::PROVISIONING_RECORD
//! [`PROVISIONING_FINALIZER`]: super::keys::PROVISIONING_FINALIZER

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::keys::{PROVISIONING_FINALIZER, PROVISIONING_RECORD, SELECTED_NODE};

/// A malformed provisioning record annotation.
#[derive(Debug, thiserror::Error)]
#[error("annotation {key:?} cannot be read: {source}")]
pub struct RecordError {
    key: &'static str,
    #[source]
    source: serde_json::Error,
}

/// What was provisioned, or is being provisioned, for one claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRecord {
    /// The PersistentVolume name, which is also the backend's idempotency key.
    pub volume_name: String,
    /// The StorageClass name.
    pub storage_class: String,
    /// The StorageClass's `provisioner` at that time.
    pub provisioner: String,
    /// The StorageClass's parameters at that time.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The node selected by the scheduler, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_node: Option<String>,
}

impl ProvisioningRecord {
    /// The record as stored in the annotation.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("a record of strings always serialises")
    }

    /// Parses the annotation text.
    pub fn from_annotation(text: &str) -> Result<Self, RecordError> {
        serde_json::from_str(text).map_err(|source| RecordError {
            key: PROVISIONING_RECORD,
            source,
        })
    }
}

/// The record on an object (a claim in flight, or a PersistentVolume provisioned by this
/// library), if any.
pub fn read_record(meta: &ObjectMeta) -> Result<Option<ProvisioningRecord>, RecordError> {
    meta.annotations
        .as_ref()
        .and_then(|annotations| annotations.get(PROVISIONING_RECORD))
        .map(|text| ProvisioningRecord::from_annotation(text))
        .transpose()
}

/// Whether the claim carries the in-flight finalizer.
pub fn has_provisioning_finalizer(claim: &PersistentVolumeClaim) -> bool {
    claim
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| finalizers.iter().any(|f| f == PROVISIONING_FINALIZER))
}

/// Whether the claim is marked in flight: it has the record annotation or the finalizer
/// (a half-edited claim counts, so it is finished or cleaned up, not forgotten).
pub fn is_in_flight(claim: &PersistentVolumeClaim) -> bool {
    has_provisioning_finalizer(claim)
        || claim
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(PROVISIONING_RECORD))
}

/// The claim with `record` and the in-flight finalizer set (its `resourceVersion` kept, so
/// replacing it is conditional).
pub fn with_record(
    claim: &PersistentVolumeClaim,
    record: &ProvisioningRecord,
) -> PersistentVolumeClaim {
    let mut claim = claim.clone();
    claim
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(PROVISIONING_RECORD.to_owned(), record.to_annotation());
    let finalizers = claim.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == PROVISIONING_FINALIZER) {
        finalizers.push(PROVISIONING_FINALIZER.to_owned());
    }
    claim
}

/// The claim without the record and the in-flight finalizer.
pub fn without_record(claim: &PersistentVolumeClaim) -> PersistentVolumeClaim {
    let mut claim = claim.clone();
    if let Some(annotations) = claim.metadata.annotations.as_mut() {
        annotations.remove(PROVISIONING_RECORD);
    }
    if let Some(finalizers) = claim.metadata.finalizers.as_mut() {
        finalizers.retain(|f| f != PROVISIONING_FINALIZER);
    }
    claim
}

/// The claim without `volume.kubernetes.io/selected-node`, so the scheduler picks again.
pub fn without_selected_node(claim: &PersistentVolumeClaim) -> PersistentVolumeClaim {
    let mut claim = claim.clone();
    if let Some(annotations) = claim.metadata.annotations.as_mut() {
        annotations.remove(SELECTED_NODE);
    }
    claim
}

/// Whether `volume` is the one provisioned for the claim with this UID (its `claimRef`
/// carries that UID). A PersistentVolume that merely has the right name is not enough.
pub fn volume_belongs_to_claim(volume: &PersistentVolume, claim_uid: &str) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref())
        .and_then(|claim_ref| claim_ref.uid.as_deref())
        .is_some_and(|uid| uid == claim_uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeSpec};

    fn mk_record() -> ProvisioningRecord {
        ProvisioningRecord {
            volume_name: "pvc-1".into(),
            storage_class: "fast".into(),
            provisioner: "p".into(),
            parameters: [("archiveOnDelete".to_owned(), "false".to_owned())].into(),
            selected_node: None,
        }
    }

    fn mk_claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                uid: Some("1".into()),
                resource_version: Some("7".into()),
                finalizers: Some(vec!["kubernetes.io/pvc-protection".into()]),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    #[test]
    fn record_round_trips_through_the_annotation() {
        let record = mk_record();
        let text = record.to_annotation();
        assert!(
            !text.contains("selectedNode"),
            "absent node is omitted: {text}"
        );
        assert_eq!(ProvisioningRecord::from_annotation(&text).unwrap(), record);
    }

    #[test]
    fn with_and_without_record_are_inverse_and_keep_other_finalizers() {
        let claim = mk_claim();
        let marked = with_record(&claim, &mk_record());
        assert!(has_provisioning_finalizer(&marked));
        assert!(is_in_flight(&marked));
        assert_eq!(read_record(&marked.metadata).unwrap(), Some(mk_record()));
        assert_eq!(marked.metadata.resource_version.as_deref(), Some("7"));
        // Marking twice does not duplicate the finalizer.
        let twice = with_record(&marked, &mk_record());
        assert_eq!(twice.metadata.finalizers.as_ref().unwrap().len(), 2);

        let cleared = without_record(&marked);
        assert!(!is_in_flight(&cleared));
        assert_eq!(
            cleared.metadata.finalizers,
            Some(vec!["kubernetes.io/pvc-protection".to_owned()])
        );
        assert_eq!(read_record(&cleared.metadata).unwrap(), None);
    }

    #[test]
    fn a_half_written_claim_still_counts_as_in_flight() {
        let mut claim = mk_claim();
        claim
            .metadata
            .finalizers
            .as_mut()
            .unwrap()
            .push(PROVISIONING_FINALIZER.into());
        assert!(is_in_flight(&claim));
        assert_eq!(read_record(&claim.metadata).unwrap(), None);
    }

    #[test]
    fn malformed_record_is_an_error_naming_the_annotation() {
        let mut claim = mk_claim();
        claim.metadata.annotations =
            Some([(PROVISIONING_RECORD.to_owned(), "{not json".to_owned())].into());
        let error = read_record(&claim.metadata).unwrap_err();
        assert!(error.to_string().contains(PROVISIONING_RECORD));
    }

    #[test]
    fn volume_belongs_only_by_claim_uid() {
        let volume = |uid: Option<&str>| PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                claim_ref: Some(ObjectReference {
                    uid: uid.map(str::to_owned),
                    ..ObjectReference::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        };
        assert!(volume_belongs_to_claim(&volume(Some("1")), "1"));
        assert!(!volume_belongs_to_claim(&volume(Some("2")), "1"));
        assert!(!volume_belongs_to_claim(&volume(None), "1"));
        assert!(!volume_belongs_to_claim(&PersistentVolume::default(), "1"));
    }

    #[test]
    fn selected_node_removal_touches_nothing_else() {
        let mut claim = mk_claim();
        claim.metadata.annotations = Some(
            [
                (SELECTED_NODE.to_owned(), "n1".to_owned()),
                ("keep".to_owned(), "me".to_owned()),
            ]
            .into(),
        );
        let rescheduled = without_selected_node(&claim);
        let annotations = rescheduled.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(SELECTED_NODE));
        assert_eq!(annotations["keep"], "me");
    }
}
