//! `nfs-provisioner` end to end: the binary runs as a ServiceAccount against a real local
//! control plane (etcd, kube-apiserver, kube-controller-manager's PV binder) and a real
//! NFS-Ganesha on loopback.
//!
//! Ganesha's VFS export directory *is* the share's content, so it also stands in for the
//! provisioner's mount at `/persistentvolumes` (mounted access), and tests check results by
//! reading it. A userspace NFSv3 client mounts volumes the way a kubelet would mount a
//! PersistentVolume's `server:path`.
//!
//! The tests share one control plane and run in parallel: each has its own namespace,
//! provisioner name, StorageClasses and NFS server. The seed scenario alone uses the
//! `default` namespace and the seed's names, as written. Ganesha needs root; as another
//! user these tests skip with a loud message.

mod nfs_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Endpoints, NFSVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use nfs_support::*;
use provisioner_core::leader;
use testenv::nfs::NfsServer;
use testenv::{ControlPlane, SharedControlPlane};

static PLANE: SharedControlPlane =
    SharedControlPlane::new(|| ControlPlane::builder().controller_manager(true));

/// The share the seed's Deployment names (`NFS_PATH`); the seed scenario's test server
/// publishes its export under it.
const SEED_NFS_PATH: &str = "/shared";

/// The ServiceAccount the provisioner runs as in every test but the seed scenario.
const SERVICE_ACCOUNT: &str = "nfs-provisioner";

const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// A temporary export directory and a Ganesha serving it, or `None` when not root.
async fn nfs_server(test: &str) -> Option<(tempfile::TempDir, NfsServer)> {
    let export = tempfile::Builder::new()
        .prefix(&format!("{test}-export-"))
        .tempdir()
        .expect("temporary export directory");
    let server = NfsServer::start_for_test(test, export.path()).await?;
    Some((export, server))
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("UTF-8 temporary path").to_owned()
}

/// Environment and flags of a provisioner with mounted access to `server`'s first export.
fn mounted(
    name: &str,
    namespace: &str,
    server: &NfsServer,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    let export = path_str(server.export());
    (
        vec![
            ("PROVISIONER_NAME", name.to_owned()),
            ("NFS_SERVER", server.address().to_owned()),
            ("NFS_PATH", export.clone()),
            ("POD_NAMESPACE", namespace.to_owned()),
        ],
        vec![format!("--mount-root={export}")],
    )
}

/// Environment of a provisioner with direct access to `server`'s first export.
fn direct(name: &str, namespace: &str, server: &NfsServer) -> Vec<(&'static str, String)> {
    vec![
        ("PROVISIONER_NAME", name.to_owned()),
        ("NFS_SERVER", server.address().to_owned()),
        ("NFS_PATH", path_str(server.export())),
        ("POD_NAMESPACE", namespace.to_owned()),
        ("NFS_ACCESS", "direct".to_owned()),
        ("NFS_PORT", server.nfs_port().to_string()),
        ("NFS_MOUNT_PORT", server.mount_port().to_string()),
    ]
}

/// A namespace whose provisioner ServiceAccount has exactly the RBAC of `deploy/nfs/`.
async fn namespace_with_rbac(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let namespace = testenv::create_namespace(client, prefix).await?;
    grant_deploy_rbac(client, &namespace, SERVICE_ACCOUNT).await?;
    Ok(namespace)
}

