//! The NFS provisioner's behaviour, through its `Provisioner` implementation, on an export
//! that is a local directory (mounted access). The same logic over a real NFS server is in
//! `ganesha.rs`.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::{Arc, Mutex};

use backend_nfs::parameters::DeletePolicy;
use backend_nfs::record::{DIRECTORY_ANNOTATION, ON_DELETE_ANNOTATION, SHARE_ANNOTATION};
use backend_nfs::{NfsConfig, NfsProvisioner};
use k8s_openapi::api::core::v1::{NFSVolumeSource, PersistentVolume, PersistentVolumeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use provisioner_core::provisioner::{DeleteError, ProvisionError, Provisioner};
use support::{Case, map, mk_claim, mk_class};

const SERVER: &str = "127.0.0.1";
const SHARE: &str = "/shared";

fn mk_provisioner(root: &Path) -> NfsProvisioner {
    NfsProvisioner::new(NfsConfig::mounted(SERVER, SHARE, root)).unwrap()
}

fn mk_legacy_pv(name: &str, server: &str, path: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(map(&[(
                "pv.kubernetes.io/provisioned-by",
                "k8s-sigs.io/nfs-subdir-external-provisioner",
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            nfs: Some(NFSVolumeSource {
                server: server.into(),
                path: path.into(),
                read_only: None,
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    }
}

/// The seed scenario's class and claim, as far as the backend sees them.
#[tokio::test]
async fn seed_scenario_creates_and_deletes_the_default_directory() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let case = Case::new(
        mk_claim("default", "nfs-pvc-test", &[], &[]),
        mk_class(&[("archiveOnDelete", "false")]),
        "pvc-0b5f0e6c-5d2e-4c42-9d8a-1f0e3c1b2a77",
    );
    let volume = case.provision(&provisioner).await.unwrap();

    let directory = "default-nfs-pvc-test-pvc-0b5f0e6c-5d2e-4c42-9d8a-1f0e3c1b2a77";
    let nfs = volume.spec.as_ref().unwrap().nfs.as_ref().unwrap();
    assert_eq!(nfs.server, SERVER);
    assert_eq!(nfs.path, format!("{SHARE}/{directory}"));
    let annotations = volume.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[DIRECTORY_ANNOTATION], directory);
    assert_eq!(annotations[SHARE_ANNOTATION], SHARE);
    assert_eq!(annotations[ON_DELETE_ANNOTATION], "delete");
    let on_disk = export.path().join(directory);
    assert_eq!(
        on_disk.metadata().unwrap().permissions().mode() & 0o7777,
        0o777,
        "nfs-subdir's default mode"
    );

    std::fs::write(on_disk.join("index.html"), b"hello").unwrap();
    provisioner
        .delete(case.delete_request(&provisioner, Some(volume)))
        .await
        .unwrap();
    assert!(!on_disk.exists());
}

#[tokio::test]
async fn every_delete_policy_combination() {
    let cases: [(&[(&str, &str)], &str); 12] = [
        (&[], "archive"),
        (&[("archiveOnDelete", "true")], "archive"),
        (&[("archiveOnDelete", "false")], "delete"),
        (&[("onDelete", "delete")], "delete"),
        (
            &[("onDelete", "delete"), ("archiveOnDelete", "true")],
            "delete",
        ),
        (
            &[("onDelete", "delete"), ("archiveOnDelete", "false")],
            "delete",
        ),
        (&[("onDelete", "retain")], "retain"),
        (
            &[("onDelete", "retain"), ("archiveOnDelete", "true")],
            "retain",
        ),
        (
            &[("onDelete", "retain"), ("archiveOnDelete", "false")],
            "retain",
        ),
        (&[("onDelete", "archive")], "archive"),
        (
            &[("onDelete", "archive"), ("archiveOnDelete", "true")],
            "archive",
        ),
        (
            &[("onDelete", "archive"), ("archiveOnDelete", "false")],
            "archive",
        ),
    ];
    for (parameters, expected) in cases {
        let export = tempfile::tempdir().unwrap();
        let provisioner = mk_provisioner(export.path());
        let case = Case::new(
            mk_claim("ns", "claim", &[], &[]),
            mk_class(parameters),
            "pvc-1",
        );
        let volume = case.provision(&provisioner).await.unwrap();
        let directory = export.path().join("ns-claim-pvc-1");
        std::fs::write(directory.join("data"), b"x").unwrap();
        provisioner
            .delete(case.delete_request(&provisioner, Some(volume)))
            .await
            .unwrap();

        let archived = export.path().join("archived-ns-claim-pvc-1");
        let outcome = match (directory.exists(), archived.exists()) {
            (false, false) => "delete",
            (true, false) => "retain",
            (false, true) => "archive",
            (true, true) => "both?",
        };
        assert_eq!(outcome, expected, "{parameters:?}");
        if expected == "archive" {
            assert!(
                archived.join("data").exists(),
                "the data moves with the archive"
            );
        }
    }
}

#[tokio::test]
async fn nested_patterns_archive_in_place_with_unique_names() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let class = mk_class(&[
        (
            "pathPattern",
            "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}",
        ),
        ("onDelete", "archive"),
    ]);
    let mut archived = Vec::new();
    for (index, volume_name) in ["pvc-1", "pvc-2", "pvc-3"].into_iter().enumerate() {
        // The same directory again once the previous volume is gone (reuse by pattern).
        let case = Case::new(
            mk_claim("team-a", "data", &[], &[("nfs.io/storage-path", "db")]),
            class.clone(),
            volume_name,
        );
        let volume = case.provision(&provisioner).await.unwrap();
        assert_eq!(
            volume.spec.as_ref().unwrap().nfs.as_ref().unwrap().path,
            "/shared/team-a/db"
        );
        std::fs::write(
            export.path().join("team-a/db/generation"),
            index.to_string(),
        )
        .unwrap();
        provisioner
            .delete(case.delete_request(&provisioner, Some(volume)))
            .await
            .unwrap();
        archived.push(export.path().join(match index {
            0 => "team-a/archived-db".to_owned(),
            n => format!("team-a/archived-db-{n}"),
        }));
    }
    for (index, path) in archived.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(path.join("generation")).unwrap(),
            index.to_string()
        );
    }
    assert!(!export.path().join("team-a/db").exists());
    assert!(
        !export.path().join("archived-db").exists(),
        "nothing is flattened to the root"
    );
}

#[tokio::test]
async fn hostile_annotations_are_refused_naming_claim_and_value() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let class = mk_class(&[("pathPattern", "${.PVC.namespace}/${.PVC.annotations.path}")]);
    for value in ["../../etc", "/etc", "..", "a/../../b", ""] {
        let case = Case::new(
            mk_claim("ns", "evil", &[], &[("path", value)]),
            class.clone(),
            "pvc-evil",
        );
        let error = case.provision(&provisioner).await.unwrap_err();
        assert!(
            matches!(error, ProvisionError::Infeasible(_)),
            "{value:?}: {error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("ns/evil"), "{message}");
        if !value.is_empty() {
            assert!(message.contains(&format!("{value:?}")), "{message}");
        }
    }
    // A missing annotation no longer collapses onto the namespace directory.
    let case = Case::new(mk_claim("ns", "plain", &[], &[]), class, "pvc-plain");
    let error = case.provision(&provisioner).await.unwrap_err();
    assert!(error.to_string().contains("resolves to nothing"), "{error}");
    assert_eq!(
        std::fs::read_dir(export.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn symlinks_in_the_export_cannot_lead_outside() {
    let export = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), export.path().join("ns")).unwrap();
    let provisioner = mk_provisioner(export.path());
    let case = Case::new(
        mk_claim("ns", "claim", &[], &[]),
        mk_class(&[("pathPattern", "${.PVC.namespace}/${.PVC.name}")]),
        "pvc-1",
    );
    let error = case.provision(&provisioner).await.unwrap_err();
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn mode_and_owner_come_from_the_class() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    // Giving a directory away needs root; otherwise only the mode is checked.
    let root = rustix::process::geteuid().is_root();
    let mut parameters = vec![("mode", "2770")];
    if root {
        parameters.extend([("uid", "1234"), ("gid", "5678")]);
    } else {
        eprintln!("!!! mode_and_owner_come_from_the_class: not root, owner not checked");
    }
    let case = Case::new(
        mk_claim("ns", "claim", &[], &[]),
        mk_class(&parameters),
        "pvc-1",
    );
    case.provision(&provisioner).await.unwrap();
    let metadata = export.path().join("ns-claim-pvc-1").metadata().unwrap();
    assert_eq!(metadata.mode() & 0o7777, 0o2770);
    if root {
        assert_eq!((metadata.uid(), metadata.gid()), (1234, 5678));
    }
}

#[tokio::test]
async fn provisioning_is_idempotent_per_volume() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let case = Case::new(
        mk_claim("ns", "claim", &[], &[]),
        mk_class(&[("pathPattern", "${.PVC.name}")]),
        "pvc-1",
    );
    let first = case.provision(&provisioner).await.unwrap();
    std::fs::write(export.path().join("claim/data"), b"x").unwrap();
    let second = case.provision(&provisioner).await.unwrap();
    assert_eq!(first, second);
    assert!(export.path().join("claim/data").exists());
}

#[tokio::test]
async fn delete_uses_the_record_not_the_class_of_today() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let case = Case::new(
        mk_claim("ns", "claim", &[], &[]),
        mk_class(&[("onDelete", "retain")]),
        "pvc-1",
    );
    let volume = case.provision(&provisioner).await.unwrap();
    // The class was changed to delete afterwards; the volume keeps what it was made with.
    let changed = Case::new(
        case.claim.clone(),
        mk_class(&[("onDelete", "delete")]),
        "pvc-1",
    );
    provisioner
        .delete(changed.delete_request(&provisioner, Some(volume)))
        .await
        .unwrap();
    assert!(export.path().join("ns-claim-pvc-1").exists());
}

