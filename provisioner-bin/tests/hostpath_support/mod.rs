//! Helpers of the `hostpath-provisioner` tests: the binary run per fake node as a
//! ServiceAccount with the RBAC of `deploy/hostpath/`, temporary directories as the nodes'
//! disks, small object builders, and waiting with a failure guard.
//!
//! Every wait has a generous limit that only guards against a hang; no test asserts how
//! long anything took.

#![allow(dead_code)] // each test binary uses a subset

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{
    Event, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume, VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use testenv::ControlPlane;
use testenv::process::ChildProcess;

/// How long anything may take before a test gives up (a hang guard, not a measurement).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The fake nodes of the tests' control plane.
pub const NODES: [&str; 2] = ["node-a", "node-b"];

/// The ServiceAccount the provisioner runs as (the one `deploy/hostpath/` creates).
pub const SERVICE_ACCOUNT: &str = "hostpath-provisioner";

/// `volume.kubernetes.io/selected-node`.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hostpath-provisioner"))
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

// ---- deploy/hostpath ------------------------------------------------------------------------

/// `deploy/hostpath/` rendered by `kubectl kustomize` (the kubectl built with the control
/// plane), exactly as users apply it.
pub async fn render_deploy() -> anyhow::Result<Vec<DynamicObject>> {
    let binaries = testenv::Binaries::locate().await?;
    let kubectl = binaries.dir().join("kubectl");
    let dir = workspace().join("deploy/hostpath");
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(&kubectl)
            .arg("kustomize")
            .arg(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("kubectl kustomize did not finish")?
    .with_context(|| format!("running {}", kubectl.display()))?;
    if !output.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_objects(&String::from_utf8(output.stdout)?)
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

/// The kind of a rendered object.
pub fn kind(object: &DynamicObject) -> &str {
    object
        .types
        .as_ref()
        .map_or("", |types| types.kind.as_str())
}

/// The one object of `kind` among `objects`, as a typed object.
pub fn the<K: serde::de::DeserializeOwned>(
    objects: &[DynamicObject],
    wanted: &str,
) -> anyhow::Result<K> {
    let mut found = objects.iter().filter(|object| kind(object) == wanted);
    let object = found
        .next()
        .with_context(|| format!("no {wanted} in deploy/hostpath"))?;
    if found.next().is_some() {
        bail!("more than one {wanted} in deploy/hostpath");
    }
    Ok(serde_json::from_value(serde_json::to_value(object)?)?)
}

/// Grants `namespace/service_account` exactly the RBAC of `deploy/hostpath/`: its
/// ClusterRole under a unique name, its leader-election Role in `namespace`.
pub async fn grant_deploy_rbac(
    client: &Client,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<()> {
    let objects = render_deploy().await?;
    let cluster_rules: Vec<PolicyRule> = the::<ClusterRole>(&objects, "ClusterRole")?
        .rules
        .unwrap_or_default();
    let namespaced_rules: Vec<PolicyRule> =
        the::<Role>(&objects, "Role")?.rules.unwrap_or_default();
    let name = testenv::unique_name("hostpath-provisioner");
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

// ---- the nodes' disks and the binary ---------------------------------------------------------

/// A temporary directory holding one "disk" directory per fake node, and the shared
/// `config.json` that maps each node to its disk.
#[derive(Debug)]
pub struct Disks {
    /// Small filesystems mounted over disks; unmounted before `root` is removed (fields
    /// drop in order).
    mounts: Vec<TinyFilesystem>,
    /// Removed on drop.
    pub root: tempfile::TempDir,
}

impl Disks {
    /// Disks for [`NODES`] under a new temporary directory; `config.json` maps each node to
    /// its own disk.
    pub fn new() -> anyhow::Result<Self> {
        Self::for_nodes(&NODES)
    }

    /// Disks for `nodes`.
    pub fn for_nodes(nodes: &[&str]) -> anyhow::Result<Self> {
        let disks = Self {
            mounts: Vec::new(),
            root: tempfile::tempdir()?,
        };
        std::fs::create_dir_all(disks.root.path().join("disks"))?;
        for node in nodes {
            std::fs::create_dir(disks.disk(node))?;
        }
        let node_path_map: Vec<serde_json::Value> = nodes
            .iter()
            .map(|node| {
                serde_json::json!({"node": node, "paths": [disks.disk(node).to_str().unwrap()]})
            })
            .collect();
        let config = serde_json::json!({ "nodePathMap": node_path_map });
        std::fs::write(disks.config(), serde_json::to_string_pretty(&config)?)?;
        Ok(disks)
    }

    /// Mounts a 1 MiB filesystem over `node`'s disk, if this process may mount (root);
    /// whether it did.
    pub fn shrink(&mut self, node: &str) -> bool {
        match TinyFilesystem::mount(&self.disk(node)) {
            Some(mount) => {
                self.mounts.push(mount);
                true
            }
            None => false,
        }
    }

    /// The disk of `node`.
    pub fn disk(&self, node: &str) -> PathBuf {
        self.root.path().join("disks").join(node)
    }

    /// The shared `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.path().join("config.json")
    }

    /// Every path below the root (relative to it), except `config.json`.
    pub fn tree(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        walk(self.root.path(), self.root.path(), &mut found);
        found.remove(Path::new("config.json"));
        found
    }

    /// The entries directly in `node`'s disk.
    pub fn entries(&self, node: &str) -> BTreeSet<String> {
        std::fs::read_dir(self.disk(node))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A 1 MiB tmpfs mounted over a directory; unmounted on drop.
#[derive(Debug)]
struct TinyFilesystem {
    dir: PathBuf,
}

impl TinyFilesystem {
    fn mount(dir: &Path) -> Option<Self> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for TinyFilesystem {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there cannot keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn walk(root: &Path, dir: &Path, found: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        found.insert(path.strip_prefix(root).unwrap_or(&path).to_owned());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &path, found);
        }
    }
}

/// A provisioner name no other test uses (instances of parallel tests never see each
/// other's classes).
pub fn unique_provisioner() -> String {
    format!("provisioner-rs.io/{}", testenv::unique_name("hostpath"))
}

/// One running instance of the binary: the one for `node`.
#[derive(Debug)]
pub struct Instance {
    /// The node it serves.
    pub node: String,
    /// The process (killed on drop; its log is printed if the test panics).
    pub process: ChildProcess,
}

impl Instance {
    /// Starts the instance for `node` as `namespace/hostpath-provisioner`, serving
    /// `provisioner` (no aliases) with `config`, with only these environment variables and
    /// `extra` arguments (the test's own environment is not inherited).
    pub async fn start(
        plane: &ControlPlane,
        namespace: &str,
        node: &str,
        provisioner: &str,
        config: &Path,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| {
                    "info,provisioner_core=debug,backend_hostpath=debug".into()
                }),
            )
            .env("NODE_NAME", node)
            .env("POD_NAMESPACE", namespace)
            .env("PROVISIONER_NAME", provisioner)
            .env("PROVISIONER_ALIASES", "")
            .arg(format!("--config={}", config.display()))
            // Several instances share the loopback interface: each gets a free port.
            .arg("--metrics-address=127.0.0.1:0")
            // A short poll keeps the tests' config changes quick to take effect.
            .arg("--config-poll-interval=1s")
            .args(extra);
        let log = plane.dir().join("logs").join(format!(
            "{}.log",
            testenv::unique_name(&format!("hostpath-{namespace}-{node}"))
        ));
        let process = plane
            .spawn_as_service_account(namespace, SERVICE_ACCOUNT, &mut command, &log)
            .await?;
        Ok(Self {
            node: node.to_owned(),
            process,
        })
    }

    /// Fails if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.process.try_exit_status() {
            panic!(
                "the instance for {} exited with {status}:\n{}",
                self.node,
                self.process.log_tail(60)
            );
        }
    }
}

/// Everything a test needs: a namespace with the deploy RBAC, disks, a unique provisioner
/// name, a WaitForFirstConsumer class for it, and one instance per node.
pub struct Setup {
    /// One instance per node, in [`NODES`] order (first: they stop before their disks
    /// go).
    pub instances: Vec<Instance>,
    /// An admin client.
    pub client: Client,
    /// The test's namespace.
    pub namespace: String,
    /// The nodes' disks.
    pub disks: Disks,
    /// The provisioner name the instances serve.
    pub provisioner: String,
    /// The StorageClass (WaitForFirstConsumer, reclaim Delete).
    pub class: String,
}

impl Setup {
    /// Sets everything up; `parameters` go to the class, `extra(node)` to each instance.
    pub async fn new(
        plane: &ControlPlane,
        prefix: &str,
        parameters: &[(&str, &str)],
        extra: impl Fn(&str) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        Self::with_disks(plane, prefix, parameters, Disks::new()?, extra).await
    }

    /// [`Setup::new`] with these disks.
    pub async fn with_disks(
        plane: &ControlPlane,
        prefix: &str,
        parameters: &[(&str, &str)],
        disks: Disks,
        extra: impl Fn(&str) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        let client = plane.client();
        let namespace = testenv::create_namespace(&client, prefix).await?;
        grant_deploy_rbac(&client, &namespace, SERVICE_ACCOUNT).await?;
        let provisioner = unique_provisioner();
        let class = testenv::unique_name(prefix);
        create_class(&client, &mk_class(&class, &provisioner, parameters)).await?;
        let mut instances = Vec::new();
        for node in NODES {
            instances.push(
                Instance::start(
                    plane,
                    &namespace,
                    node,
                    &provisioner,
                    &disks.config(),
                    &extra(node),
                )
                .await?,
            );
        }
        Ok(Self {
            instances,
            client,
            namespace,
            disks,
            provisioner,
            class,
        })
    }

    /// Fails if an instance has exited.
    pub fn assert_running(&mut self) {
        for instance in &mut self.instances {
            instance.assert_running();
        }
    }

    /// The claims API of the namespace.
    pub fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The pods API of the namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

// ---- objects ----------------------------------------------------------------------------

/// A WaitForFirstConsumer StorageClass for `provisioner` with `parameters`, reclaim Delete.
pub fn mk_class(name: &str, provisioner: &str, parameters: &[(&str, &str)]) -> StorageClass {
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
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    }
}

/// A ReadWriteOnce claim of `size` in `class`, with `annotations`.
pub fn mk_claim(
    name: &str,
    class: &str,
    size: &str,
    annotations: &[(&str, &str)],
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(class.into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// A pod mounting `claim`, optionally pinned to `node` with a node selector (the scheduler
/// still places it, and so still selects the claim's node).
pub fn mk_pod(name: &str, claim: &str, node: Option<&str>) -> Pod {
    let container = serde_json::from_value(serde_json::json!({
        "name": "app",
        "image": "registry.invalid/app:1",
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }))
    .expect("a valid container");
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            node_selector: node.map(|node| {
                BTreeMap::from([("kubernetes.io/hostname".to_owned(), node.to_owned())])
            }),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Creates a StorageClass.
pub async fn create_class(client: &Client, class: &StorageClass) -> anyhow::Result<()> {
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), class)
        .await
        .with_context(|| format!("creating StorageClass {}", class.name_any()))?;
    Ok(())
}

/// Creates `object` with `api`.
pub async fn create<K>(api: &Api<K>, object: &K) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), object)
        .await
        .with_context(|| format!("creating {}", object.name_any()))
}

