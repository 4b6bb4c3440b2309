//! Access to an NFS export, behind one interface with two implementations:
//!
//! - [`MountedExport`]: file operations under a directory where the export is mounted
//!   (`/persistentvolumes`, nfs-subdir's contract);
//! - [`DirectExport`]: a userspace NFSv3 client talking to the server, so the provisioner
//!   needs no mount at all.
//!
//! Both have the same semantics, which the provisioner relies on:
//!
//! - paths are [`VolumePath`]s, relative to the export root;
//! - no symbolic link is ever followed: a path component that is a symlink fails with
//!   [`ExportError::Symlink`], so a link planted inside the export cannot lead outside it;
//! - every call completes within its timeout: a hung or unreachable server yields
//!   [`ExportError::TimedOut`] or [`ExportError::Unreachable`], never a stalled caller;
//! - a permission error says when root squashing is the likely cause
//!   ([`ExportError::PermissionDenied`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use provisioner_core::volume_path::VolumePath;

mod direct;
mod mounted;

pub use direct::{DirectConfig, DirectExport};
pub use mounted::MountedExport;

/// The default time limit of one export operation.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Permission bits and owner for a new volume directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryAttributes {
    /// Exact permission bits (`0o7777` at most), applied after creation so no umask
    /// interferes.
    pub mode: u32,
    /// New owner, if any.
    pub uid: Option<u32>,
    /// New group, if any.
    pub gid: Option<u32>,
}

/// Mode, owner and group of an existing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryStatus {
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Capacity of the file system behind the export, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Total size.
    pub total_bytes: u64,
    /// Free space.
    pub free_bytes: u64,
    /// Free space available to the provisioner's user.
    pub available_bytes: u64,
}

/// What [`Export::create_dir_all`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// The directory was created.
    Created,
    /// The directory existed already (its mode and owner were still applied).
    AlreadyExisted,
}

/// What [`Export::remove_all`] and [`Export::remove_if_empty`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The directory was removed.
    Removed,
    /// There was nothing to remove.
    AlreadyGone,
    /// The directory was not empty and was left alone ([`Export::remove_if_empty`] only).
    NotEmpty,
}

/// The operation an [`ExportError`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Connecting to the server (direct access) or opening the export root.
    Connect,
    /// Looking up a path.
    Lookup,
    /// Creating a directory and applying its attributes.
    CreateDirectory,
    /// Renaming a directory.
    Rename,
    /// Removing a directory.
    Remove,
    /// Reading the file system's capacity.
    FsStat,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Lookup => "lookup",
            Self::CreateDirectory => "create directory",
            Self::Rename => "rename",
            Self::Remove => "remove",
            Self::FsStat => "fsstat",
        })
    }
}

/// Where an [`ExportError`] happened: the export, the operation and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorContext {
    /// The export, as [`Export::location`] describes it.
    pub export: String,
    /// The operation.
    pub operation: Operation,
    /// The path relative to the export root (empty for the root itself).
    pub path: String,
}

impl ErrorContext {
    fn new(export: &str, operation: Operation, path: impl fmt::Display) -> Self {
        Self {
            export: export.to_owned(),
            operation,
            path: path.to_string(),
        }
    }
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} on {}", self.operation, self.export)
        } else {
            write!(f, "{} {:?} on {}", self.operation, self.path, self.export)
        }
    }
}

