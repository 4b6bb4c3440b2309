//! The hostPath provisioner end to end against temporary directories: ownership, placement,
//! safe directories, the PersistentVolume it describes, and deletion from that record.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend_hostpath::base_path::BasePath;
use backend_hostpath::config::ProvisionerConfig;
use backend_hostpath::fs::{
    Created, FsError, HostFilesystem, Removed, TimedFilesystem, VolumeFilesystem,
};
use backend_hostpath::ownership::{NodeExistence, NodeGonePolicy, NodeIdentity, VolumeNode};
use backend_hostpath::params::{DirectorySettings, HostPathParams};
use backend_hostpath::provisioner::{ClusterDuties, HostPathProvisioner, NodeDirectory};
use backend_hostpath::volume::{ANNOTATION_DIRECTORY, LOCAL_PATH_PROVISIONER_NAME};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use provisioner_core::provisioner::{
    ClaimIdentity, DeleteError, DeleteOutcome, DeleteRequest, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};
use provisioner_core::volume_path::VolumePath;
use tokio::sync::watch;

const GIB: u64 = 1 << 30;

/// The real filesystem, except that free space is whatever the test says.
#[derive(Clone, Default)]
struct Disks {
    free: Arc<Mutex<HashMap<PathBuf, u64>>>,
}

impl Disks {
    fn set_free(&self, base: &Path, bytes: u64) {
        self.free.lock().unwrap().insert(base.to_owned(), bytes);
    }
}

impl VolumeFilesystem for Disks {
    fn create_volume_dir(
        &self,
        base: &BasePath,
        dir: &VolumePath,
        s: &DirectorySettings,
    ) -> Result<Created, FsError> {
        HostFilesystem.create_volume_dir(base, dir, s)
    }
    fn remove_volume_dir(&self, base: &BasePath, dir: &VolumePath) -> Result<Removed, FsError> {
        HostFilesystem.remove_volume_dir(base, dir)
    }
    fn available_bytes(&self, base: &BasePath) -> Result<u64, FsError> {
        match self.free.lock().unwrap().get(base.as_path()) {
            Some(bytes) => Ok(*bytes),
            None => HostFilesystem.available_bytes(base),
        }
    }
    fn write_marker(&self, base: &BasePath, name: &str, dir: &VolumePath) -> Result<(), FsError> {
        HostFilesystem.write_marker(base, name, dir)
    }
    fn read_marker(&self, base: &BasePath, name: &str) -> Result<Option<VolumePath>, FsError> {
        HostFilesystem.read_marker(base, name)
    }
    fn remove_marker(&self, base: &BasePath, name: &str) -> Result<(), FsError> {
        HostFilesystem.remove_marker(base, name)
    }
}

/// Nodes the test declares gone.
#[derive(Default)]
struct Nodes {
    gone: Vec<String>,
}

impl NodeDirectory for Nodes {
    fn existence(&self, node: &VolumeNode) -> NodeExistence {
        match node {
            VolumeNode::Named(name) if self.gone.contains(name) => NodeExistence::Gone,
            _ => NodeExistence::Exists,
        }
    }
}

struct Harness {
    tmp: tempfile::TempDir,
    disks: Disks,
    _config: watch::Sender<Arc<ProvisionerConfig>>,
    config_rx: watch::Receiver<Arc<ProvisionerConfig>>,
}

impl Harness {
    /// A config whose `{tmp}` placeholders name directories in a fresh temp dir.
    fn new(config: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let text = config.replace("{tmp}", tmp.path().to_str().unwrap());
        let parsed = ProvisionerConfig::parse(&text).unwrap();
        let (sender, receiver) = watch::channel(Arc::new(parsed));
        Self {
            tmp,
            disks: Disks::default(),
            _config: sender,
            config_rx: receiver,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.tmp.path().join(relative)
    }

    fn instance(&self, node: NodeIdentity) -> HostPathProvisioner<Disks> {
        HostPathProvisioner::new(
            node,
            self.config_rx.clone(),
            TimedFilesystem::with_limits(self.disks.clone(), Duration::from_secs(10), 4),
        )
    }

    fn node(&self, name: &str) -> HostPathProvisioner<Disks> {
        self.instance(NodeIdentity::new(name))
    }
}

const TWO_DISKS: &str = r#"{"nodePathMap":[
    {"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["{tmp}/default"]},
    {"node":"node-a","paths":["{tmp}/disk1","{tmp}/disk2"]},
    {"node":"node-full","paths":[]}]}"#;

