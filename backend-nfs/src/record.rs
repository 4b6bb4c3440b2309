//! What a PersistentVolume records about its directory, so deleting it never guesses.
//!
//! nfs-subdir recorded nothing: at delete time it string-replaced `NFS_PATH` in the
//! volume's path (wrong after `NFS_PATH` changed, with a trailing `/`, or — in the v4.0.2
//! image — for any nested pattern) and read the delete policy from the StorageClass as it
//! is *now* (failing when the class was deleted). Here provisioning writes three
//! annotations onto the PersistentVolume, and delete reads only those:
//!
//! - [`DIRECTORY_ANNOTATION`]: the directory, relative to the export root;
//! - [`SHARE_ANNOTATION`]: the export path it is relative to;
//! - [`ON_DELETE_ANNOTATION`]: `delete`, `retain` or `archive`, as the class said then.
//!
//! The server is the PersistentVolume's own `spec.nfs.server`, and `spec.nfs.path` must
//! equal share + directory, or the record is refused as inconsistent.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NFSVolumeSource, PersistentVolume};
use provisioner_core::volume_path::{VolumePath, VolumePathError};

use crate::naming::volume_nfs_path;
use crate::parameters::{DeletePolicy, normalize_share};

/// The volume's directory, relative to [`SHARE_ANNOTATION`].
pub const DIRECTORY_ANNOTATION: &str = "nfs.provisioner-rs.io/directory";
/// The export path the directory is relative to.
pub const SHARE_ANNOTATION: &str = "nfs.provisioner-rs.io/share";
/// The delete policy in force when the volume was provisioned.
pub const ON_DELETE_ANNOTATION: &str = "nfs.provisioner-rs.io/on-delete";

/// A record on a PersistentVolume that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// One record annotation is present but another is missing.
    #[error("volume {volume}: annotation {key} is missing although {DIRECTORY_ANNOTATION} is set")]
    Missing {
        /// The volume's name.
        volume: String,
        /// The missing annotation.
        key: &'static str,
    },
    /// An annotation's value is not valid.
    #[error("volume {volume}: annotation {key} has the invalid value {value:?}")]
    Invalid {
        /// The volume's name.
        volume: String,
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// The directory annotation is not a safe relative path.
    #[error("volume {volume}: annotation {DIRECTORY_ANNOTATION} is refused: {reason}")]
    UnsafeDirectory {
        /// The volume's name.
        volume: String,
        /// Why.
        reason: VolumePathError,
    },
    /// The volume has no NFS source.
    #[error("volume {volume} has no spec.nfs source")]
    NoNfsSource {
        /// The volume's name.
        volume: String,
    },
    /// `spec.nfs.path` is not share + directory: someone edited one of them.
    #[error(
        "volume {volume}: spec.nfs.path {path:?} does not match the recorded directory \
         {recorded:?}; refusing to guess which one to delete"
    )]
    Inconsistent {
        /// The volume's name.
        volume: String,
        /// `spec.nfs.path`.
        path: String,
        /// Share + directory from the annotations.
        recorded: String,
    },
}

/// Where a volume's directory is and what deleting the volume does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// The NFS server.
    pub server: String,
    /// The export path on the server, normalised (absolute, no trailing `/`).
    pub share: String,
    /// The directory, relative to the export root.
    pub directory: VolumePath,
    /// What deleting the volume does to the directory.
    pub delete_policy: DeletePolicy,
}