fn nfs_source(volume: &PersistentVolume) -> &NFSVolumeSource {
    volume
        .spec
        .as_ref()
        .and_then(|spec| spec.nfs.as_ref())
        .expect("an NFS volume")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

async fn wait_pending_with_event(
    client: &Client,
    namespace: &str,
    claim: &str,
    needles: &[&str],
) -> String {
    let message = wait_event(
        client,
        namespace,
        "PersistentVolumeClaim",
        claim,
        "ProvisioningFailed",
        needles,
    )
    .await;
    let current = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get(claim)
        .await
        .unwrap();
    assert_eq!(
        current.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "{namespace}/{claim} must stay Pending: {message}"
    );
    assert!(
        current.spec.and_then(|s| s.volume_name).is_none(),
        "{namespace}/{claim} must get no volume"
    );
    message
}

/// The seed scenario, with the seed's manifests applied as written (`tests/nfs_fixtures/
/// seed/`, copied verbatim from the tutorial) in the `default` namespace.
///
/// The provisioner runs as the seed's ServiceAccount with the environment of the seed's
/// Deployment as written (`NFS_PATH=/shared`: the test server publishes its temporary
/// export directory as `/shared`), except `NFS_SERVER`, the local test server, never the
/// tutorial's address. The export directory stands in for the mount at
/// `/persistentvolumes` (`--mount-root`).
#[tokio::test]
async fn seed_scenario_end_to_end() -> anyhow::Result<()> {
    let test = "seed_scenario_end_to_end";
    let export = tempfile::Builder::new()
        .prefix(&format!("{test}-export-"))
        .tempdir()?;
    let Some(server) = NfsServer::builder()
        .export_as(export.path(), SEED_NFS_PATH)
        .start_for_test(test)
        .await
    else {
        return Ok(());
    };
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = "default";

    // Step 1: the seed's ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding.
    let rbac = apply_file(&client, &seed_manifest("01-rbac.yaml"), namespace).await?;
    let kinds: Vec<_> = rbac
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );

    // Step 2: the provisioner, configured as the seed's Deployment configures its container.
    let seed_deployment: Deployment = serde_saphyr::from_str(&std::fs::read_to_string(
        seed_manifest("02-provisioner-deployment.yaml"),
    )?)?;
    let pod = seed_deployment.spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("nfs-pod-provisioner-sa")
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.volume_mounts.as_ref().unwrap()[0].mount_path,
        "/persistentvolumes"
    );
    let seed_env: BTreeMap<String, String> = container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        seed_env.keys().collect::<Vec<_>>(),
        ["NFS_PATH", "NFS_SERVER", "PROVISIONER_NAME"]
    );
    assert_eq!(seed_env["NFS_PATH"], SEED_NFS_PATH);
    assert_eq!(server.client_path(0), SEED_NFS_PATH);
    let env = vec![
        ("PROVISIONER_NAME", seed_env["PROVISIONER_NAME"].clone()),
        ("NFS_SERVER", server.address().to_owned()),
        ("NFS_PATH", seed_env["NFS_PATH"].clone()),
    ];
    let mut provisioner = Provisioner::start(
        plane,
        namespace,
        "nfs-pod-provisioner-sa",
        &env,
        &[format!("--mount-root={}", path_str(server.export()))],
    )
    .await?;

    // Steps 3 to 5: StorageClass, claim and nginx Deployment, as written.
    apply_file(&client, &seed_manifest("03-storageclass.yaml"), namespace).await?;
    apply_file(&client, &seed_manifest("04-pvc.yaml"), namespace).await?;
    apply_file(
        &client,
        &seed_manifest("05-nginx-deployment.yaml"),
        namespace,
    )
    .await?;

    // The claim is Bound to a PersistentVolume nobody wrote by hand.
    let (claim, volume) = wait_bound(&client, namespace, "nfs-pvc-test").await;
    provisioner.assert_running();
    let volume_name = volume.name_any();
    assert_eq!(volume_name, format!("pvc-{}", claim.uid().unwrap()));
    assert_eq!(
        volume.annotations().get(PROVISIONED_BY).map(String::as_str),
        Some("nfs-test")
    );
    let spec = volume.spec.as_ref().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("nfs-storageclass"));
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteMany".to_owned()][..])
    );
    assert_eq!(
        spec.capacity.as_ref().unwrap()["storage"],
        Quantity("50Mi".into())
    );
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    let directory = format!("default-nfs-pvc-test-{volume_name}");
    let source = nfs_source(&volume);
    assert_eq!(source.server, "127.0.0.1");
    assert_eq!(source.path, format!("/shared/{directory}"));

    // The directory exists on the export, world-writable as nfs-subdir makes it.
    let on_export = export.path().join(&directory);
    assert!(on_export.is_dir(), "{} missing", on_export.display());
    assert_eq!(mode(&on_export), 0o777);

    // A file written through NFS (mounting the volume's server:path, `/shared/...`, over
    // NFSv3 as a kubelet would) is in the directory, and a file put into the directory is
    // read through NFS.
    let mut nfs = NfsClient::mount(&server, &source.path).await?;
    nfs.write("from-the-pod.txt", b"written through NFS\n")
        .await?;
    assert_eq!(
        std::fs::read(on_export.join("from-the-pod.txt"))?,
        b"written through NFS\n"
    );
    std::fs::write(
        on_export.join("from-the-share.txt"),
        b"put into the share\n",
    )?;
    assert_eq!(
        nfs.read("from-the-share.txt").await?,
        b"put into the share\n"
    );

    // The workload that mounts the claim was accepted as written (there is no kubelet to
    // run it).
    let nginx = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get("nfs-nginx")
        .await?;
    let volumes = nginx.spec.template.spec.unwrap().volumes.unwrap();
    assert_eq!(
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "nfs-pvc-test"
    );

    // Leases are not granted by the seed's RBAC: leader election uses the Endpoints lock
    // the seed's Role allows, as the Go provisioner did.
    let lock = leader::lock_name("nfs-test");
    let endpoints = eventually("the Endpoints leader lock", || async {
        let endpoints = Api::<Endpoints>::namespaced(client.clone(), namespace)
            .get_opt(&lock)
            .await?;
        Ok(endpoints.filter(|e| {
            e.annotations()
                .contains_key(leader::ENDPOINTS_RECORD_ANNOTATION)
        }))
    })
    .await;
    assert!(
        endpoints.annotations()[leader::ENDPOINTS_RECORD_ANNOTATION].contains("holderIdentity")
    );

    // Deleting the claim deletes the volume and, with archiveOnDelete "false", the
    // directory.
    delete_claim(&client, namespace, "nfs-pvc-test").await?;
    wait_volume_gone(&client, &volume_name).await;
    assert!(
        !on_export.exists(),
        "{} must be deleted",
        on_export.display()
    );
    assert!(
        tree(export.path())
            .iter()
            .all(|entry| !entry.starts_with("archived-")),
        "nothing archived: {:?}",
        tree(export.path())
    );
    provisioner.assert_running();
    Ok(())
}

