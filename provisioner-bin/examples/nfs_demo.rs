//! The seed scenario, end to end, narrated: what `scripts/demo.sh` runs.
//!
//! Starts a local control plane (etcd, kube-apiserver, kube-controller-manager's PV
//! binder) and NFS-Ganesha on 127.0.0.1, applies the seed tutorial's manifests as written
//! with kubectl, runs `nfs-provisioner` as the seed's ServiceAccount with the seed
//! Deployment's environment (the NFS server being the local one), shows the claim Bound,
//! its PersistentVolume and its directory on the export, round-trips a file through NFS,
//! deletes the claim, and removes everything it started (also on Ctrl-C or a crash:
//! testenv's watchdog).
//!
//! ```text
//! cargo build -p provisioner-bin --bin nfs-provisioner --example nfs_demo
//! sudo target/debug/examples/nfs_demo --provisioner target/debug/nfs-provisioner
//! ```

#[path = "../tests/nfs_support/nfs_client.rs"]
mod nfs_client;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use nfs_client::NfsClient;
use testenv::ControlPlane;
use testenv::nfs::NfsServer;

/// Runs the seed scenario against a local control plane and a local NFS server.
#[derive(Debug, Parser)]
struct Args {
    /// The `nfs-provisioner` binary.
    #[arg(long)]
    provisioner: Option<PathBuf>,
    /// The seed's manifests.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nfs_fixtures/seed"))]
    seed: PathBuf,
}

/// A guard on every wait; nothing here should take more than a few seconds.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::select! {
        result = demo(&args) => result,
        () = interrupted() => {
            println!("\ninterrupted: cleaning up");
            Ok(())
        }
    }
    // Dropping the control plane, the NFS server and the provisioner stops them and
    // removes their directories.
}

async fn interrupted() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

fn step(number: usize, title: &str) {
    println!("\n\x1b[1m== {number}/7 {title}\x1b[0m");
}

