//! Which base path a new volume goes to.
//!
//! Pure: free space is measured by the filesystem layer ([`crate::fs`]) and handed in.
//!
//! Upstream picks one of a node's paths at random. Here every candidate is measured and
//! the volume goes to the path with the most available space among those that can hold
//! the request; ties go to the path listed first in the config. When none can hold it (or
//! the node has no path at all), the answer is a [`PlacementError`], which the provisioner
//! turns into *reschedule* for node-local classes, so the scheduler tries another node.
//!
//! "Can hold" compares the request with the space available to unprivileged users now
//! (`f_bavail`). Capacity is not reserved or enforced: the directory is empty when the
//! volume is created.

use std::fmt;

use crate::base_path::BasePath;
use crate::config::ClassStorage;

/// The measured space of one candidate path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Space {
    /// Bytes available to unprivileged users.
    Available(u64),
    /// The measurement failed (error or timeout); the path is skipped.
    Unknown(String),
}

/// One candidate and its measured space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The base path.
    pub path: &'a BasePath,
    /// Its measured space.
    pub space: Space,
}

/// Why a volume cannot be placed on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The node is not in `nodePathMap` and there is no default entry.
    #[error(
        "node {node} is not listed in nodePathMap and there is no DEFAULT_PATH_FOR_NON_LISTED_NODES entry"
    )]
    NodeNotConfigured {
        /// The node.
        node: String,
    },
    /// The node's entry has `paths: []`.
    #[error("nodePathMap gives node {node} no paths")]
    NoPathsOnNode {
        /// The node.
        node: String,
    },
    /// The class's `nodePath` is not one of the node's paths.
    #[error("the StorageClass asks for nodePath {path}, which is not configured for node {node}")]
    NodePathNotOnNode {
        /// The node.
        node: String,
        /// The requested path.
        path: String,
    },
    /// No path has enough space.
    #[error("{0}")]
    NoRoom(NoRoom),
}

/// Every candidate and why it was not good enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// The node, or `None` for a shared filesystem.
    pub node: Option<String>,
    /// Requested bytes.
    pub request_bytes: u64,
    /// Each path with its measured space.
    pub paths: Vec<(String, Space)>,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "no path on node {node} can hold ")?,
            None => write!(f, "the shared filesystem cannot hold ")?,
        }
        write!(f, "{}:", HumanBytes(self.request_bytes))?;
        for (i, (path, space)) in self.paths.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            match space {
                Space::Available(bytes) => {
                    write!(f, "{sep}{path} has {} free", HumanBytes(*bytes))?;
                }
                Space::Unknown(why) => write!(f, "{sep}{path} could not be measured ({why})")?,
            }
        }
        Ok(())
    }
}

/// Bytes in binary units with the exact count, e.g. `2.0 GiB (2147483648 bytes)`.
#[derive(Debug, Clone, Copy)]
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} bytes", self.0);
        }
        let mut value = self.0 as f64;
        let mut unit = "";
        for u in UNITS {
            if value < 1024.0 {
                break;
            }
            value /= 1024.0;
            unit = u;
        }
        write!(f, "{value:.1} {unit} ({} bytes)", self.0)
    }
}

/// The paths a volume of this class may go to on `node` (`None` for a shared filesystem's
/// claims that have no selected node), in config order.
pub fn candidate_paths<'a>(
    storage: &'a ClassStorage,
    node: Option<&str>,
    node_path: Option<&BasePath>,
) -> Result<Vec<&'a BasePath>, PlacementError> {
    let (map, node) = match (storage, node) {
        (ClassStorage::SharedFileSystem(path), _) => return Ok(vec![path]),
        (ClassStorage::NodeLocal(map), Some(node)) => (map, node),
        // The ownership rules never place a node-local volume without a node; answer as
        // if the node were unknown rather than panic.
        (ClassStorage::NodeLocal(_), None) => {
            return Err(PlacementError::NodeNotConfigured {
                node: String::new(),
            });
        }
    };
    let paths = map
        .paths_for(node)
        .ok_or_else(|| PlacementError::NodeNotConfigured {
            node: node.to_owned(),
        })?;
    if paths.is_empty() {
        return Err(PlacementError::NoPathsOnNode {
            node: node.to_owned(),
        });
    }
    match node_path {
        None => Ok(paths.iter().collect()),
        Some(wanted) => paths
            .iter()
            .find(|p| *p == wanted)
            .map(|p| vec![p])
            .ok_or_else(|| PlacementError::NodePathNotOnNode {
                node: node.to_owned(),
                path: wanted.to_string(),
            }),
    }
}

