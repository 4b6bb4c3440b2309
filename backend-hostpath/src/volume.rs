//! The PersistentVolume side: what a provisioned volume looks like, and where an existing
//! volume's directory is, read back from the volume alone.
//!
//! Pure: no I/O.
//!
//! # What is recorded on a PersistentVolume
//!
//! | annotation | value |
//! |---|---|
//! | `hostpath.provisioner-rs.io/base-path` | the base path the directory was created under |
//! | `hostpath.provisioner-rs.io/directory` | the directory, relative to the base path |
//! | `hostpath.provisioner-rs.io/node` | the node's name (absent on a shared filesystem) |
//! | `local.path.provisioner/selected-node` | the node's name, or `""` on a shared filesystem (as local-path writes it) |
//!
//! Deletion reads these, never the StorageClass or the config: editing or deleting either
//! cannot redirect a delete.
//!
//! # Adopting local-path volumes
//!
//! Volumes created by local-path (`pv.kubernetes.io/provisioned-by: rancher.io/local-path`,
//! or whatever name it ran under, configured as an alias) carry only the directory's full
//! path, in `spec.hostPath.path` or `spec.local.path`. local-path built that path as
//! `filepath.Join(<base path>, <folder>)`, where the folder is `<pv>_<namespace>_<claim>` or
//! the rendered `pathPattern`, and its teardown ran `rm -rf` on exactly that path. This
//! module splits the path back into a base and a directory: the longest configured base
//! path that contains it, else its parent directory. Either way the same directory is
//! removed as local-path would have removed; the split only decides from where the removal
//! walks without following symlinks. The node is local-path's
//! `local.path.provisioner/selected-node` annotation when the volume has a node affinity,
//! else the affinity's single `In` value; a volume without node affinity is on a shared
//! filesystem.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, LocalVolumeSource, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolume, VolumeNodeAffinity,
};
use provisioner_core::provisioner::ProvisionedVolume;
use provisioner_core::volume_path::VolumePath;

use crate::base_path::BasePath;
use crate::ownership::VolumeNode;
use crate::params::VolumeType;

/// Annotation: the base path of the volume's directory.
pub const ANNOTATION_BASE_PATH: &str = "hostpath.provisioner-rs.io/base-path";
/// Annotation: the volume's directory relative to its base path.
pub const ANNOTATION_DIRECTORY: &str = "hostpath.provisioner-rs.io/directory";
/// Annotation: the name of the volume's node.
pub const ANNOTATION_NODE: &str = "hostpath.provisioner-rs.io/node";
/// local-path's annotation with the selected node's name.
pub const LOCAL_PATH_SELECTED_NODE: &str = "local.path.provisioner/selected-node";
/// local-path's default provisioner name, the usual alias for adopting its volumes.
pub const LOCAL_PATH_PROVISIONER_NAME: &str = "rancher.io/local-path";

/// Why a PersistentVolume's directory cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Neither `hostPath` nor `local` is set.
    #[error("the volume has neither a hostPath nor a local source")]
    NoPath,
    /// Both are set.
    #[error("the volume has both a hostPath and a local source")]
    BothSources,
    /// A recorded annotation does not parse.
    #[error("annotation {key} has the unusable value {value:?}: {reason}")]
    BadAnnotation {
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The recorded base and directory do not add up to the volume's path.
    #[error("the recorded directory {recorded} is not the volume's path {source_path}")]
    Mismatch {
        /// Base and directory joined.
        recorded: String,
        /// The path in the volume source.
        source_path: String,
    },
    /// The source path cannot be a volume directory.
    #[error("the volume path {path:?} cannot be a volume directory: {reason}")]
    Unusable {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Where a volume's directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeLocation {
    /// The base path.
    pub base: BasePath,
    /// The directory relative to it.
    pub dir: VolumePath,
}

impl VolumeLocation {
    /// The directory's full path.
    pub fn path(&self) -> PathBuf {
        self.dir.to_path_under(self.base.as_path())
    }
}

/// Everything read back from an existing PersistentVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedVolume {
    /// Where its data lives.
    pub node: VolumeNode,
    /// Where its directory is.
    pub location: VolumeLocation,
}

