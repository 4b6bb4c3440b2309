//! Directory names the backend derives: the default volume directory, archive names, and
//! the directory of a volume made by the Go provisioners.
//!
//! Pure: no I/O.

use provisioner_core::volume_path::{MAX_SEGMENT_BYTES, VolumePath, VolumePathError};

/// Prefix of an archived directory's name (nfs-subdir's).
pub const ARCHIVE_PREFIX: &str = "archived-";

/// How many numbered archive names are tried before giving up.
pub const MAX_ARCHIVE_ATTEMPTS: usize = 1000;

/// Why a directory name cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    /// The default name `<namespace>-<claim>-<pv name>` is not a valid directory.
    #[error("claim {namespace}/{name}: the default directory name is refused: {reason}")]
    DefaultName {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        name: String,
        /// Why.
        reason: VolumePathError,
    },
    /// The volume's NFS path is not below the export path it should be under.
    #[error("the volume path {path:?} is not below the export {share:?}")]
    NotBelowShare {
        /// The PersistentVolume's `spec.nfs.path`.
        path: String,
        /// The export path it was expected under.
        share: String,
    },
    /// The part of the volume path below the export is not a safe directory.
    #[error("the volume path {path:?} is refused: {reason}")]
    UnsafeVolumePath {
        /// The PersistentVolume's `spec.nfs.path`.
        path: String,
        /// Why.
        reason: VolumePathError,
    },
}

/// nfs-subdir's default directory: `<namespace>-<claim name>-<pv name>`, directly under the
/// export root.
///
/// ```
/// use backend_nfs::naming::default_directory;
///
/// let dir = default_directory("default", "nfs-pvc-test", "pvc-1234").unwrap();
/// assert_eq!(dir.to_string(), "default-nfs-pvc-test-pvc-1234");
/// ```
pub fn default_directory(
    namespace: &str,
    name: &str,
    volume_name: &str,
) -> Result<VolumePath, NamingError> {
    VolumePath::from_segments([format!("{namespace}-{name}-{volume_name}")]).map_err(|reason| {
        NamingError::DefaultName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason,
        }
    })
}

/// Names to archive `directory` under, in the order to try them: `archived-<leaf>` in the
/// same parent (so nested patterns keep their nesting), then `archived-<leaf>-1`,
/// `archived-<leaf>-2`, … up to [`MAX_ARCHIVE_ATTEMPTS`] names. A leaf too long for the
/// prefix and suffix is shortened (on a character boundary) so every name is valid.
///
/// ```
/// use backend_nfs::naming::archive_candidates;
/// use provisioner_core::volume_path::VolumePath;
///
/// let dir = VolumePath::parse("team-a/data").unwrap();
/// let names: Vec<String> = archive_candidates(&dir).take(2).map(|p| p.to_string()).collect();
/// assert_eq!(names, ["team-a/archived-data", "team-a/archived-data-1"]);
/// ```
pub fn archive_candidates(directory: &VolumePath) -> impl Iterator<Item = VolumePath> + '_ {
    (0..MAX_ARCHIVE_ATTEMPTS).map(move |attempt| {
        let suffix = if attempt == 0 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let room = MAX_SEGMENT_BYTES - ARCHIVE_PREFIX.len() - suffix.len();
        let leaf = truncate_to_boundary(directory.leaf(), room);
        directory
            .with_leaf(&format!("{ARCHIVE_PREFIX}{leaf}{suffix}"))
            .expect("an archive name built from a valid leaf within NAME_MAX is valid")
    })
}

