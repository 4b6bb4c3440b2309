//! Plumbing shared by the examples, kept out of them so each example shows only what a
//! backend author writes: where to get a cluster from, and a short demonstration run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use provisioner_core::controller::ProvisionController;
use provisioner_core::provisioner::Provisioner;
use serde_json::json;

/// The cluster an example runs against.
pub enum Cluster {
    /// The cluster `$KUBECONFIG` (or the in-cluster config) points at.
    External(Client),
    /// A local control plane (etcd, kube-apiserver, kube-controller-manager's PV binder)
    /// started for this run and stopped when dropped.
    Local(Box<testenv::ControlPlane>, Client),
}

impl Cluster {
    /// `$KUBECONFIG`'s cluster when the variable is set, else a fresh local control plane.
    pub async fn connect() -> anyhow::Result<Self> {
        if std::env::var_os("KUBECONFIG").is_some() {
            return Ok(Self::External(Client::try_default().await?));
        }
        eprintln!("KUBECONFIG is not set: starting a local control plane (first run builds it)");
        let plane = testenv::ControlPlane::builder()
            .controller_manager(true)
            .start()
            .await?;
        let client = plane.admin_client().await?;
        Ok(Self::Local(Box::new(plane), client))
    }

    /// A client for the cluster.
    pub fn client(&self) -> Client {
        match self {
            Self::External(client) | Self::Local(_, client) => client.clone(),
        }
    }

    /// Runs `controller` until Ctrl-C on an external cluster; on a local one, runs it
    /// through [`demo`] and stops.
    pub async fn run<P: Provisioner>(
        &self,
        controller: ProvisionController<P>,
        provisioner: &str,
        root: &Path,
    ) -> anyhow::Result<()> {
        let controller = controller.graceful_shutdown_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        if !matches!(self, Self::Local(..)) {
            println!(
                "provisioning for `provisioner: {provisioner}` into {}",
                root.display()
            );
            return Ok(controller.run().await?);
        }
        let running = tokio::spawn(controller.run());
        let outcome = demo(&self.client(), provisioner, root).await;
        running.abort();
        outcome
    }
}

/// The folder volumes go to: `$VOLUME_ROOT`, else `directory-volumes` in the temporary
/// directory; created if missing.
pub async fn volume_root() -> anyhow::Result<PathBuf> {
    let root = std::env::var_os("VOLUME_ROOT").map_or_else(
        || std::env::temp_dir().join("directory-volumes"),
        PathBuf::from,
    );
    tokio::fs::create_dir_all(&root).await?;
    Ok(root)
}

/// Creates a StorageClass for `provisioner` and a claim, waits until the claim is Bound,
/// shows the volume and its directory under `root`, then deletes the claim and waits until
/// the volume is gone.
pub async fn demo(client: &Client, provisioner: &str, root: &Path) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": "directory" },
        "provisioner": provisioner,
        "parameters": { "archiveOnDelete": "false" },
    }))?;
    classes.create(&PostParams::default(), &class).await?;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "demo-claim" },
        "spec": {
            "storageClassName": "directory",
            "accessModes": ["ReadWriteMany"],
            "resources": { "requests": { "storage": "50Mi" } },
        },
    }))?;
    claims.create(&PostParams::default(), &claim).await?;
    println!("created StorageClass \"directory\" and claim default/demo-claim");

    let bound = poll("the claim to be Bound", || async {
        let claim = claims.get("demo-claim").await?;
        let phase = claim.status.as_ref().and_then(|s| s.phase.clone());
        Ok((phase.as_deref() == Some("Bound")).then_some(claim))
    })
    .await?;
    let volume_name = bound
        .spec
        .and_then(|spec| spec.volume_name)
        .context("a bound claim names its volume")?;
    let volume = volumes.get(&volume_name).await?;
    println!("claim Bound to {volume_name}:");
    println!("{}", serde_json::to_string_pretty(&volume.spec)?);
    println!("directory exists: {}", root.join(&volume_name).is_dir());

    claims
        .delete(
            &bound.metadata.name.unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await?;
    poll("the volume to be deleted", || async {
        Ok(volumes.get_opt(&volume_name).await?.is_none().then_some(()))
    })
    .await?;
    println!(
        "claim deleted: volume {} gone, directory exists: {}",
        volume.name_any(),
        root.join(&volume_name).is_dir()
    );
    Ok(())
}

/// Polls `check` every 200 ms for up to a minute.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    for _ in 0..300 {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("timed out waiting for {what}")
}
