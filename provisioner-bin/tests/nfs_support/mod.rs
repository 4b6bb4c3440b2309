//! Helpers of the `nfs-provisioner` end-to-end tests: the binary run as a ServiceAccount,
//! manifests applied as written, small object builders, waiting with a failure guard, and
//! a userspace NFSv3 client standing in for a pod that mounts a volume.
//!
//! Every wait has a generous limit that only guards against a hang; no test asserts how
//! long anything took.

#![allow(dead_code)] // each test binary uses a subset

mod nfs_client;

#[allow(unused_imports)] // not every test binary mounts volumes
pub use nfs_client::NfsClient;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{
    Event, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use testenv::ControlPlane;
use testenv::process::ChildProcess;

/// How long anything may take before a test gives up (a hang guard, not a measurement).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The provisioner binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nfs-provisioner"))
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of the seed's manifests, copied verbatim from the tutorial.
pub fn seed_manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/nfs_fixtures/seed")
        .join(name)
}

/// Polls `check` until it returns `Some`, panicking with `what` (and the last error) after
/// [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: impl Display, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = String::from("no answer yet");
    loop {
        match check().await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(error) => last = format!("{error:#}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {PATIENCE:?}; last error: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- the binary -------------------------------------------------------------------------

/// A running `nfs-provisioner` and the address of its health endpoints.
#[derive(Debug)]
pub struct Provisioner {
    /// The process (killed on drop; its log is printed if the test panics).
    pub process: ChildProcess,
    /// `127.0.0.1:<port>` serving `/healthz`, `/readyz` and `/metrics`.
    pub health: SocketAddr,
}

impl Provisioner {
    /// Starts the binary as `namespace/service_account` with only `env` and `args` (the
    /// test process's environment is not inherited, so nothing leaks in by accident).
    pub async fn start(
        plane: &ControlPlane,
        namespace: &str,
        service_account: &str,
        env: &[(&str, String)],
        args: &[String],
    ) -> anyhow::Result<Self> {
        let health = free_loopback_address()?;
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,backend_nfs=debug".into()),
            )
            .envs(env.iter().map(|(key, value)| (key, value)))
            .arg(format!("--metrics-address={health}"))
            .args(args);
        let log = plane.dir().join("logs").join(format!(
            "{}.log",
            testenv::unique_name(&format!("nfs-provisioner-{namespace}"))
        ));
        let process = plane
            .spawn_as_service_account(namespace, service_account, &mut command, &log)
            .await?;
        Ok(Self { process, health })
    }

    /// `GET /readyz`: `Ok(body)` when ready (200), `Err(body)` otherwise.
    pub async fn readyz(&self) -> anyhow::Result<Result<String, String>> {
        let (status, body) = http_get(self.health, "/readyz").await?;
        Ok(if status == 200 { Ok(body) } else { Err(body) })
    }

    /// Fails if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.process.try_exit_status() {
            panic!(
                "nfs-provisioner exited with {status}:\n{}",
                self.process.log_tail(60)
            );
        }
    }
}

fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    // The port is released before the binary binds it; a collision makes the binary fail
    // at start, which the test reports with its log.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A minimal HTTP/1.0 GET against a loopback address: `(status, body)`.
pub async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("health endpoint did not answer")??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

// ---- manifests ----------------------------------------------------------------------------

/// Creates every object of a manifest file as written (like `kubectl create -f`); namespaced
/// objects without a namespace go to `namespace`.
pub async fn apply_file(
    client: &Client,
    path: &Path,
    namespace: &str,
) -> anyhow::Result<Vec<DynamicObject>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut created = Vec::new();
    for object in parse_objects(&text).with_context(|| format!("{}", path.display()))? {
        created.push(create_dynamic(client, &object, namespace, false).await?);
    }
    Ok(created)
}

/// Parses multi-document YAML into objects.
pub fn parse_objects(text: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)?;
    documents
        .into_iter()
        .filter(|document| !document.is_null())
        .map(|document| Ok(serde_json::from_value(document)?))
        .collect()
}