struct ClaimSpec<'a> {
    name: &'a str,
    access_modes: &'a [&'a str],
    request: &'a str,
    labels: &'a [(&'a str, &'a str)],
    annotations: &'a [(&'a str, &'a str)],
}

impl Default for ClaimSpec<'_> {
    fn default() -> Self {
        Self {
            name: "data",
            access_modes: &["ReadWriteOnce"],
            request: "1Gi",
            labels: &[],
            annotations: &[],
        }
    }
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn mk_claim(spec: &ClaimSpec<'_>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            namespace: Some("shop".into()),
            name: Some(spec.name.into()),
            uid: Some("0f1e".into()),
            labels: Some(strings(spec.labels)),
            annotations: Some(strings(spec.annotations)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(spec.access_modes.iter().map(|m| (*m).to_owned()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(spec.request.into()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn mk_class(name: &str, annotations: &[(&str, &str)]) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(strings(annotations)),
            ..ObjectMeta::default()
        },
        provisioner: "hostpath.provisioner-rs.io".into(),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    }
}

fn params(pairs: &[(&str, &str)]) -> HostPathParams {
    HostPathParams::parse(&strings(pairs)).unwrap()
}

fn mk_request(
    volume: &str,
    claim: &ClaimSpec<'_>,
    class: &StorageClass,
    params: HostPathParams,
    node: Option<&str>,
) -> ProvisionRequest<HostPathParams> {
    let request = ProvisionRequest::new(
        volume,
        Arc::new(mk_claim(claim)),
        Arc::new(class.clone()),
        params,
    );
    match node {
        Some(node) => request.with_selected_node(node),
        None => request,
    }
}

/// The PersistentVolume the controller would save for `volume`.
fn mk_pv(name: &str, volume: &ProvisionedVolume) -> PersistentVolume {
    let mut spec = volume.source.clone();
    spec.node_affinity = volume.node_affinity.clone();
    spec.persistent_volume_reclaim_policy = Some("Delete".into());
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(volume.annotations.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn delete_request(pv: PersistentVolume) -> DeleteRequest<HostPathParams> {
    let name = pv.metadata.name.clone().unwrap();
    DeleteRequest::new(
        name,
        ClaimIdentity::new("shop", "data", "0f1e"),
        "local-path",
    )
    .with_volume(Arc::new(pv))
}

fn host_path(volume: &ProvisionedVolume) -> String {
    volume
        .source
        .host_path
        .as_ref()
        .expect("a hostPath volume")
        .path
        .clone()
}

fn affinity(volume: &ProvisionedVolume) -> (String, Vec<String>) {
    let term = &volume
        .node_affinity
        .as_ref()
        .unwrap()
        .required
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    let requirement = &term.match_expressions.as_ref().unwrap()[0];
    (requirement.key.clone(), requirement.values.clone().unwrap())
}

fn error_text(error: &ProvisionError) -> String {
    match error {
        ProvisionError::Final(e)
        | ProvisionError::InBackground(e)
        | ProvisionError::NoChange(e)
        | ProvisionError::Reschedule(e)
        | ProvisionError::Infeasible(e) => e.to_string(),
        ProvisionError::Ignored(reason) => reason.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn provisions_the_local_path_layout_on_its_own_node() {
    let h = Harness::new(TWO_DISKS);
    h.disks.set_free(&h.path("disk1"), 10 * GIB);
    h.disks.set_free(&h.path("disk2"), 50 * GIB);
    let labels = BTreeMap::from([("kubernetes.io/hostname".to_owned(), "host-a".to_owned())]);
    let node_a = h.instance(NodeIdentity::new("node-a").with_labels(labels));
    let class = mk_class("local-path", &[]);

    let claim = ClaimSpec {
        annotations: &[("volume.kubernetes.io/selected-node", "node-a")],
        ..ClaimSpec::default()
    };
    let request = mk_request("pvc-1", &claim, &class, params(&[]), Some("node-a"));
    assert!(node_a.should_provision(&request.claim));
    let volume = node_a.provision(request).await.unwrap();

    let dir = h.path("disk2/pvc-1_shop_data");
    assert_eq!(
        host_path(&volume),
        dir.to_str().unwrap(),
        "the emptier disk wins"
    );
    assert_eq!(
        volume.source.host_path.as_ref().unwrap().type_.as_deref(),
        Some("DirectoryOrCreate")
    );
    assert_eq!(
        affinity(&volume),
        (
            "kubernetes.io/hostname".to_owned(),
            vec!["host-a".to_owned()]
        )
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o777
    );
    assert_eq!(volume.annotations[ANNOTATION_DIRECTORY], "pvc-1_shop_data");
    assert_eq!(
        volume.annotations["local.path.provisioner/selected-node"],
        "node-a"
    );
    assert!(
        volume.capacity.is_none(),
        "the claim's request is published"
    );
}

#[tokio::test]
async fn other_nodes_claims_are_ignored_silently() {
    let h = Harness::new(TWO_DISKS);
    let node_b = h.node("node-b");
    let class = mk_class("local-path", &[]);
    let claim = ClaimSpec {
        annotations: &[("volume.kubernetes.io/selected-node", "node-a")],
        ..ClaimSpec::default()
    };
    let request = mk_request("pvc-1", &claim, &class, params(&[]), Some("node-a"));
    assert!(!node_b.should_provision(&request.claim));
    assert!(h.node("node-a").should_provision(&request.claim));
    let result = node_b.provision(request).await;
    assert!(
        matches!(result, Err(ProvisionError::Ignored(_))),
        "{result:?}"
    );
    assert!(!h.path("default").exists() && !h.path("disk1").exists());
}

#[tokio::test]
async fn a_full_node_reschedules_with_the_reason() {
    let h = Harness::new(TWO_DISKS);
    h.disks.set_free(&h.path("disk1"), GIB);
    h.disks.set_free(&h.path("disk2"), 2 * GIB);
    let class = mk_class("local-path", &[]);
    let big = ClaimSpec {
        request: "5Gi",
        ..ClaimSpec::default()
    };
    let err = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &big,
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Reschedule(_)), "{err:?}");
    let text = error_text(&err);
    assert!(
        text.contains("no path on node node-a can hold 5.0 GiB"),
        "{text}"
    );
    assert!(
        text.contains("disk1 has 1.0 GiB") && text.contains("disk2 has 2.0 GiB"),
        "{text}"
    );

    let none = h
        .node("node-full")
        .provision(mk_request(
            "pvc-2",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-full"),
        ))
        .await;
    assert!(
        matches!(none, Err(ProvisionError::Reschedule(_))),
        "{none:?}"
    );
}

#[tokio::test]
async fn node_path_pins_one_disk() {
    let h = Harness::new(TWO_DISKS);
    h.disks.set_free(&h.path("disk1"), 10 * GIB);
    h.disks.set_free(&h.path("disk2"), 50 * GIB);
    let class = mk_class("ssd", &[]);
    let pinned = params(&[("nodePath", h.path("disk1").to_str().unwrap())]);
    let volume = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            pinned.clone(),
            Some("node-a"),
        ))
        .await
        .unwrap();
    assert!(host_path(&volume).starts_with(h.path("disk1").to_str().unwrap()));
    let elsewhere = h
        .node("node-z")
        .provision(mk_request(
            "pvc-2",
            &ClaimSpec::default(),
            &class,
            pinned,
            Some("node-z"),
        ))
        .await;
    assert!(
        matches!(elsewhere, Err(ProvisionError::Reschedule(_))),
        "{elsewhere:?}"
    );
}

#[tokio::test]
async fn hostile_labels_create_nothing() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("patterned", &[]);
    let pattern = params(&[
        (
            "pathPattern",
            "{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ .PVC.Annotations.dir }}",
        ),
        ("allowUnsafePathPattern", "true"),
    ]);
    for hostile in ["../../../etc", "/etc", "a/../../..", ""] {
        let claim = ClaimSpec {
            annotations: &[("dir", hostile)],
            ..ClaimSpec::default()
        };
        let err = h
            .node("node-a")
            .provision(mk_request(
                "pvc-1",
                &claim,
                &class,
                pattern.clone(),
                Some("node-a"),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProvisionError::Infeasible(_)),
            "{hostile:?}: {err:?}"
        );
        assert!(
            error_text(&err).contains("shop/data"),
            "the message names the claim: {}",
            error_text(&err)
        );
    }
    let escape = params(&[("pathPattern", "{{ .PVC.Annotations.dir }}")]);
    let claim = ClaimSpec {
        annotations: &[("dir", "other-ns/other-claim")],
        ..ClaimSpec::default()
    };
    let err = h
        .node("node-a")
        .provision(mk_request("pvc-1", &claim, &class, escape, Some("node-a")))
        .await
        .unwrap_err();
    assert!(
        error_text(&err).contains("does not start with the claim's own directory"),
        "{}",
        error_text(&err)
    );
    for disk in ["disk1", "disk2", "default"] {
        assert!(!h.path(disk).exists(), "{disk} must not even be created");
    }
}

#[tokio::test]
async fn a_symlink_planted_in_a_volume_cannot_redirect_another_one() {
    let h = Harness::new(TWO_DISKS);
    h.disks.set_free(&h.path("disk1"), 50 * GIB);
    h.disks.set_free(&h.path("disk2"), GIB);
    let outside = h.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A pod of the whole-claim class wrote a symlink into its volume...
    std::fs::create_dir_all(h.path("disk1/shop/data")).unwrap();
    std::os::unix::fs::symlink(&outside, h.path("disk1/shop/data/sub")).unwrap();
    // ...which a second class's directory for the same claim goes through.
    let class = mk_class("nested", &[]);
    let nested = params(&[("pathPattern", "{{ .PVC.Namespace }}/{{ .PVC.Name }}/sub/x")]);
    let err = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            nested,
            Some("node-a"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Infeasible(_)), "{err:?}");
    assert!(
        error_text(&err).contains("symbolic link"),
        "{}",
        error_text(&err)
    );
    assert!(!outside.join("x").exists());
    assert_eq!(
        std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[tokio::test]
async fn immediate_binding_on_node_local_storage_is_reported_once() {
    let h = Harness::new(TWO_DISKS);
    let mut class = mk_class("local-path", &[]);
    class.volume_binding_mode = Some("Immediate".into());
    let duties = ClusterDuties::new(true);
    let leader = h.node("node-a").with_cluster_duties(duties.clone());
    let follower = h.node("node-b");
    let claim = ClaimSpec::default();
    assert!(leader.should_provision(&mk_claim(&claim)));
    assert!(!follower.should_provision(&mk_claim(&claim)));
    let quiet = follower
        .provision(mk_request("pvc-1", &claim, &class, params(&[]), None))
        .await;
    assert!(
        matches!(quiet, Err(ProvisionError::Ignored(_))),
        "{quiet:?}"
    );
    let err = leader
        .provision(mk_request("pvc-1", &claim, &class, params(&[]), None))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Infeasible(_)), "{err:?}");
    assert!(
        error_text(&err).contains("volumeBindingMode: WaitForFirstConsumer"),
        "{}",
        error_text(&err)
    );
    duties.set(false);
    assert!(!leader.should_provision(&mk_claim(&claim)));
}