async fn demo(args: &Args) -> anyhow::Result<()> {
    let provisioner_binary = match &args.provisioner {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("cannot find the target directory")?
            .join("nfs-provisioner"),
    };
    anyhow::ensure!(
        provisioner_binary.is_file(),
        "{} not found: build it with `cargo build -p provisioner-bin --bin nfs-provisioner`",
        provisioner_binary.display()
    );
    let seed = |name: &str| args.seed.join(name);

    step(1, "Local Kubernetes control plane");
    let started = Instant::now();
    let plane = ControlPlane::builder()
        .controller_manager(true)
        .start()
        .await?;
    let kubectl = Kubectl::new(plane.admin_kubeconfig()).await?;
    println!(
        "etcd, kube-apiserver and kube-controller-manager (PV binder) on 127.0.0.1, ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("admin kubeconfig: {}", plane.admin_kubeconfig().display());

    step(2, "NFS server");
    let export = tempfile::Builder::new()
        .prefix("nfs-demo-export-")
        .tempdir()?;
    // Published as the tutorial's share, so the seed's NFS_PATH is used as written.
    let server = NfsServer::builder()
        .export_as(export.path(), "/shared")
        .start()
        .await?;
    let share = server.export().to_str().context("UTF-8 path")?.to_owned();
    println!(
        "NFS-Ganesha exports {share} as 127.0.0.1:{} (NFSv3 port {}, MOUNT port {}).\n\
         It plays the tutorial's server and its /shared export.",
        server.client_path(0),
        server.nfs_port(),
        server.mount_port()
    );

    step(3, "The seed's ServiceAccount and RBAC, as written");
    kubectl
        .run(&["apply", "-f", path(&seed("01-rbac.yaml"))])
        .await?;

    step(4, "The provisioner, as the seed's ServiceAccount");
    let deployment: Deployment = serde_saphyr::from_str(&std::fs::read_to_string(seed(
        "02-provisioner-deployment.yaml",
    ))?)?;
    let container = deployment
        .spec
        .template
        .spec
        .map(|pod| pod.containers)
        .and_then(|containers| containers.into_iter().next())
        .context("the seed's Deployment has a container")?;
    let seed_env: BTreeMap<String, String> = container
        .env
        .into_iter()
        .flatten()
        .map(|var| (var.name, var.value.unwrap_or_default()))
        .collect();
    let env = [
        ("PROVISIONER_NAME", seed_env["PROVISIONER_NAME"].clone()),
        ("NFS_SERVER", server.address().to_owned()),
        ("NFS_PATH", seed_env["NFS_PATH"].clone()),
    ];
    anyhow::ensure!(
        seed_env["NFS_PATH"] == server.client_path(0),
        "the seed's NFS_PATH {} is not the path the NFS server publishes ({})",
        seed_env["NFS_PATH"],
        server.client_path(0)
    );
    println!(
        "The seed's Deployment runs nfs-client-provisioner with PROVISIONER_NAME={}, \
         NFS_SERVER={}, NFS_PATH={} and the share mounted at /persistentvolumes.\n\
         Here nfs-provisioner runs in its place with the same variables, the server being \
         the local one; its export directory ({share}) stands in for the mount:",
        seed_env["PROVISIONER_NAME"], seed_env["NFS_SERVER"], seed_env["NFS_PATH"]
    );
    let flags = [
        format!("--mount-root={share}"),
        "--metrics-address=127.0.0.1:0".to_owned(),
    ];
    println!(
        "  {} {} {}",
        env.iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" "),
        provisioner_binary.display(),
        flags.join(" ")
    );
    let mut command = std::process::Command::new(&provisioner_binary);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(key, value)| (key, value)))
        .args(&flags);
    let log = plane.dir().join("logs").join("nfs-provisioner.log");
    let mut provisioner = plane
        .spawn_as_service_account("default", "nfs-pod-provisioner-sa", &mut command, &log)
        .await?;

    step(5, "StorageClass, claim and nginx Deployment, as written");
    for file in [
        "03-storageclass.yaml",
        "04-pvc.yaml",
        "05-nginx-deployment.yaml",
    ] {
        kubectl.run(&["apply", "-f", path(&seed(file))]).await?;
    }
    kubectl
        .run(&[
            "wait",
            "pvc/nfs-pvc-test",
            "--for=jsonpath={.status.phase}=Bound",
            "--timeout=120s",
        ])
        .await
        .with_context(|| {
            format!(
                "the claim was not bound; provisioner log:\n{}",
                provisioner.log_tail(30)
            )
        })?;
    kubectl.run(&["get", "storageclass,pvc,pv"]).await?;
    let client = plane.client();
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .get("nfs-pvc-test")
        .await?;
    let volume_name = claim
        .spec
        .and_then(|spec| spec.volume_name)
        .context("Bound claim without a volume")?;
    kubectl
        .run(&[
            "get",
            "pv",
            &volume_name,
            "-o",
            "custom-columns=NAME:.metadata.name,SERVER:.spec.nfs.server,PATH:.spec.nfs.path,PROVISIONED-BY:.metadata.annotations.pv\\.kubernetes\\.io/provisioned-by",
        ])
        .await?;

    step(6, "The directory on the export, and a file through NFS");
    let directory = format!("default-nfs-pvc-test-{volume_name}");
    println!("On the export {share} (mode, name):");
    for entry in std::fs::read_dir(export.path())? {
        let entry = entry?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&entry.metadata()?.permissions());
        println!(
            "  {:o}  {}",
            mode & 0o7777,
            entry.file_name().to_string_lossy()
        );
    }
    let on_export = export.path().join(&directory);
    anyhow::ensure!(on_export.is_dir(), "{} is missing", on_export.display());
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get(&volume_name)
        .await?;
    let nfs_path = volume
        .spec
        .and_then(|spec| spec.nfs)
        .map(|nfs| nfs.path)
        .context("an NFS volume")?;
    println!("Mounting 127.0.0.1:{nfs_path} over NFSv3, as a kubelet mounts the volume:");
    let mut nfs = NfsClient::mount(&server, &nfs_path).await?;
    nfs.write("hello-from-the-pod.txt", b"written through NFS\n")
        .await?;
    println!(
        "  wrote hello-from-the-pod.txt through NFS; in the directory it reads: {:?}",
        std::fs::read_to_string(on_export.join("hello-from-the-pod.txt"))?
    );
    std::fs::write(
        on_export.join("put-in-the-share.txt"),
        "put into the share\n",
    )?;
    println!(
        "  put put-in-the-share.txt into the directory; through NFS it reads: {:?}",
        String::from_utf8(nfs.read("put-in-the-share.txt").await?)?
    );
    println!(
        "The nfs-nginx Deployment is stored, but this control plane has no kubelet (and no \
         Deployment controller), so no nginx pod runs; the NFS client above sees what its \
         /mydata2 would."
    );

    step(7, "Deleting the claim");
    kubectl
        .run(&[
            "delete",
            "pvc",
            "nfs-pvc-test",
            "--wait=true",
            "--timeout=120s",
        ])
        .await?;
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let deadline = Instant::now() + PATIENCE;
    while volumes.get_opt(&volume_name).await?.is_some() {
        if Instant::now() > deadline {
            bail!(
                "volume {volume_name} was not deleted; provisioner log:\n{}",
                provisioner.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kubectl.run(&["get", "pv"]).await?;
    println!(
        "archiveOnDelete is \"false\": {directory} {}",
        if on_export.exists() {
            "still exists (unexpected)"
        } else {
            "was deleted from the export"
        }
    );
    anyhow::ensure!(!on_export.exists(), "the directory was not deleted");
    if let Some(status) = provisioner.try_exit_status() {
        bail!(
            "nfs-provisioner exited with {status}:\n{}",
            provisioner.log_tail(30)
        );
    }
    println!(
        "\nprovisioner log (last lines):\n{}",
        provisioner.log_tail(6)
    );
    println!("\nDone; stopping the provisioner, the NFS server and the control plane.");
    Ok(())
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// kubectl from the control plane's build, pointed at the local cluster; every command
/// is echoed before it runs.
struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn new(kubeconfig: &Path) -> anyhow::Result<Self> {
        let program = testenv::Binaries::locate().await?.dir().join("kubectl");
        anyhow::ensure!(
            program.is_file(),
            "{} is missing: rebuild with scripts/build-control-plane.sh",
            program.display()
        );
        Ok(Self {
            program,
            kubeconfig: kubeconfig.to_owned(),
        })
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let shown: Vec<&str> = args
            .iter()
            .map(|arg| {
                Path::new(arg)
                    .file_name()
                    .filter(|_| arg.ends_with(".yaml"))
                    .and_then(OsStr::to_str)
                    .unwrap_or(arg)
            })
            .collect();
        println!("$ kubectl {}", shown.join(" "));
        let status = tokio::time::timeout(
            PATIENCE,
            tokio::process::Command::new(&self.program)
                .env("KUBECONFIG", &self.kubeconfig)
                .args(args)
                .kill_on_drop(true)
                .status(),
        )
        .await
        .context("kubectl did not finish")??;
        anyhow::ensure!(status.success(), "kubectl {} failed", shown.join(" "));
        Ok(())
    }
}
