//! A real NFS server on loopback for tests: NFS-Ganesha with its VFS backend.
//!
//! [`NfsServer`] runs `scripts/nfs-ganesha-up.sh --foreground` as a child process on two
//! free 127.0.0.1 ports (NFS and MOUNT), exporting one or more local directories over
//! NFSv3. Dropping it kills the server (also when the test process dies, through
//! [`ChildProcess`]'s watchdog). It can be stopped and started again on the same ports, or
//! frozen with `SIGSTOP` to play a hung server.
//!
//! The exported directories' content *is* the share's content (VFS backend), so a test can
//! check what a client did by reading them, and a "mounted" provisioner can use them as its
//! mount point.
//!
//! **Root.** Ganesha needs root (its VFS backend uses `open_by_handle_at`, and NFSv3 needs
//! rpcbind on port 111). [`NfsServer::start_for_test`] returns `None` with a loud message
//! on stderr when the test does not run as root, so such tests skip instead of failing;
//! every other failure is an error.
//!
//! **Several servers.** Only one rpcbind can own port 111. The script starts one for the
//! whole machine (under a lock) and never stops it; each server gets its own ports and
//! state directory, so any number of servers (and tests) run in parallel. Clients must use
//! the explicit ports ([`NfsServer::nfs_port`], [`NfsServer::mount_port`]): the portmapper
//! only remembers the server that registered last. One server can also export several
//! directories ([`NfsServerBuilder::export`]).
//!
//! **Client paths.** By default clients mount an export by its real absolute path. A real
//! server usually publishes its share under a short name instead (`server:/shared`);
//! [`NfsServerBuilder::export_as`] does the same, over NFSv4 and NFSv3 alike, and
//! [`NfsServer::client_path`] tells which path clients mount.
//!
//! The packages (`nfs-ganesha`, `nfs-ganesha-vfs`, `rpcbind`) are installed by
//! `scripts/install-test-deps.sh`, which the start script runs when they are missing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testenv::nfs::NfsServerError> {
//! use testenv::nfs::NfsServer;
//!
//! let export = tempfile::tempdir().unwrap();
//! let Some(mut server) = NfsServer::start_for_test("demo", export.path()).await else {
//!     return Ok(()); // not root: skipped, with a message
//! };
//! println!("NFSv3 on 127.0.0.1:{} (mount port {})", server.nfs_port(), server.mount_port());
//! server.stop();
//! server.restart().await?;
//! # Ok(()) }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, ProcessError};

/// The start script, relative to this crate.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/nfs-ganesha-up.sh");

/// How long a server may take to answer after starting.
pub const DEFAULT_NFS_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts to start a server that dies before it is ready (see `spawn_retrying`).
const START_ATTEMPTS: usize = 3;

/// Failure to start or control an [`NfsServer`].
#[derive(Debug, thiserror::Error)]
pub enum NfsServerError {
    /// Not running as root.
    #[error(
        "NFS-Ganesha needs root (its VFS backend and rpcbind on port 111); running as uid {uid}"
    )]
    NotRoot {
        /// The effective user id.
        uid: u32,
    },
    /// No directory to export was given.
    #[error("an NFS server needs at least one directory to export")]
    NoExport,
    /// An export cannot be served as asked.
    #[error("cannot export {}: {reason}", export.display())]
    InvalidExport {
        /// The exported directory.
        export: PathBuf,
        /// Why.
        reason: String,
    },
    /// A local I/O step failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server process could not be started.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The server exited or did not answer in time.
    #[error("NFS-Ganesha did not start: {reason}\n--- last lines of its output ---\n{log}")]
    NotReady {
        /// What went wrong.
        reason: String,
        /// The end of the script's output and Ganesha's log.
        log: String,
    },
    /// Sending a signal failed.
    #[error("sending {signal} to NFS-Ganesha (pid {pid}) failed")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// The server's pid.
        pid: u32,
    },
}

/// Whether root is squashed on the exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Squash {
    /// `No_Root_Squash`: root may chown and chmod (the default).
    #[default]
    None,
    /// `Root_Squash`: root acts as `nobody`, as on a default kernel NFS export.
    Root,
}

