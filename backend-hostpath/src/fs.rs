//! The filesystem layer: volume directories, their markers and free space, symlink-safe and
//! under a timeout.
//!
//! Two halves:
//!
//! - [`VolumeFilesystem`]: the blocking operations. [`HostFilesystem`] implements them with
//!   `openat`-style calls (`rustix`): below a base path every segment is opened with
//!   `O_NOFOLLOW`, so a symlink planted inside a volume (by a pod that can write there)
//!   never leads a create, chmod, chown or delete outside the base path. Tests substitute
//!   their own implementation (a slow one, for example).
//! - [`TimedFilesystem`]: runs each blocking call on Tokio's blocking pool under a deadline.
//!   A dead disk makes calls time out instead of stalling the agent; the number of calls in
//!   flight per base path is bounded, so a hung disk pins a few threads, not the pool.
//!
//! # Markers
//!
//! Before a volume directory is created, a marker file `<base>/.hostpath-provisioner/<pv
//! name>` records its relative path. Placement depends on free space and `pathPattern` on
//! claim labels, neither of which can be recomputed later; the marker lets a retried
//! provision find the directory an interrupted one chose, and a delete find a directory
//! whose PersistentVolume was never saved.
//!
//! # Modes
//!
//! A new volume directory is created `0700`, then `chown`ed (when an owner is configured),
//! then `chmod`ed to the exact configured mode, so it is never writable by others before
//! it has its owner, and the umask does not apply. Intermediate directories of nested
//! patterns are created `0755` (before the umask), like `mkdir -p` does upstream. An
//! existing volume directory is reused (upstream's `mkdir -p` does the same, and users
//! re-attach data that way); its mode and owner are set again, which also completes an
//! interrupted earlier attempt.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisioner_core::volume_path::VolumePath;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use tokio::sync::Semaphore;

use crate::base_path::BasePath;
use crate::params::DirectorySettings;

/// The directory under each base path that holds the markers.
pub const MARKER_DIR: &str = ".hostpath-provisioner";

/// Largest marker file read back; a volume path is at most 4 KiB.
const MAX_MARKER_BYTES: u64 = 8192;

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`mkdir`, `chown`, …).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A path segment below the base path is a symlink.
    #[error("{path} is a symbolic link; refusing to follow it out of {base}")]
    Symlink {
        /// The symlink.
        path: PathBuf,
        /// The base path it lies in.
        base: PathBuf,
    },
    /// A path segment that must be a directory is something else.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A marker does not hold a usable volume path.
    #[error("the marker {path} is unreadable: {reason}")]
    BadMarker {
        /// The marker file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The volume name cannot name a marker file.
    #[error("the volume name {name:?} cannot be used as a file name")]
    BadVolumeName {
        /// The name.
        name: String,
    },
    /// The call did not finish in time.
    #[error("{op} on {path} did not finish within {after:?}; the disk may be hung")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The base path.
        path: PathBuf,
        /// The deadline.
        after: Duration,
    },
    /// The blocking task panicked or was cancelled.
    #[error("{op} on {path} failed unexpectedly: {detail}")]
    Task {
        /// The operation.
        op: &'static str,
        /// The base path.
        path: PathBuf,
        /// The join error.
        detail: String,
    },
}

/// What creating a volume directory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The directory was created.
    New,
    /// The directory existed and was reused.
    Reused,
}

/// What removing a volume directory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The directory (or whatever was at its path) was removed.
    Removed,
    /// Nothing was there.
    AlreadyGone,
}

/// Blocking volume operations. Each call may block for as long as the disk does; use them
/// through [`TimedFilesystem`].
pub trait VolumeFilesystem: Send + Sync + 'static {
    /// Creates (or reuses) `base/dir` with the given mode and owner.
    fn create_volume_dir(
        &self,
        base: &BasePath,
        dir: &VolumePath,
        settings: &DirectorySettings,
    ) -> Result<Created, FsError>;

    /// Removes `base/dir` and everything below it.
    fn remove_volume_dir(&self, base: &BasePath, dir: &VolumePath) -> Result<Removed, FsError>;

    /// Bytes available to unprivileged users on the filesystem of `base` (or of its nearest
    /// existing ancestor, when `base` does not exist yet).
    fn available_bytes(&self, base: &BasePath) -> Result<u64, FsError>;

    /// Records that volume `volume_name` lives at `base/dir`.
    fn write_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
        dir: &VolumePath,
    ) -> Result<(), FsError>;

    /// The directory recorded for `volume_name` under `base`, if any.
    fn read_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
    ) -> Result<Option<VolumePath>, FsError>;

    /// Forgets the marker of `volume_name` under `base` (absent is fine).
    fn remove_marker(&self, base: &BasePath, volume_name: &str) -> Result<(), FsError>;
}