/// Why an export operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The operation did not finish in time.
    #[error("{context}: timed out after {timeout:?}; the NFS server may be hung or unreachable")]
    TimedOut {
        /// Where.
        context: ErrorContext,
        /// The limit that expired.
        timeout: Duration,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{context}: NFS server unreachable: {reason}")]
    Unreachable {
        /// Where.
        context: ErrorContext,
        /// What the network layer reported.
        reason: String,
    },
    /// The server refused the client (mount denied, authentication too weak, …).
    #[error("{context}: the NFS server refused access: {reason}")]
    Refused {
        /// Where.
        context: ErrorContext,
        /// What the server reported, and what usually causes it.
        reason: String,
    },
    /// Permission denied.
    #[error("{context}: permission denied{}", permission_hint(*root_squash_likely))]
    PermissionDenied {
        /// Where.
        context: ErrorContext,
        /// Whether the caller acts as root, so root squashing is the likely cause.
        root_squash_likely: bool,
    },
    /// A path component is a symbolic link.
    #[error(
        "{context}: {component:?} is a symbolic link; refusing to follow it (it could lead \
         outside the export)"
    )]
    Symlink {
        /// Where.
        context: ErrorContext,
        /// The path of the link, relative to the export root.
        component: String,
    },
    /// A path component is not a directory.
    #[error("{context}: {component:?} is not a directory")]
    NotADirectory {
        /// Where.
        context: ErrorContext,
        /// The path of the component, relative to the export root.
        component: String,
    },
    /// The path does not exist.
    #[error("{context}: no such directory")]
    NotFound {
        /// Where.
        context: ErrorContext,
    },
    /// The target exists already.
    #[error("{context}: the target already exists")]
    AlreadyExists {
        /// Where.
        context: ErrorContext,
    },
    /// No space left, or a quota exceeded.
    #[error("{context}: no space left on the export (or quota exceeded)")]
    NoSpace {
        /// Where.
        context: ErrorContext,
    },
    /// The export is read-only.
    #[error("{context}: the export is read-only")]
    ReadOnly {
        /// Where.
        context: ErrorContext,
    },
    /// Another NFS error status.
    #[error("{context}: the NFS server answered {status}")]
    Nfs {
        /// Where.
        context: ErrorContext,
        /// The NFSv3 status name (`NFS3ERR_IO`, …).
        status: String,
    },
    /// Another local I/O error (mounted access).
    #[error("{context}: {source}")]
    Io {
        /// Where.
        context: ErrorContext,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn permission_hint(root_squash_likely: bool) -> String {
    if root_squash_likely {
        "; the provisioner acts as root, so the NFS server is most likely squashing root \
         (root_squash, the default of kernel NFS exports): export with no_root_squash, or \
         make the export root writable by the squashed user"
            .to_owned()
    } else {
        format!(
            "; the provisioner acts as uid {}, which lacks permission here",
            rustix::process::geteuid().as_raw()
        )
    }
}

impl ExportError {
    /// Where the error happened.
    pub fn context(&self) -> &ErrorContext {
        match self {
            Self::TimedOut { context, .. }
            | Self::Unreachable { context, .. }
            | Self::Refused { context, .. }
            | Self::PermissionDenied { context, .. }
            | Self::Symlink { context, .. }
            | Self::NotADirectory { context, .. }
            | Self::NotFound { context }
            | Self::AlreadyExists { context }
            | Self::NoSpace { context }
            | Self::ReadOnly { context }
            | Self::Nfs { context, .. }
            | Self::Io { context, .. } => context,
        }
    }

    /// Whether the export itself is unavailable (hung or unreachable), as opposed to one
    /// path or request being wrong. Readiness checks report these.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::TimedOut { .. } | Self::Unreachable { .. })
    }
}

/// Operations on one NFS export. See the [module documentation](self) for the semantics
/// both implementations share.
#[async_trait]
pub trait Export: Send + Sync + 'static {
    /// A human-readable name for messages: `server:/share (direct)` or
    /// `/persistentvolumes (mounted)`.
    fn location(&self) -> &str;

    /// Creates `directory` and any missing parents (parents get mode `0755`), then sets the
    /// leaf's owner and exact mode (also when it existed already, so a retried call
    /// finishes what a failed one started).
    async fn create_dir_all(
        &self,
        directory: &VolumePath,
        attributes: DirectoryAttributes,
    ) -> Result<Creation, ExportError>;

    /// Mode and owner of `directory`, or `None` if it (or a parent) does not exist.
    async fn status(&self, directory: &VolumePath) -> Result<Option<DirectoryStatus>, ExportError>;

    /// Renames directory `from` to `to`; fails with [`ExportError::AlreadyExists`] if `to`
    /// exists, never replacing it.
    async fn rename_no_replace(
        &self,
        from: &VolumePath,
        to: &VolumePath,
    ) -> Result<(), ExportError>;

    /// Removes `directory` and everything below it, without following symbolic links
    /// (links inside are removed, not their targets).
    async fn remove_all(&self, directory: &VolumePath) -> Result<Removal, ExportError>;

    /// Removes `directory` only if it is empty.
    async fn remove_if_empty(&self, directory: &VolumePath) -> Result<Removal, ExportError>;

    /// Capacity of the export's file system. Also a cheap liveness probe.
    async fn fs_stats(&self) -> Result<FsStats, ExportError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ErrorContext {
        ErrorContext::new(
            "127.0.0.1:/shared (direct)",
            Operation::CreateDirectory,
            "ns/claim",
        )
    }

    #[test]
    fn root_squash_is_named_when_likely() {
        let error = ExportError::PermissionDenied {
            context: context(),
            root_squash_likely: true,
        };
        let message = error.to_string();
        assert!(message.contains("create directory \"ns/claim\" on 127.0.0.1:/shared (direct)"));
        assert!(message.contains("root_squash"), "{message}");
        let error = ExportError::PermissionDenied {
            context: context(),
            root_squash_likely: false,
        };
        assert!(!error.to_string().contains("root_squash"));
    }

    #[test]
    fn unavailability_is_distinguished_from_path_errors() {
        let timed_out = ExportError::TimedOut {
            context: context(),
            timeout: Duration::from_secs(1),
        };
        assert!(timed_out.is_unavailable());
        assert!(timed_out.to_string().contains("timed out"));
        assert!(!ExportError::NotFound { context: context() }.is_unavailable());
    }

    #[test]
    fn context_of_the_root_has_no_path() {
        let context = ErrorContext::new("/persistentvolumes (mounted)", Operation::FsStat, "");
        assert_eq!(
            context.to_string(),
            "fsstat on /persistentvolumes (mounted)"
        );
    }
}