#[tokio::test]
async fn volumes_of_the_go_provisioner_are_deleted_where_they_are() {
    let export = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(export.path().join("ns/claim/sub")).unwrap();
    std::fs::create_dir_all(export.path().join("default-old-pvc-9")).unwrap();
    let provisioner = NfsProvisioner::new(
        NfsConfig::mounted(SERVER, "/shared/", export.path())
            .with_legacy_delete_policy(DeletePolicy::Delete),
    )
    .unwrap();
    let case = Case::new(
        mk_claim("ns", "claim", &[], &[]),
        mk_class(&[]),
        "pvc-legacy",
    );
    let request = |pv: PersistentVolume| {
        let mut request = case.delete_request(&provisioner, Some(pv));
        request.parameters = None; // the controller has no record for such volumes
        request
    };

    // A nested directory (nfs-subdir v4.0.2 skipped these: "deletion skipped").
    provisioner
        .delete(request(mk_legacy_pv(
            "pvc-legacy",
            SERVER,
            "/shared/ns/claim",
        )))
        .await
        .unwrap();
    assert!(!export.path().join("ns/claim").exists());
    assert!(export.path().join("ns").exists());

    // With a trailing slash in NFS_PATH (nfs-subdir's string replace never matched).
    provisioner
        .delete(request(mk_legacy_pv(
            "pvc-legacy",
            SERVER,
            "/shared/default-old-pvc-9",
        )))
        .await
        .unwrap();
    assert!(!export.path().join("default-old-pvc-9").exists());

    // Not below NFS_PATH, or on another server: refused, nothing touched.
    std::fs::create_dir_all(export.path().join("keep")).unwrap();
    for pv in [
        mk_legacy_pv("pvc-legacy", SERVER, "/sharedkeep"),
        mk_legacy_pv("pvc-legacy", SERVER, "/shared"),
        mk_legacy_pv("pvc-legacy", "10.9.9.9", "/shared/keep"),
    ] {
        let error = provisioner.delete(request(pv)).await.unwrap_err();
        assert!(matches!(error, DeleteError::Failed(_)), "{error:?}");
    }
    assert!(export.path().join("keep").exists());
}