#[tokio::test]
async fn shared_filesystems_allow_every_mode_and_immediate_binding() {
    let h = Harness::new(r#"{"sharedFileSystemPath":"{tmp}/shared"}"#);
    let mut class = mk_class("shared", &[]);
    class.volume_binding_mode = Some("Immediate".into());
    let leader = h
        .node("node-a")
        .with_cluster_duties(ClusterDuties::new(true));
    let claim = ClaimSpec {
        access_modes: &["ReadWriteMany", "ReadOnlyMany"],
        ..ClaimSpec::default()
    };
    let volume = leader
        .provision(mk_request("pvc-1", &claim, &class, params(&[]), None))
        .await
        .unwrap();
    assert!(volume.node_affinity.is_none());
    assert_eq!(
        host_path(&volume),
        h.path("shared/pvc-1_shop_data").to_str().unwrap()
    );
    assert_eq!(
        volume.annotations["local.path.provisioner/selected-node"],
        ""
    );

    let pv = mk_pv("pvc-1", &volume);
    assert!(
        !h.node("node-b").should_delete(&pv),
        "only the cluster-wide instance deletes shared volumes"
    );
    assert!(leader.should_delete(&pv));
    leader.delete(delete_request(pv)).await.unwrap();
    assert!(!h.path("shared/pvc-1_shop_data").exists());
}

#[tokio::test]
async fn node_local_volumes_refuse_shared_access_modes() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("local-path", &[]);
    let claim = ClaimSpec {
        access_modes: &["ReadWriteMany"],
        ..ClaimSpec::default()
    };
    let err = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &claim,
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Infeasible(_)), "{err:?}");
    assert!(error_text(&err).contains("ReadWriteMany"));
}

