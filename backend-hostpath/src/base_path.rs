//! Base paths: the operator-configured directories (node disks, shared filesystems) that
//! volume directories are created under.
//!
//! Pure: no I/O. The relative directory of a volume below its base is a
//! [`provisioner_core::volume_path::VolumePath`], which cannot climb out lexically; escapes
//! through symlinks are the filesystem layer's job ([`crate::fs`]), which walks the
//! segments one by one without following links.

use std::fmt;
use std::path::{Path, PathBuf};

use provisioner_core::volume_path::{MAX_PATH_BYTES, MAX_SEGMENT_BYTES};

/// Why a base path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasePathError {
    /// A base path must be absolute.
    #[error("the base path {path:?} is not absolute (it must start with /)")]
    NotAbsolute {
        /// The refused path.
        path: String,
    },
    /// A base path must not be the root directory.
    #[error("the base path {path:?} is the root directory, which cannot be used")]
    Root {
        /// The refused path.
        path: String,
    },
    /// Contains NUL or another control character.
    #[error("the base path {path:?} contains a control character")]
    ControlCharacter {
        /// The refused path.
        path: String,
    },
    /// Too long for the kernel.
    #[error(
        "the base path {path:?} is longer than {MAX_PATH_BYTES} bytes or has a segment longer than {MAX_SEGMENT_BYTES}"
    )]
    TooLong {
        /// The refused path.
        path: String,
    },
}

/// An absolute, lexically clean directory other than `/`: where volume directories go.
///
/// Cleaning follows Go's `filepath.Abs`/`Clean`, as local-path does: `//` and `.` are
/// dropped and `..` removes the previous segment, so `/opt/./a/../b/` is `/opt/b`.
/// Symlinks inside a base path are the operator's choice and are followed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BasePath(PathBuf);

impl BasePath {
    /// Validates and cleans an operator-supplied base path.
    ///
    /// ```
    /// use backend_hostpath::base_path::BasePath;
    ///
    /// let base = BasePath::parse("/opt/./disks//a/../b/").unwrap();
    /// assert_eq!(base.as_path().to_str(), Some("/opt/disks/b"));
    /// assert!(BasePath::parse("opt/disks").is_err());
    /// assert!(BasePath::parse("/a/..").is_err());
    /// ```
    pub fn parse(path: &str) -> Result<Self, BasePathError> {
        if !path.starts_with('/') {
            return Err(BasePathError::NotAbsolute {
                path: path.to_owned(),
            });
        }
        if path.chars().any(char::is_control) {
            return Err(BasePathError::ControlCharacter {
                path: path.to_owned(),
            });
        }
        let mut segments: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        if segments.is_empty() {
            return Err(BasePathError::Root {
                path: path.to_owned(),
            });
        }
        let cleaned = format!("/{}", segments.join("/"));
        if cleaned.len() > MAX_PATH_BYTES || segments.iter().any(|s| s.len() > MAX_SEGMENT_BYTES) {
            return Err(BasePathError::TooLong {
                path: path.to_owned(),
            });
        }
        Ok(Self(PathBuf::from(cleaned)))
    }

    /// The cleaned absolute path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// Whether `other` lies strictly below this base (component-wise).
    pub fn contains(&self, other: &BasePath) -> bool {
        other.0 != self.0 && other.0.starts_with(&self.0)
    }
}

impl fmt::Display for BasePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(path: &str) -> Result<String, BasePathError> {
        BasePath::parse(path).map(|b| b.to_string())
    }

    #[test]
    fn base_paths_are_cleaned_like_go() {
        assert_eq!(
            clean("/opt/local-path-provisioner").unwrap(),
            "/opt/local-path-provisioner"
        );
        assert_eq!(
            clean("/opt/local-path-provisioner/").unwrap(),
            "/opt/local-path-provisioner"
        );
        assert_eq!(clean("//data//x/.").unwrap(), "/data/x");
        assert_eq!(clean("/../data").unwrap(), "/data");
        assert_eq!(clean("/a/b/../c").unwrap(), "/a/c");
    }

    #[test]
    fn unusable_base_paths_are_refused() {
        assert!(matches!(clean("/"), Err(BasePathError::Root { .. })));
        assert!(matches!(clean("/data/.."), Err(BasePathError::Root { .. })));
        assert!(matches!(clean(""), Err(BasePathError::NotAbsolute { .. })));
        assert!(matches!(
            clean("data"),
            Err(BasePathError::NotAbsolute { .. })
        ));
        assert!(matches!(
            clean("/da\0ta"),
            Err(BasePathError::ControlCharacter { .. })
        ));
        let long = format!("/{}", "x".repeat(MAX_SEGMENT_BYTES + 1));
        assert!(matches!(clean(&long), Err(BasePathError::TooLong { .. })));
    }

    #[test]
    fn containment_is_component_wise() {
        let data = BasePath::parse("/data").unwrap();
        assert!(data.contains(&BasePath::parse("/data/fast").unwrap()));
        assert!(!data.contains(&BasePath::parse("/data").unwrap()));
        assert!(!data.contains(&BasePath::parse("/database").unwrap()));
    }
}