#[tokio::test]
async fn legacy_volumes_are_archived_by_default() {
    let export = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(export.path().join("default-c-pvc-7")).unwrap();
    let provisioner = mk_provisioner(export.path());
    let case = Case::new(mk_claim("default", "c", &[], &[]), mk_class(&[]), "pvc-7");
    let mut request = case.delete_request(
        &provisioner,
        Some(mk_legacy_pv("pvc-7", SERVER, "/shared/default-c-pvc-7")),
    );
    request.parameters = None;
    provisioner.delete(request).await.unwrap();
    assert!(export.path().join("archived-default-c-pvc-7").is_dir());
}

#[tokio::test]
async fn live_volumes_never_share_a_directory_unless_allowed() {
    let export = tempfile::tempdir().unwrap();
    let existing = mk_legacy_pv("pvc-old", SERVER, "/shared/team/db");
    let volumes = Arc::new(Mutex::new(vec![Arc::new(existing)]));
    let listed = Arc::clone(&volumes);
    let provisioner =
        mk_provisioner(export.path()).with_volume_lister(move || listed.lock().unwrap().clone());
    let claim = mk_claim("team", "db", &[], &[]);

    // Same directory, a directory inside it, and one around it are all refused.
    for pattern in [
        "${.PVC.namespace}/${.PVC.name}",
        "${.PVC.namespace}/${.PVC.name}/inner",
        "${.PVC.namespace}",
    ] {
        let case = Case::new(
            claim.clone(),
            mk_class(&[("pathPattern", pattern)]),
            "pvc-new",
        );
        let error = case.provision(&provisioner).await.unwrap_err();
        assert!(
            matches!(error, ProvisionError::Infeasible(_)),
            "{pattern}: {error:?}"
        );
        assert!(
            error.to_string().contains("pvc-old")
                && error.to_string().contains("allowSharedDirectory"),
            "{error}"
        );
    }
    // Two claims provisioned by this process before either volume is listed.
    let first = Case::new(
        mk_claim("a", "x", &[], &[]),
        mk_class(&[("pathPattern", "shared-${.PVC.name}")]),
        "pvc-a",
    );
    let second = Case::new(
        mk_claim("b", "x", &[], &[]),
        mk_class(&[("pathPattern", "shared-${.PVC.name}")]),
        "pvc-b",
    );
    first.provision(&provisioner).await.unwrap();
    assert!(second.provision(&provisioner).await.is_err());

    // Opting in shares the directory, and deleting one volume leaves the other's data.
    let shared = mk_class(&[
        ("pathPattern", "${.PVC.namespace}/${.PVC.name}"),
        ("allowSharedDirectory", "true"),
        ("onDelete", "delete"),
    ]);
    let case = Case::new(claim, shared, "pvc-new");
    let volume = case.provision(&provisioner).await.unwrap();
    std::fs::write(export.path().join("team/db/data"), b"x").unwrap();
    provisioner
        .delete(case.delete_request(&provisioner, Some(volume)))
        .await
        .unwrap();
    assert!(
        export.path().join("team/db/data").exists(),
        "pvc-old still uses it"
    );

    // Once the other volume is gone, the last one out deletes.
    volumes.lock().unwrap().clear();
    let volume = case.provision(&provisioner).await.unwrap();
    provisioner
        .delete(case.delete_request(&provisioner, Some(volume)))
        .await
        .unwrap();
    assert!(!export.path().join("team/db").exists());
}