#[tokio::test]
async fn volume_type_comes_from_the_claim_then_the_class() {
    let h = Harness::new(TWO_DISKS);
    let local_class = mk_class("local-path", &[("defaultVolumeType", "local")]);
    let node = h.node("node-a");
    let volume = node
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &local_class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    assert!(volume.source.local.is_some() && volume.source.host_path.is_none());
    let claim = ClaimSpec {
        annotations: &[("volumeType", "hostPath")],
        ..ClaimSpec::default()
    };
    let volume = node
        .provision(mk_request(
            "pvc-2",
            &claim,
            &local_class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    assert!(volume.source.host_path.is_some());
    let bad = ClaimSpec {
        name: "bad",
        annotations: &[("volumeType", "nfs")],
        ..ClaimSpec::default()
    };
    let err = node
        .provision(mk_request(
            "pvc-3",
            &bad,
            &local_class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap_err();
    assert!(
        error_text(&err).contains("volumeType"),
        "{}",
        error_text(&err)
    );
    assert!(!h.path("default/pvc-3_shop_bad").exists());
}

#[tokio::test]
async fn mode_and_owner_come_from_the_class() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("private", &[]);
    let is_root = rustix::process::geteuid().is_root();
    let settings: &[(&str, &str)] = if is_root {
        &[("mode", "0750"), ("uid", "1234"), ("gid", "2345")]
    } else {
        &[("mode", "0750")]
    };
    let volume = h
        .node("node-x")
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(settings),
            Some("node-x"),
        ))
        .await
        .unwrap();
    let meta = std::fs::metadata(host_path(&volume)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    if is_root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (1234, 2345));
    }
}