/// Deletes the object `name` with `api` (gone already is fine).
pub async fn delete<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error).with_context(|| format!("deleting {name}")),
    }
}

/// The selected node of a claim.
pub fn selected_node(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.annotations().get(SELECTED_NODE).map(String::as_str)
}

/// The single node a volume's required node affinity names with `kubernetes.io/hostname`.
pub fn affinity_node(volume: &PersistentVolume) -> Option<String> {
    let terms = &volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [requirement] = term.match_expressions.as_deref()? else {
        return None;
    };
    if requirement.key != "kubernetes.io/hostname" || requirement.operator != "In" {
        return None;
    }
    match requirement.values.as_deref()? {
        [value] => Some(value.clone()),
        _ => None,
    }
}

/// The host path of a hostPath volume.
pub fn host_path(volume: &PersistentVolume) -> Option<PathBuf> {
    volume
        .spec
        .as_ref()?
        .host_path
        .as_ref()
        .map(|source| PathBuf::from(&source.path))
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

/// Waits until the pod is Running (kwok runs pods once they are bound to a node); returns
/// it.
pub async fn wait_running(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(format!("pod {name} to run"), || async {
        let pod = pods.get(name).await?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        Ok((phase == Some("Running")).then_some(pod))
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

/// Every Event in `namespace`.
pub async fn events(client: &Client, namespace: &str) -> anyhow::Result<Vec<Event>> {
    Ok(Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items)
}

/// The Events about the claim `name`.
pub async fn claim_events(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<Event>> {
    Ok(events(client, namespace)
        .await?
        .into_iter()
        .filter(|event| {
            event.involved_object.kind.as_deref() == Some("PersistentVolumeClaim")
                && event.involved_object.name.as_deref() == Some(name)
        })
        .collect())
}

/// Waits for an Event about the claim `name` with `reason` whose message contains every
/// one of `needles`; returns it.
pub async fn wait_claim_event(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    needles: &[&str],
) -> Event {
    eventually(
        format!("a {reason} Event on claim {namespace}/{name} mentioning {needles:?}"),
        || async {
            let events = claim_events(client, namespace, name).await?;
            Ok(events.into_iter().find(|event| {
                let message = event.message.as_deref().unwrap_or_default();
                event.reason.as_deref() == Some(reason)
                    && needles.iter().all(|needle| message.contains(needle))
            }))
        },
    )
    .await
}

/// A one-line summary of events, for assertion messages.
pub fn describe(events: &[Event]) -> String {
    events
        .iter()
        .map(|event| {
            format!(
                "[{} {} from {}/{}] {}",
                event.type_.as_deref().unwrap_or_default(),
                event.reason.as_deref().unwrap_or_default(),
                event.reporting_component.as_deref().unwrap_or_default(),
                event.reporting_instance.as_deref().unwrap_or_default(),
                event.message.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