/// The node-affinity term `key In [value]`.
pub fn node_affinity(key: &str, value: &str) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![value.to_owned()]),
                }]),
                match_fields: None,
            }],
        }),
    }
}

/// The node a node-local volume is bound to, and how its node affinity names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeBinding<'a> {
    /// The node's name, recorded on the volume.
    pub node: &'a str,
    /// The node label key of the affinity term.
    pub key: &'a str,
    /// The value of that label on the node.
    pub value: &'a str,
}

/// Builds what the controller turns into the PersistentVolume: the source, the node
/// affinity (`None` on a shared filesystem) and the record annotations.
///
/// ```
/// use backend_hostpath::base_path::BasePath;
/// use backend_hostpath::params::VolumeType;
/// use backend_hostpath::volume::{provisioned_volume, NodeBinding, VolumeLocation};
/// use provisioner_core::volume_path::VolumePath;
///
/// let location = VolumeLocation {
///     base: BasePath::parse("/opt/local-path-provisioner").unwrap(),
///     dir: VolumePath::parse("pvc-1_default_data").unwrap(),
/// };
/// let node = NodeBinding { node: "node-a", key: "kubernetes.io/hostname", value: "node-a" };
/// let volume = provisioned_volume(&location, VolumeType::HostPath, Some(node));
/// let host_path = volume.source.host_path.unwrap();
/// assert_eq!(host_path.path, "/opt/local-path-provisioner/pvc-1_default_data");
/// assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));
/// assert!(volume.node_affinity.is_some());
/// ```
pub fn provisioned_volume(
    location: &VolumeLocation,
    volume_type: VolumeType,
    node: Option<NodeBinding<'_>>,
) -> ProvisionedVolume {
    let path = location.path().to_string_lossy().into_owned();
    let mut volume = match volume_type {
        VolumeType::HostPath => ProvisionedVolume::host_path(HostPathVolumeSource {
            path,
            type_: Some("DirectoryOrCreate".to_owned()),
        }),
        VolumeType::Local => ProvisionedVolume::local(LocalVolumeSource {
            path,
            fs_type: None,
        }),
    }
    .with_annotation(ANNOTATION_BASE_PATH, location.base.to_string())
    .with_annotation(ANNOTATION_DIRECTORY, location.dir.to_string());
    match node {
        Some(binding) => {
            volume = volume
                .with_annotation(ANNOTATION_NODE, binding.node)
                .with_annotation(LOCAL_PATH_SELECTED_NODE, binding.node)
                .with_node_affinity(node_affinity(binding.key, binding.value));
        }
        None => volume = volume.with_annotation(LOCAL_PATH_SELECTED_NODE, ""),
    }
    volume
}

/// Refuses access modes a node-local volume cannot honour, like local-path: only
/// `ReadWriteOnce` and `ReadWriteOncePod`. (A shared filesystem allows every mode.)
pub fn check_node_local_access_modes(modes: &[String]) -> Result<(), String> {
    match modes
        .iter()
        .find(|m| !matches!(m.as_str(), "ReadWriteOnce" | "ReadWriteOncePod"))
    {
        Some(mode) => Err(format!(
            "a node-local volume supports only ReadWriteOnce and ReadWriteOncePod, not {mode}; \
             use a class backed by sharedFileSystemPath for shared access"
        )),
        None => Ok(()),
    }
}

fn annotations(pv: &PersistentVolume) -> Option<&BTreeMap<String, String>> {
    pv.metadata.annotations.as_ref()
}

fn annotation<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    annotations(pv).and_then(|a| a.get(key)).map(String::as_str)
}