#[tokio::test]
async fn a_retried_provision_reuses_the_first_attempts_directory() {
    let h = Harness::new(TWO_DISKS);
    h.disks.set_free(&h.path("disk1"), 10 * GIB);
    h.disks.set_free(&h.path("disk2"), 50 * GIB);
    let class = mk_class("local-path", &[]);
    let node = h.node("node-a");
    let first = node
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    // Free space changed between the attempts: placement alone would now pick disk1.
    h.disks.set_free(&h.path("disk1"), 90 * GIB);
    let second = node
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    assert_eq!(host_path(&first), host_path(&second));
    assert!(!h.path("disk1/pvc-1_shop_data").exists());
}

#[tokio::test]
async fn deletes_from_the_record_only_on_its_own_node() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("local-path", &[]);
    let node_a = h.node("node-a");
    let volume = node_a
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    let dir = PathBuf::from(host_path(&volume));
    std::fs::write(dir.join("file"), b"data").unwrap();
    let pv = mk_pv("pvc-1", &volume);

    let node_b = h.node("node-b");
    assert!(!node_b.should_delete(&pv));
    let ignored = node_b.delete(delete_request(pv.clone())).await;
    assert!(
        matches!(ignored, Err(DeleteError::Ignored(_))),
        "{ignored:?}"
    );
    assert!(dir.exists());

    assert!(node_a.should_delete(&pv));
    let outcome = node_a.delete(delete_request(pv.clone())).await.unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert!(!dir.exists());
    let again = node_a.delete(delete_request(pv)).await.unwrap();
    assert_eq!(again, DeleteOutcome::Deleted, "idempotent");
}

