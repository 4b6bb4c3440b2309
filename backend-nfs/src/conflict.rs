//! Which existing volumes a directory would share data with.
//!
//! nfs-subdir silently reused an existing directory, so two claims whose pattern rendered
//! the same path shared one directory — and deleting either removed the other's data
//! (nfs#139). Here a new volume's directory must not be the same as, inside, or around the
//! directory of any other PersistentVolume on the same server (whatever its phase or
//! provisioner: a Released volume still owns its data until it is deleted), unless the
//! class sets `allowSharedDirectory: "true"`. A volume of the whole export root (the NFS
//! Helm chart's own PV, for example) does not count.
//!
//! Directories are compared as absolute paths on the server, so volumes of nested shares
//! (`/exports` and `/exports/team`) are compared correctly too. Servers are compared as
//! written (an IP and a host name for the same machine are not recognised as one).
//!
//! Pure: no I/O.

use k8s_openapi::api::core::v1::PersistentVolume;
use provisioner_core::volume_path::VolumePath;

use crate::naming::legacy_directory;

/// A directory on one export.
#[derive(Debug, Clone, Copy)]
pub struct ExportDirectory<'a> {
    /// The NFS server.
    pub server: &'a str,
    /// The export path.
    pub share: &'a str,
    /// The directory, relative to the export root.
    pub directory: &'a VolumePath,
}

/// Another volume using the same data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// That volume's name.
    pub volume_name: String,
    /// Its directory, relative to the same export root.
    pub directory: VolumePath,
}

/// The directory of `volume` relative to `target`'s share, if it is on the same server and
/// strictly below that share.
fn directory_on(target: &ExportDirectory<'_>, volume: &PersistentVolume) -> Option<VolumePath> {
    let source = volume.spec.as_ref()?.nfs.as_ref()?;
    if source.server != target.server {
        return None;
    }
    legacy_directory(&source.path, target.share).ok()
}

/// The first volume other than `own_volume_name` whose directory overlaps `target`.
///
/// ```
/// use k8s_openapi::api::core::v1::{NFSVolumeSource, PersistentVolume, PersistentVolumeSpec};
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
/// use backend_nfs::conflict::{ExportDirectory, find_overlap};
/// use provisioner_core::volume_path::VolumePath;
///
/// let existing = PersistentVolume {
///     metadata: ObjectMeta { name: Some("pvc-old".into()), ..ObjectMeta::default() },
///     spec: Some(PersistentVolumeSpec {
///         nfs: Some(NFSVolumeSource { server: "nfs".into(), path: "/shared/team".into(), read_only: None }),
///         ..PersistentVolumeSpec::default()
///     }),
///     ..PersistentVolume::default()
/// };
/// let wanted = VolumePath::parse("team/claim").unwrap();
/// let target = ExportDirectory { server: "nfs", share: "/shared", directory: &wanted };
/// let overlap = find_overlap(&target, "pvc-new", [&existing]).unwrap();
/// assert_eq!(overlap.volume_name, "pvc-old");
/// ```
pub fn find_overlap<'v>(
    target: &ExportDirectory<'_>,
    own_volume_name: &str,
    volumes: impl IntoIterator<Item = &'v PersistentVolume>,
) -> Option<Overlap> {
    volumes.into_iter().find_map(|volume| {
        let name = volume.metadata.name.as_deref().unwrap_or_default();
        if name == own_volume_name {
            return None;
        }
        let directory = directory_on(target, volume)?;
        directory.overlaps(target.directory).then(|| Overlap {
            volume_name: name.to_owned(),
            directory,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NFSVolumeSource, PersistentVolumeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn mk_pv(name: &str, server: &str, path: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                nfs: Some(NFSVolumeSource {
                    server: server.into(),
                    path: path.into(),
                    read_only: None,
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    fn overlap_with(directory: &str, volumes: &[PersistentVolume]) -> Option<String> {
        let directory = VolumePath::parse(directory).unwrap();
        let target = ExportDirectory {
            server: "nfs",
            share: "/shared",
            directory: &directory,
        };
        find_overlap(&target, "pvc-self", volumes).map(|overlap| overlap.volume_name)
    }

    #[test]
    fn same_nested_and_enclosing_directories_overlap() {
        let volumes = [mk_pv("pvc-a", "nfs", "/shared/ns/a")];
        assert_eq!(overlap_with("ns/a", &volumes).as_deref(), Some("pvc-a"));
        assert_eq!(
            overlap_with("ns/a/inner", &volumes).as_deref(),
            Some("pvc-a")
        );
        assert_eq!(overlap_with("ns", &volumes).as_deref(), Some("pvc-a"));
        assert_eq!(overlap_with("ns/b", &volumes), None);
        assert_eq!(overlap_with("ns/a2", &volumes), None);
    }

    #[test]
    fn own_other_server_root_and_non_nfs_volumes_do_not_count() {
        let volumes = [
            mk_pv("pvc-self", "nfs", "/shared/x"),
            mk_pv("pvc-other-server", "other", "/shared/x"),
            mk_pv("pvc-root", "nfs", "/shared"),
            mk_pv("pvc-elsewhere", "nfs", "/elsewhere/x"),
            PersistentVolume::default(),
        ];
        assert_eq!(overlap_with("x", &volumes), None);
    }

    #[test]
    fn nested_shares_are_compared_as_absolute_paths() {
        let volumes = [mk_pv("pvc-team", "nfs", "/shared/team/x")];
        let directory = VolumePath::parse("x").unwrap();
        let target = ExportDirectory {
            server: "nfs",
            share: "/shared/team",
            directory: &directory,
        };
        assert!(find_overlap(&target, "pvc-self", &volumes).is_some());
    }
}