/// What deleting a claim must do to its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Deleted,
    Archived,
    Kept,
}

/// Every `onDelete` × `archiveOnDelete` × reclaim policy combination.
#[tokio::test]
async fn every_delete_combination() -> anyhow::Result<()> {
    let Some((export, server)) = nfs_server("every_delete_combination").await else {
        return Ok(());
    };
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "delete-combinations").await?;
    let name = testenv::unique_name("nfs-delete-combinations");
    let (env, args) = mounted(&name, &namespace, &server);
    let mut provisioner =
        Provisioner::start(plane, &namespace, SERVICE_ACCOUNT, &env, &args).await?;

    // The expectation, as nfs-subdir-external-provisioner documents it: nothing happens
    // with reclaim policy Retain; onDelete wins when set; otherwise archiveOnDelete
    // "false" deletes and anything else archives. One deliberate difference:
    // `onDelete: archive` (unknown to nfs-subdir, which fell through to archiveOnDelete)
    // archives.
    let mut cases = Vec::new();
    for on_delete in [None, Some("delete"), Some("retain"), Some("archive")] {
        for archive_on_delete in [None, Some("true"), Some("false")] {
            for reclaim in ["Delete", "Retain"] {
                let expected = match (reclaim, on_delete, archive_on_delete) {
                    ("Retain", _, _) => Expected::Kept,
                    (_, Some("delete"), _) => Expected::Deleted,
                    (_, Some("retain"), _) => Expected::Kept,
                    (_, Some("archive"), _) => Expected::Archived,
                    (_, None, Some("false")) => Expected::Deleted,
                    (_, None, _) => Expected::Archived,
                    (_, Some(other), _) => unreachable!("no such onDelete case: {other}"),
                };
                cases.push((on_delete, archive_on_delete, reclaim, expected));
            }
        }
    }
    assert_eq!(cases.len(), 24);

    for (index, (on_delete, archive_on_delete, reclaim, _)) in cases.iter().enumerate() {
        let mut parameters = Vec::new();
        if let Some(value) = on_delete {
            parameters.push(("onDelete", *value));
        }
        if let Some(value) = archive_on_delete {
            parameters.push(("archiveOnDelete", *value));
        }
        let class = format!("{namespace}-{index}");
        create_class(
            &client,
            &mk_class(&class, &name, &parameters, Some(reclaim)),
        )
        .await?;
        create_claim(
            &client,
            &mk_claim(&namespace, &format!("claim-{index}"), &class),
        )
        .await?;
    }

    let mut volumes = Vec::new();
    for index in 0..cases.len() {
        let claim = format!("claim-{index}");
        let (_, volume) = wait_bound(&client, &namespace, &claim).await;
        let directory = export
            .path()
            .join(format!("{namespace}-{claim}-{}", volume.name_any()));
        assert!(directory.is_dir(), "{}", directory.display());
        std::fs::write(directory.join("data"), format!("claim {index}"))?;
        volumes.push(volume);
    }
    for index in 0..cases.len() {
        delete_claim(&client, &namespace, &format!("claim-{index}")).await?;
    }

    for (index, ((on_delete, archive_on_delete, reclaim, expected), volume)) in
        cases.iter().zip(&volumes).enumerate()
    {
        let case = format!(
            "onDelete={on_delete:?} archiveOnDelete={archive_on_delete:?} reclaimPolicy={reclaim}"
        );
        let leaf = format!("{namespace}-claim-{index}-{}", volume.name_any());
        if *reclaim == "Delete" {
            wait_volume_gone(&client, &volume.name_any()).await;
        } else {
            // Kubernetes keeps a Retain volume Released; the provisioner never touches it.
            let released = wait_volume_phase(&client, &volume.name_any(), "Released").await;
            assert!(released.metadata.deletion_timestamp.is_none(), "{case}");
        }
        let original = export.path().join(&leaf);
        let archived = export.path().join(format!("archived-{leaf}"));
        let (original_exists, archived_exists) = (original.exists(), archived.exists());
        match expected {
            Expected::Deleted => assert!(!original_exists && !archived_exists, "{case}: deleted"),
            Expected::Kept => assert!(original_exists && !archived_exists, "{case}: kept"),
            Expected::Archived => {
                assert!(!original_exists && archived_exists, "{case}: archived");
                assert_eq!(
                    std::fs::read_to_string(archived.join("data"))?,
                    format!("claim {index}"),
                    "{case}: the archive keeps the data"
                );
            }
        }
    }
    provisioner.assert_running();
    Ok(())
}