/// The directory of a volume provisioned by nfs-subdir-external-provisioner (or the older
/// nfs-client-provisioner), which recorded nothing but `spec.nfs.path`.
///
/// nfs-subdir v4.0.3 found it by replacing the first occurrence of `NFS_PATH` in the path
/// with the mount point, and v4.0.2 used only the last segment (which broke nested
/// patterns). Here the path must be *below* the export path as whole segments
/// (`/shared/x` is below `/shared`, `/sharedx` is not; a trailing `/` on either does not
/// matter), and the rest must be a safe relative directory.
///
/// ```
/// use backend_nfs::naming::legacy_directory;
///
/// let dir = legacy_directory("/shared/ns/claim", "/shared/").unwrap();
/// assert_eq!(dir.to_string(), "ns/claim");
/// assert!(legacy_directory("/sharedx/claim", "/shared").is_err());
/// assert!(legacy_directory("/shared", "/shared").is_err());
/// ```
pub fn legacy_directory(volume_path: &str, share: &str) -> Result<VolumePath, NamingError> {
    let not_below = || NamingError::NotBelowShare {
        path: volume_path.to_owned(),
        share: share.to_owned(),
    };
    let share = crate::parameters::normalize_share(share).ok_or_else(not_below)?;
    if !volume_path.starts_with('/') {
        return Err(not_below());
    }
    let segments = |path: &str| -> Vec<String> {
        path.split('/')
            .filter(|segment| !segment.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let share_segments = segments(&share);
    let path_segments = segments(volume_path);
    if !path_segments.starts_with(&share_segments) {
        return Err(not_below());
    }
    VolumePath::from_segments(path_segments[share_segments.len()..].to_vec()).map_err(|reason| {
        NamingError::UnsafeVolumePath {
            path: volume_path.to_owned(),
            reason,
        }
    })
}

/// The NFS path of `directory` on `share` (what goes into the PersistentVolume).
pub fn volume_nfs_path(share: &str, directory: &VolumePath) -> String {
    if share == "/" {
        format!("/{directory}")
    } else {
        format!("{}/{directory}", share.trim_end_matches('/'))
    }
}

fn truncate_to_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dir(path: &str) -> VolumePath {
        VolumePath::parse(path).unwrap()
    }

    #[test]
    fn default_directory_is_one_segment() {
        assert_eq!(
            default_directory("ns", "claim", "pvc-1").unwrap(),
            dir("ns-claim-pvc-1")
        );
        let long = "x".repeat(253);
        assert!(matches!(
            default_directory("ns", &long, "pvc-1"),
            Err(NamingError::DefaultName { .. })
        ));
    }

    #[test]
    fn archive_keeps_nesting_and_numbers_duplicates() {
        let names: Vec<String> = archive_candidates(&dir("a/b/leaf"))
            .take(3)
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "a/b/archived-leaf",
                "a/b/archived-leaf-1",
                "a/b/archived-leaf-2"
            ]
        );
        assert_eq!(archive_candidates(&dir("x")).count(), MAX_ARCHIVE_ATTEMPTS);
    }

    #[test]
    fn archive_names_of_long_leaves_stay_valid() {
        let leaf = "é".repeat(127); // 254 bytes, two per character
        let names: Vec<VolumePath> = archive_candidates(&dir(&leaf)).take(12).collect();
        for name in &names {
            assert!(name.leaf().len() <= MAX_SEGMENT_BYTES);
            assert!(name.leaf().starts_with(ARCHIVE_PREFIX));
        }
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn legacy_directory_is_below_the_share_by_segments() {
        assert_eq!(
            legacy_directory("/shared/default-c-pvc-1", "/shared").unwrap(),
            dir("default-c-pvc-1")
        );
        assert_eq!(
            legacy_directory("/shared//ns/c/", "/shared/").unwrap(),
            dir("ns/c")
        );
        assert_eq!(legacy_directory("/ns/c", "/").unwrap(), dir("ns/c"));
        // nfs-subdir's string replace would have matched these.
        assert!(matches!(
            legacy_directory("/sharedfoo/c", "/shared"),
            Err(NamingError::NotBelowShare { .. })
        ));
        assert!(matches!(
            legacy_directory("/other/shared/c", "/shared"),
            Err(NamingError::NotBelowShare { .. })
        ));
        assert!(legacy_directory("/shared", "/shared").is_err());
        assert!(legacy_directory("/shared/../etc", "/shared").is_err());
        assert!(legacy_directory("relative/c", "/shared").is_err());
    }

    #[test]
    fn nfs_path_joins_share_and_directory() {
        assert_eq!(volume_nfs_path("/shared", &dir("a/b")), "/shared/a/b");
        assert_eq!(volume_nfs_path("/", &dir("a")), "/a");
    }

    proptest! {
        /// The PV path written at provisioning and the directory recovered from it for a
        /// legacy delete agree for every share and directory.
        #[test]
        fn legacy_directory_inverts_volume_nfs_path(
            share in prop_oneof![Just("/".to_owned()), "(/[a-z]{1,5}){1,3}"],
            path in "[a-z]{1,5}(/[a-z]{1,5}){0,3}",
        ) {
            let directory = dir(&path);
            let nfs_path = volume_nfs_path(&share, &directory);
            prop_assert_eq!(legacy_directory(&nfs_path, &share).unwrap(), directory);
        }
    }
}
