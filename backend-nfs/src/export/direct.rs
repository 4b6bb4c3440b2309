//! [`DirectExport`]: the export reached with a userspace NFSv3 client (`nfs3_client`), so
//! the provisioner needs no mount, no privileges to mount, and can serve any number of
//! servers and shares.
//!
//! Paths are resolved one LOOKUP at a time from the export's root handle; a component
//! whose attributes say it is a symbolic link is refused (the server never follows links
//! in LOOKUP, only a client would). Every operation, connecting included, runs under one
//! timeout; when it expires the connection is dropped, so a hung server costs a timeout
//! error and a new connection later, never a stuck caller.
//!
//! Connections are kept in a small pool and reused while they are healthy. By default
//! they come from a privileged source port (300–1023), which kernel nfsd's default
//! `secure` export option requires; binding one needs root or `CAP_NET_BIND_SERVICE`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nfs3_client::nfs3_types::nfs3::{
    FSSTAT3args, GETATTR3args, LOOKUP3args, MKDIR3args, Nfs3Option, Nfs3Result, READDIRPLUS3args,
    REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args, cookieverf3, diropargs3, fattr3, filename3,
    ftype3, nfs_fh3, nfsstat3, sattr3,
};
use nfs3_client::nfs3_types::rpc::{auth_stat, auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{ConnectError, MountError, Nfs3Client, Nfs3ConnectionBuilder, RpcError};
use provisioner_core::volume_path::VolumePath;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;

use super::{
    Creation, DirectoryAttributes, DirectoryStatus, ErrorContext, Export, ExportError, FsStats,
    Operation, Removal,
};

/// Mode of parent directories the provisioner creates (nested patterns).
const PARENT_MODE: u32 = 0o755;

/// Idle connections kept per export.
const MAX_IDLE_CONNECTIONS: usize = 4;

/// A pooled connection idle longer than this is checked before it is used again.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// READDIRPLUS sizes: directory-entry bytes and total reply bytes per call.
const READDIR_DIRCOUNT: u32 = 16 * 1024;
const READDIR_MAXCOUNT: u32 = 64 * 1024;

/// How to reach one NFS export directly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectConfig {
    /// The server: an IP address or a host name (resolved on each connect).
    pub server: String,
    /// The exported path to mount (`/srv/nfs`).
    pub share: String,
    /// NFS port; asked from the server's portmapper when `None`.
    pub nfs_port: Option<u16>,
    /// MOUNT port; asked from the server's portmapper when `None`.
    pub mount_port: Option<u16>,
    /// The portmapper's port (111).
    pub portmapper_port: u16,
    /// Connect from a privileged source port, as `secure` exports require.
    pub privileged_source_port: bool,
    /// User id the client presents (AUTH_SYS). Root (0) by default, like a mount by root.
    pub uid: u32,
    /// Group id the client presents.
    pub gid: u32,
    /// Time limit of one operation, connecting included.
    pub timeout: Duration,
}

