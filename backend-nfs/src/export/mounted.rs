//! [`MountedExport`]: the export as a local directory (a mount point, or for tests the
//! directory an NFS server exports).
//!
//! Every path is walked from an open descriptor of the export root, one component at a
//! time, with `openat(…, O_NOFOLLOW | O_DIRECTORY)`: a component that is a symbolic link
//! fails instead of being followed, whatever a process inside a volume does to its
//! directory tree meanwhile. Recursive removal works the same way and unlinks links
//! instead of following them.
//!
//! System calls on a hung NFS mount block in the kernel and cannot be cancelled. They run
//! on Tokio's blocking pool, under a timeout; the caller gets [`ExportError::TimedOut`]
//! while the stuck thread stays behind. A semaphore bounds how many such threads one export
//! can hold, so a hung export cannot exhaust the pool, and later calls time out waiting for
//! a slot instead of piling up.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use provisioner_core::volume_path::VolumePath;
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Uid};
use rustix::io::Errno;
use tokio::sync::Semaphore;

use super::{
    Creation, DirectoryAttributes, DirectoryStatus, ErrorContext, Export, ExportError, FsStats,
    Operation, Removal,
};

/// How many blocking calls one export may have in flight (including stuck ones).
const MAX_BLOCKING_CALLS: usize = 16;

/// Mode of parent directories the provisioner creates (nested patterns).
const PARENT_MODE: u32 = 0o755;

/// An export mounted (or otherwise present) as a local directory.
///
/// ```no_run
/// use std::time::Duration;
/// use backend_nfs::export::{DirectoryAttributes, Export, MountedExport};
/// use provisioner_core::volume_path::VolumePath;
///
/// # async fn demo() -> Result<(), backend_nfs::export::ExportError> {
/// let export = MountedExport::new("/persistentvolumes", Duration::from_secs(30));
/// let directory = VolumePath::parse("default-claim-pvc-1").unwrap();
/// let attributes = DirectoryAttributes { mode: 0o2770, uid: Some(1000), gid: Some(2000) };
/// export.create_dir_all(&directory, attributes).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MountedExport {
    root: Arc<PathBuf>,
    location: Arc<str>,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

impl MountedExport {
    /// Accesses the export mounted at `root`; each operation may take at most `timeout`.
    pub fn new(root: impl Into<PathBuf>, timeout: Duration) -> Self {
        let root = root.into();
        let location = format!("{} (mounted)", root.display());
        Self {
            root: Arc::new(root),
            location: location.into(),
            timeout,
            slots: Arc::new(Semaphore::new(MAX_BLOCKING_CALLS)),
        }
    }

    /// The directory the export is mounted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `call` on the blocking pool with the export root open, under the timeout.
    async fn run<T, F>(&self, operation: Operation, path: &str, call: F) -> Result<T, ExportError>
    where
        T: Send + 'static,
        F: FnOnce(&Walker) -> Result<T, ExportError> + Send + 'static,
    {
        let context = ErrorContext::new(&self.location, operation, path);
        let cancelled = Arc::new(AtomicBool::new(false));
        let root = Arc::clone(&self.root);
        let slots = Arc::clone(&self.slots);
        let walker_context = context.clone();
        let walker_cancelled = Arc::clone(&cancelled);
        let work = async move {
            let slot = slots
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let joined = tokio::task::spawn_blocking(move || {
                let _slot = slot; // held until the system calls return, stuck or not
                let walker = Walker::open(&root, walker_context, walker_cancelled)?;
                call(&walker)
            })
            .await;
            match joined {
                Ok(result) => result,
                Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_elapsed) => {
                // Loops (recursive removal) stop at their next step; a call stuck in the
                // kernel finishes whenever the server answers.
                cancelled.store(true, Ordering::Relaxed);
                Err(ExportError::TimedOut {
                    context,
                    timeout: self.timeout,
                })
            }
        }
    }
}

#[async_trait]
impl Export for MountedExport {
    fn location(&self) -> &str {
        &self.location
    }

    async fn create_dir_all(
        &self,
        directory: &VolumePath,
        attributes: DirectoryAttributes,
    ) -> Result<Creation, ExportError> {
        let directory = directory.clone();
        self.run(
            Operation::CreateDirectory,
            &directory.to_string(),
            move |walker| walker.create_dir_all(&directory, attributes),
        )
        .await
    }

    async fn status(&self, directory: &VolumePath) -> Result<Option<DirectoryStatus>, ExportError> {
        let directory = directory.clone();
        self.run(Operation::Lookup, &directory.to_string(), move |walker| {
            walker.status(&directory)
        })
        .await
    }

