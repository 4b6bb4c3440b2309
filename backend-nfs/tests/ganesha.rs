//! Both ways of reaching an export, against a real NFS server: NFS-Ganesha on loopback.
//!
//! Mounted access works on the directory Ganesha exports (with the VFS backend that
//! directory is the share's content); direct access talks NFSv3 to Ganesha. Both must
//! behave the same. These tests need root to start Ganesha; they skip with a loud message
//! otherwise.

mod support;

use std::os::unix::fs::{MetadataExt, symlink};
use std::sync::Arc;
use std::time::Duration;

use backend_nfs::export::{
    Creation, DirectConfig, DirectExport, DirectoryAttributes, Export, ExportError, MountedExport,
    Removal,
};
use backend_nfs::provisioner::DirectOptions;
use backend_nfs::{NfsConfig, NfsProvisioner};
use provisioner_core::provisioner::{ProvisionError, Provisioner};
use provisioner_core::volume_path::VolumePath;
use support::{Case, mk_claim, mk_class};
use testenv::nfs::{NfsServer, Squash};

fn path(text: &str) -> VolumePath {
    VolumePath::parse(text).unwrap()
}

fn direct(server: &NfsServer, timeout: Duration) -> DirectExport {
    let share = server.export().to_str().unwrap();
    DirectExport::new(
        DirectConfig::new(server.address(), share)
            .with_ports(server.nfs_port(), server.mount_port())
            .with_timeout(timeout),
    )
}

/// One scenario, run through any export; `root` is the exported directory on disk, where
/// the results are checked.
async fn exercise(export: &dyn Export, root: &std::path::Path, outside: &std::path::Path) {
    let what = export.location().to_owned();
    let attributes = DirectoryAttributes {
        mode: 0o2770,
        uid: Some(1234),
        gid: Some(5678),
    };

    // mkdir -p with the exact mode (setgid kept) and owner, parents 0755.
    assert_eq!(
        export
            .create_dir_all(&path("ns/claim"), attributes)
            .await
            .unwrap(),
        Creation::Created,
        "{what}"
    );
    let leaf = root.join("ns/claim").metadata().unwrap();
    assert_eq!(leaf.mode() & 0o7777, 0o2770, "{what}");
    assert_eq!((leaf.uid(), leaf.gid()), (1234, 5678), "{what}");
    assert_eq!(
        root.join("ns").metadata().unwrap().mode() & 0o7777,
        0o755,
        "{what}"
    );
    assert_eq!(
        export
            .create_dir_all(&path("ns/claim"), attributes)
            .await
            .unwrap(),
        Creation::AlreadyExisted
    );
    let status = export.status(&path("ns/claim")).await.unwrap().unwrap();
    assert_eq!(
        (status.mode, status.uid, status.gid),
        (0o2770, 1234, 5678),
        "{what}"
    );
    assert_eq!(export.status(&path("ns/missing")).await.unwrap(), None);
    assert_eq!(export.status(&path("missing/deeper")).await.unwrap(), None);

    // Rename never replaces.
    export
        .create_dir_all(&path("ns/taken"), attributes)
        .await
        .unwrap();
    let error = export
        .rename_no_replace(&path("ns/claim"), &path("ns/taken"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExportError::AlreadyExists { .. }),
        "{what}: {error}"
    );
    export
        .rename_no_replace(&path("ns/claim"), &path("ns/archived-claim"))
        .await
        .unwrap();
    assert!(
        root.join("ns/archived-claim").is_dir() && !root.join("ns/claim").exists(),
        "{what}"
    );

    // Recursive removal of a tree holding files and links to the outside.
    let tree = root.join("ns/archived-claim");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::write(tree.join("a/b/c/file"), b"data").unwrap();
    for index in 0..300 {
        std::fs::write(tree.join(format!("a/many-{index:03}")), b"x").unwrap();
    }
    symlink(outside, tree.join("a/link-dir")).unwrap();
    symlink(outside.join("precious"), tree.join("link-file")).unwrap();
    assert_eq!(
        export.remove_all(&path("ns/archived-claim")).await.unwrap(),
        Removal::Removed,
        "{what}"
    );
    assert!(!tree.exists(), "{what}");
    assert_eq!(
        std::fs::read(outside.join("precious")).unwrap(),
        b"keep",
        "{what}"
    );
    assert_eq!(
        export.remove_all(&path("ns/archived-claim")).await.unwrap(),
        Removal::AlreadyGone
    );

    // Removing only when empty.
    std::fs::write(root.join("ns/taken/data"), b"x").unwrap();
    assert_eq!(
        export.remove_if_empty(&path("ns/taken")).await.unwrap(),
        Removal::NotEmpty,
        "{what}"
    );
    std::fs::remove_file(root.join("ns/taken/data")).unwrap();
    assert_eq!(
        export.remove_if_empty(&path("ns/taken")).await.unwrap(),
        Removal::Removed,
        "{what}"
    );

    // No symlink is followed out of the export.
    symlink(outside, root.join("escape")).unwrap();
    for result in [
        export
            .create_dir_all(&path("escape/claim"), attributes)
            .await
            .map(|_| ()),
        export.remove_all(&path("escape/victim")).await.map(|_| ()),
        export.remove_all(&path("escape")).await.map(|_| ()),
        export.status(&path("escape")).await.map(|_| ()),
        export
            .rename_no_replace(&path("escape"), &path("elsewhere"))
            .await,
    ] {
        let error = result.unwrap_err();
        assert!(
            matches!(error, ExportError::Symlink { .. }),
            "{what}: {error}"
        );
    }
    assert!(
        outside.join("victim").is_dir() && !outside.join("claim").exists(),
        "{what}"
    );
    std::fs::remove_file(root.join("escape")).unwrap();
    std::fs::remove_dir(root.join("ns")).unwrap();
}