impl DirectConfig {
    /// `server:share` with the defaults: ports from the portmapper, privileged source port,
    /// root credentials, [`super::DEFAULT_OPERATION_TIMEOUT`].
    pub fn new(server: impl Into<String>, share: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            share: share.into(),
            nfs_port: None,
            mount_port: None,
            portmapper_port: nfs3_client::nfs3_types::portmap::PMAP_PORT,
            privileged_source_port: true,
            uid: 0,
            gid: 0,
            timeout: super::DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Uses these NFS and MOUNT ports instead of asking the portmapper.
    #[must_use]
    pub fn with_ports(mut self, nfs_port: u16, mount_port: u16) -> Self {
        self.nfs_port = Some(nfs_port);
        self.mount_port = Some(mount_port);
        self
    }

    /// Sets the time limit of one operation.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects from an unprivileged source port (for exports marked `insecure`, or when
    /// the provisioner may not bind ports below 1024).
    #[must_use]
    pub fn with_privileged_source_port(mut self, privileged: bool) -> Self {
        self.privileged_source_port = privileged;
        self
    }

    /// Presents these credentials to the server.
    #[must_use]
    pub fn with_credentials(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

type Client = Nfs3Client<Stream>;

/// TCP for `nfs3_client` that reports a connection closed by the server as an error.
/// (`nfs3_client`'s read loop counts a 0-byte read as progress, so with its own Tokio
/// wrapper a server that closed the connection — restarted, or dropping idle clients —
/// makes the caller spin until the operation times out.)
struct Connector;

/// A TCP stream to the server; see [`Connector`].
struct Stream(TcpStream);

impl nfs3_client::net::Connector for Connector {
    type Connection = Stream;

    async fn connect(&self, address: SocketAddr) -> std::io::Result<Stream> {
        TcpStream::connect(address).await.map(Stream)
    }

    async fn connect_with_port(
        &self,
        address: SocketAddr,
        local_port: u16,
    ) -> std::io::Result<Stream> {
        let (socket, any) = match address {
            SocketAddr::V4(_) => (TcpSocket::new_v4()?, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (TcpSocket::new_v6()?, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        socket.bind(SocketAddr::new(any, local_port))?;
        socket.connect(address).await.map(Stream)
    }
}

impl nfs3_client::io::AsyncRead for Stream {
    async fn async_read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buffer).await? {
            0 if !buffer.is_empty() => Err(std::io::ErrorKind::UnexpectedEof.into()),
            read => Ok(read),
        }
    }
}

impl nfs3_client::io::AsyncWrite for Stream {
    async fn async_write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buffer).await? {
            0 if !buffer.is_empty() => Err(std::io::ErrorKind::WriteZero.into()),
            written => Ok(written),
        }
    }
}

/// One mounted connection: the NFS client and the export's root handle.
struct Connection {
    client: Client,
    root: nfs_fh3,
    last_used: Instant,
}

/// An NFS export reached over the network with a userspace NFSv3 client.
///
/// ```no_run
/// use std::time::Duration;
/// use backend_nfs::export::{DirectConfig, DirectExport, Export};
///
/// # async fn demo() -> Result<(), backend_nfs::export::ExportError> {
/// let config = DirectConfig::new("127.0.0.1", "/srv/nfs")
///     .with_ports(20490, 20048)
///     .with_timeout(Duration::from_secs(10));
/// let export = DirectExport::new(config);
/// let stats = export.fs_stats().await?;
/// println!("{} bytes free", stats.available_bytes);
/// # Ok(())
/// # }
/// ```
pub struct DirectExport {
    config: DirectConfig,
    location: String,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for DirectExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectExport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DirectExport {
    /// An export client; it connects lazily, on the first operation.
    pub fn new(config: DirectConfig) -> Self {
        let location = format!("{}:{} (direct)", config.server, config.share);
        Self {
            config,
            location,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DirectConfig {
        &self.config
    }

    /// Runs one operation on a pooled or new connection, under the timeout. The
    /// connection goes back to the pool only if the operation left it healthy.
    async fn run<T>(
        &self,
        operation: Operation,
        path: &str,
        body: impl for<'s> AsyncFnOnce(&'s mut Session<'_>) -> Result<T, ExportError>,
    ) -> Result<T, ExportError> {
        let context = ErrorContext::new(&self.location, operation, path);
        let work = async {
            let connection = self.checkout(&context).await?;
            let mut session = Session {
                connection,
                context: &context,
                root_squash_likely: self.config.uid == 0,
                healthy: true,
            };
            let result = body(&mut session).await;
            if session.healthy {
                session.connection.last_used = Instant::now();
                self.checkin(session.connection).await;
            }
            result
        };
        match tokio::time::timeout(self.config.timeout, work).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ExportError::TimedOut {
                context,
                timeout: self.config.timeout,
            }),
        }
    }

    /// A pooled connection, or a new one. A connection idle for a while may have died
    /// with a server restart; it is checked with a NULL call first and replaced if dead,
    /// so a restart between operations costs no failed operation.
    async fn checkout(&self, context: &ErrorContext) -> Result<Connection, ExportError> {
        loop {
            let Some(mut connection) = self.idle.lock().await.pop() else {
                return self.connect(context).await;
            };
            if connection.last_used.elapsed() < IDLE_CHECK_AFTER
                || connection.client.null().await.is_ok()
            {
                return Ok(connection);
            }
        }
    }

    async fn checkin(&self, connection: Connection) {
        let mut idle = self.idle.lock().await;
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(connection);
        }
    }

    async fn connect(&self, context: &ErrorContext) -> Result<Connection, ExportError> {
        let mut connect_context = context.clone();
        connect_context.operation = Operation::Connect;
        let unreachable = |reason: String| ExportError::Unreachable {
            context: connect_context.clone(),
            reason,
        };
        let address = resolve(&self.config.server).await.map_err(|error| {
            unreachable(format!("cannot resolve {}: {error}", self.config.server))
        })?;
        let credential = opaque_auth::auth_unix(&auth_unix {
            stamp: 0,
            machinename: Opaque::borrowed(b"provisioner"),
            uid: self.config.uid,
            gid: self.config.gid,
            gids: vec![self.config.gid],
        });
        let mut builder =
            Nfs3ConnectionBuilder::new(Connector, address.to_string(), &self.config.share)
                .portmapper_port(self.config.portmapper_port)
                .connect_from_privileged_port(self.config.privileged_source_port)
                .credential(credential);
        if let Some(port) = self.config.mount_port {
            builder = builder.mount_port(port);
        }
        if let Some(port) = self.config.nfs_port {
            builder = builder.nfs3_port(port);
        }
        let connection = builder
            .mount()
            .await
            .map_err(|error| self.connect_error(&connect_context, error))?;
        let root = connection.root_nfs_fh3();
        Ok(Connection {
            // The MOUNT connection is not needed after the root handle is known.
            client: connection.into_nfs3_client(),
            root,
            last_used: Instant::now(),
        })
    }

    fn connect_error(&self, context: &ErrorContext, error: ConnectError) -> ExportError {
        let context = context.clone();
        match error {
            ConnectError::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                ExportError::Refused {
                    context,
                    reason: format!(
                        "cannot bind a privileged source port ({io}); run as root or with \
                     CAP_NET_BIND_SERVICE, or turn privileged source ports off for `insecure` exports"
                    ),
                }
            }
            ConnectError::Io(io) => ExportError::Unreachable {
                context,
                reason: io.to_string(),
            },
            ConnectError::Portmap(error) => ExportError::Unreachable {
                context,
                reason: format!("portmapper: {error}"),
            },
            ConnectError::Mount(MountError::Denied(status)) => ExportError::Refused {
                context,
                reason: format!(
                    "MOUNT of {:?} denied with {status}; is it exported to this client?",
                    self.config.share
                ),
            },
            ConnectError::Mount(MountError::Rpc(error)) => rpc_error(context, error),
        }
    }
}

async fn resolve(server: &str) -> std::io::Result<IpAddr> {
    if let Ok(address) = server.parse::<IpAddr>() {
        return Ok(address);
    }
    tokio::net::lookup_host((server, 0))
        .await?
        .next()
        .map(|address| address.ip())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

fn rpc_error(context: ErrorContext, error: RpcError) -> ExportError {
    match error {
        RpcError::Io(io) => ExportError::Unreachable {
            context,
            reason: format!("connection lost: {io}"),
        },
        RpcError::Auth(auth_stat::AUTH_TOOWEAK) => ExportError::Refused {
            context,
            reason: "authentication too weak: the export requires a privileged source port \
                     (`secure`); turn privileged source ports on"
                .to_owned(),
        },
        RpcError::Auth(status) => ExportError::Refused {
            context,
            reason: format!("RPC authentication failed: {status}"),
        },
        other => ExportError::Nfs {
            context,
            status: format!("RPC error: {other}"),
        },
    }
}

#[async_trait]
impl Export for DirectExport {
    fn location(&self) -> &str {
        &self.location
    }

    async fn create_dir_all(
        &self,
        directory: &VolumePath,
        attributes: DirectoryAttributes,
    ) -> Result<Creation, ExportError> {
        self.run(
            Operation::CreateDirectory,
            &directory.to_string(),
            async |session| session.create_dir_all(directory, attributes).await,
        )
        .await
    }

    async fn status(&self, directory: &VolumePath) -> Result<Option<DirectoryStatus>, ExportError> {
        self.run(Operation::Lookup, &directory.to_string(), async |session| {
            let Some(parent) = session.walk_optional(directory, 1).await? else {
                return Ok(None);
            };
            let Some((_, attributes)) = session.lookup(&parent, directory.leaf()).await? else {
                return Ok(None);
            };
            session.expect_directory(&attributes, &directory.to_string())?;
            Ok(Some(DirectoryStatus {
                mode: attributes.mode & 0o7777,
                uid: attributes.uid,
                gid: attributes.gid,
            }))
        })
        .await
    }

    async fn rename_no_replace(
        &self,
        from: &VolumePath,
        to: &VolumePath,
    ) -> Result<(), ExportError> {
        self.run(
            Operation::Rename,
            &format!("{from} -> {to}"),
            async |session| {
                let from_parent = session.walk(from, 1).await?;
                let Some((_, attributes)) = session.lookup(&from_parent, from.leaf()).await? else {
                    return Err(ExportError::NotFound {
                        context: session.context.clone(),
                    });
                };
                session.expect_directory(&attributes, &from.to_string())?;
                let to_parent = session.walk(to, 1).await?;
                // NFS RENAME replaces an empty target directory; check first (the only race is
                // a concurrent creation of `to`).
                if session.lookup(&to_parent, to.leaf()).await?.is_some() {
                    return Err(ExportError::AlreadyExists {
                        context: session.context.clone(),
                    });
                }
                session
                    .rename(&from_parent, from.leaf(), &to_parent, to.leaf())
                    .await
            },
        )
        .await
    }

    async fn remove_all(&self, directory: &VolumePath) -> Result<Removal, ExportError> {
        self.run(Operation::Remove, &directory.to_string(), async |session| {
            let Some(parent) = session.walk_optional(directory, 1).await? else {
                return Ok(Removal::AlreadyGone);
            };
            let Some((handle, attributes)) = session.lookup(&parent, directory.leaf()).await?
            else {
                return Ok(Removal::AlreadyGone);
            };
            session.expect_directory(&attributes, &directory.to_string())?;
            session
                .remove_tree(parent, directory.leaf().as_bytes().to_vec(), handle)
                .await?;
            Ok(Removal::Removed)
        })
        .await
    }

    async fn remove_if_empty(&self, directory: &VolumePath) -> Result<Removal, ExportError> {
        self.run(Operation::Remove, &directory.to_string(), async |session| {
            let Some(parent) = session.walk_optional(directory, 1).await? else {
                return Ok(Removal::AlreadyGone);
            };
            let Some((_, attributes)) = session.lookup(&parent, directory.leaf()).await? else {
                return Ok(Removal::AlreadyGone);
            };
            session.expect_directory(&attributes, &directory.to_string())?;
            match session.rmdir(&parent, directory.leaf().as_bytes()).await {
                Ok(()) => Ok(Removal::Removed),
                Err(Status::Nfs(nfsstat3::NFS3ERR_NOENT)) => Ok(Removal::AlreadyGone),
                Err(Status::Nfs(nfsstat3::NFS3ERR_NOTEMPTY | nfsstat3::NFS3ERR_EXIST)) => {
                    Ok(Removal::NotEmpty)
                }
                Err(status) => Err(session.fail(status)),
            }
        })
        .await
    }

    async fn fs_stats(&self) -> Result<FsStats, ExportError> {
        self.run(Operation::FsStat, "", async |session| {
            let root = session.connection.root.clone();
            let result = session
                .connection
                .client
                .fsstat(&FSSTAT3args { fsroot: root })
                .await;
            let reply = session.track(result)?;
            match reply {
                Nfs3Result::Ok(ok) => Ok(FsStats {
                    total_bytes: ok.tbytes,
                    free_bytes: ok.fbytes,
                    available_bytes: ok.abytes,
                }),
                Nfs3Result::Err((status, _)) => Err(session.fail(Status::Nfs(status))),
            }
        })
        .await
    }
}

/// An NFS-level failure inside a session, before it is turned into an [`ExportError`].
#[derive(Debug)]
enum Status {
    Nfs(nfsstat3),
    Export(ExportError),
}

/// One operation's use of a connection.
struct Session<'c> {
    connection: Connection,
    context: &'c ErrorContext,
    root_squash_likely: bool,
    /// Cleared when the transport failed, so the connection is not pooled again.
    healthy: bool,
}

impl Session<'_> {
    /// Records whether the connection survived an RPC and converts its error.
    fn track<T>(&mut self, result: Result<T, RpcError>) -> Result<T, ExportError> {
        result.map_err(|error| {
            if !error.is_connection_reusable() {
                self.healthy = false;
            }
            rpc_error(self.context.clone(), error)
        })
    }