impl VolumeRecord {
    /// The annotations to put on the PersistentVolume.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (DIRECTORY_ANNOTATION.to_owned(), self.directory.to_string()),
            (SHARE_ANNOTATION.to_owned(), self.share.clone()),
            (
                ON_DELETE_ANNOTATION.to_owned(),
                self.delete_policy.as_str().to_owned(),
            ),
        ])
    }

    /// The PersistentVolume's NFS source: the server and share + directory.
    pub fn nfs_source(&self) -> NFSVolumeSource {
        NFSVolumeSource {
            server: self.server.clone(),
            path: volume_nfs_path(&self.share, &self.directory),
            read_only: None,
        }
    }

    /// Reads the record of a PersistentVolume; `Ok(None)` when it has none (a volume made
    /// by nfs-subdir or by hand).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeSpec};
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    /// use backend_nfs::parameters::DeletePolicy;
    /// use backend_nfs::record::VolumeRecord;
    /// use provisioner_core::volume_path::VolumePath;
    ///
    /// let record = VolumeRecord {
    ///     server: "10.0.0.5".into(),
    ///     share: "/shared".into(),
    ///     directory: VolumePath::parse("team-a/data").unwrap(),
    ///     delete_policy: DeletePolicy::Archive,
    /// };
    /// let volume = PersistentVolume {
    ///     metadata: ObjectMeta {
    ///         name: Some("pvc-1".into()),
    ///         annotations: Some(record.annotations()),
    ///         ..ObjectMeta::default()
    ///     },
    ///     spec: Some(PersistentVolumeSpec { nfs: Some(record.nfs_source()), ..Default::default() }),
    ///     ..PersistentVolume::default()
    /// };
    /// assert_eq!(VolumeRecord::from_volume(&volume).unwrap(), Some(record));
    /// ```
    pub fn from_volume(volume: &PersistentVolume) -> Result<Option<Self>, RecordError> {
        let name = volume.metadata.name.clone().unwrap_or_default();
        let annotations = volume.metadata.annotations.as_ref();
        let get = |key: &'static str| annotations.and_then(|annotations| annotations.get(key));
        let Some(directory) = get(DIRECTORY_ANNOTATION) else {
            return Ok(None);
        };
        let require = |key: &'static str| {
            get(key).ok_or_else(|| RecordError::Missing {
                volume: name.clone(),
                key,
            })
        };
        let invalid = |key: &'static str, value: &str| RecordError::Invalid {
            volume: name.clone(),
            key,
            value: value.to_owned(),
        };

        let directory =
            VolumePath::parse(directory).map_err(|reason| RecordError::UnsafeDirectory {
                volume: name.clone(),
                reason,
            })?;
        let share_text = require(SHARE_ANNOTATION)?;
        let share =
            normalize_share(share_text).ok_or_else(|| invalid(SHARE_ANNOTATION, share_text))?;
        let policy_text = require(ON_DELETE_ANNOTATION)?;
        let delete_policy = DeletePolicy::parse(policy_text)
            .ok_or_else(|| invalid(ON_DELETE_ANNOTATION, policy_text))?;
        let source = volume
            .spec
            .as_ref()
            .and_then(|spec| spec.nfs.as_ref())
            .ok_or_else(|| RecordError::NoNfsSource {
                volume: name.clone(),
            })?;

        let recorded = volume_nfs_path(&share, &directory);
        if normalize_share(&source.path).as_deref() != Some(recorded.as_str()) {
            return Err(RecordError::Inconsistent {
                volume: name,
                path: source.path.clone(),
                recorded,
            });
        }
        Ok(Some(Self {
            server: source.server.clone(),
            share,
            directory,
            delete_policy,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn mk_record() -> VolumeRecord {
        VolumeRecord {
            server: "127.0.0.1".into(),
            share: "/shared".into(),
            directory: VolumePath::parse("ns/claim").unwrap(),
            delete_policy: DeletePolicy::Delete,
        }
    }

    fn mk_volume(annotations: BTreeMap<String, String>, path: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                nfs: Some(NFSVolumeSource {
                    server: "127.0.0.1".into(),
                    path: path.into(),
                    read_only: None,
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    #[test]
    fn round_trips_through_annotations() {
        let record = mk_record();
        assert_eq!(record.nfs_source().path, "/shared/ns/claim");
        let volume = mk_volume(record.annotations(), "/shared/ns/claim");
        assert_eq!(VolumeRecord::from_volume(&volume).unwrap(), Some(record));
    }

    #[test]
    fn volumes_without_a_record_are_legacy() {
        let volume = mk_volume(BTreeMap::new(), "/shared/x");
        assert_eq!(VolumeRecord::from_volume(&volume).unwrap(), None);
        assert_eq!(
            VolumeRecord::from_volume(&PersistentVolume::default()).unwrap(),
            None
        );
    }

    #[test]
    fn broken_records_are_refused_not_guessed() {
        let good = mk_record().annotations();
        let with = |key: &str, value: Option<&str>| {
            let mut annotations = good.clone();
            match value {
                Some(value) => annotations.insert(key.to_owned(), value.to_owned()),
                None => annotations.remove(key),
            };
            VolumeRecord::from_volume(&mk_volume(annotations, "/shared/ns/claim")).unwrap_err()
        };
        assert!(matches!(
            with(SHARE_ANNOTATION, None),
            RecordError::Missing { .. }
        ));
        assert!(matches!(
            with(ON_DELETE_ANNOTATION, None),
            RecordError::Missing { .. }
        ));
        assert!(matches!(
            with(ON_DELETE_ANNOTATION, Some("Delete")),
            RecordError::Invalid { .. }
        ));
        assert!(matches!(
            with(SHARE_ANNOTATION, Some("shared")),
            RecordError::Invalid { .. }
        ));
        assert!(matches!(
            with(DIRECTORY_ANNOTATION, Some("../x")),
            RecordError::UnsafeDirectory { .. }
        ));
        assert!(matches!(
            with(DIRECTORY_ANNOTATION, Some("other")),
            RecordError::Inconsistent { .. }
        ));
        let mut no_source = mk_volume(good, "/x");
        no_source.spec = None;
        assert!(matches!(
            VolumeRecord::from_volume(&no_source),
            Err(RecordError::NoNfsSource { .. })
        ));
    }

    #[test]
    fn a_trailing_slash_in_the_volume_path_is_not_an_inconsistency() {
        let volume = mk_volume(mk_record().annotations(), "/shared/ns/claim/");
        assert!(VolumeRecord::from_volume(&volume).unwrap().is_some());
    }
}
