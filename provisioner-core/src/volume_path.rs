//! Relative directory paths that provably stay below a volume root.
//!
//! Backends that create one directory per claim under a shared root (an NFS export, a
//! host directory) render that directory from user-controlled input: claim names,
//! labels, annotations. [`VolumePath`] is the only way such a path enters the I/O layer,
//! and it can only be built from input that cannot leave the root:
//!
//! - it is relative (no leading `/`) and never empty;
//! - no segment is empty, `.` or `..`, so it cannot collapse onto a parent or climb out;
//! - no segment contains NUL or another control character;
//! - segments and the whole path respect the usual `NAME_MAX`/`PATH_MAX` limits.
//!
//! Symbolic links are the other way out of a root; they are a property of the file
//! system, not of the path, so the I/O layers check them component by component.
//!
//! The module is pure: it does no I/O.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest accepted segment in bytes (Linux `NAME_MAX`).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Longest accepted path in bytes (Linux `PATH_MAX` minus the terminating NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// Why a string is not a valid [`VolumePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumePathError {
    /// The path is the empty string, which would name the root itself.
    #[error("the path is empty, which would name the root directory itself")]
    Empty,
    /// The path starts with `/`.
    #[error("the path {path:?} is absolute; it must be relative to the volume root")]
    Absolute {
        /// The offending path.
        path: String,
    },
    /// The path has an empty segment (`a//b`, a trailing `/`).
    #[error("the path {path:?} has an empty segment ('//' or a trailing '/')")]
    EmptySegment {
        /// The offending path.
        path: String,
    },
    /// A segment is `.` or `..`.
    #[error("the path {path:?} has a {segment:?} segment, which could leave the volume root")]
    DotSegment {
        /// The offending path.
        path: String,
        /// The segment, `.` or `..`.
        segment: String,
    },
    /// A segment contains NUL or another control character.
    #[error("the path {path:?} contains a control character")]
    ControlCharacter {
        /// The offending path.
        path: String,
    },
    /// A segment is longer than [`MAX_SEGMENT_BYTES`].
    #[error("the path segment {segment:?} is longer than {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong {
        /// The offending segment.
        segment: String,
    },
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("the path is {len} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong {
        /// Length of the rejected path in bytes.
        len: usize,
    },
}

/// A non-empty relative directory path whose segments cannot leave the root it is
/// joined onto. See the [module documentation](self) for the rules.
///
/// ```
/// use provisioner_core::volume_path::VolumePath;
///
/// let dir = VolumePath::parse("default/data-claim").unwrap();
/// assert_eq!(dir.leaf(), "data-claim");
/// assert_eq!(dir.parent().unwrap().to_string(), "default");
/// assert!(VolumePath::parse("default/../../etc").is_err());
/// assert!(VolumePath::parse("/etc").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumePath {
    // Invariant: non-empty, every segment valid, joined length <= MAX_PATH_BYTES.
    segments: Vec<String>,
}

impl VolumePath {
    /// Parses `a/b/c` strictly: no leading `/`, no empty, `.` or `..` segments.
    pub fn parse(path: &str) -> Result<Self, VolumePathError> {
        if path.is_empty() {
            return Err(VolumePathError::Empty);
        }
        if path.starts_with('/') {
            return Err(VolumePathError::Absolute {
                path: path.to_owned(),
            });
        }
        Self::from_segments(path.split('/')).map_err(|err| match err {
            // Report the whole path, not just the segment, where that is more useful.
            VolumePathError::EmptySegment { .. } => VolumePathError::EmptySegment {
                path: path.to_owned(),
            },
            VolumePathError::DotSegment { segment, .. } => VolumePathError::DotSegment {
                path: path.to_owned(),
                segment,
            },
            VolumePathError::ControlCharacter { .. } => VolumePathError::ControlCharacter {
                path: path.to_owned(),
            },
            other => other,
        })
    }

    /// Builds a path from individual segments, each validated on its own (a segment
    /// containing `/` is rejected as having an empty or extra segment, never split).
    pub fn from_segments<I, S>(segments: I) -> Result<Self, VolumePathError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let segments = segments
            .into_iter()
            .map(Into::into)
            .collect::<Vec<String>>();
        if segments.is_empty() {
            return Err(VolumePathError::Empty);
        }
        for segment in &segments {
            validate_segment(segment)?;
        }
        let path = Self { segments };
        let len = path.byte_len();
        if len > MAX_PATH_BYTES {
            return Err(VolumePathError::TooLong { len });
        }
        Ok(path)
    }

    /// The segments from the root down to the leaf.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator {
        self.segments.iter().map(String::as_str)
    }

    /// The last segment: the directory's own name.
    pub fn leaf(&self) -> &str {
        self.segments
            .last()
            .map(String::as_str)
            .expect("a VolumePath is never empty")
    }

    /// The containing directory, or `None` when the path is a single segment (its parent
    /// is the root).
    pub fn parent(&self) -> Option<Self> {
        (self.segments.len() > 1).then(|| Self {
            segments: self.segments[..self.segments.len() - 1].to_vec(),
        })
    }

    /// The path with its leaf replaced by `leaf`: a sibling in the same parent.
    pub fn with_leaf(&self, leaf: &str) -> Result<Self, VolumePathError> {
        let mut segments = self.segments.clone();
        *segments.last_mut().expect("a VolumePath is never empty") = leaf.to_owned();
        Self::from_segments(segments)
    }

    /// The path with `child` appended below it.
    pub fn join(&self, child: &Self) -> Result<Self, VolumePathError> {
        Self::from_segments(self.segments.iter().chain(&child.segments).cloned())
    }

    /// Whether `self` is `other` or one of its ancestors.
    pub fn contains(&self, other: &Self) -> bool {
        other.segments.starts_with(&self.segments)
    }

    /// Whether the two directories are the same, or one lies inside the other. Two
    /// volumes whose paths overlap share data.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// `root` joined with every segment.
    pub fn to_path_under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.segments);
        path
    }

    fn byte_len(&self) -> usize {
        self.segments.iter().map(String::len).sum::<usize>() + self.segments.len() - 1
    }
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("/"))
    }
}