    fn fail(&mut self, status: Status) -> ExportError {
        let context = self.context.clone();
        match status {
            Status::Export(error) => error,
            Status::Nfs(status) => {
                if matches!(
                    status,
                    nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE
                ) {
                    // The root handle may be stale (export re-created): mount afresh next time.
                    self.healthy = false;
                }
                match status {
                    nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_ACCES => {
                        ExportError::PermissionDenied {
                            context,
                            root_squash_likely: self.root_squash_likely,
                        }
                    }
                    nfsstat3::NFS3ERR_NOENT => ExportError::NotFound { context },
                    nfsstat3::NFS3ERR_EXIST => ExportError::AlreadyExists { context },
                    nfsstat3::NFS3ERR_NOTDIR => ExportError::NotADirectory {
                        component: context.path.clone(),
                        context,
                    },
                    nfsstat3::NFS3ERR_NOSPC | nfsstat3::NFS3ERR_DQUOT => {
                        ExportError::NoSpace { context }
                    }
                    nfsstat3::NFS3ERR_ROFS => ExportError::ReadOnly { context },
                    other => ExportError::Nfs {
                        context,
                        status: other.to_string(),
                    },
                }
            }
        }
    }

    fn expect_directory(&self, attributes: &fattr3, shown: &str) -> Result<(), ExportError> {
        match attributes.type_ {
            ftype3::NF3DIR => Ok(()),
            ftype3::NF3LNK => Err(ExportError::Symlink {
                context: self.context.clone(),
                component: shown.to_owned(),
            }),
            _ => Err(ExportError::NotADirectory {
                context: self.context.clone(),
                component: shown.to_owned(),
            }),
        }
    }