/// The real filesystem of the node.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFilesystem;

fn io_error(op: &'static str, path: &Path, errno: Errno) -> FsError {
    FsError::Io {
        op,
        path: path.to_owned(),
        source: errno.into(),
    }
}

/// Opens a base path, following symlinks (it is the operator's).
fn open_base(base: &BasePath) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        rustix::fs::CWD,
        base.as_path(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens base paths and walks below them without following symlinks.
struct Walker<'a> {
    base: &'a BasePath,
}

impl Walker<'_> {
    fn path_of<'s>(&self, segments: impl IntoIterator<Item = &'s str>) -> PathBuf {
        let mut path = self.base.as_path().to_path_buf();
        path.extend(segments);
        path
    }

    /// Opens directory `name` in `parent`, refusing symlinks and non-directories.
    fn open_dir(&self, parent: &OwnedFd, name: &str, path: &Path) -> Result<OwnedFd, FsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::LOOP) => Err(self.symlink(path)),
            Err(Errno::NOTDIR) => {
                // O_NOFOLLOW plus O_DIRECTORY reports a symlink as ENOTDIR on some kernels.
                match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if FileType::from_raw_mode(stat.st_mode).is_symlink() => {
                        Err(self.symlink(path))
                    }
                    _ => Err(FsError::NotADirectory {
                        path: path.to_owned(),
                    }),
                }
            }
            Err(errno) => Err(io_error("open", path, errno)),
        }
    }

    /// Creates directory `name` in `parent` unless it exists, then opens it.
    fn ensure_dir(
        &self,
        parent: &OwnedFd,
        name: &str,
        mode: u32,
        path: &Path,
    ) -> Result<(OwnedFd, Created), FsError> {
        let created = match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
            Ok(()) => Created::New,
            Err(Errno::EXIST) => Created::Reused,
            Err(errno) => return Err(io_error("mkdir", path, errno)),
        };
        Ok((self.open_dir(parent, name, path)?, created))
    }

    fn symlink(&self, path: &Path) -> FsError {
        FsError::Symlink {
            path: path.to_owned(),
            base: self.base.as_path().to_owned(),
        }
    }
}

/// Creates the base path if it is missing (upstream's helper pod does the same with a
/// `DirectoryOrCreate` hostPath volume) and opens it.
fn open_or_create_base(base: &BasePath) -> Result<OwnedFd, FsError> {
    match open_base(base) {
        Err(Errno::NOENT) => {
            std::fs::create_dir_all(base.as_path()).map_err(|source| FsError::Io {
                op: "mkdir",
                path: base.as_path().to_owned(),
                source,
            })?;
            open_base(base).map_err(|errno| io_error("open", base.as_path(), errno))
        }
        other => other.map_err(|errno| io_error("open", base.as_path(), errno)),
    }
}

fn marker_name(volume_name: &str) -> Result<&str, FsError> {
    let single = VolumePath::from_segments([volume_name]).is_ok();
    if !single || volume_name.starts_with('.') {
        return Err(FsError::BadVolumeName {
            name: volume_name.to_owned(),
        });
    }
    Ok(volume_name)
}

impl VolumeFilesystem for HostFilesystem {
    fn create_volume_dir(
        &self,
        base: &BasePath,
        dir: &VolumePath,
        settings: &DirectorySettings,
    ) -> Result<Created, FsError> {
        let walker = Walker { base };
        let mut parent = open_or_create_base(base)?;
        let segments: Vec<&str> = dir.segments().collect();
        let (leaf, intermediate) = segments.split_last().expect("a VolumePath is never empty");
        for (i, segment) in intermediate.iter().enumerate() {
            let path = walker.path_of(segments[..=i].iter().copied());
            parent = walker.ensure_dir(&parent, segment, 0o755, &path)?.0;
        }
        let path = dir.to_path_under(base.as_path());
        // Private until it has its owner, then exactly the configured mode.
        let (fd, created) = walker.ensure_dir(&parent, leaf, 0o700, &path)?;
        if settings.uid.is_some() || settings.gid.is_some() {
            let uid = settings.uid.map(rustix::fs::Uid::from_raw);
            let gid = settings.gid.map(rustix::fs::Gid::from_raw);
            rustix::fs::fchown(&fd, uid, gid).map_err(|errno| io_error("chown", &path, errno))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(settings.mode))
            .map_err(|errno| io_error("chmod", &path, errno))?;
        Ok(created)
    }