#[tokio::test]
async fn interrupted_provisioning_follows_the_recorded_delete_policy() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let pattern = (
        "pathPattern",
        "${.PVC.namespace}/${.PVC.labels.team}/${.PVC.name}",
    );
    // The PersistentVolume was never saved: the directory is rendered again from the claim,
    // labels included, and handled as a Released volume's would be.
    let cases = [
        ("delete", "removed", false, false),
        ("archive", "archived", false, true),
        ("retain", "kept", true, false),
    ];
    for (policy, name, kept, archived) in cases {
        let class = mk_class(&[pattern, ("onDelete", policy)]);
        let claim = mk_claim("ns", name, &[("team", "db")], &[]);
        let case = Case::new(claim, class, &format!("pvc-{name}"));
        case.provision(&provisioner).await.unwrap();
        let directory = export.path().join("ns/db").join(name);
        std::fs::write(directory.join("data"), b"x").unwrap();
        provisioner
            .delete(case.delete_request(&provisioner, None))
            .await
            .unwrap();
        assert_eq!(directory.exists(), kept, "{policy}");
        let archive = export.path().join("ns/db").join(format!("archived-{name}"));
        assert_eq!(archive.join("data").exists(), archived, "{policy}");
    }
}

#[tokio::test]
async fn an_unfinished_volume_whose_directory_cannot_be_found_removes_nothing() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let class = mk_class(&[
        ("pathPattern", "${.PVC.labels.team}/${.PVC.name}"),
        ("onDelete", "delete"),
    ]);
    let claim = mk_claim("ns", "data", &[("team", "db")], &[]);
    let case = Case::new(claim, class.clone(), "pvc-1");
    case.provision(&provisioner).await.unwrap();
    let directory = export.path().join("db/data");

    // Without the claim object, the labels are unknown: nothing is touched.
    let mut request = case.delete_request(&provisioner, None);
    request.claim_object = None;
    provisioner.delete(request).await.unwrap();
    assert!(directory.exists());

    // A claim whose labels never rendered a directory (provisioning failed the same way)
    // is cleaned up at once: there is nothing to delete, and its deletion must not hang.
    let unlabelled = Case::new(mk_claim("ns", "other", &[], &[]), class, "pvc-2");
    assert!(unlabelled.provision(&provisioner).await.is_err());
    provisioner
        .delete(unlabelled.delete_request(&provisioner, None))
        .await
        .unwrap();
    assert!(directory.exists(), "another claim's directory is untouched");
}

#[tokio::test]
async fn classes_cannot_name_other_servers_without_direct_access() {
    let export = tempfile::tempdir().unwrap();
    let provisioner = mk_provisioner(export.path());
    let error = provisioner
        .parse_parameters(&map(&[("server", "10.0.0.9"), ("share", "/other")]))
        .unwrap_err();
    assert_eq!(error.parameter, "server");
    // Naming the provisioner's own export is fine.
    provisioner
        .parse_parameters(&map(&[("server", SERVER), ("share", "/shared/")]))
        .unwrap();
}

#[tokio::test]
async fn readiness_probe_reports_a_missing_mount() {
    let export = tempfile::tempdir().unwrap();
    let healthy = mk_provisioner(export.path());
    let results = healthy.check_exports().await;
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok());
    let broken = mk_provisioner(&export.path().join("not-mounted"));
    assert!(broken.check_exports().await[0].1.is_err());
}