    async fn getattr(&mut self, handle: &nfs_fh3) -> Result<fattr3, Status> {
        let args = GETATTR3args {
            object: handle.clone(),
        };
        let result = self.connection.client.getattr(&args).await;
        match self.track(result).map_err(Status::Export)? {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
            Nfs3Result::Err((status, _)) => Err(Status::Nfs(status)),
        }
    }

    /// LOOKUP `name` in `directory`: its handle and attributes, or `None` if absent.
    async fn lookup(
        &mut self,
        directory: &nfs_fh3,
        name: &str,
    ) -> Result<Option<(nfs_fh3, fattr3)>, ExportError> {
        self.lookup_bytes(directory, name.as_bytes())
            .await
            .map_err(|status| self.fail(status))
    }

    async fn lookup_bytes(
        &mut self,
        directory: &nfs_fh3,
        name: &[u8],
    ) -> Result<Option<(nfs_fh3, fattr3)>, Status> {
        let args = LOOKUP3args {
            what: diropargs3 {
                dir: directory.clone(),
                name: filename3::from(name),
            },
        };
        let result = self.connection.client.lookup(&args).await;
        match self.track(result).map_err(Status::Export)? {
            Nfs3Result::Ok(ok) => {
                let attributes = match ok.obj_attributes {
                    Nfs3Option::Some(attributes) => attributes,
                    Nfs3Option::None => self.getattr(&ok.object).await?,
                };
                Ok(Some((ok.object, attributes)))
            }
            Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(None),
            Nfs3Result::Err((status, _)) => Err(Status::Nfs(status)),
        }
    }