/// Nested `pathPattern`s: directories keep their nesting, archives land beside the
/// directory (numbered when the name is taken), deleting removes only the volume's own
/// directory, and two live volumes never share one.
#[tokio::test]
async fn nested_patterns() -> anyhow::Result<()> {
    let Some((export, server)) = nfs_server("nested_patterns").await else {
        return Ok(());
    };
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "nested-patterns").await?;
    let name = testenv::unique_name("nfs-nested");
    let (env, args) = mounted(&name, &namespace, &server);
    let mut provisioner =
        Provisioner::start(plane, &namespace, SERVICE_ACCOUNT, &env, &args).await?;

    let by_team = "${.PVC.namespace}/${.PVC.labels.team}/${.PVC.name}";
    let archive = format!("{namespace}-archive");
    let delete = format!("{namespace}-delete");
    let per_volume = format!("{namespace}-per-volume");
    let per_team = format!("{namespace}-per-team");
    for (class, parameters) in [
        (
            &archive,
            vec![("pathPattern", by_team), ("onDelete", "archive")],
        ),
        (
            &delete,
            vec![("pathPattern", by_team), ("onDelete", "delete")],
        ),
        (
            &per_volume,
            vec![
                (
                    "pathPattern",
                    "${.PVC.annotations.nfs.io/storage-path}/${.PV.name}",
                ),
                ("onDelete", "delete"),
            ],
        ),
        (
            &per_team,
            vec![("pathPattern", "${.PVC.namespace}/${.PVC.labels.team}")],
        ),
    ] {
        create_class(&client, &mk_class(class, &name, &parameters, None)).await?;
    }
    let claim = |claim: &str, class: &str, team: &str| {
        with_metadata(
            mk_claim(&namespace, claim, class),
            &[("team", team)],
            &[("nfs.io/storage-path", "projects/alpha")],
        )
    };
    create_claim(&client, &claim("reports", &archive, "red")).await?;
    create_claim(&client, &claim("scratch", &delete, "blue")).await?;
    create_claim(&client, &claim("cache", &per_volume, "green")).await?;

    let share = path_str(server.export());
    let (_, reports) = wait_bound(&client, &namespace, "reports").await;
    let (_, scratch) = wait_bound(&client, &namespace, "scratch").await;
    let (_, cache) = wait_bound(&client, &namespace, "cache").await;
    for (volume, directory) in [
        (&reports, format!("{namespace}/red/reports")),
        (&scratch, format!("{namespace}/blue/scratch")),
        (&cache, format!("projects/alpha/{}", cache.name_any())),
    ] {
        assert_eq!(nfs_source(volume).path, format!("{share}/{directory}"));
        assert_eq!(mode(&export.path().join(&directory)), 0o777, "{directory}");
    }
    assert_eq!(
        mode(&export.path().join(&namespace)),
        0o755,
        "parents get 0755"
    );

    // Two live volumes never share a directory: the second claim of a team in a
    // per-team class is refused, naming the volume that has the directory.
    create_claim(&client, &claim("team-one", &per_team, "gold")).await?;
    let (_, team_one) = wait_bound(&client, &namespace, "team-one").await;
    create_claim(&client, &claim("team-two", &per_team, "gold")).await?;
    wait_pending_with_event(
        &client,
        &namespace,
        "team-two",
        &[&team_one.name_any(), "allowSharedDirectory"],
    )
    .await;

    // Archive beside the directory, keeping the nesting and the parents.
    std::fs::write(
        export.path().join(format!("{namespace}/red/reports/q1")),
        b"q1",
    )?;
    delete_claim(&client, &namespace, "reports").await?;
    wait_volume_gone(&client, &reports.name_any()).await;
    let red = export.path().join(format!("{namespace}/red"));
    assert!(!red.join("reports").exists());
    assert_eq!(std::fs::read(red.join("archived-reports/q1"))?, b"q1");

    // The same directory again, archived again: the archive name is taken, so it is
    // numbered instead of failing.
    create_claim(&client, &claim("reports", &archive, "red")).await?;
    let (_, again) = wait_bound(&client, &namespace, "reports").await;
    std::fs::write(red.join("reports/q2"), b"q2")?;
    delete_claim(&client, &namespace, "reports").await?;
    wait_volume_gone(&client, &again.name_any()).await;
    assert_eq!(std::fs::read(red.join("archived-reports/q1"))?, b"q1");
    assert_eq!(std::fs::read(red.join("archived-reports-1/q2"))?, b"q2");

    // Delete removes the volume's own directory only; the parents stay.
    delete_claim(&client, &namespace, "scratch").await?;
    delete_claim(&client, &namespace, "cache").await?;
    wait_volume_gone(&client, &scratch.name_any()).await;
    wait_volume_gone(&client, &cache.name_any()).await;
    assert!(
        !export
            .path()
            .join(format!("{namespace}/blue/scratch"))
            .exists()
    );
    assert!(export.path().join(format!("{namespace}/blue")).is_dir());
    assert!(
        !export
            .path()
            .join(format!("projects/alpha/{}", cache.name_any()))
            .exists()
    );
    assert!(export.path().join("projects/alpha").is_dir());
    provisioner.assert_running();
    Ok(())
}

