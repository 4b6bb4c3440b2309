//! A userspace NFSv3 client playing the part of a pod: it mounts a PersistentVolume's
//! `server:path` as a kubelet would, and writes and reads files there. Shared by the tests
//! and the demo (`examples/nfs_demo.rs`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, LOOKUP3args, Nfs3Option, Nfs3Result, READ3args, WRITE3args, createhow3,
    diropargs3, filename3, nfs_fh3, sattr3, stable_how,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Client, Nfs3ConnectionBuilder};
use testenv::nfs::NfsServer;

/// Time limit of one call.
const NFS_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A userspace NFSv3 client mounted on one path of a server, as a kubelet would mount a
/// volume's `server:path`.
pub struct NfsClient {
    client: Nfs3Client<TokioIo<tokio::net::TcpStream>>,
    root: nfs_fh3,
}

impl NfsClient {
    /// Mounts `path` (an export or a directory inside one) of `server`, as root.
    pub async fn mount(server: &NfsServer, path: &str) -> anyhow::Result<Self> {
        let credential = opaque_auth::auth_unix(&auth_unix {
            stamp: 0,
            machinename: Opaque::borrowed(b"e2e-test"),
            uid: 0,
            gid: 0,
            gids: vec![0],
        });
        let builder = Nfs3ConnectionBuilder::new(TokioConnector, server.address(), path)
            .mount_port(server.mount_port())
            .nfs3_port(server.nfs_port())
            .credential(credential);
        let connection = tokio::time::timeout(NFS_CALL_TIMEOUT, builder.mount())
            .await
            .context("MOUNT timed out")?
            .with_context(|| format!("MOUNT {path}"))?;
        let root = connection.root_nfs_fh3();
        Ok(Self {
            client: connection.into_nfs3_client(),
            root,
        })
    }

    async fn lookup(&mut self, name: &str) -> anyhow::Result<nfs_fh3> {
        let args = LOOKUP3args {
            what: diropargs3 {
                dir: self.root.clone(),
                name: filename3(Opaque::borrowed(name.as_bytes())),
            },
        };
        match tokio::time::timeout(NFS_CALL_TIMEOUT, self.client.lookup(&args)).await?? {
            Nfs3Result::Ok(ok) => Ok(ok.object),
            Nfs3Result::Err((status, _)) => bail!("LOOKUP {name}: {status:?}"),
        }
    }

    /// Creates (or truncates) file `name` at the mount's root and writes `data` to it.
    pub async fn write(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let args = CREATE3args {
            where_: diropargs3 {
                dir: self.root.clone(),
                name: filename3(Opaque::borrowed(name.as_bytes())),
            },
            how: createhow3::UNCHECKED(sattr3::default()),
        };
        let file = match tokio::time::timeout(NFS_CALL_TIMEOUT, self.client.create(&args)).await?? {
            Nfs3Result::Ok(ok) => match ok.obj {
                Nfs3Option::Some(handle) => handle,
                Nfs3Option::None => self.lookup(name).await?,
            },
            Nfs3Result::Err((status, _)) => bail!("CREATE {name}: {status:?}"),
        };
        let args = WRITE3args {
            file,
            offset: 0,
            count: u32::try_from(data.len())?,
            stable: stable_how::FILE_SYNC,
            data: Opaque::borrowed(data),
        };
        match tokio::time::timeout(NFS_CALL_TIMEOUT, self.client.write(&args)).await?? {
            Nfs3Result::Ok(ok) if ok.count as usize == data.len() => Ok(()),
            Nfs3Result::Ok(ok) => bail!("WRITE {name}: {} of {} bytes", ok.count, data.len()),
            Nfs3Result::Err((status, _)) => bail!("WRITE {name}: {status:?}"),
        }
    }

    /// Reads file `name` at the mount's root (up to 64 KiB).
    pub async fn read(&mut self, name: &str) -> anyhow::Result<Vec<u8>> {
        let file = self.lookup(name).await?;
        let args = READ3args {
            file,
            offset: 0,
            count: 64 * 1024,
        };
        match tokio::time::timeout(NFS_CALL_TIMEOUT, self.client.read(&args)).await?? {
            Nfs3Result::Ok(ok) => Ok(ok.data.as_ref().to_vec()),
            Nfs3Result::Err((status, _)) => bail!("READ {name}: {status:?}"),
        }
    }
}