    /// Walks `path` minus its last `skip` segments, refusing links and non-directories.
    async fn walk(&mut self, path: &VolumePath, skip: usize) -> Result<nfs_fh3, ExportError> {
        match self.walk_optional(path, skip).await? {
            Some(handle) => Ok(handle),
            None => Err(ExportError::NotFound {
                context: self.context.clone(),
            }),
        }
    }

    /// Like [`Self::walk`], with `None` when a component does not exist.
    async fn walk_optional(
        &mut self,
        path: &VolumePath,
        skip: usize,
    ) -> Result<Option<nfs_fh3>, ExportError> {
        let mut handle = self.connection.root.clone();
        let mut shown = String::new();
        for segment in path.segments().take(path.segments().len() - skip) {
            if !shown.is_empty() {
                shown.push('/');
            }
            shown.push_str(segment);
            let Some((child, attributes)) = self.lookup(&handle, segment).await? else {
                return Ok(None);
            };
            self.expect_directory(&attributes, &shown)?;
            handle = child;
        }
        Ok(Some(handle))
    }

    async fn mkdir(&mut self, directory: &nfs_fh3, name: &str, mode: u32) -> Result<bool, Status> {
        let args = MKDIR3args {
            where_: diropargs3 {
                dir: directory.clone(),
                name: filename3::from(name.as_bytes()),
            },
            attributes: sattr3 {
                mode: Nfs3Option::Some(mode),
                ..sattr3::default()
            },
        };
        let result = self.connection.client.mkdir(&args).await;
        match self.track(result).map_err(Status::Export)? {
            Nfs3Result::Ok(_) => Ok(true),
            Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => Ok(false),
            Nfs3Result::Err((status, _)) => Err(Status::Nfs(status)),
        }
    }