/// Claims whose annotations would lead outside the export, onto a shared parent or
/// through a symbolic link get a Warning Event naming the claim and the value, stay
/// Pending, and nothing is created anywhere.
#[tokio::test]
async fn hostile_annotations_create_nothing() -> anyhow::Result<()> {
    let Some((export, server)) = nfs_server("hostile_annotations_create_nothing").await else {
        return Ok(());
    };
    let outside = tempfile::tempdir()?;
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "hostile").await?;
    let name = testenv::unique_name("nfs-hostile");
    let (env, args) = mounted(&name, &namespace, &server);
    let mut provisioner =
        Provisioner::start(plane, &namespace, SERVICE_ACCOUNT, &env, &args).await?;

    // nfs-subdir's README example, which let any claim author pick the directory.
    let class = format!("{namespace}-by-annotation");
    create_class(
        &client,
        &mk_class(
            &class,
            &name,
            &[
                (
                    "pathPattern",
                    "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}",
                ),
                ("onDelete", "delete"),
            ],
            None,
        ),
    )
    .await?;
    // A link planted inside the export, pointing outside it.
    std::fs::create_dir_all(export.path().join(&namespace))?;
    symlink(
        outside.path(),
        export.path().join(&namespace).join("escape"),
    )?;
    let before = tree(export.path());

    let hostile: [(&str, Option<&str>, &[&str]); 6] = [
        ("dot-dot", Some("../../../etc"), &["\"../../../etc\""]),
        ("absolute", Some("/etc/cron.d"), &["\"/etc/cron.d\""]),
        ("empty-segment", Some("a//b"), &["\"a//b\""]),
        ("missing", None, &["resolves to nothing"]),
        ("empty", Some(""), &["resolves to nothing"]),
        ("through-link", Some("escape/data"), &["symbolic link"]),
    ];
    for (claim, value, _) in &hostile {
        let annotations: Vec<(&str, &str)> = value
            .iter()
            .map(|value| ("nfs.io/storage-path", *value))
            .collect();
        create_claim(
            &client,
            &with_metadata(mk_claim(&namespace, claim, &class), &[], &annotations),
        )
        .await?;
    }
    for (claim, _, needles) in &hostile {
        let message = wait_pending_with_event(&client, &namespace, claim, needles).await;
        if *claim != "through-link" {
            assert!(
                message.contains(&format!("{namespace}/{claim}")),
                "the Event names the claim: {message}"
            );
        }
    }
    assert_eq!(tree(export.path()), before, "nothing created on the export");
    assert!(
        tree(outside.path()).is_empty(),
        "nothing created outside it"
    );

    // The class itself works for a well-behaved claim.
    create_claim(
        &client,
        &with_metadata(
            mk_claim(&namespace, "benign", &class),
            &[],
            &[("nfs.io/storage-path", "team/data")],
        ),
    )
    .await?;
    let (_, volume) = wait_bound(&client, &namespace, "benign").await;
    assert_eq!(
        nfs_source(&volume).path,
        format!("{}/{namespace}/team/data", path_str(server.export()))
    );
    provisioner.assert_running();
    Ok(())
}