fn mk_outside() -> tempfile::TempDir {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), b"keep").unwrap();
    std::fs::create_dir(outside.path().join("victim")).unwrap();
    outside
}

#[tokio::test]
async fn mounted_and_direct_access_behave_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) =
        NfsServer::start_for_test("mounted_and_direct_access_behave_the_same", dir.path()).await
    else {
        return;
    };
    let outside = mk_outside();
    let mounted = MountedExport::new(server.export(), Duration::from_secs(30));
    exercise(&mounted, server.export(), outside.path()).await;
    let direct = direct(&server, Duration::from_secs(30));
    exercise(&direct, server.export(), outside.path()).await;

    // FSSTAT over NFS reports the exported file system's real size.
    let (over_nfs, local) = (
        direct.fs_stats().await.unwrap(),
        mounted.fs_stats().await.unwrap(),
    );
    assert_eq!(over_nfs.total_bytes, local.total_bytes);
}

#[tokio::test]
async fn a_hung_or_stopped_server_times_out_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = NfsServer::start_for_test(
        "a_hung_or_stopped_server_times_out_then_recovers",
        dir.path(),
    )
    .await
    else {
        return;
    };
    let export = direct(&server, Duration::from_secs(2));
    let attributes = DirectoryAttributes {
        mode: 0o777,
        uid: None,
        gid: None,
    };
    export
        .create_dir_all(&path("before"), attributes)
        .await
        .unwrap();

    // Hung: the kernel still accepts connections, nothing answers.
    server.pause().unwrap();
    let error = export
        .create_dir_all(&path("while-hung"), attributes)
        .await
        .unwrap_err();
    assert!(matches!(error, ExportError::TimedOut { .. }), "{error}");
    assert!(
        error.is_unavailable() && error.to_string().contains("timed out"),
        "{error}"
    );
    let error = export.fs_stats().await.unwrap_err();
    assert!(matches!(error, ExportError::TimedOut { .. }), "{error}");
    server.resume().unwrap();
    export
        .create_dir_all(&path("after-resume"), attributes)
        .await
        .unwrap();

    // Stopped: connections are refused (or lost) at once.
    server.stop();
    let error = export
        .create_dir_all(&path("while-stopped"), attributes)
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(!server.export().join("while-stopped").exists());

    // Back up on the same ports: the same client works again without being rebuilt.
    server.restart().await.unwrap();
    export
        .create_dir_all(&path("after-restart"), attributes)
        .await
        .unwrap();
    assert!(server.export().join("after-restart").is_dir());

    // A restart between two operations: the pooled connection died while idle; it is
    // noticed and replaced before use, so no operation fails.
    server.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // let the connection count as idle
    export
        .create_dir_all(&path("after-idle-restart"), attributes)
        .await
        .unwrap();
}