/// Creates `object` through discovery (`dry_run`: only asks the server whether it would).
pub async fn create_dynamic(
    client: &Client,
    object: &DynamicObject,
    namespace: &str,
    dry_run: bool,
) -> anyhow::Result<DynamicObject> {
    let types = object
        .types
        .as_ref()
        .context("object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = if capabilities.scope == Scope::Namespaced {
        let namespace = object.namespace().unwrap_or_else(|| namespace.to_owned());
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    api.create(&params, object)
        .await
        .with_context(|| format!("creating {} {}", types.kind, object.name_any()))
}

/// The ClusterRole and Role rules of `deploy/nfs/rbac.yaml`.
pub fn deploy_rules() -> anyhow::Result<(Vec<PolicyRule>, Vec<PolicyRule>)> {
    let path = workspace().join("deploy/nfs/rbac.yaml");
    let text = std::fs::read_to_string(&path)?;
    let (mut cluster, mut namespaced) = (None, None);
    for object in parse_objects(&text)? {
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let rules = || -> anyhow::Result<Vec<PolicyRule>> {
            Ok(serde_json::from_value(object.data["rules"].clone())?)
        };
        match kind.as_str() {
            "ClusterRole" => cluster = Some(rules()?),
            "Role" => namespaced = Some(rules()?),
            _ => {}
        }
    }
    Ok((
        cluster.context("no ClusterRole in deploy/nfs/rbac.yaml")?,
        namespaced.context("no Role in deploy/nfs/rbac.yaml")?,
    ))
}

/// Grants `namespace/service_account` exactly the RBAC of `deploy/nfs/` (its ClusterRole
/// under a unique name, its leader-election Role in `namespace`).
pub async fn grant_deploy_rbac(
    client: &Client,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<()> {
    let (cluster_rules, namespaced_rules) = deploy_rules()?;
    let name = testenv::unique_name("nfs-provisioner");
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: service_account.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    };
    let role_ref = |kind: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.clone(),
    };
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    };
    let pp = PostParams::default();
    Api::<ClusterRole>::all(client.clone())
        .create(
            &pp,
            &ClusterRole {
                metadata: meta(None),
                rules: Some(cluster_rules),
                ..ClusterRole::default()
            },
        )
        .await?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(
            &pp,
            &ClusterRoleBinding {
                metadata: meta(None),
                role_ref: role_ref("ClusterRole"),
                subjects: Some(vec![subject.clone()]),
            },
        )
        .await?;
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(
            &pp,
            &Role {
                metadata: meta(Some(namespace)),
                rules: Some(namespaced_rules),
            },
        )
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta(Some(namespace)),
                role_ref: role_ref("Role"),
                subjects: Some(vec![subject]),
            },
        )
        .await?;
    Ok(())
}

// ---- objects ----------------------------------------------------------------------------

/// A StorageClass for `provisioner` with `parameters` and, if given, a reclaim policy.
pub fn mk_class(
    name: &str,
    provisioner: &str,
    parameters: &[(&str, &str)],
    reclaim_policy: Option<&str>,
) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        provisioner: provisioner.into(),
        parameters: Some(
            parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        reclaim_policy: reclaim_policy.map(str::to_owned),
        ..StorageClass::default()
    }
}