/// Where a volume's data lives, from what is recorded on it.
pub fn volume_node(pv: &PersistentVolume) -> VolumeNode {
    if annotation(pv, ANNOTATION_DIRECTORY).is_some() {
        return match annotation(pv, ANNOTATION_NODE) {
            Some(node) if !node.is_empty() => VolumeNode::Named(node.to_owned()),
            _ => VolumeNode::Shared,
        };
    }
    let Some(affinity) = pv
        .spec
        .as_ref()
        .and_then(|spec| spec.node_affinity.as_ref())
    else {
        // local-path leaves shared-filesystem volumes without node affinity (and may still
        // record the scheduler's node in its annotation).
        return VolumeNode::Shared;
    };
    if let Some(node) = annotation(pv, LOCAL_PATH_SELECTED_NODE).filter(|n| !n.is_empty()) {
        return VolumeNode::Named(node.to_owned());
    }
    let single_in = affinity
        .required
        .iter()
        .flat_map(|selector| &selector.node_selector_terms)
        .flat_map(|term| term.match_expressions.iter().flatten())
        .find_map(|req| match (req.operator.as_str(), req.values.as_deref()) {
            ("In", Some([value])) => Some((req.key.clone(), value.clone())),
            _ => None,
        });
    match single_in {
        Some((key, value)) => VolumeNode::Affinity { key, value },
        // Never guess "shared" here: the directory would be removed on the wrong disk.
        None => VolumeNode::Unreadable("no node-affinity term `<key> In [<one value>]`".to_owned()),
    }
}

/// The volume's directory path from its source.
fn source_path(pv: &PersistentVolume) -> Result<&str, RecordError> {
    let spec = pv.spec.as_ref().ok_or(RecordError::NoPath)?;
    match (&spec.host_path, &spec.local) {
        (Some(host), None) => Ok(&host.path),
        (None, Some(local)) => Ok(&local.path),
        (Some(_), Some(_)) => Err(RecordError::BothSources),
        (None, None) => Err(RecordError::NoPath),
    }
}

/// Reads a volume's node and directory back from the volume. `known_bases` are the
/// configured base paths, used to split the path of an adopted volume.
pub fn read_recorded(
    pv: &PersistentVolume,
    known_bases: &[&BasePath],
) -> Result<RecordedVolume, RecordError> {
    let node = volume_node(pv);
    let path = source_path(pv)?;
    let location = match (
        annotation(pv, ANNOTATION_BASE_PATH),
        annotation(pv, ANNOTATION_DIRECTORY),
    ) {
        (Some(base), Some(dir)) => recorded_location(base, dir, path)?,
        _ => adopted_location(path, known_bases)?,
    };
    Ok(RecordedVolume { node, location })
}

fn recorded_location(
    base: &str,
    dir: &str,
    source_path: &str,
) -> Result<VolumeLocation, RecordError> {
    let bad = |key, value: &str, reason: String| RecordError::BadAnnotation {
        key,
        value: value.to_owned(),
        reason,
    };
    let location = VolumeLocation {
        base: BasePath::parse(base).map_err(|e| bad(ANNOTATION_BASE_PATH, base, e.to_string()))?,
        dir: VolumePath::parse(dir).map_err(|e| bad(ANNOTATION_DIRECTORY, dir, e.to_string()))?,
    };
    let joined = location.path();
    if joined.as_os_str() != source_path {
        return Err(RecordError::Mismatch {
            recorded: joined.to_string_lossy().into_owned(),
            source_path: source_path.to_owned(),
        });
    }
    Ok(location)
}