/// Picks the candidate with the most available space that can hold `request_bytes`; ties
/// go to the earliest candidate.
///
/// ```
/// use backend_hostpath::base_path::BasePath;
/// use backend_hostpath::placement::{choose_path, Candidate, Space};
///
/// let (a, b) = (BasePath::parse("/a").unwrap(), BasePath::parse("/b").unwrap());
/// let candidates = [
///     Candidate { path: &a, space: Space::Available(10 << 30) },
///     Candidate { path: &b, space: Space::Available(50 << 30) },
/// ];
/// assert_eq!(choose_path(&candidates, 20 << 30, Some("node-a")).unwrap(), &b);
/// assert!(choose_path(&candidates, 60 << 30, Some("node-a")).is_err());
/// ```
pub fn choose_path<'a>(
    candidates: &[Candidate<'a>],
    request_bytes: u64,
    node: Option<&str>,
) -> Result<&'a BasePath, PlacementError> {
    let mut best: Option<(&'a BasePath, u64)> = None;
    for candidate in candidates {
        if let Space::Available(bytes) = candidate.space
            && bytes >= request_bytes
            && best.is_none_or(|(_, most)| bytes > most)
        {
            best = Some((candidate.path, bytes));
        }
    }
    best.map(|(path, _)| path).ok_or_else(|| {
        PlacementError::NoRoom(NoRoom {
            node: node.map(str::to_owned),
            request_bytes,
            paths: candidates
                .iter()
                .map(|c| (c.path.to_string(), c.space.clone()))
                .collect(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProvisionerConfig;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn bases(paths: &[&str]) -> Vec<BasePath> {
        paths.iter().map(|p| BasePath::parse(p).unwrap()).collect()
    }

    fn mk_candidates<'a>(paths: &'a [BasePath], spaces: &[Space]) -> Vec<Candidate<'a>> {
        paths
            .iter()
            .zip(spaces)
            .map(|(path, space)| Candidate {
                path,
                space: space.clone(),
            })
            .collect()
    }

    #[test]
    fn most_free_space_wins() {
        let paths = bases(&["/a", "/b", "/c"]);
        let spaces = [
            Space::Available(5 * GIB),
            Space::Available(80 * GIB),
            Space::Available(20 * GIB),
        ];
        let chosen = choose_path(&mk_candidates(&paths, &spaces), GIB, Some("n")).unwrap();
        assert_eq!(chosen.to_string(), "/b");
    }

    #[test]
    fn ties_go_to_the_first_listed_path() {
        let paths = bases(&["/z", "/a"]);
        let spaces = [Space::Available(GIB), Space::Available(GIB)];
        assert_eq!(
            choose_path(&mk_candidates(&paths, &spaces), GIB, None)
                .unwrap()
                .to_string(),
            "/z"
        );
    }

    #[test]
    fn unmeasurable_paths_are_skipped() {
        let paths = bases(&["/dead", "/ok"]);
        let spaces = [
            Space::Unknown("statvfs timed out after 5s".into()),
            Space::Available(GIB),
        ];
        assert_eq!(
            choose_path(&mk_candidates(&paths, &spaces), GIB, None)
                .unwrap()
                .to_string(),
            "/ok"
        );
    }

    #[test]
    fn no_room_says_why_for_every_path() {
        let paths = bases(&["/a", "/dead"]);
        let spaces = [
            Space::Available(2 * GIB),
            Space::Unknown("statvfs timed out after 5s".into()),
        ];
        let err =
            choose_path(&mk_candidates(&paths, &spaces), 10 * GIB, Some("node-1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no path on node node-1 can hold 10.0 GiB (10737418240 bytes): /a has 2.0 GiB \
             (2147483648 bytes) free; /dead could not be measured (statvfs timed out after 5s)"
        );
    }

    #[test]
    fn candidates_follow_the_config() {
        let config = ProvisionerConfig::parse(
            r#"{"nodePathMap":[
                {"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]},
                {"node":"big","paths":["/d1","/d2"]},
                {"node":"none","paths":[]}]}"#,
        )
        .unwrap();
        let storage = config.storage_for_class("c").unwrap();
        let names = |r: Result<Vec<&BasePath>, PlacementError>| {
            r.map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(
            names(candidate_paths(storage, Some("big"), None)).unwrap(),
            ["/d1", "/d2"]
        );
        assert_eq!(
            names(candidate_paths(storage, Some("other"), None)).unwrap(),
            ["/opt/lpp"]
        );
        let d2 = BasePath::parse("/d2/").unwrap();
        assert_eq!(
            names(candidate_paths(storage, Some("big"), Some(&d2))).unwrap(),
            ["/d2"]
        );
        assert!(matches!(
            candidate_paths(storage, Some("other"), Some(&d2)),
            Err(PlacementError::NodePathNotOnNode { .. })
        ));
        assert!(matches!(
            candidate_paths(storage, Some("none"), None),
            Err(PlacementError::NoPathsOnNode { .. })
        ));

        let listed_only =
            ProvisionerConfig::parse(r#"{"nodePathMap":[{"node":"a","paths":["/x"]}]}"#).unwrap();
        assert!(matches!(
            candidate_paths(listed_only.storage_for_class("c").unwrap(), Some("b"), None),
            Err(PlacementError::NodeNotConfigured { .. })
        ));

        let shared = ProvisionerConfig::parse(r#"{"sharedFileSystemPath":"/mnt/s"}"#).unwrap();
        let storage = shared.storage_for_class("c").unwrap();
        assert_eq!(
            names(candidate_paths(storage, None, None)).unwrap(),
            ["/mnt/s"]
        );
    }

    #[test]
    fn human_bytes() {
        assert_eq!(HumanBytes(0).to_string(), "0 bytes");
        assert_eq!(HumanBytes(1023).to_string(), "1023 bytes");
        assert_eq!(HumanBytes(1536).to_string(), "1.5 KiB (1536 bytes)");
        assert_eq!(
            HumanBytes(u64::MAX).to_string(),
            "16.0 EiB (18446744073709551615 bytes)"
        );
    }

    fn space() -> impl Strategy<Value = Space> {
        prop_oneof![
            4 => (0u64..100).prop_map(|g| Space::Available(g * GIB)),
            1 => Just(Space::Unknown("timeout".into())),
        ]
    }

    proptest! {
        /// The chosen path fits the request, no fitting path has more space, and the
        /// earliest path wins ties; with no fitting path the answer is NoRoom.
        #[test]
        fn choice_is_the_first_largest_fitting_path(
            spaces in proptest::collection::vec(space(), 1..8),
            request in (0u64..100).prop_map(|g| g * GIB),
        ) {
            let paths: Vec<BasePath> = (0..spaces.len()).map(|i| BasePath::parse(&format!("/p{i}")).unwrap()).collect();
            let candidates = mk_candidates(&paths, &spaces);
            let fitting: Vec<(usize, u64)> = spaces.iter().enumerate().filter_map(|(i, s)| match s {
                Space::Available(b) if *b >= request => Some((i, *b)),
                _ => None,
            }).collect();
            match choose_path(&candidates, request, Some("n")) {
                Ok(chosen) => {
                    let index = paths.iter().position(|p| p == chosen).unwrap();
                    let most = fitting.iter().map(|(_, b)| *b).max().unwrap();
                    let first_with_most = fitting.iter().find(|(_, b)| *b == most).unwrap().0;
                    prop_assert_eq!(index, first_with_most);
                }
                Err(PlacementError::NoRoom(no_room)) => {
                    prop_assert!(fitting.is_empty());
                    prop_assert_eq!(no_room.paths.len(), spaces.len());
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }
    }
}