    async fn setattr(&mut self, handle: &nfs_fh3, attributes: sattr3) -> Result<(), ExportError> {
        let args = SETATTR3args {
            object: handle.clone(),
            new_attributes: attributes,
            guard: Nfs3Option::None,
        };
        let result = self.connection.client.setattr(&args).await;
        match self.track(result)? {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((status, _)) => Err(self.fail(Status::Nfs(status))),
        }
    }

    async fn create_dir_all(
        &mut self,
        directory: &VolumePath,
        attributes: DirectoryAttributes,
    ) -> Result<Creation, ExportError> {
        let mut handle = self.connection.root.clone();
        let mut shown = String::new();
        let last = directory.segments().len() - 1;
        let mut creation = Creation::AlreadyExisted;
        for (index, segment) in directory.segments().enumerate() {
            if !shown.is_empty() {
                shown.push('/');
            }
            shown.push_str(segment);
            let is_leaf = index == last;
            let initial_mode = if is_leaf {
                attributes.mode & 0o777
            } else {
                PARENT_MODE
            };
            let created = self
                .mkdir(&handle, segment, initial_mode)
                .await
                .map_err(|status| self.fail(status))?;
            let Some((child, child_attributes)) = self.lookup(&handle, segment).await? else {
                // Removed again between MKDIR and LOOKUP.
                return Err(ExportError::NotFound {
                    context: self.context.clone(),
                });
            };
            self.expect_directory(&child_attributes, &shown)?;
            if is_leaf {
                creation = if created {
                    Creation::Created
                } else {
                    Creation::AlreadyExisted
                };
                // Owner first, then the exact mode, as a local chown + chmod would.
                if attributes.uid.is_some() || attributes.gid.is_some() {
                    let owner = sattr3 {
                        uid: attributes.uid.map_or(Nfs3Option::None, Nfs3Option::Some),
                        gid: attributes.gid.map_or(Nfs3Option::None, Nfs3Option::Some),
                        ..sattr3::default()
                    };
                    self.setattr(&child, owner).await?;
                }
                let mode = sattr3 {
                    mode: Nfs3Option::Some(attributes.mode),
                    ..sattr3::default()
                };
                self.setattr(&child, mode).await?;
            } else if created && child_attributes.mode & 0o7777 != PARENT_MODE {
                let mode = sattr3 {
                    mode: Nfs3Option::Some(PARENT_MODE),
                    ..sattr3::default()
                };
                self.setattr(&child, mode).await?;
            }
            handle = child;
        }
        Ok(creation)
    }