#[tokio::test]
async fn delete_does_not_depend_on_the_current_config() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("local-path", &[]);
    let volume = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    let dir = PathBuf::from(host_path(&volume));
    let other = Harness::new(r#"{"sharedFileSystemPath":"{tmp}/elsewhere"}"#);
    // Same disks, a config that no longer mentions them.
    let node_a = HostPathProvisioner::new(
        NodeIdentity::new("node-a"),
        other.config_rx.clone(),
        TimedFilesystem::new(HostFilesystem),
    );
    node_a
        .delete(delete_request(mk_pv("pvc-1", &volume)))
        .await
        .unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn an_interrupted_provision_is_cleaned_up_without_a_volume() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("local-path", &[]);
    let node_a = h.node("node-a");
    let volume = node_a
        .provision(mk_request(
            "pvc-9",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    let dir = PathBuf::from(host_path(&volume));
    // The PersistentVolume was never saved: only the controller's record remains.
    let request = DeleteRequest::new(
        "pvc-9",
        ClaimIdentity::new("shop", "data", "0f1e"),
        "local-path",
    )
    .with_parameters(params(&[]))
    .with_selected_node("node-a");
    let elsewhere = h.node("node-b").delete(request.clone()).await;
    assert!(
        matches!(elsewhere, Err(DeleteError::Ignored(_))),
        "{elsewhere:?}"
    );
    node_a.delete(request.clone()).await.unwrap();
    assert!(!dir.exists());
    // Nothing was ever created for this one: still a success.
    let never = DeleteRequest::new("pvc-10", ClaimIdentity::new("shop", "x", "1"), "local-path")
        .with_selected_node("node-a");
    node_a.delete(never).await.unwrap();
}

#[tokio::test]
async fn an_interrupted_provision_named_from_claim_labels_is_found_by_its_marker() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("patterned", &[]);
    let pattern = params(&[(
        "pathPattern",
        "{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ .PVC.Labels.team }}",
    )]);
    let claim = ClaimSpec {
        labels: &[("team", "db")],
        ..ClaimSpec::default()
    };
    let node_a = h.node("node-a");
    let volume = node_a
        .provision(mk_request(
            "pvc-7",
            &claim,
            &class,
            pattern.clone(),
            Some("node-a"),
        ))
        .await
        .unwrap();
    let dir = PathBuf::from(host_path(&volume));
    assert!(dir.ends_with("shop/data/db"), "{}", dir.display());
    // No volume, and no claim object either: the marker written before the directory
    // says where it is, whatever the labels are by now.
    let request = DeleteRequest::new(
        "pvc-7",
        ClaimIdentity::new("shop", "data", "0f1e"),
        "patterned",
    )
    .with_parameters(pattern)
    .with_selected_node("node-a");
    let outcome = node_a.delete(request).await.unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert!(!dir.exists());
}

#[tokio::test]
async fn volumes_of_vanished_nodes_follow_the_policy() {
    let h = Harness::new(TWO_DISKS);
    let class = mk_class("local-path", &[]);
    let volume = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap();
    let dir = PathBuf::from(host_path(&volume));
    let pv = mk_pv("pvc-1", &volume);
    let gone = Arc::new(Nodes {
        gone: vec!["node-a".into()],
    });

    let survivor = h
        .node("node-b")
        .with_cluster_duties(ClusterDuties::new(true))
        .with_node_directory(gone.clone());
    assert!(survivor.should_delete(&pv));
    let outcome = survivor.delete(delete_request(pv.clone())).await.unwrap();
    assert!(dir.exists(), "the default policy keeps the data");
    let DeleteOutcome::Forgotten { message } = outcome else {
        panic!("the volume is let go with a message for its Event: {outcome:?}");
    };
    assert!(message.contains("node-a"), "{message}");
    assert!(message.contains("pvc-1"), "{message}");

    let keeper = h
        .node("node-b")
        .with_cluster_duties(ClusterDuties::new(true))
        .with_node_directory(gone)
        .with_node_gone_policy(NodeGonePolicy::KeepVolume);
    let kept = keeper.delete(delete_request(pv.clone())).await;
    assert!(matches!(kept, Err(DeleteError::Failed(_))), "{kept:?}");

    let not_leader = h.node("node-b").with_node_directory(Arc::new(Nodes {
        gone: vec!["node-a".into()],
    }));
    assert!(!not_leader.should_delete(&pv));
}

#[tokio::test]
async fn local_path_volumes_are_adopted_and_deleted() {
    let h = Harness::new(TWO_DISKS);
    let dir = h.path("disk1/pvc-old_shop_data");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("nested/file"), b"x").unwrap();
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pvc-old".into()),
            annotations: Some(strings(&[
                (
                    "pv.kubernetes.io/provisioned-by",
                    LOCAL_PATH_PROVISIONER_NAME,
                ),
                ("local.path.provisioner/selected-node", "node-a"),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: dir.to_str().unwrap().into(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(backend_hostpath::volume::node_affinity(
                "kubernetes.io/hostname",
                "node-a",
            )),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };
    assert!(!h.node("node-b").should_delete(&pv));
    h.node("node-a").delete(delete_request(pv)).await.unwrap();
    assert!(!dir.exists());
    assert!(h.path("disk1").exists());
}

#[tokio::test]
async fn a_class_missing_from_storage_class_configs_is_refused() {
    let h =
        Harness::new(r#"{"storageClassConfigs":{"fast":{"sharedFileSystemPath":"{tmp}/fast"}}}"#);
    let class = mk_class("slow", &[]);
    let err = h
        .node("node-a")
        .provision(mk_request(
            "pvc-1",
            &ClaimSpec::default(),
            &class,
            params(&[]),
            Some("node-a"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProvisionError::Infeasible(_)), "{err:?}");
    assert!(
        error_text(&err).contains("\"slow\""),
        "{}",
        error_text(&err)
    );
}