/// Direct access against the same server as mounted access gives the same
/// PersistentVolume; volumes are mountable and deleted through NFS alone. A class naming
/// another export is refused in mounted mode.
#[tokio::test]
async fn direct_access_matches_mounted_access() -> anyhow::Result<()> {
    let Some((export, server)) = nfs_server("direct_access_matches_mounted_access").await else {
        return Ok(());
    };
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "direct").await?;
    let mounted_name = testenv::unique_name("nfs-mounted");
    let direct_name = testenv::unique_name("nfs-direct");
    let (env, args) = mounted(&mounted_name, &namespace, &server);
    let mut mounted_provisioner =
        Provisioner::start(plane, &namespace, SERVICE_ACCOUNT, &env, &args).await?;
    let mut direct_provisioner = Provisioner::start(
        plane,
        &namespace,
        SERVICE_ACCOUNT,
        &direct(&direct_name, &namespace, &server),
        &[],
    )
    .await?;

    let parameters = [("archiveOnDelete", "false")];
    let mounted_class = format!("{namespace}-mounted");
    let direct_class = format!("{namespace}-direct");
    create_class(
        &client,
        &mk_class(&mounted_class, &mounted_name, &parameters, None),
    )
    .await?;
    create_class(
        &client,
        &mk_class(&direct_class, &direct_name, &parameters, None),
    )
    .await?;
    create_claim(&client, &mk_claim(&namespace, "data", &mounted_class)).await?;
    create_claim(&client, &mk_claim(&namespace, "data-direct", &direct_class)).await?;
    let (_, by_mount) = wait_bound(&client, &namespace, "data").await;
    let (_, by_nfs) = wait_bound(&client, &namespace, "data-direct").await;

    // The same PersistentVolume either way, up to names.
    let share = path_str(server.export());
    let normalize = |volume: &PersistentVolume, claim: &str| {
        let mut spec = volume.spec.clone().unwrap();
        spec.claim_ref = None;
        spec.storage_class_name = None;
        let path = &mut spec.nfs.as_mut().unwrap().path;
        *path = path.replace(
            &format!("{namespace}-{claim}-{}", volume.name_any()),
            "<dir>",
        );
        let mut annotations = volume.annotations().clone();
        annotations.remove(PROVISIONED_BY);
        // The controller's record names the volume, class and provisioner; only the
        // parameters it recorded must agree.
        for value in annotations.values_mut() {
            if let Ok(serde_json::Value::Object(record)) = serde_json::from_str(value)
                && let Some(parameters) = record.get("parameters")
            {
                *value = parameters.to_string();
            }
        }
        for value in annotations.values_mut() {
            *value = value.replace(
                &format!("{namespace}-{claim}-{}", volume.name_any()),
                "<dir>",
            );
        }
        (spec, annotations)
    };
    assert_eq!(
        normalize(&by_mount, "data"),
        normalize(&by_nfs, "data-direct")
    );
    assert_eq!(
        nfs_source(&by_nfs).path,
        format!("{share}/{namespace}-data-direct-{}", by_nfs.name_any())
    );

    // Created through NFS with the exact mode, and mountable.
    let directory = export
        .path()
        .join(format!("{namespace}-data-direct-{}", by_nfs.name_any()));
    assert_eq!(mode(&directory), 0o777);
    let mut nfs = NfsClient::mount(&server, &nfs_source(&by_nfs).path).await?;
    nfs.write("hello", b"direct").await?;
    assert_eq!(std::fs::read(directory.join("hello"))?, b"direct");

    // Deleted through NFS, contents and all.
    delete_claim(&client, &namespace, "data-direct").await?;
    wait_volume_gone(&client, &by_nfs.name_any()).await;
    assert!(!directory.exists());

    // Mounted access reaches only its own export: a class naming another is refused.
    let elsewhere = format!("{namespace}-elsewhere");
    create_class(
        &client,
        &mk_class(
            &elsewhere,
            &mounted_name,
            &[("server", "127.0.0.1"), ("share", "/somewhere/else")],
            None,
        ),
    )
    .await?;
    create_claim(&client, &mk_claim(&namespace, "elsewhere", &elsewhere)).await?;
    wait_pending_with_event(&client, &namespace, "elsewhere", &["direct NFS access"]).await;
    mounted_provisioner.assert_running();
    direct_provisioner.assert_running();
    Ok(())
}

/// One provisioner (direct access), two StorageClasses on two exports of a server: each
/// class's volumes land on its own export and are mountable there. Leader election runs
/// on a Lease, which the RBAC of `deploy/nfs/` grants.
#[tokio::test]
async fn two_classes_on_two_exports() -> anyhow::Result<()> {
    let first = tempfile::tempdir()?;
    let second = tempfile::tempdir()?;
    let Some(server) = NfsServer::builder()
        .export(first.path())
        .export(second.path())
        .start_for_test("two_classes_on_two_exports")
        .await
    else {
        return Ok(());
    };
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "two-exports").await?;
    let name = testenv::unique_name("nfs-two-exports");
    let mut provisioner = Provisioner::start(
        plane,
        &namespace,
        SERVICE_ACCOUNT,
        &direct(&name, &namespace, &server),
        &[],
    )
    .await?;

    let second_share = path_str(&server.exports()[1]);
    let first_class = format!("{namespace}-first");
    let second_class = format!("{namespace}-second");
    create_class(
        &client,
        &mk_class(&first_class, &name, &[("onDelete", "delete")], None),
    )
    .await?;
    let mut class = mk_class(
        &second_class,
        &name,
        &[
            ("onDelete", "delete"),
            ("server", "127.0.0.1"),
            ("share", &second_share),
        ],
        None,
    );
    class.mount_options = Some(vec!["nfsvers=3".into(), "hard".into()]);
    create_class(&client, &class).await?;
    create_claim(&client, &mk_claim(&namespace, "one", &first_class)).await?;
    create_claim(&client, &mk_claim(&namespace, "two", &second_class)).await?;
    let (_, one) = wait_bound(&client, &namespace, "one").await;
    let (_, two) = wait_bound(&client, &namespace, "two").await;

    for (volume, share, root, claim) in [
        (
            &one,
            path_str(&server.exports()[0]),
            &server.exports()[0],
            "one",
        ),
        (&two, second_share.clone(), &server.exports()[1], "two"),
    ] {
        let leaf = format!("{namespace}-{claim}-{}", volume.name_any());
        assert_eq!(nfs_source(volume).path, format!("{share}/{leaf}"));
        assert!(root.join(&leaf).is_dir(), "{claim} on its own export");
        let mut nfs = NfsClient::mount(&server, &nfs_source(volume).path).await?;
        nfs.write("marker", claim.as_bytes()).await?;
        assert_eq!(
            std::fs::read(root.join(&leaf).join("marker"))?,
            claim.as_bytes()
        );
    }
    assert_eq!(
        two.spec.as_ref().unwrap().mount_options.as_deref(),
        Some(&["nfsvers=3".to_owned(), "hard".to_owned()][..])
    );
    assert!(one.spec.as_ref().unwrap().mount_options.is_none());

    // Leader election holds a Lease in the provisioner's namespace.
    let lease = Api::<Lease>::namespaced(client.clone(), &namespace)
        .get(&leader::lock_name(&name))
        .await?;
    assert!(lease.spec.and_then(|s| s.holder_identity).is_some());

    for (claim, volume, root) in [
        ("one", &one, &server.exports()[0]),
        ("two", &two, &server.exports()[1]),
    ] {
        delete_claim(&client, &namespace, claim).await?;
        wait_volume_gone(&client, &volume.name_any()).await;
        assert!(tree(root).is_empty(), "{claim}: {:?}", tree(root));
    }
    provisioner.assert_running();
    Ok(())
}