    fn remove_volume_dir(&self, base: &BasePath, dir: &VolumePath) -> Result<Removed, FsError> {
        let walker = Walker { base };
        let mut parent = match open_base(base) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Removed::AlreadyGone),
            Err(errno) => return Err(io_error("open", base.as_path(), errno)),
        };
        let segments: Vec<&str> = dir.segments().collect();
        let (leaf, intermediate) = segments.split_last().expect("a VolumePath is never empty");
        for (i, segment) in intermediate.iter().enumerate() {
            let path = walker.path_of(segments[..=i].iter().copied());
            parent = match walker.open_dir(&parent, segment, &path) {
                Ok(fd) => fd,
                Err(FsError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Ok(Removed::AlreadyGone);
                }
                Err(other) => return Err(other),
            };
        }
        let path = dir.to_path_under(base.as_path());
        let stat = match rustix::fs::statat(&parent, *leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Ok(Removed::AlreadyGone),
            Err(errno) => return Err(io_error("stat", &path, errno)),
        };
        if FileType::from_raw_mode(stat.st_mode).is_dir() {
            remove_tree(&walker, &parent, leaf, &path)?;
        } else {
            // A symlink or file at the volume's path: remove it, never what it points to.
            match rustix::fs::unlinkat(&parent, *leaf, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(errno) => return Err(io_error("unlink", &path, errno)),
            }
        }
        Ok(Removed::Removed)
    }

    fn available_bytes(&self, base: &BasePath) -> Result<u64, FsError> {
        // The base may not exist yet; it would be created on the filesystem of its nearest
        // existing ancestor, so that is the one to measure.
        let mut probe: &Path = base.as_path();
        loop {
            match rustix::fs::statvfs(probe) {
                Ok(stat) => {
                    let block = if stat.f_frsize > 0 {
                        stat.f_frsize
                    } else {
                        stat.f_bsize
                    };
                    return Ok(stat.f_bavail.saturating_mul(block));
                }
                Err(Errno::NOENT) if probe.parent().is_some() => {
                    probe = probe.parent().expect("checked above");
                }
                Err(errno) => return Err(io_error("statvfs", probe, errno)),
            }
        }
    }

    fn write_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
        dir: &VolumePath,
    ) -> Result<(), FsError> {
        let name = marker_name(volume_name)?;
        let walker = Walker { base };
        let base_fd = open_or_create_base(base)?;
        let marker_dir = walker.path_of([MARKER_DIR]);
        let (dir_fd, _) = walker.ensure_dir(&base_fd, MARKER_DIR, 0o700, &marker_dir)?;
        let final_path = marker_dir.join(name);
        let temp_name = format!(".{name}.tmp");
        let temp_path = marker_dir.join(&temp_name);
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &dir_fd,
            temp_name.as_str(),
            flags,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|errno| io_error("create", &temp_path, errno))?;
        let mut file = std::fs::File::from(fd);
        let write = |source| FsError::Io {
            op: "write",
            path: temp_path.clone(),
            source,
        };
        file.write_all(format!("{dir}\n").as_bytes())
            .map_err(write)?;
        file.sync_all().map_err(write)?;
        rustix::fs::renameat(&dir_fd, temp_name.as_str(), &dir_fd, name)
            .map_err(|errno| io_error("rename", &final_path, errno))
    }

    fn read_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
    ) -> Result<Option<VolumePath>, FsError> {
        let name = marker_name(volume_name)?;
        let walker = Walker { base };
        let base_fd = match open_base(base) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(errno) => return Err(io_error("open", base.as_path(), errno)),
        };
        let marker_dir = walker.path_of([MARKER_DIR]);
        let dir_fd = match walker.open_dir(&base_fd, MARKER_DIR, &marker_dir) {
            Ok(fd) => fd,
            Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(other) => return Err(other),
        };
        let path = marker_dir.join(name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir_fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(walker.symlink(&path)),
            Err(errno) => return Err(io_error("open", &path, errno)),
        };
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_MARKER_BYTES)
            .read_to_string(&mut text)
            .map_err(|source| FsError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
        let recorded = text.strip_suffix('\n').unwrap_or(&text);
        VolumePath::parse(recorded)
            .map(Some)
            .map_err(|e| FsError::BadMarker {
                path,
                reason: e.to_string(),
            })
    }

    fn remove_marker(&self, base: &BasePath, volume_name: &str) -> Result<(), FsError> {
        let name = marker_name(volume_name)?;
        let walker = Walker { base };
        let base_fd = match open_base(base) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(errno) => return Err(io_error("open", base.as_path(), errno)),
        };
        let marker_dir = walker.path_of([MARKER_DIR]);
        let dir_fd = match walker.open_dir(&base_fd, MARKER_DIR, &marker_dir) {
            Ok(fd) => fd,
            Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(other) => return Err(other),
        };
        match rustix::fs::unlinkat(&dir_fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(io_error("unlink", &marker_dir.join(name), errno)),
        }
    }
}