fn adopted_location(
    source_path: &str,
    known_bases: &[&BasePath],
) -> Result<VolumeLocation, RecordError> {
    let unusable = |reason: String| RecordError::Unusable {
        path: source_path.to_owned(),
        reason,
    };
    let full = BasePath::parse(source_path).map_err(|e| unusable(e.to_string()))?;
    let base = known_bases
        .iter()
        .filter(|base| base.contains(&full))
        .max_by_key(|base| base.as_path().as_os_str().len())
        .map(|base| (*base).clone());
    let base = match base {
        Some(base) => base,
        None => {
            let parent = full
                .as_path()
                .parent()
                .map(|p| p.to_string_lossy().into_owned());
            BasePath::parse(parent.as_deref().unwrap_or("/"))
                .map_err(|_| unusable("it is directly under /".to_owned()))?
        }
    };
    let relative = full
        .as_path()
        .strip_prefix(base.as_path())
        .map_err(|e| unusable(e.to_string()))?
        .to_string_lossy()
        .into_owned();
    let dir = VolumePath::parse(&relative).map_err(|e| unusable(e.to_string()))?;
    Ok(VolumeLocation { base, dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn location(base: &str, dir: &str) -> VolumeLocation {
        VolumeLocation {
            base: BasePath::parse(base).unwrap(),
            dir: VolumePath::parse(dir).unwrap(),
        }
    }

    /// A PV as the controller would save it from a [`ProvisionedVolume`].
    fn mk_pv_from(volume: ProvisionedVolume) -> PersistentVolume {
        let mut spec = volume.source;
        spec.node_affinity = volume.node_affinity;
        PersistentVolume {
            metadata: ObjectMeta {
                annotations: Some(volume.annotations),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    /// A PV as local-path v0.0.2x–v0.0.3x created it.
    fn mk_local_path_pv(
        path: &str,
        node: Option<&str>,
        annotation: Option<&str>,
        local: bool,
    ) -> PersistentVolume {
        let mut spec = if local {
            PersistentVolumeSpec {
                local: Some(LocalVolumeSource {
                    path: path.to_owned(),
                    fs_type: None,
                }),
                ..PersistentVolumeSpec::default()
            }
        } else {
            PersistentVolumeSpec {
                host_path: Some(HostPathVolumeSource {
                    path: path.to_owned(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..PersistentVolumeSpec::default()
            }
        };
        spec.node_affinity = node.map(|n| node_affinity("kubernetes.io/hostname", n));
        let mut annotations = BTreeMap::from([(
            "pv.kubernetes.io/provisioned-by".to_owned(),
            LOCAL_PATH_PROVISIONER_NAME.to_owned(),
        )]);
        if let Some(value) = annotation {
            annotations.insert(LOCAL_PATH_SELECTED_NODE.to_owned(), value.to_owned());
        }
        PersistentVolume {
            metadata: ObjectMeta {
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    #[test]
    fn node_local_volume_shape() {
        let loc = location("/data", "ns/claim");
        let volume = provisioned_volume(
            &loc,
            VolumeType::Local,
            Some(NodeBinding {
                node: "node-a",
                key: "rack",
                value: "r7",
            }),
        );
        assert_eq!(volume.source.local.as_ref().unwrap().path, "/data/ns/claim");
        assert!(volume.source.host_path.is_none());
        let term = &volume
            .node_affinity
            .as_ref()
            .unwrap()
            .required
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let requirement = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (requirement.key.as_str(), requirement.operator.as_str()),
            ("rack", "In")
        );
        assert_eq!(requirement.values.as_deref(), Some(&["r7".to_owned()][..]));
        assert_eq!(volume.annotations[ANNOTATION_NODE], "node-a");
        assert_eq!(volume.annotations[LOCAL_PATH_SELECTED_NODE], "node-a");
        assert_eq!(volume.annotations[ANNOTATION_BASE_PATH], "/data");
        assert_eq!(volume.annotations[ANNOTATION_DIRECTORY], "ns/claim");
    }

    #[test]
    fn shared_volume_shape() {
        let volume = provisioned_volume(
            &location("/mnt/shared", "pvc-1_ns_c"),
            VolumeType::HostPath,
            None,
        );
        assert!(volume.node_affinity.is_none());
        assert!(!volume.annotations.contains_key(ANNOTATION_NODE));
        assert_eq!(volume.annotations[LOCAL_PATH_SELECTED_NODE], "");
    }

    #[test]
    fn our_own_volumes_read_back_exactly() {
        let loc = location("/data", "ns/claim/x");
        let pv = mk_pv_from(provisioned_volume(
            &loc,
            VolumeType::HostPath,
            Some(NodeBinding {
                node: "n1",
                key: "kubernetes.io/hostname",
                value: "h1",
            }),
        ));
        let recorded = read_recorded(&pv, &[]).unwrap();
        assert_eq!(
            recorded,
            RecordedVolume {
                node: VolumeNode::Named("n1".into()),
                location: loc.clone()
            }
        );
        let shared = mk_pv_from(provisioned_volume(&loc, VolumeType::HostPath, None));
        assert_eq!(
            read_recorded(&shared, &[]).unwrap().node,
            VolumeNode::Shared
        );
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let mut pv = mk_pv_from(provisioned_volume(
            &location("/data", "a"),
            VolumeType::HostPath,
            None,
        ));
        let annotations = pv.metadata.annotations.as_mut().unwrap();
        annotations.insert(ANNOTATION_DIRECTORY.into(), "b".into());
        assert!(matches!(
            read_recorded(&pv, &[]),
            Err(RecordError::Mismatch { .. })
        ));
        let annotations = pv.metadata.annotations.as_mut().unwrap();
        annotations.insert(ANNOTATION_DIRECTORY.into(), "../a".into());
        assert!(matches!(
            read_recorded(&pv, &[]),
            Err(RecordError::BadAnnotation { .. })
        ));
    }

    #[test]
    fn local_path_volumes_are_adopted() {
        let opt = BasePath::parse("/opt/local-path-provisioner").unwrap();
        let ssd = BasePath::parse("/data/ssd").unwrap();
        let bases = [&opt, &ssd];

        let default_named = mk_local_path_pv(
            "/opt/local-path-provisioner/pvc-1_default_data",
            Some("node-a"),
            Some("node-a"),
            false,
        );
        let recorded = read_recorded(&default_named, &bases).unwrap();
        assert_eq!(recorded.node, VolumeNode::Named("node-a".into()));
        assert_eq!(
            recorded.location,
            location("/opt/local-path-provisioner", "pvc-1_default_data")
        );

        // Older local-path: no annotation, only the affinity.
        let patterned = mk_local_path_pv("/data/ssd/ns/claim", Some("host-a"), None, true);
        let recorded = read_recorded(&patterned, &bases).unwrap();
        assert_eq!(
            recorded.node,
            VolumeNode::Affinity {
                key: "kubernetes.io/hostname".into(),
                value: "host-a".into()
            }
        );
        assert_eq!(recorded.location, location("/data/ssd", "ns/claim"));

        // A base path no longer configured: split at the parent.
        let orphan = mk_local_path_pv("/old/disk/ns/claim", Some("a"), Some("a"), false);
        assert_eq!(
            read_recorded(&orphan, &bases).unwrap().location,
            location("/old/disk/ns", "claim")
        );

        // Shared filesystem: no affinity, whatever the annotation says.
        let shared = mk_local_path_pv("/mnt/nfs/pvc-2_ns_c", None, Some("node-b"), false);
        assert_eq!(
            read_recorded(&shared, &bases).unwrap().node,
            VolumeNode::Shared
        );
    }

    #[test]
    fn an_affinity_without_a_single_node_is_unreadable() {
        let mut pv = mk_local_path_pv("/data/x", Some("a"), None, false);
        let spec = pv.spec.as_mut().unwrap();
        let affinity = spec.node_affinity.as_mut().unwrap();
        let term = &mut affinity.required.as_mut().unwrap().node_selector_terms[0];
        term.match_expressions.as_mut().unwrap()[0].values = Some(vec!["a".into(), "b".into()]);
        let node = volume_node(&pv);
        assert!(matches!(node, VolumeNode::Unreadable(_)), "{node:?}");
    }

    #[test]
    fn unusable_paths_are_refused() {
        let top = mk_local_path_pv("/volume", Some("a"), None, false);
        assert!(matches!(
            read_recorded(&top, &[]),
            Err(RecordError::Unusable { .. })
        ));
        let relative = mk_local_path_pv("data/x", Some("a"), None, false);
        assert!(matches!(
            read_recorded(&relative, &[]),
            Err(RecordError::Unusable { .. })
        ));
        let none = PersistentVolume {
            spec: Some(PersistentVolumeSpec::default()),
            ..PersistentVolume::default()
        };
        assert_eq!(read_recorded(&none, &[]), Err(RecordError::NoPath));
    }

    #[test]
    fn node_local_access_modes() {
        let modes = |m: &[&str]| m.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_node_local_access_modes(&modes(&["ReadWriteOnce"])).is_ok());
        assert!(check_node_local_access_modes(&modes(&["ReadWriteOncePod"])).is_ok());
        assert!(
            check_node_local_access_modes(&modes(&["ReadWriteOnce", "ReadWriteMany"])).is_err()
        );
        assert!(check_node_local_access_modes(&modes(&["ReadOnlyMany"])).is_err());
    }
}