/// An NFS server stopped mid-run, then restarted; later hung (SIGSTOP), then resumed.
/// Meanwhile claims on it get Warning Events, `/readyz` fails naming the export, a class on
/// another server keeps working, and everything recovers afterwards.
#[tokio::test]
async fn nfs_server_outage_and_recovery() -> anyhow::Result<()> {
    let Some((_first_export, mut first)) = nfs_server("nfs_server_outage_and_recovery").await
    else {
        return Ok(());
    };
    let Some((_second_export, second)) = nfs_server("nfs_server_outage_and_recovery").await else {
        return Ok(());
    };
    // Direct access uses one pair of ports for every server: the second server is reached
    // at 127.0.0.2 on the first one's ports.
    let at = |ip: &str, port: u16| -> SocketAddr { format!("{ip}:{port}").parse().unwrap() };
    let _forwarder = Forwarder::start(&[
        (
            at("127.0.0.2", first.nfs_port()),
            at("127.0.0.1", second.nfs_port()),
        ),
        (
            at("127.0.0.2", first.mount_port()),
            at("127.0.0.1", second.mount_port()),
        ),
    ])
    .await?;

    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "outage").await?;
    let name = testenv::unique_name("nfs-outage");
    let mut env = direct(&name, &namespace, &first);
    env.push(("NFS_OPERATION_TIMEOUT", "3s".into()));
    let mut provisioner = Provisioner::start(plane, &namespace, SERVICE_ACCOUNT, &env, &[]).await?;

    let first_share = path_str(first.export());
    let second_share = path_str(second.export());
    let on_first = format!("{namespace}-first");
    let on_second = format!("{namespace}-second");
    create_class(&client, &mk_class(&on_first, &name, &[], None)).await?;
    create_class(
        &client,
        &mk_class(
            &on_second,
            &name,
            &[("server", "127.0.0.2"), ("share", &second_share)],
            None,
        ),
    )
    .await?;
    create_claim(&client, &mk_claim(&namespace, "first-0", &on_first)).await?;
    create_claim(&client, &mk_claim(&namespace, "second-0", &on_second)).await?;
    wait_bound(&client, &namespace, "first-0").await;
    let (_, on_second_volume) = wait_bound(&client, &namespace, "second-0").await;
    assert_eq!(nfs_source(&on_second_volume).server, "127.0.0.2");
    eventually("/readyz to pass", || async {
        Ok(provisioner.readyz().await?.ok())
    })
    .await;

    for (phase, outage) in [("stopped", Outage::Stop), ("hung", Outage::Pause)] {
        match outage {
            Outage::Stop => first.stop(),
            Outage::Pause => first.pause()?,
        }
        let claim_on_first = format!("first-{phase}");
        let claim_on_second = format!("second-{phase}");
        create_claim(&client, &mk_claim(&namespace, &claim_on_first, &on_first)).await?;
        create_claim(&client, &mk_claim(&namespace, &claim_on_second, &on_second)).await?;

        // The other class keeps working.
        wait_bound(&client, &namespace, &claim_on_second).await;
        // The claim on the unavailable server is told why.
        let symptom = match outage {
            Outage::Stop => "unreachable",
            Outage::Pause => "timed out",
        };
        wait_pending_with_event(
            &client,
            &namespace,
            &claim_on_first,
            &[&first_share, symptom],
        )
        .await;
        let reason = eventually(format!("/readyz to fail while {phase}"), || async {
            Ok(provisioner.readyz().await?.err())
        })
        .await;
        assert!(reason.contains(&first_share), "{reason}");
        assert!(!reason.contains(&second_share), "{reason}");
        provisioner.assert_running();

        match outage {
            Outage::Stop => first.restart().await?,
            Outage::Pause => first.resume()?,
        }
        wait_bound(&client, &namespace, &claim_on_first).await;
        eventually(
            format!("/readyz to pass after the server was {phase}"),
            || async { Ok(provisioner.readyz().await?.ok()) },
        )
        .await;
    }
    provisioner.assert_running();
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Outage {
    Stop,
    Pause,
}