impl std::str::FromStr for VolumePath {
    type Err = VolumePathError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        Self::parse(path)
    }
}

fn validate_segment(segment: &str) -> Result<(), VolumePathError> {
    if segment.is_empty() || segment.contains('/') {
        return Err(VolumePathError::EmptySegment {
            path: segment.to_owned(),
        });
    }
    if segment == "." || segment == ".." {
        return Err(VolumePathError::DotSegment {
            path: segment.to_owned(),
            segment: segment.to_owned(),
        });
    }
    if segment.chars().any(char::is_control) {
        return Err(VolumePathError::ControlCharacter {
            path: segment.to_owned(),
        });
    }
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(VolumePathError::SegmentTooLong {
            segment: segment.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    fn parse(path: &str) -> Result<VolumePath, VolumePathError> {
        VolumePath::parse(path)
    }

    #[test]
    fn accepts_plain_and_nested_paths() {
        for path in [
            "a",
            "default-claim-pvc-1",
            "ns/claim",
            "a/b/c",
            "with space",
            "ünïcode",
        ] {
            assert_eq!(parse(path).unwrap().to_string(), path);
        }
    }

    #[test]
    fn rejects_escapes_and_collapses() {
        assert_eq!(parse(""), Err(VolumePathError::Empty));
        assert!(matches!(
            parse("/etc"),
            Err(VolumePathError::Absolute { .. })
        ));
        assert!(matches!(
            parse("a//b"),
            Err(VolumePathError::EmptySegment { .. })
        ));
        assert!(matches!(
            parse("a/"),
            Err(VolumePathError::EmptySegment { .. })
        ));
        assert!(matches!(
            parse(".."),
            Err(VolumePathError::DotSegment { .. })
        ));
        assert!(matches!(
            parse("a/../b"),
            Err(VolumePathError::DotSegment { .. })
        ));
        assert!(matches!(
            parse("./a"),
            Err(VolumePathError::DotSegment { .. })
        ));
        assert!(matches!(
            parse("a\0b"),
            Err(VolumePathError::ControlCharacter { .. })
        ));
        assert!(matches!(
            parse("a\nb"),
            Err(VolumePathError::ControlCharacter { .. })
        ));
        assert!(matches!(
            parse(&"x".repeat(256)),
            Err(VolumePathError::SegmentTooLong { .. })
        ));
        let long = vec!["x".repeat(200); 21].join("/");
        assert!(matches!(parse(&long), Err(VolumePathError::TooLong { .. })));
    }

    #[test]
    fn segments_containing_slashes_are_not_split() {
        assert!(VolumePath::from_segments(["a/b"]).is_err());
        assert!(VolumePath::from_segments(Vec::<String>::new()).is_err());
    }

    #[test]
    fn parent_leaf_and_siblings() {
        let dir = parse("ns/claim").unwrap();
        assert_eq!(dir.leaf(), "claim");
        assert_eq!(dir.parent(), Some(parse("ns").unwrap()));
        assert_eq!(parse("ns").unwrap().parent(), None);
        assert_eq!(
            dir.with_leaf("archived-claim").unwrap(),
            parse("ns/archived-claim").unwrap()
        );
        assert!(dir.with_leaf("..").is_err());
        assert_eq!(
            parse("a").unwrap().join(&parse("b/c").unwrap()).unwrap(),
            parse("a/b/c").unwrap()
        );
    }

    #[test]
    fn overlap_is_ancestry_not_string_prefix() {
        let ns = parse("ns").unwrap();
        let claim = parse("ns/claim").unwrap();
        let other = parse("ns-other").unwrap();
        assert!(ns.overlaps(&claim) && claim.overlaps(&ns) && claim.overlaps(&claim));
        assert!(!ns.overlaps(&other));
        assert!(!claim.overlaps(&parse("ns/claim2").unwrap()));
    }

    proptest! {
        /// Whatever string is offered, an accepted path joined onto a root stays strictly
        /// below that root, lexically, with no component that could climb out.
        #[test]
        fn accepted_paths_stay_strictly_below_the_root(input in ".{0,64}") {
            if let Ok(path) = VolumePath::parse(&input) {
                let root = Path::new("/export/root");
                let joined = path.to_path_under(root);
                prop_assert!(joined.starts_with(root));
                prop_assert!(joined != root);
                prop_assert!(joined
                    .strip_prefix(root)
                    .unwrap()
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))));
                prop_assert_eq!(VolumePath::parse(&path.to_string()).unwrap(), path);
            }
        }

        /// Paths built from arbitrary segments either fail or round-trip exactly.
        #[test]
        fn segment_construction_round_trips(segments in proptest::collection::vec("[^/]{0,8}", 0..5)) {
            if let Ok(path) = VolumePath::from_segments(segments.clone()) {
                prop_assert_eq!(path.segments().collect::<Vec<_>>(), segments.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }
}