    async fn rename(
        &mut self,
        from_dir: &nfs_fh3,
        from: &str,
        to_dir: &nfs_fh3,
        to: &str,
    ) -> Result<(), ExportError> {
        let args = RENAME3args {
            from: diropargs3 {
                dir: from_dir.clone(),
                name: filename3::from(from.as_bytes()),
            },
            to: diropargs3 {
                dir: to_dir.clone(),
                name: filename3::from(to.as_bytes()),
            },
        };
        let result = self.connection.client.rename(&args).await;
        match self.track(result)? {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST | nfsstat3::NFS3ERR_NOTEMPTY, _)) => {
                Err(ExportError::AlreadyExists {
                    context: self.context.clone(),
                })
            }
            Nfs3Result::Err((status, _)) => Err(self.fail(Status::Nfs(status))),
        }
    }

    async fn remove(&mut self, directory: &nfs_fh3, name: &[u8]) -> Result<(), Status> {
        let args = REMOVE3args {
            object: diropargs3 {
                dir: directory.clone(),
                name: filename3::from(name),
            },
        };
        let result = self.connection.client.remove(&args).await;
        match self.track(result).map_err(Status::Export)? {
            Nfs3Result::Ok(_) | Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(()),
            Nfs3Result::Err((status, _)) => Err(Status::Nfs(status)),
        }
    }

    async fn rmdir(&mut self, directory: &nfs_fh3, name: &[u8]) -> Result<(), Status> {
        let args = RMDIR3args {
            object: diropargs3 {
                dir: directory.clone(),
                name: filename3::from(name),
            },
        };
        let result = self.connection.client.rmdir(&args).await;
        match self.track(result).map_err(Status::Export)? {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((status, _)) => Err(Status::Nfs(status)),
        }
    }

    /// Every entry of a directory except `.` and `..`: name, type and handle (when the
    /// server sent one).
    async fn list(&mut self, directory: &nfs_fh3) -> Result<Vec<Entry>, Status> {
        let mut entries = Vec::new();
        let mut cookie = 0;
        let mut verifier = cookieverf3::default();
        loop {
            let args = READDIRPLUS3args {
                dir: directory.clone(),
                cookie,
                cookieverf: verifier,
                dircount: READDIR_DIRCOUNT,
                maxcount: READDIR_MAXCOUNT,
            };
            let result = self.connection.client.readdirplus(&args).await;
            let reply = match self.track(result).map_err(Status::Export)? {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((status, _)) => return Err(Status::Nfs(status)),
            };
            verifier = reply.cookieverf;
            let eof = reply.reply.eof;
            let batch = reply.reply.entries.into_inner();
            let progressed = !batch.is_empty();
            for entry in batch {
                cookie = entry.cookie;
                let name = entry.name.0.to_vec();
                if name == b"." || name == b".." {
                    continue;
                }
                entries.push(Entry {
                    name,
                    file_type: match entry.name_attributes {
                        Nfs3Option::Some(attributes) => Some(attributes.type_),
                        Nfs3Option::None => None,
                    },
                    handle: match entry.name_handle {
                        Nfs3Option::Some(handle) => Some(handle),
                        Nfs3Option::None => None,
                    },
                });
            }
            if eof || !progressed {
                return Ok(entries);
            }
        }
    }

    /// Removes directory `name` (handle `handle`) in `parent` depth-first, with an
    /// explicit stack; links are removed, never followed.
    async fn remove_tree(
        &mut self,
        parent: nfs_fh3,
        name: Vec<u8>,
        handle: nfs_fh3,
    ) -> Result<(), ExportError> {
        // (parent handle, name in parent, handle)
        let mut stack = vec![(parent, name, handle)];
        while let Some((_, _, directory)) = stack.last() {
            let directory = directory.clone();
            let entries = self
                .list(&directory)
                .await
                .map_err(|status| self.fail(status))?;
            let mut subdirectory = None;
            for entry in entries {
                let (file_type, entry_handle) = match (entry.file_type, entry.handle) {
                    (Some(file_type), handle) => (file_type, handle),
                    (None, _) => match self
                        .lookup_bytes(&directory, &entry.name)
                        .await
                        .map_err(|s| self.fail(s))?
                    {
                        Some((handle, attributes)) => (attributes.type_, Some(handle)),
                        None => continue,
                    },
                };
                if file_type == ftype3::NF3DIR {
                    subdirectory = Some((entry.name, entry_handle));
                    break;
                }
                self.remove(&directory, &entry.name)
                    .await
                    .map_err(|status| self.fail(status))?;
            }
            match subdirectory {
                Some((name, handle)) => {
                    let handle = match handle {
                        Some(handle) => handle,
                        None => match self
                            .lookup_bytes(&directory, &name)
                            .await
                            .map_err(|s| self.fail(s))?
                        {
                            Some((handle, _)) => handle,
                            None => continue,
                        },
                    };
                    stack.push((directory, name, handle));
                }
                None => {
                    let (parent, name, _) = stack.pop().expect("the loop saw a last element");
                    match self.rmdir(&parent, &name).await {
                        Ok(()) | Err(Status::Nfs(nfsstat3::NFS3ERR_NOENT)) => {}
                        // Something was created meanwhile: go round again.
                        Err(Status::Nfs(nfsstat3::NFS3ERR_NOTEMPTY | nfsstat3::NFS3ERR_EXIST)) => {
                            stack.push((parent, name, directory));
                        }
                        Err(status) => return Err(self.fail(status)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// One directory entry from READDIRPLUS.
struct Entry {
    name: Vec<u8>,
    file_type: Option<ftype3>,
    handle: Option<nfs_fh3>,
}