/// Volumes of the Go provisioners (no record of their own; `provisioned-by` one of their
/// names) are deleted after switching, when their names are aliases; their classes are
/// served too. Volumes of other provisioners are left alone.
#[tokio::test]
async fn go_provisioner_volumes_after_switching() -> anyhow::Result<()> {
    let Some((export, server)) = nfs_server("go_provisioner_volumes_after_switching").await else {
        return Ok(());
    };
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = namespace_with_rbac(&client, "switching").await?;
    let name = testenv::unique_name("nfs-switching");
    // Go provisioner names, made unique so parallel tests cannot interfere.
    let old_client = format!("fuseim.pri/ifs-{namespace}");
    let old_subdir = format!("k8s-sigs.io/nfs-subdir-external-provisioner-{namespace}");
    let share = path_str(server.export());

    // What nfs-client-provisioner left behind: a class, a bound volume, its directory.
    let old_class = format!("{namespace}-managed-nfs-storage");
    create_class(&client, &mk_class(&old_class, &old_client, &[], None)).await?;
    let mut volumes = Vec::new();
    for (claim, provisioned_by) in [
        ("old-claim", old_client.as_str()),
        ("foreign", "example.com/other"),
    ] {
        let volume_name = testenv::unique_name("pvc-go");
        let directory = format!("{namespace}-{claim}-{volume_name}");
        std::fs::create_dir(export.path().join(&directory))?;
        std::fs::write(export.path().join(&directory).join("data"), claim)?;
        let volume = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(volume_name.clone()),
                annotations: Some(BTreeMap::from([(
                    PROVISIONED_BY.into(),
                    provisioned_by.into(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Mi".into()))])),
                access_modes: Some(vec!["ReadWriteMany".into()]),
                persistent_volume_reclaim_policy: Some("Delete".into()),
                storage_class_name: Some(old_class.clone()),
                nfs: Some(NFSVolumeSource {
                    server: "127.0.0.1".into(),
                    path: format!("{share}/{directory}"),
                    read_only: None,
                }),
                claim_ref: Some(ObjectReference {
                    namespace: Some(namespace.clone()),
                    name: Some(claim.into()),
                    ..ObjectReference::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        };
        Api::<PersistentVolume>::all(client.clone())
            .create(&PostParams::default(), &volume)
            .await?;
        let mut pre_bound = mk_claim(&namespace, claim, &old_class);
        pre_bound.spec.as_mut().unwrap().volume_name = Some(volume_name.clone());
        create_claim(&client, &pre_bound).await?;
        wait_bound(&client, &namespace, claim).await;
        volumes.push((volume_name, directory));
    }

    // The switch: this provisioner answers to the old names.
    let (mut env, args) = mounted(&name, &namespace, &server);
    env.push(("PROVISIONER_ALIASES", format!("{old_client},{old_subdir}")));
    let mut provisioner =
        Provisioner::start(plane, &namespace, SERVICE_ACCOUNT, &env, &args).await?;

    // The old class is served.
    create_claim(&client, &mk_claim(&namespace, "new-claim", &old_class)).await?;
    let (_, new_volume) = wait_bound(&client, &namespace, "new-claim").await;
    assert!(
        export
            .path()
            .join(format!("{namespace}-new-claim-{}", new_volume.name_any()))
            .is_dir()
    );

    // The old volume is deleted: without a record, the default legacy policy archives.
    delete_claim(&client, &namespace, "old-claim").await?;
    delete_claim(&client, &namespace, "foreign").await?;
    let (old_volume, old_directory) = &volumes[0];
    wait_volume_gone(&client, old_volume).await;
    assert!(!export.path().join(old_directory).exists());
    assert_eq!(
        std::fs::read_to_string(export.path().join(format!("archived-{old_directory}/data")))?,
        "old-claim"
    );

    // Another provisioner's volume is not ours: it stays Released, its data in place.
    let (foreign_volume, foreign_directory) = &volumes[1];
    wait_volume_phase(&client, foreign_volume, "Released").await;
    assert!(export.path().join(foreign_directory).join("data").is_file());
    provisioner.assert_running();
    Ok(())
}