/// Removes directory `name` in `parent` and everything below it, without following
/// symlinks. Iterative, so a deep tree cannot overflow the stack.
fn remove_tree(
    walker: &Walker<'_>,
    parent: &OwnedFd,
    name: &str,
    path: &Path,
) -> Result<(), FsError> {
    struct Level {
        dir: Dir,
        name: std::ffi::CString,
        path: PathBuf,
    }
    let open = |parent: &dyn AsFd, name: &std::ffi::CStr, path: &Path| -> Result<Dir, FsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(parent.as_fd(), name, flags, Mode::empty()).map_err(|errno| {
                match errno {
                    Errno::LOOP => walker.symlink(path),
                    errno => io_error("open", path, errno),
                }
            })?;
        Dir::new(fd).map_err(|errno| io_error("readdir", path, errno))
    };
    let root_name = std::ffi::CString::new(name).map_err(|_| FsError::NotADirectory {
        path: path.to_owned(),
    })?;
    let mut stack = vec![Level {
        dir: open(parent, &root_name, path)?,
        name: root_name,
        path: path.to_owned(),
    }];
    while let Some(level) = stack.last_mut() {
        let entry = match level.dir.next() {
            Some(Ok(entry)) => Some(entry),
            Some(Err(errno)) => return Err(io_error("readdir", &level.path, errno)),
            None => None,
        };
        let Some(entry) = entry else {
            let done = stack.pop().expect("the loop only runs with a level");
            let remove_from = match stack.last() {
                Some(up) => up
                    .dir
                    .fd()
                    .map_err(|errno| io_error("readdir", &up.path, errno))?,
                None => parent.as_fd(),
            };
            match rustix::fs::unlinkat(remove_from, done.name.as_c_str(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(errno) => return Err(io_error("rmdir", &done.path, errno)),
            }
            continue;
        };
        let child = entry.file_name();
        if child == c"." || child == c".." {
            continue;
        }
        let child_path = level
            .path
            .join(std::ffi::OsStr::from_bytes(child.to_bytes()));
        let fd = level
            .dir
            .fd()
            .map_err(|errno| io_error("readdir", &level.path, errno))?;
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => match rustix::fs::statat(fd, child, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => FileType::from_raw_mode(stat.st_mode).is_dir(),
                Err(Errno::NOENT) => continue,
                Err(errno) => return Err(io_error("stat", &child_path, errno)),
            },
            _ => false,
        };
        let is_dir = is_dir
            || match rustix::fs::unlinkat(fd, child, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => false,
                // The entry turned into a directory since it was listed.
                Err(Errno::ISDIR) => true,
                Err(errno) => return Err(io_error("unlink", &child_path, errno)),
            };
        if is_dir {
            let child_name = child.to_owned();
            let dir = open(&fd, &child_name, &child_path)?;
            stack.push(Level {
                dir,
                name: child_name,
                path: child_path,
            });
        }
    }
    Ok(())
}