    async fn rename_no_replace(
        &self,
        from: &VolumePath,
        to: &VolumePath,
    ) -> Result<(), ExportError> {
        let (from, to) = (from.clone(), to.clone());
        self.run(
            Operation::Rename,
            &format!("{from} -> {to}"),
            move |walker| walker.rename_no_replace(&from, &to),
        )
        .await
    }

    async fn remove_all(&self, directory: &VolumePath) -> Result<Removal, ExportError> {
        let directory = directory.clone();
        self.run(Operation::Remove, &directory.to_string(), move |walker| {
            walker.remove_all(&directory)
        })
        .await
    }

    async fn remove_if_empty(&self, directory: &VolumePath) -> Result<Removal, ExportError> {
        let directory = directory.clone();
        self.run(Operation::Remove, &directory.to_string(), move |walker| {
            walker.remove_if_empty(&directory)
        })
        .await
    }

    async fn fs_stats(&self) -> Result<FsStats, ExportError> {
        self.run(Operation::FsStat, "", |walker| walker.fs_stats())
            .await
    }
}

/// Blocking, descriptor-relative file operations below one open export root.
struct Walker {
    root: OwnedFd,
    context: ErrorContext,
    cancelled: Arc<AtomicBool>,
}

impl Walker {
    fn open(
        root: &Path,
        context: ErrorContext,
        cancelled: Arc<AtomicBool>,
    ) -> Result<Self, ExportError> {
        // The root itself is configuration, not user input: it may be reached through links.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(root, flags, Mode::empty()).map_err(|errno| {
            let mut connect = context.clone();
            connect.operation = Operation::Connect;
            connect.path = String::new();
            map_errno(errno, connect, "")
        })?;
        Ok(Self {
            root: fd,
            context,
            cancelled,
        })
    }

    fn error(&self, errno: Errno, component: &str) -> ExportError {
        map_errno(errno, self.context.clone(), component)
    }

    fn check_cancelled(&self) -> Result<(), ExportError> {
        if self.cancelled.load(Ordering::Relaxed) {
            // The caller already got TimedOut; this value is never seen.
            Err(ExportError::Io {
                context: self.context.clone(),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            })
        } else {
            Ok(())
        }
    }

    /// Opens directory `name` in `parent` without following a link; `shown` is its path
    /// for messages.
    fn open_dir(
        &self,
        parent: BorrowedFd<'_>,
        name: &str,
        shown: &str,
    ) -> Result<OwnedFd, ExportError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                Err(self.not_a_plain_directory(parent, name, shown))
            }
            Err(errno) => Err(self.error(errno, shown)),
        }
    }

    /// Classifies an entry that could not be opened as a directory.
    fn not_a_plain_directory(
        &self,
        parent: BorrowedFd<'_>,
        name: &str,
        shown: &str,
    ) -> ExportError {
        let is_link = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Symlink);
        if is_link {
            ExportError::Symlink {
                context: self.context.clone(),
                component: shown.to_owned(),
            }
        } else {
            ExportError::NotADirectory {
                context: self.context.clone(),
                component: shown.to_owned(),
            }
        }
    }

    /// Opens the parent of `path` (the root for a one-segment path).
    fn open_parent(&self, path: &VolumePath) -> Result<OwnedFd, ExportError> {
        let mut current =
            self.root
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| ExportError::Io {
                    context: self.context.clone(),
                    source,
                })?;
        let mut shown = String::new();
        for segment in path.segments().take(path.segments().len() - 1) {
            push_segment(&mut shown, segment);
            current = self.open_dir(current.as_fd(), segment, &shown)?;
        }
        Ok(current)
    }

    fn create_dir_all(
        &self,
        directory: &VolumePath,
        attributes: DirectoryAttributes,
    ) -> Result<Creation, ExportError> {
        let mut current =
            self.root
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| ExportError::Io {
                    context: self.context.clone(),
                    source,
                })?;
        let mut shown = String::new();
        let last = directory.segments().len() - 1;
        let mut creation = Creation::AlreadyExisted;
        for (index, segment) in directory.segments().enumerate() {
            push_segment(&mut shown, segment);
            let is_leaf = index == last;
            let initial_mode = if is_leaf {
                attributes.mode & 0o777
            } else {
                PARENT_MODE
            };
            let created = match rustix::fs::mkdirat(
                current.as_fd(),
                segment,
                Mode::from_raw_mode(initial_mode),
            ) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(errno) => return Err(self.error(errno, &shown)),
            };
            let child = self.open_dir(current.as_fd(), segment, &shown)?;
            if is_leaf {
                creation = if created {
                    Creation::Created
                } else {
                    Creation::AlreadyExisted
                };
                // Owner first: a later chmod then sets exactly the requested bits.
                if attributes.uid.is_some() || attributes.gid.is_some() {
                    rustix::fs::fchown(
                        child.as_fd(),
                        attributes.uid.map(Uid::from_raw),
                        attributes.gid.map(Gid::from_raw),
                    )
                    .map_err(|errno| self.error(errno, &shown))?;
                }
                rustix::fs::fchmod(child.as_fd(), Mode::from_raw_mode(attributes.mode))
                    .map_err(|errno| self.error(errno, &shown))?;
            } else if created {
                // mkdir's mode is subject to the umask.
                rustix::fs::fchmod(child.as_fd(), Mode::from_raw_mode(PARENT_MODE))
                    .map_err(|errno| self.error(errno, &shown))?;
            }
            current = child;
        }
        Ok(creation)
    }

    fn status(&self, directory: &VolumePath) -> Result<Option<DirectoryStatus>, ExportError> {
        let parent = match self.open_parent(directory) {
            Ok(parent) => parent,
            Err(ExportError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let shown = directory.to_string();
        let stat =
            match rustix::fs::statat(parent.as_fd(), directory.leaf(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::NOENT) => return Ok(None),
                Err(errno) => return Err(self.error(errno, &shown)),
            };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => Ok(Some(DirectoryStatus {
                mode: stat.st_mode & 0o7777,
                uid: stat.st_uid,
                gid: stat.st_gid,
            })),
            FileType::Symlink => Err(ExportError::Symlink {
                context: self.context.clone(),
                component: shown,
            }),
            _ => Err(ExportError::NotADirectory {
                context: self.context.clone(),
                component: shown,
            }),
        }
    }

    fn rename_no_replace(&self, from: &VolumePath, to: &VolumePath) -> Result<(), ExportError> {
        let from_parent = self.open_parent(from)?;
        let to_parent = self.open_parent(to)?;
        // Only directories are renamed; a link in their place is refused, not moved.
        self.open_dir(from_parent.as_fd(), from.leaf(), &from.to_string())?;
        let renamed = rustix::fs::renameat_with(
            from_parent.as_fd(),
            from.leaf(),
            to_parent.as_fd(),
            to.leaf(),
            RenameFlags::NOREPLACE,
        );
        match renamed {
            Ok(()) => Ok(()),
            Err(Errno::EXIST | Errno::NOTEMPTY) => Err(ExportError::AlreadyExists {
                context: self.context.clone(),
            }),
            // NFS mounts and some other file systems do not support RENAME_NOREPLACE: check,
            // then rename (a concurrent creation of `to` in between is the only race).
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                match rustix::fs::statat(to_parent.as_fd(), to.leaf(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => Err(ExportError::AlreadyExists {
                        context: self.context.clone(),
                    }),
                    Err(Errno::NOENT) => rustix::fs::renameat(
                        from_parent.as_fd(),
                        from.leaf(),
                        to_parent.as_fd(),
                        to.leaf(),
                    )
                    .map_err(|errno| self.error(errno, &to.to_string())),
                    Err(errno) => Err(self.error(errno, &to.to_string())),
                }
            }
            Err(errno) => Err(self.error(errno, &from.to_string())),
        }
    }

    fn remove_all(&self, directory: &VolumePath) -> Result<Removal, ExportError> {
        let parent = match self.open_parent(directory) {
            Ok(parent) => parent,
            Err(ExportError::NotFound { .. }) => return Ok(Removal::AlreadyGone),
            Err(error) => return Err(error),
        };
        let shown = directory.to_string();
        let top = match self.open_dir(parent.as_fd(), directory.leaf(), &shown) {
            Ok(fd) => fd,
            Err(ExportError::NotFound { .. }) => return Ok(Removal::AlreadyGone),
            Err(error) => return Err(error),
        };
        self.remove_tree(parent, top, directory.leaf(), &shown)?;
        Ok(Removal::Removed)
    }

    /// Removes the directory open as `top` (named `name` in `parent`) depth-first, with an
    /// explicit stack so deep trees cannot overflow the thread's stack.
    fn remove_tree(
        &self,
        parent: OwnedFd,
        top: OwnedFd,
        name: &str,
        shown: &str,
    ) -> Result<(), ExportError> {
        let to_c = |text: &str| CString::new(text).expect("validated path segments contain no NUL");
        // (descriptor of the directory, its name in the directory below it on the stack)
        let mut stack: Vec<(OwnedFd, CString)> =
            vec![(parent, CString::default()), (top, to_c(name))];
        while stack.len() > 1 {
            self.check_cancelled()?;
            let (dir, _) = stack.last().expect("stack has at least two entries");
            match self.clear_files(dir.as_fd(), shown)? {
                Some(subdirectory) => {
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    match rustix::fs::openat(
                        dir.as_fd(),
                        subdirectory.as_c_str(),
                        flags,
                        Mode::empty(),
                    ) {
                        Ok(fd) => stack.push((fd, subdirectory)),
                        // Replaced by a link or file since it was listed: unlink that instead.
                        Err(Errno::LOOP | Errno::NOTDIR) => {
                            unlink_entry(dir.as_fd(), &subdirectory)
                                .map_err(|errno| self.error(errno, shown))?;
                        }
                        Err(Errno::NOENT) => {}
                        Err(errno) => return Err(self.error(errno, shown)),
                    }
                }
                None => {
                    let (_, name) = stack.pop().expect("stack has at least two entries");
                    let (below, _) = stack.last().expect("the parent stays on the stack");
                    match rustix::fs::unlinkat(below.as_fd(), name.as_c_str(), AtFlags::REMOVEDIR) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        // Something was created meanwhile: go round again.
                        Err(Errno::NOTEMPTY | Errno::EXIST) => {
                            let flags = OFlags::RDONLY
                                | OFlags::DIRECTORY
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC;
                            let fd = rustix::fs::openat(
                                below.as_fd(),
                                name.as_c_str(),
                                flags,
                                Mode::empty(),
                            )
                            .map_err(|errno| self.error(errno, shown))?;
                            stack.push((fd, name));
                        }
                        Err(errno) => return Err(self.error(errno, shown)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Unlinks every non-directory entry of `dir` and returns the first subdirectory, if any.
    fn clear_files(
        &self,
        dir: BorrowedFd<'_>,
        shown: &str,
    ) -> Result<Option<CString>, ExportError> {
        let entries = rustix::fs::Dir::read_from(dir).map_err(|errno| self.error(errno, shown))?;
        for entry in entries {
            self.check_cancelled()?;
            let entry = entry.map_err(|errno| self.error(errno, shown))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let file_type = match entry.file_type() {
                FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                    Err(Errno::NOENT) => continue,
                    Err(errno) => return Err(self.error(errno, shown)),
                },
                known => known,
            };
            if file_type == FileType::Directory {
                return Ok(Some(name.to_owned()));
            }
            unlink_entry(dir, name).map_err(|errno| self.error(errno, shown))?;
        }
        Ok(None)
    }

    fn remove_if_empty(&self, directory: &VolumePath) -> Result<Removal, ExportError> {
        let parent = match self.open_parent(directory) {
            Ok(parent) => parent,
            Err(ExportError::NotFound { .. }) => return Ok(Removal::AlreadyGone),
            Err(error) => return Err(error),
        };
        let shown = directory.to_string();
        // Refuse a link in the directory's place rather than act on it.
        match self.open_dir(parent.as_fd(), directory.leaf(), &shown) {
            Ok(_) => {}
            Err(ExportError::NotFound { .. }) => return Ok(Removal::AlreadyGone),
            Err(error) => return Err(error),
        }
        match rustix::fs::unlinkat(parent.as_fd(), directory.leaf(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(Removal::Removed),
            Err(Errno::NOENT) => Ok(Removal::AlreadyGone),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(Removal::NotEmpty),
            Err(errno) => Err(self.error(errno, &shown)),
        }
    }

    fn fs_stats(&self) -> Result<FsStats, ExportError> {
        let stats =
            rustix::fs::fstatvfs(self.root.as_fd()).map_err(|errno| self.error(errno, ""))?;
        let block = stats.f_frsize;
        Ok(FsStats {
            total_bytes: stats.f_blocks.saturating_mul(block),
            free_bytes: stats.f_bfree.saturating_mul(block),
            available_bytes: stats.f_bavail.saturating_mul(block),
        })
    }
}

/// Removes a non-directory entry (a link is removed itself, never its target).
fn unlink_entry(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(errno),
    }
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('/');
    }
    path.push_str(segment);
}

fn map_errno(errno: Errno, context: ErrorContext, component: &str) -> ExportError {
    match errno {
        Errno::NOENT => ExportError::NotFound { context },
        Errno::EXIST => ExportError::AlreadyExists { context },
        Errno::ACCESS | Errno::PERM => ExportError::PermissionDenied {
            context,
            root_squash_likely: rustix::process::geteuid().is_root(),
        },
        Errno::LOOP => ExportError::Symlink {
            context,
            component: component.to_owned(),
        },
        Errno::NOTDIR => ExportError::NotADirectory {
            context,
            component: component.to_owned(),
        },
        Errno::NOSPC | Errno::DQUOT => ExportError::NoSpace { context },
        Errno::ROFS => ExportError::ReadOnly { context },
        other => ExportError::Io {
            context,
            source: std::io::Error::from(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn path(text: &str) -> VolumePath {
        VolumePath::parse(text).unwrap()
    }

    fn mk_export(root: &Path) -> MountedExport {
        MountedExport::new(root, Duration::from_secs(30))
    }

    const ATTRS_0777: DirectoryAttributes = DirectoryAttributes {
        mode: 0o777,
        uid: None,
        gid: None,
    };

    #[tokio::test]
    async fn creates_nested_directories_with_exact_modes_despite_the_umask() {
        let temp = tempfile::tempdir().unwrap();
        let export = mk_export(temp.path());
        let attributes = DirectoryAttributes {
            mode: 0o2770,
            uid: None,
            gid: None,
        };
        let created = export
            .create_dir_all(&path("ns/claim"), attributes)
            .await
            .unwrap();
        assert_eq!(created, Creation::Created);
        let leaf = std::fs::metadata(temp.path().join("ns/claim")).unwrap();
        assert_eq!(leaf.permissions().mode() & 0o7777, 0o2770);
        let parent = std::fs::metadata(temp.path().join("ns")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o7777, 0o755);
        // A second call finds it and re-applies the mode.
        std::fs::set_permissions(
            temp.path().join("ns/claim"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let again = export
            .create_dir_all(&path("ns/claim"), attributes)
            .await
            .unwrap();
        assert_eq!(again, Creation::AlreadyExisted);
        let status = export.status(&path("ns/claim")).await.unwrap().unwrap();
        assert_eq!(status.mode, 0o2770);
    }

    #[tokio::test]
    async fn symlinked_components_are_refused_everywhere() {
        let temp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let export = mk_export(temp.path());
        symlink(outside.path(), temp.path().join("escape")).unwrap();
        std::fs::create_dir(outside.path().join("victim")).unwrap();

        let error = export
            .create_dir_all(&path("escape/claim"), ATTRS_0777)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ExportError::Symlink { component, .. } if component == "escape"),
            "{error}"
        );
        assert!(!outside.path().join("claim").exists());

        let error = export
            .create_dir_all(&path("escape"), ATTRS_0777)
            .await
            .unwrap_err();
        assert!(matches!(error, ExportError::Symlink { .. }), "{error}");
        assert!(matches!(
            export.remove_all(&path("escape/victim")).await,
            Err(ExportError::Symlink { .. })
        ));
        assert!(matches!(
            export.remove_all(&path("escape")).await,
            Err(ExportError::Symlink { .. })
        ));
        assert!(matches!(
            export.status(&path("escape")).await,
            Err(ExportError::Symlink { .. })
        ));
        assert!(matches!(
            export
                .rename_no_replace(&path("escape"), &path("archived-escape"))
                .await,
            Err(ExportError::Symlink { .. })
        ));
        assert!(
            outside.path().join("victim").is_dir(),
            "nothing outside was touched"
        );
    }

    #[tokio::test]
    async fn recursive_removal_unlinks_links_without_following_them() {
        let temp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"keep").unwrap();
        let export = mk_export(temp.path());
        export
            .create_dir_all(&path("vol"), ATTRS_0777)
            .await
            .unwrap();
        let volume = temp.path().join("vol");
        std::fs::create_dir_all(volume.join("a/b/c")).unwrap();
        std::fs::write(volume.join("a/b/c/file"), b"x").unwrap();
        std::fs::write(volume.join("top"), b"x").unwrap();
        symlink(outside.path(), volume.join("a/link-to-outside")).unwrap();
        symlink(outside.path().join("precious"), volume.join("file-link")).unwrap();

        assert_eq!(
            export.remove_all(&path("vol")).await.unwrap(),
            Removal::Removed
        );
        assert!(!volume.exists());
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"keep"
        );
        assert_eq!(
            export.remove_all(&path("vol")).await.unwrap(),
            Removal::AlreadyGone
        );
        assert_eq!(
            export.remove_all(&path("missing/parent")).await.unwrap(),
            Removal::AlreadyGone
        );
    }

    #[tokio::test]
    async fn rename_never_replaces() {
        let temp = tempfile::tempdir().unwrap();
        let export = mk_export(temp.path());
        export
            .create_dir_all(&path("ns/a"), ATTRS_0777)
            .await
            .unwrap();
        export
            .create_dir_all(&path("ns/b"), ATTRS_0777)
            .await
            .unwrap();
        let error = export
            .rename_no_replace(&path("ns/a"), &path("ns/b"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ExportError::AlreadyExists { .. }),
            "{error}"
        );
        export
            .rename_no_replace(&path("ns/a"), &path("ns/c"))
            .await
            .unwrap();
        assert!(temp.path().join("ns/c").is_dir() && !temp.path().join("ns/a").exists());
        let error = export
            .rename_no_replace(&path("ns/a"), &path("ns/d"))
            .await
            .unwrap_err();
        assert!(matches!(error, ExportError::NotFound { .. }), "{error}");
    }

    #[tokio::test]
    async fn remove_if_empty_keeps_content() {
        let temp = tempfile::tempdir().unwrap();
        let export = mk_export(temp.path());
        export
            .create_dir_all(&path("full"), ATTRS_0777)
            .await
            .unwrap();
        std::fs::write(temp.path().join("full/data"), b"x").unwrap();
        export
            .create_dir_all(&path("empty"), ATTRS_0777)
            .await
            .unwrap();
        assert_eq!(
            export.remove_if_empty(&path("full")).await.unwrap(),
            Removal::NotEmpty
        );
        assert_eq!(
            export.remove_if_empty(&path("empty")).await.unwrap(),
            Removal::Removed
        );
        assert_eq!(
            export.remove_if_empty(&path("empty")).await.unwrap(),
            Removal::AlreadyGone
        );
        assert!(temp.path().join("full/data").exists());
    }

    #[tokio::test]
    async fn files_in_the_way_are_reported() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("file"), b"x").unwrap();
        let export = mk_export(temp.path());
        let error = export
            .create_dir_all(&path("file/claim"), ATTRS_0777)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ExportError::NotADirectory { component, .. } if component == "file"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn fs_stats_reports_real_capacity() {
        let temp = tempfile::tempdir().unwrap();
        let stats = mk_export(temp.path()).fs_stats().await.unwrap();
        assert!(stats.total_bytes > 0);
        assert!(stats.free_bytes <= stats.total_bytes && stats.available_bytes <= stats.free_bytes);
    }

    #[tokio::test]
    async fn a_missing_root_is_an_error_not_a_panic() {
        let temp = tempfile::tempdir().unwrap();
        let export = mk_export(&temp.path().join("not-mounted"));
        let error = export.fs_stats().await.unwrap_err();
        assert!(matches!(error, ExportError::NotFound { .. }), "{error}");
    }

    /// A call that blocks past the timeout yields TimedOut; while stuck calls hold every
    /// slot, further calls time out waiting for one instead of piling up threads.
    #[tokio::test]
    async fn hung_calls_time_out_and_do_not_pile_up() {
        let temp = tempfile::tempdir().unwrap();
        let export = MountedExport::new(temp.path(), Duration::from_millis(100));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        for _ in 0..MAX_BLOCKING_CALLS {
            let released = Arc::clone(&released);
            let result = export
                .run(Operation::Lookup, "hung", move |_| {
                    // Stands in for a system call blocked on an unresponsive server.
                    let _ = released.lock().unwrap().recv();
                    Ok(())
                })
                .await;
            assert!(matches!(result, Err(ExportError::TimedOut { .. })));
        }
        assert_eq!(
            export.slots.available_permits(),
            0,
            "the stuck calls still hold their slots"
        );
        let error = export.fs_stats().await.unwrap_err();
        assert!(matches!(error, ExportError::TimedOut { .. }), "{error}");

        // Once the server answers again, the slots come back and calls succeed.
        for _ in 0..MAX_BLOCKING_CALLS {
            release.send(()).unwrap();
        }
        let mut recovered = false;
        for _ in 0..100 {
            if export.fs_stats().await.is_ok() {
                recovered = true;
                break;
            }
        }
        assert!(recovered);
    }
}