/// A ReadWriteMany claim of 1Mi in `class`.
pub fn mk_claim(namespace: &str, name: &str, class: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(class.into()),
            access_modes: Some(vec!["ReadWriteMany".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity("1Mi".into()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// `claim` with these labels and annotations added.
pub fn with_metadata(
    mut claim: PersistentVolumeClaim,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> PersistentVolumeClaim {
    let to_map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    claim
        .metadata
        .labels
        .get_or_insert_default()
        .extend(to_map(labels));
    claim
        .metadata
        .annotations
        .get_or_insert_default()
        .extend(to_map(annotations));
    claim
}

/// Creates a StorageClass.
pub async fn create_class(client: &Client, class: &StorageClass) -> anyhow::Result<()> {
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), class)
        .await
        .with_context(|| format!("creating StorageClass {}", class.name_any()))?;
    Ok(())
}

/// Creates a claim.
pub async fn create_claim(client: &Client, claim: &PersistentVolumeClaim) -> anyhow::Result<()> {
    let namespace = claim.namespace().unwrap_or_default();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), claim)
        .await
        .with_context(|| format!("creating claim {namespace}/{}", claim.name_any()))?;
    Ok(())
}

/// Deletes a claim.
pub async fn delete_claim(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting claim {namespace}/{name}"))?;
    Ok(())
}

/// Waits until the claim is Bound; returns it and its volume.
pub async fn wait_bound(
    client: &Client,
    namespace: &str,
    name: &str,
) -> (PersistentVolumeClaim, PersistentVolume) {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    let volumes = Api::<PersistentVolume>::all(client.clone());
    eventually(format!("claim {namespace}/{name} to be Bound"), || async {
        let claim = claims.get(name).await?;
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase != Some("Bound") {
            return Ok(None);
        }
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .context("Bound claim without volumeName")?;
        let volume = volumes.get(&volume_name).await?;
        Ok(Some((claim, volume)))
    })
    .await
}

/// Waits until the volume object is gone.
pub async fn wait_volume_gone(client: &Client, name: &str) {
    let volumes = Api::<PersistentVolume>::all(client.clone());
    eventually(format!("volume {name} to be deleted"), || async {
        Ok(volumes.get_opt(name).await?.is_none().then_some(()))
    })
    .await;
}

/// Waits until the volume has `phase`; returns it.
pub async fn wait_volume_phase(client: &Client, name: &str, phase: &str) -> PersistentVolume {
    let volumes = Api::<PersistentVolume>::all(client.clone());
    eventually(format!("volume {name} to be {phase}"), || async {
        let volume = volumes.get(name).await?;
        let current = volume.status.as_ref().and_then(|s| s.phase.as_deref());
        Ok((current == Some(phase)).then_some(volume))
    })
    .await
}

/// Events about the object `name` (of `kind`) in `namespace`.
pub async fn events_for(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<Vec<Event>> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind={kind},involvedObject.name={name}"
        )))
        .await?;
    Ok(events.items)
}

/// Waits for an Event about the object with `reason` whose message contains every one of
/// `needles`; returns its message.
pub async fn wait_event(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
    needles: &[&str],
) -> String {
    eventually(
        format!("a {reason} Event on {kind} {namespace}/{name} mentioning {needles:?}"),
        || async {
            let events = events_for(client, namespace, kind, name).await?;
            Ok(events.into_iter().find_map(|event| {
                let message = event.message.unwrap_or_default();
                (event.reason.as_deref() == Some(reason)
                    && needles.iter().all(|needle| message.contains(needle)))
                .then_some(message)
            }))
        },
    )
    .await
}

/// The directory of a volume on its export, relative to the export root: its NFS path
/// minus the share.
pub fn volume_directory(volume: &PersistentVolume, share: &str) -> String {
    let path = &volume
        .spec
        .as_ref()
        .and_then(|s| s.nfs.as_ref())
        .expect("an NFS volume")
        .path;
    path.strip_prefix(share)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{path} is not below {share}"))
        .to_owned()
}

/// Every entry below `root`, as sorted relative paths (`a`, `a/b`, …).
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

// ---- a second NFS server address ---------------------------------------------------------

/// Forwards TCP connections from `listen` to `target` until dropped.
///
/// Direct access uses one pair of NFS and MOUNT ports for every server, and every test
/// server listens on 127.0.0.1, so a second server is made reachable on another loopback
/// address (`127.0.0.2`) at the first server's ports.
pub struct Forwarder {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Forwarder {
    /// Forwards each `(listen, target)` pair.
    pub async fn start(pairs: &[(SocketAddr, SocketAddr)]) -> anyhow::Result<Self> {
        let mut tasks = Vec::new();
        for &(listen, target) in pairs {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tasks.push(tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let connect = tokio::net::TcpStream::connect(target);
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_secs(5), connect).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }));
        }
        Ok(Self { tasks })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