/// Runs a [`VolumeFilesystem`]'s blocking calls on the blocking pool, each under a deadline,
/// with at most `max_in_flight` calls per base path.
#[derive(Debug)]
pub struct TimedFilesystem<F> {
    inner: Arc<F>,
    timeout: Duration,
    max_in_flight: usize,
    gates: Mutex<HashMap<PathBuf, Arc<Semaphore>>>,
}

/// Default deadline of one filesystem call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default number of calls in flight per base path.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

impl<F: VolumeFilesystem> TimedFilesystem<F> {
    /// Wraps `inner` with the default deadline and bound.
    pub fn new(inner: F) -> Self {
        Self::with_limits(inner, DEFAULT_TIMEOUT, DEFAULT_MAX_IN_FLIGHT)
    }

    /// Wraps `inner`: each call must finish within `timeout` (waiting for a free slot
    /// included), with at most `max_in_flight` calls running per base path. A call that
    /// times out keeps its slot until the blocking call really returns, so a hung disk
    /// fills its own slots and no more threads.
    pub fn with_limits(inner: F, timeout: Duration, max_in_flight: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            timeout,
            max_in_flight: max_in_flight.max(1),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The deadline of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn gate(&self, base: &BasePath) -> Arc<Semaphore> {
        let mut gates = self
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates
            .entry(base.as_path().to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_in_flight)))
            .clone()
    }

    async fn run<T, C>(&self, op: &'static str, base: &BasePath, call: C) -> Result<T, FsError>
    where
        T: Send + 'static,
        C: FnOnce(&F) -> Result<T, FsError> + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timeout = || FsError::Timeout {
            op,
            path: base.as_path().to_owned(),
            after: self.timeout,
        };
        let permit = tokio::time::timeout_at(deadline, self.gate(base).acquire_owned())
            .await
            .map_err(|_| timeout())?
            .expect("the semaphore is never closed");
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            call(&inner)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(FsError::Task {
                op,
                path: base.as_path().to_owned(),
                detail: join.to_string(),
            }),
            Err(_) => Err(timeout()),
        }
    }

    /// [`VolumeFilesystem::create_volume_dir`] under the deadline.
    pub async fn create_volume_dir(
        &self,
        base: &BasePath,
        dir: &VolumePath,
        settings: DirectorySettings,
    ) -> Result<Created, FsError> {
        let (b, d) = (base.clone(), dir.clone());
        self.run("mkdir", base, move |fs| {
            fs.create_volume_dir(&b, &d, &settings)
        })
        .await
    }

    /// [`VolumeFilesystem::remove_volume_dir`] under the deadline.
    pub async fn remove_volume_dir(
        &self,
        base: &BasePath,
        dir: &VolumePath,
    ) -> Result<Removed, FsError> {
        let (b, d) = (base.clone(), dir.clone());
        self.run("remove", base, move |fs| fs.remove_volume_dir(&b, &d))
            .await
    }

    /// [`VolumeFilesystem::available_bytes`] under the deadline.
    pub async fn available_bytes(&self, base: &BasePath) -> Result<u64, FsError> {
        let b = base.clone();
        self.run("statvfs", base, move |fs| fs.available_bytes(&b))
            .await
    }

    /// [`VolumeFilesystem::write_marker`] under the deadline.
    pub async fn write_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
        dir: &VolumePath,
    ) -> Result<(), FsError> {
        let (b, n, d) = (base.clone(), volume_name.to_owned(), dir.clone());
        self.run("write marker", base, move |fs| fs.write_marker(&b, &n, &d))
            .await
    }

    /// [`VolumeFilesystem::read_marker`] under the deadline.
    pub async fn read_marker(
        &self,
        base: &BasePath,
        volume_name: &str,
    ) -> Result<Option<VolumePath>, FsError> {
        let (b, n) = (base.clone(), volume_name.to_owned());
        self.run("read marker", base, move |fs| fs.read_marker(&b, &n))
            .await
    }

    /// [`VolumeFilesystem::remove_marker`] under the deadline.
    pub async fn remove_marker(&self, base: &BasePath, volume_name: &str) -> Result<(), FsError> {
        let (b, n) = (base.clone(), volume_name.to_owned());
        self.run("remove marker", base, move |fs| fs.remove_marker(&b, &n))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::sync::Condvar;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn base_in(dir: &tempfile::TempDir, name: &str) -> BasePath {
        BasePath::parse(dir.path().join(name).to_str().unwrap()).unwrap()
    }

    fn vp(path: &str) -> VolumePath {
        VolumePath::parse(path).unwrap()
    }

    fn settings(mode: u32) -> DirectorySettings {
        DirectorySettings {
            mode,
            uid: None,
            gid: None,
        }
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn creates_the_base_and_nested_directories_with_the_exact_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let fs = HostFilesystem;
        assert_eq!(
            fs.create_volume_dir(&base, &vp("ns/claim/data"), &settings(0o777))
                .unwrap(),
            Created::New
        );
        let leaf = base.as_path().join("ns/claim/data");
        // 0777 survives the umask: it is set with chmod, not mkdir.
        assert_eq!(mode_of(&leaf), 0o777);
        assert!(base.as_path().join("ns/claim").is_dir());
        std::fs::write(leaf.join("file"), b"kept").unwrap();
        assert_eq!(
            fs.create_volume_dir(&base, &vp("ns/claim/data"), &settings(0o2750))
                .unwrap(),
            Created::Reused
        );
        assert_eq!(mode_of(&leaf), 0o2750);
        assert_eq!(std::fs::read(leaf.join("file")).unwrap(), b"kept");
    }

    #[test]
    fn sets_the_configured_owner_and_group() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let is_root = rustix::process::geteuid().is_root();
        let wanted = DirectorySettings {
            mode: 0o770,
            uid: Some(4242),
            gid: Some(4343),
        };
        let result = HostFilesystem.create_volume_dir(&base, &vp("v"), &wanted);
        if is_root {
            result.unwrap();
            let meta = std::fs::metadata(base.as_path().join("v")).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (4242, 4343, 0o770)
            );
        } else {
            // Without CAP_CHOWN the kernel refuses; the error says which call failed.
            assert!(
                matches!(result, Err(FsError::Io { op: "chown", .. })),
                "{result:?}"
            );
        }
    }

    #[test]
    fn refuses_symlinks_below_the_base_when_creating() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir_all(base.as_path().join("ns")).unwrap();
        symlink(&outside, base.as_path().join("ns/claim")).unwrap();
        symlink(&outside, base.as_path().join("leaf")).unwrap();

        let through =
            HostFilesystem.create_volume_dir(&base, &vp("ns/claim/data"), &settings(0o777));
        assert!(
            matches!(through, Err(FsError::Symlink { .. })),
            "{through:?}"
        );
        let at_leaf = HostFilesystem.create_volume_dir(&base, &vp("leaf"), &settings(0o777));
        assert!(
            matches!(at_leaf, Err(FsError::Symlink { .. })),
            "{at_leaf:?}"
        );
        assert!(!outside.join("data").exists());
        assert_eq!(
            mode_of(&outside),
            0o700,
            "chmod must not reach the symlink's target"
        );
    }

    #[test]
    fn a_file_in_the_way_is_not_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        std::fs::create_dir_all(base.as_path()).unwrap();
        std::fs::write(base.as_path().join("ns"), b"").unwrap();
        let result = HostFilesystem.create_volume_dir(&base, &vp("ns/claim"), &settings(0o777));
        assert!(
            matches!(result, Err(FsError::NotADirectory { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn removes_trees_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"x").unwrap();

        let fs = HostFilesystem;
        fs.create_volume_dir(&base, &vp("ns/claim"), &settings(0o777))
            .unwrap();
        let volume = base.as_path().join("ns/claim");
        std::fs::create_dir_all(volume.join("a/b/c")).unwrap();
        std::fs::write(volume.join("a/b/c/file"), b"data").unwrap();
        std::fs::write(volume.join("top"), b"data").unwrap();
        symlink(&outside, volume.join("a/link-to-outside")).unwrap();
        symlink(outside.join("precious"), volume.join("file-link")).unwrap();
        // A read-only subdirectory still goes: permissions are checked on its parent.
        std::fs::set_permissions(volume.join("a/b"), std::fs::Permissions::from_mode(0o500))
            .unwrap();

        assert_eq!(
            fs.remove_volume_dir(&base, &vp("ns/claim")).unwrap(),
            Removed::Removed
        );
        assert!(!volume.exists());
        assert!(
            base.as_path().join("ns").is_dir(),
            "only the volume's own directory goes"
        );
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"x");
        assert_eq!(
            fs.remove_volume_dir(&base, &vp("ns/claim")).unwrap(),
            Removed::AlreadyGone
        );
        assert_eq!(
            fs.remove_volume_dir(&base, &vp("gone/deeper")).unwrap(),
            Removed::AlreadyGone
        );
        let missing_base = base_in(&tmp, "no-such-disk");
        assert_eq!(
            fs.remove_volume_dir(&missing_base, &vp("x")).unwrap(),
            Removed::AlreadyGone
        );
    }

    #[test]
    fn removal_refuses_a_symlinked_parent_and_unlinks_a_symlinked_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("claim")).unwrap();
        std::fs::write(outside.join("claim/precious"), b"x").unwrap();
        std::fs::create_dir_all(base.as_path()).unwrap();
        symlink(&outside, base.as_path().join("ns")).unwrap();
        symlink(outside.join("claim"), base.as_path().join("leaf")).unwrap();

        let through = HostFilesystem.remove_volume_dir(&base, &vp("ns/claim"));
        assert!(
            matches!(through, Err(FsError::Symlink { .. })),
            "{through:?}"
        );
        assert_eq!(
            HostFilesystem
                .remove_volume_dir(&base, &vp("leaf"))
                .unwrap(),
            Removed::Removed
        );
        assert!(std::fs::symlink_metadata(base.as_path().join("leaf")).is_err());
        assert_eq!(std::fs::read(outside.join("claim/precious")).unwrap(), b"x");
    }

    #[test]
    fn removes_deep_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        HostFilesystem
            .create_volume_dir(&base, &vp("deep"), &settings(0o777))
            .unwrap();
        // Deeper than PATH_MAX allows by name, built relative to each level.
        let mut fd = open_base(&base).unwrap();
        fd = rustix::fs::openat(
            &fd,
            "deep",
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        for _ in 0..600 {
            rustix::fs::mkdirat(&fd, "level-of-a-deep-tree", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(
                &fd,
                "level-of-a-deep-tree",
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
        }
        drop(fd);
        assert_eq!(
            HostFilesystem
                .remove_volume_dir(&base, &vp("deep"))
                .unwrap(),
            Removed::Removed
        );
        assert!(!base.as_path().join("deep").exists());
    }

    #[test]
    fn free_space_of_a_missing_base_is_its_ancestors() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = BasePath::parse(tmp.path().to_str().unwrap()).unwrap();
        let missing = base_in(&tmp, "not/yet/created");
        let stat = rustix::fs::statvfs(tmp.path()).unwrap();
        let available = HostFilesystem.available_bytes(&existing).unwrap();
        assert!(available <= stat.f_blocks * stat.f_frsize);
        // Both measure the same filesystem; allow for other writers in between.
        let of_missing = HostFilesystem.available_bytes(&missing).unwrap();
        assert!(
            of_missing.abs_diff(available) < 64 << 20,
            "{of_missing} vs {available}"
        );
        assert!(
            !missing.as_path().exists(),
            "measuring must not create the base"
        );
    }

    #[test]
    fn markers_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let fs = HostFilesystem;
        assert_eq!(fs.read_marker(&base, "pvc-1").unwrap(), None);
        fs.write_marker(&base, "pvc-1", &vp("ns/claim/data"))
            .unwrap();
        assert_eq!(
            fs.read_marker(&base, "pvc-1").unwrap(),
            Some(vp("ns/claim/data"))
        );
        fs.write_marker(&base, "pvc-1", &vp("other")).unwrap();
        assert_eq!(fs.read_marker(&base, "pvc-1").unwrap(), Some(vp("other")));
        assert_eq!(
            mode_of(&base.as_path().join(MARKER_DIR)),
            0o700 & !current_umask()
        );
        fs.remove_marker(&base, "pvc-1").unwrap();
        fs.remove_marker(&base, "pvc-1").unwrap();
        assert_eq!(fs.read_marker(&base, "pvc-1").unwrap(), None);
        for bad in ["", "..", ".hidden", "a/b"] {
            assert!(matches!(
                fs.write_marker(&base, bad, &vp("x")),
                Err(FsError::BadVolumeName { .. })
            ));
        }
        std::fs::write(
            base.as_path().join(MARKER_DIR).join("pvc-2"),
            b"../escape\n",
        )
        .unwrap();
        assert!(matches!(
            fs.read_marker(&base, "pvc-2"),
            Err(FsError::BadMarker { .. })
        ));
    }

    #[test]
    fn a_symlinked_marker_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(base.as_path()).unwrap();
        symlink(&outside, base.as_path().join(MARKER_DIR)).unwrap();
        let result = HostFilesystem.write_marker(&base, "pvc-1", &vp("x"));
        assert!(matches!(result, Err(FsError::Symlink { .. })), "{result:?}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    fn current_umask() -> u32 {
        let old = rustix::process::umask(Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        old.bits()
    }

    /// A filesystem whose calls block until the test opens its gate.
    #[derive(Default)]
    struct StuckDisk {
        open: Mutex<bool>,
        opened: Condvar,
        entered: AtomicUsize,
    }

    impl StuckDisk {
        fn wait(&self) {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }

        fn release(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl VolumeFilesystem for Arc<StuckDisk> {
        fn create_volume_dir(
            &self,
            _: &BasePath,
            _: &VolumePath,
            _: &DirectorySettings,
        ) -> Result<Created, FsError> {
            self.wait();
            Ok(Created::New)
        }
        fn remove_volume_dir(&self, _: &BasePath, _: &VolumePath) -> Result<Removed, FsError> {
            self.wait();
            Ok(Removed::Removed)
        }
        fn available_bytes(&self, _: &BasePath) -> Result<u64, FsError> {
            self.wait();
            Ok(1)
        }
        fn write_marker(&self, _: &BasePath, _: &str, _: &VolumePath) -> Result<(), FsError> {
            self.wait();
            Ok(())
        }
        fn read_marker(&self, _: &BasePath, _: &str) -> Result<Option<VolumePath>, FsError> {
            self.wait();
            Ok(None)
        }
        fn remove_marker(&self, _: &BasePath, _: &str) -> Result<(), FsError> {
            self.wait();
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_disk_times_out_and_holds_only_its_own_slots() {
        let disk = Arc::new(StuckDisk::default());
        let fs = TimedFilesystem::with_limits(Arc::clone(&disk), Duration::from_millis(100), 1);
        let dead = BasePath::parse("/dead").unwrap();
        let other = BasePath::parse("/other").unwrap();

        let first = fs.create_volume_dir(&dead, &vp("v"), settings(0o777)).await;
        assert!(
            matches!(first, Err(FsError::Timeout { op: "mkdir", .. })),
            "{first:?}"
        );
        assert_eq!(disk.entered.load(Ordering::SeqCst), 1);

        // The only slot for /dead is still held by the hung call: the next call waits for
        // it, times out, and never reaches the disk.
        let second = fs.available_bytes(&dead).await;
        assert!(
            matches!(second, Err(FsError::Timeout { op: "statvfs", .. })),
            "{second:?}"
        );
        assert_eq!(disk.entered.load(Ordering::SeqCst), 1);

        // Another base path has its own slots.
        let elsewhere = fs.remove_volume_dir(&other, &vp("v")).await;
        assert!(
            matches!(elsewhere, Err(FsError::Timeout { .. })),
            "{elsewhere:?}"
        );
        assert_eq!(disk.entered.load(Ordering::SeqCst), 2);

        // Once the disk answers, the slots come back.
        disk.release();
        let mut answered = None;
        for _ in 0..50 {
            match fs.available_bytes(&dead).await {
                Ok(bytes) => {
                    answered = Some(bytes);
                    break;
                }
                Err(FsError::Timeout { .. }) => continue,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(answered, Some(1));
    }

    #[tokio::test]
    async fn timed_calls_reach_the_real_filesystem() {
        let tmp = tempfile::tempdir().unwrap();
        let base = base_in(&tmp, "disk");
        let fs = TimedFilesystem::new(HostFilesystem);
        assert_eq!(
            fs.create_volume_dir(&base, &vp("a/b"), settings(0o750))
                .await
                .unwrap(),
            Created::New
        );
        fs.write_marker(&base, "pvc-9", &vp("a/b")).await.unwrap();
        assert_eq!(
            fs.read_marker(&base, "pvc-9").await.unwrap(),
            Some(vp("a/b"))
        );
        assert!(fs.available_bytes(&base).await.unwrap() > 0);
        assert_eq!(
            fs.remove_volume_dir(&base, &vp("a/b")).await.unwrap(),
            Removed::Removed
        );
        fs.remove_marker(&base, "pvc-9").await.unwrap();
    }
}