#[tokio::test]
async fn root_squash_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = NfsServer::builder()
        .export(dir.path())
        .squash(Squash::Root)
        .start_for_test("root_squash_is_named_in_the_error")
        .await
    else {
        return;
    };
    // The export root is root's and 0700 (a temporary directory): nobody cannot write.
    let export = direct(&server, Duration::from_secs(30));
    let attributes = DirectoryAttributes {
        mode: 0o777,
        uid: None,
        gid: None,
    };
    let error = export
        .create_dir_all(&path("claim"), attributes)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ExportError::PermissionDenied {
                root_squash_likely: true,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("root_squash"), "{error}");

    // A world-writable root lets the squashed user create, but not give the directory away.
    std::fs::set_permissions(
        server.export(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let owned = DirectoryAttributes {
        mode: 0o770,
        uid: Some(1234),
        gid: None,
    };
    let error = export
        .create_dir_all(&path("claim"), owned)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ExportError::PermissionDenied { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("root_squash"), "{error}");
}

#[tokio::test]
async fn direct_mode_provisions_the_same_volume_as_mounted_mode() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = NfsServer::start_for_test(
        "direct_mode_provisions_the_same_volume_as_mounted_mode",
        dir.path(),
    )
    .await
    else {
        return;
    };
    let share = server.export().to_str().unwrap().to_owned();
    let options = DirectOptions::default().with_ports(server.nfs_port(), server.mount_port());
    let direct = NfsProvisioner::new(NfsConfig::direct(server.address(), &share, options)).unwrap();
    let mounted = NfsProvisioner::new(NfsConfig::mounted(
        server.address(),
        &share,
        server.export(),
    ))
    .unwrap();
    let class = mk_class(&[
        ("pathPattern", "${.PVC.namespace}/${.PVC.name}"),
        ("mode", "2775"),
        ("gid", "2000"),
        ("onDelete", "archive"),
    ]);

    let via_direct = Case::new(mk_claim("team", "direct", &[], &[]), class.clone(), "pvc-d");
    let via_mount = Case::new(mk_claim("team", "mounted", &[], &[]), class, "pvc-m");
    let direct_volume = via_direct.provision(&direct).await.unwrap();
    let mounted_volume = via_mount.provision(&mounted).await.unwrap();
    for (volume, name) in [(&direct_volume, "direct"), (&mounted_volume, "mounted")] {
        let nfs = volume.spec.as_ref().unwrap().nfs.as_ref().unwrap();
        assert_eq!(nfs.path, format!("{share}/team/{name}"));
        let metadata = server.export().join("team").join(name).metadata().unwrap();
        assert_eq!(
            (metadata.mode() & 0o7777, metadata.gid()),
            (0o2775, 2000),
            "{name}"
        );
    }
    // Annotations differ only in the directory.
    let strip = |volume: &k8s_openapi::api::core::v1::PersistentVolume| {
        let mut annotations = volume.metadata.annotations.clone().unwrap();
        annotations.remove(backend_nfs::record::DIRECTORY_ANNOTATION);
        annotations
    };
    assert_eq!(strip(&direct_volume), strip(&mounted_volume));

    // Each can delete what the other made: the record is all they need.
    direct
        .delete(via_mount.delete_request(&direct, Some(mounted_volume)))
        .await
        .unwrap();
    mounted
        .delete(via_direct.delete_request(&mounted, Some(direct_volume)))
        .await
        .unwrap();
    assert!(server.export().join("team/archived-mounted").is_dir());
    assert!(server.export().join("team/archived-direct").is_dir());
}

#[tokio::test]
async fn one_direct_provisioner_serves_two_exports() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = NfsServer::builder()
        .export(dir.path().join("fast"))
        .export(dir.path().join("slow"))
        .start_for_test("one_direct_provisioner_serves_two_exports")
        .await
    else {
        return;
    };
    let fast = server.exports()[0].to_str().unwrap().to_owned();
    let slow = server.exports()[1].to_str().unwrap().to_owned();
    let options = DirectOptions::default().with_ports(server.nfs_port(), server.mount_port());
    let provisioner =
        Arc::new(NfsProvisioner::new(NfsConfig::direct(server.address(), &fast, options)).unwrap());

    let default_class = Case::new(mk_claim("ns", "a", &[], &[]), mk_class(&[]), "pvc-a");
    let slow_class = Case::new(
        mk_claim("ns", "b", &[], &[]),
        mk_class(&[("server", server.address()), ("share", &slow)]),
        "pvc-b",
    );
    let a = default_class.provision(&provisioner).await.unwrap();
    let b = slow_class.provision(&provisioner).await.unwrap();
    assert!(server.exports()[0].join("ns-a-pvc-a").is_dir());
    assert!(server.exports()[1].join("ns-b-pvc-b").is_dir());
    assert_eq!(
        b.spec.as_ref().unwrap().nfs.as_ref().unwrap().path,
        format!("{slow}/ns-b-pvc-b")
    );
    assert_eq!(
        provisioner
            .check_exports()
            .await
            .iter()
            .filter(|(_, result)| result.is_ok())
            .count(),
        2
    );

    // A class naming an export that does not exist fails only its own claims.
    let broken = Case::new(
        mk_claim("ns", "c", &[], &[]),
        mk_class(&[("server", server.address()), ("share", "/not/exported")]),
        "pvc-c",
    );
    let error = broken.provision(&provisioner).await.unwrap_err();
    assert!(matches!(error, ProvisionError::NoChange(_)), "{error:?}");
    assert!(error.to_string().contains("/not/exported"), "{error}");

    provisioner
        .delete(default_class.delete_request(&provisioner, Some(a)))
        .await
        .unwrap();
    provisioner
        .delete(slow_class.delete_request(&provisioner, Some(b)))
        .await
        .unwrap();
    assert!(server.exports()[1].join("archived-ns-b-pvc-b").is_dir());
}