/// Settings for an [`NfsServer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct NfsServerBuilder {
    exports: Vec<ExportSpec>,
    squash: Squash,
    start_timeout: Duration,
}

impl NfsServerBuilder {
    /// Adds a directory to export (created if missing); clients mount it by its absolute
    /// path.
    pub fn export(mut self, directory: impl Into<PathBuf>) -> Self {
        self.exports.push(ExportSpec {
            directory: directory.into(),
            client_path: None,
        });
        self
    }

    /// Adds a directory to export (created if missing) that clients mount as
    /// `client_path`, an absolute path such as `/shared`, whatever the directory's real
    /// path is.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), testenv::nfs::NfsServerError> {
    /// use testenv::nfs::NfsServer;
    ///
    /// let share = tempfile::tempdir().unwrap();
    /// let server = NfsServer::builder().export_as(share.path(), "/shared").start().await?;
    /// assert_eq!(server.client_path(0), "/shared");
    /// assert_eq!(server.export(), share.path().canonicalize().unwrap());
    /// # Ok(()) }
    /// ```
    pub fn export_as(
        mut self,
        directory: impl Into<PathBuf>,
        client_path: impl Into<String>,
    ) -> Self {
        self.exports.push(ExportSpec {
            directory: directory.into(),
            client_path: Some(client_path.into()),
        });
        self
    }

    /// Sets root squashing for every export.
    pub fn squash(mut self, squash: Squash) -> Self {
        self.squash = squash;
        self
    }

    /// Sets how long the server may take to answer.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the server on free ports.
    pub async fn start(self) -> Result<NfsServer, NfsServerError> {
        if self.exports.is_empty() {
            return Err(NfsServerError::NoExport);
        }
        let uid = effective_uid()?;
        if uid != 0 {
            return Err(NfsServerError::NotRoot { uid });
        }
        let state = tempfile::Builder::new()
            .prefix("nfs-ganesha-")
            .tempdir()
            .map_err(|source| io("creating the server's state directory", source))?;
        let mut exports = Vec::with_capacity(self.exports.len());
        for spec in &self.exports {
            let export = &spec.directory;
            std::fs::create_dir_all(export)
                .map_err(|source| io(&format!("creating {}", export.display()), source))?;
            let directory = export
                .canonicalize()
                .map_err(|source| io(&format!("resolving {}", export.display()), source))?;
            exports.push((directory, spec.client_path.clone()));
        }
        let (exports, client_paths) = resolve_client_paths(exports)?;
        let mut server = NfsServer {
            exports,
            client_paths,
            squash: self.squash,
            start_timeout: self.start_timeout,
            nfs_port: 0,
            mount_port: 0,
            state,
            process: None,
        };
        server
            .spawn_retrying(|server| {
                (server.nfs_port, server.mount_port) = free_port_pair()?;
                Ok(())
            })
            .await?;
        Ok(server)
    }
}

/// One export as asked for: a directory and, optionally, the path clients mount it as.
#[derive(Debug, Clone)]
struct ExportSpec {
    directory: PathBuf,
    client_path: Option<String>,
}

/// Splits resolved exports (absolute directories with optional client paths) into the
/// directories and the paths clients mount, checking the script can express them: it
/// takes `DIRECTORY=CLIENT_PATH`, so a directory must be UTF-8 without `=`, and a client
/// path absolute, without `"` (it is quoted in ganesha.conf) and unique.
fn resolve_client_paths(
    exports: Vec<(PathBuf, Option<String>)>,
) -> Result<(Vec<PathBuf>, Vec<String>), NfsServerError> {
    let invalid = |export: &Path, reason: &str| NfsServerError::InvalidExport {
        export: export.to_path_buf(),
        reason: reason.to_owned(),
    };
    let mut directories = Vec::with_capacity(exports.len());
    let mut client_paths: Vec<String> = Vec::with_capacity(exports.len());
    for (directory, client_path) in exports {
        let Some(real_path) = directory.to_str() else {
            return Err(invalid(&directory, "the path is not UTF-8"));
        };
        if real_path.contains('=') {
            return Err(invalid(&directory, "the path contains '='"));
        }
        let client_path = client_path.unwrap_or_else(|| real_path.to_owned());
        if !client_path.starts_with('/') {
            return Err(invalid(&directory, "the client path is not absolute"));
        }
        if client_path.contains('"') {
            return Err(invalid(&directory, "the client path contains '\"'"));
        }
        if client_paths.contains(&client_path) {
            return Err(invalid(
                &directory,
                "another export has the same client path",
            ));
        }
        directories.push(directory);
        client_paths.push(client_path);
    }
    Ok((directories, client_paths))
}

/// A running NFS-Ganesha exporting directories on 127.0.0.1. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct NfsServer {
    exports: Vec<PathBuf>,
    /// The path clients mount, per export (same order).
    client_paths: Vec<String>,
    squash: Squash,
    start_timeout: Duration,
    nfs_port: u16,
    mount_port: u16,
    state: tempfile::TempDir,
    process: Option<ChildProcess>,
}

impl NfsServer {
    /// Settings for a server; add at least one export.
    pub fn builder() -> NfsServerBuilder {
        NfsServerBuilder {
            exports: Vec::new(),
            squash: Squash::None,
            start_timeout: DEFAULT_NFS_START_TIMEOUT,
        }
    }

    /// Starts a server exporting `directory` with root not squashed.
    pub async fn start(directory: impl Into<PathBuf>) -> Result<Self, NfsServerError> {
        Self::builder().export(directory).start().await
    }

    /// Starts a server for test `test`, or returns `None` after printing a loud notice
    /// when not running as root. Panics on any other failure: a test that can run must
    /// not silently pass.
    pub async fn start_for_test(test: &str, directory: impl Into<PathBuf>) -> Option<Self> {
        Self::builder().export(directory).start_for_test(test).await
    }

    /// The address the server listens on.
    pub fn address(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The NFS port.
    pub fn nfs_port(&self) -> u16 {
        self.nfs_port
    }

    /// The MOUNT port.
    pub fn mount_port(&self) -> u16 {
        self.mount_port
    }

    /// The exported directories (absolute, canonical): where the shares' content lives
    /// on this machine. Clients mount them as [`Self::client_paths`].
    pub fn exports(&self) -> &[PathBuf] {
        &self.exports
    }

    /// The first exported directory.
    pub fn export(&self) -> &Path {
        &self.exports[0]
    }

    /// The paths clients mount, one per export in the order of [`Self::exports`]: the
    /// path given to [`NfsServerBuilder::export_as`], else the directory's absolute path.
    pub fn client_paths(&self) -> &[String] {
        &self.client_paths
    }

    /// The path clients mount export `index` (0 for the first export) as.
    ///
    /// # Panics
    ///
    /// When there is no export `index`.
    pub fn client_path(&self, index: usize) -> &str {
        &self.client_paths[index]
    }

    /// The root squashing of the exports.
    pub fn squash(&self) -> Squash {
        self.squash
    }

    /// Whether the server process is alive (it may be paused).
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.try_exit_status().is_none())
    }

    /// The last `lines` lines of the script's output and of Ganesha's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let output = self
            .process
            .as_ref()
            .map(|process| process.log_tail(lines))
            .unwrap_or_default();
        let log =
            std::fs::read_to_string(self.state.path().join("ganesha.log")).unwrap_or_default();
        let log_lines: Vec<&str> = log.lines().collect();
        let start = log_lines.len().saturating_sub(lines);
        format!(
            "{output}\n--- ganesha.log ---\n{}",
            log_lines[start..].join("\n")
        )
    }

    /// Kills the server (an NFS server crash or shutdown). Clients get connection errors
    /// until [`Self::restart`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server again on the same ports with the same exports.
    pub async fn restart(&mut self) -> Result<(), NfsServerError> {
        self.stop();
        self.spawn_retrying(|_| Ok(())).await
    }

    /// Freezes the server with `SIGSTOP`: connections are still accepted by the kernel but
    /// nothing is ever answered, like a hung server. Undo with [`Self::resume`].
    pub fn pause(&self) -> Result<(), NfsServerError> {
        self.signal("STOP")
    }

    /// Lets a [paused](Self::pause) server run again.
    pub fn resume(&self) -> Result<(), NfsServerError> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &'static str) -> Result<(), NfsServerError> {
        let pid = self.process.as_ref().map_or(0, ChildProcess::pid);
        let sent = pid != 0
            && Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .is_ok_and(|status| status.success());
        if sent {
            Ok(())
        } else {
            Err(NfsServerError::Signal { signal, pid })
        }
    }

    /// [`Self::spawn_and_wait`], tried up to [`START_ATTEMPTS`] times while the server dies
    /// before it is ready; `prepare` runs before each attempt (a first start picks fresh
    /// ports there, a restart keeps its own).
    ///
    /// Two causes are transient: a port taken by someone else between choosing and binding
    /// it, and Ganesha's registration with the one shared rpcbind colliding with another
    /// server starting at the same moment ("Cannot register NFS V3").
    async fn spawn_retrying(
        &mut self,
        mut prepare: impl FnMut(&mut Self) -> Result<(), NfsServerError>,
    ) -> Result<(), NfsServerError> {
        let mut attempt = 1;
        loop {
            prepare(self)?;
            match self.spawn_and_wait().await {
                Err(NfsServerError::NotReady { .. }) if attempt < START_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), NfsServerError> {
        let mut command = Command::new("bash");
        command
            .arg(SCRIPT)
            .arg("--foreground")
            .arg("--state")
            .arg(self.state.path())
            .arg("--squash")
            .arg(match self.squash {
                Squash::None => "none",
                Squash::Root => "root",
            })
            .arg("--")
            .args(
                self.exports
                    .iter()
                    .zip(&self.client_paths)
                    .map(|(directory, client_path)| {
                        format!("{}={client_path}", directory.display())
                    }),
            )
            .env("NFS_PORT", self.nfs_port.to_string())
            .env("MNT_PORT", self.mount_port.to_string());
        let log = self.state.path().join("script.log");
        self.process = Some(ChildProcess::spawn("nfs-ganesha", &mut command, &log)?);
        let deadline = Instant::now() + self.start_timeout;
        loop {
            if self.answers().await {
                return Ok(());
            }
            let reason = if !self.is_running() {
                Some("the server exited".to_owned())
            } else if Instant::now() >= deadline {
                Some(format!("not answering after {:?}", self.start_timeout))
            } else {
                None
            };
            if let Some(reason) = reason {
                let log = self.log_tail(30);
                self.stop();
                return Err(NfsServerError::NotReady { reason, log });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether Ganesha finished initialising and both ports accept connections.
    async fn answers(&self) -> bool {
        let initialized = std::fs::read_to_string(self.state.path().join("ganesha.log"))
            .is_ok_and(|log| log.contains("NFS SERVER INITIALIZED"));
        initialized && accepts(self.nfs_port).await && accepts(self.mount_port).await
    }
}

impl NfsServerBuilder {
    /// [`NfsServerBuilder::start`], or `None` with a loud notice when not running as root.
    /// Panics on any other failure.
    pub async fn start_for_test(self, test: &str) -> Option<NfsServer> {
        match self.start().await {
            Ok(server) => Some(server),
            Err(NfsServerError::NotRoot { uid }) => {
                eprintln!(
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                     !!! SKIPPED {test}: it needs a real NFS server (NFS-Ganesha), which\n\
                     !!! needs root; this test runs as uid {uid}. Run the tests as root.\n\
                     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                );
                None
            }
            Err(error) => panic!("{test}: cannot start the NFS test server: {error}"),
        }
    }
}

async fn accepts(port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// Two ports that were free a moment ago (another process may take one meanwhile; the
/// caller retries with new ports then).
fn free_port_pair() -> Result<(u16, u16), NfsServerError> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| {
                listener
                    .local_addr()
                    .map(|address| (listener, address.port()))
            })
            .map_err(|source| io("finding a free port", source))
    };
    let (_first, nfs_port) = bind()?;
    let (_second, mount_port) = bind()?;
    Ok((nfs_port, mount_port))
}

/// The effective uid, from `/proc/self/status` (no libc needed).
fn effective_uid() -> Result<u32, NfsServerError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|source| io("reading /proc/self/status", source))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| {
            io(
                "reading the effective uid",
                std::io::ErrorKind::InvalidData.into(),
            )
        })
}

fn io(what: &str, source: std::io::Error) -> NfsServerError {
    NfsServerError::Io {
        what: what.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_matches_the_process() {
        let uid = effective_uid().unwrap();
        let expected: u32 =
            String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
        assert_eq!(uid, expected);
    }

    #[test]
    fn free_ports_differ() {
        let (nfs, mount) = free_port_pair().unwrap();
        assert_ne!(nfs, mount);
    }

    #[tokio::test]
    async fn serves_stops_pauses_and_restarts() {
        let export = tempfile::tempdir().unwrap();
        let Some(mut server) =
            NfsServer::start_for_test("serves_stops_pauses_and_restarts", export.path()).await
        else {
            return;
        };
        assert!(server.is_running());
        assert!(accepts(server.nfs_port()).await);
        assert_eq!(server.export(), export.path().canonicalize().unwrap());

        server.stop();
        assert!(!server.is_running());
        assert!(!accepts(server.nfs_port()).await);

        server.restart().await.unwrap();
        assert!(server.is_running());
        server.pause().unwrap();
        assert!(server.is_running(), "a paused server is alive");
        server.resume().unwrap();
        assert!(server.answers().await);
    }

    fn mk_export(directory: &str, client_path: Option<&str>) -> (PathBuf, Option<String>) {
        (PathBuf::from(directory), client_path.map(str::to_owned))
    }

    #[test]
    fn client_paths_default_to_the_directory() {
        let (directories, client_paths) = resolve_client_paths(vec![
            mk_export("/tmp/a/export", None),
            mk_export("/tmp/b/export", Some("/shared")),
        ])
        .unwrap();
        assert_eq!(
            directories,
            [
                PathBuf::from("/tmp/a/export"),
                PathBuf::from("/tmp/b/export")
            ]
        );
        assert_eq!(client_paths, ["/tmp/a/export", "/shared"]);
    }

    #[test]
    fn client_paths_the_script_cannot_express_are_refused() {
        for (exports, reason) in [
            (vec![mk_export("/tmp/a=b", None)], "contains '='"),
            (vec![mk_export("/tmp/a", Some("shared"))], "not absolute"),
            (
                vec![mk_export("/tmp/a", Some("/sha\"red"))],
                "contains '\"'",
            ),
            (
                vec![
                    mk_export("/tmp/a", Some("/shared")),
                    mk_export("/tmp/b", Some("/shared")),
                ],
                "same client path",
            ),
            (
                vec![
                    mk_export("/tmp/a", None),
                    mk_export("/tmp/b", Some("/tmp/a")),
                ],
                "same client path",
            ),
        ] {
            let error = resolve_client_paths(exports.clone()).unwrap_err();
            assert!(
                matches!(&error, NfsServerError::InvalidExport { reason: r, .. } if r.contains(reason)),
                "{exports:?}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn publishes_an_export_under_its_client_path() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let Some(server) = NfsServer::builder()
            .export(a.path())
            .export_as(b.path(), "/shared")
            .start_for_test("publishes_an_export_under_its_client_path")
            .await
        else {
            return;
        };
        assert_eq!(
            server.exports(),
            [
                a.path().canonicalize().unwrap(),
                b.path().canonicalize().unwrap()
            ]
        );
        let real_a = a.path().canonicalize().unwrap();
        assert_eq!(server.client_paths(), [real_a.to_str().unwrap(), "/shared"]);
        assert_eq!(server.client_path(1), "/shared");
        // Ganesha accepted the pseudo path; mounting it is covered by provisioner-bin's
        // nfs_e2e seed-scenario test, which has an NFSv3 client.
        let config = std::fs::read_to_string(server.state.path().join("ganesha.conf")).unwrap();
        assert!(config.contains("Pseudo = \"/shared\";"), "{config}");
        assert!(config.contains("Mount_Path_Pseudo = true;"), "{config}");
        assert!(server.answers().await);
    }

    #[tokio::test]
    async fn several_servers_run_side_by_side() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let Some(first) =
            NfsServer::start_for_test("several_servers_run_side_by_side", a.path()).await
        else {
            return;
        };
        let second = NfsServer::builder()
            .export(b.path().join("one"))
            .export(b.path().join("two"))
            .start()
            .await
            .unwrap();
        assert_ne!(first.nfs_port(), second.nfs_port());
        assert_eq!(second.exports().len(), 2);
        assert!(first.answers().await && second.answers().await);
    }
}
