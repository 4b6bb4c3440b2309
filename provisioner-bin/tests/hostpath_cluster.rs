//! `hostpath-provisioner` against a real control plane: kube-apiserver, the PV binder of
//! kube-controller-manager, kube-scheduler, and two kwok nodes. One instance of the binary
//! runs per node, as the ServiceAccount of `deploy/hostpath/` with exactly its RBAC, with a
//! temporary directory as that node's disk.

mod hostpath_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hostpath_support::{
    Disks, NODES, SELECTED_NODE, Setup, affinity_node, claim_events, create, create_class, delete,
    describe, events, eventually, host_path, mk_claim, mk_class, mk_pod, selected_node, wait_bound,
    wait_claim_event, wait_running, wait_volume_gone,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume};
use kube::api::{Api, ListParams};
use testenv::{ControlPlane, SharedControlPlane};

static PLANE: SharedControlPlane = SharedControlPlane::new(|| {
    ControlPlane::builder()
        .controller_manager(true)
        .scheduler(true)
        .fake_nodes(&NODES)
});

/// Whether `event` is a Warning from an instance of `provisioner` (its Events are reported
/// by `<provisioner>_<node>`); the scheduler's own Warnings do not count.
fn is_warning_from(event: &Event, provisioner: &str) -> bool {
    event.type_.as_deref() == Some("Warning")
        && event
            .reporting_component
            .as_deref()
            .is_some_and(|component| component.starts_with(provisioner))
}

/// The node that is not `node`.
fn other(node: &str) -> &'static str {
    if node == NODES[0] { NODES[1] } else { NODES[0] }
}

#[tokio::test]
async fn a_pod_gets_a_volume_on_its_node_and_deleting_the_claim_removes_the_directory()
-> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let mut setup = Setup::new(plane, "hp-flow", &[], |_| Vec::new()).await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    create(&setup.claims(), &mk_claim("data", &setup.class, "1Mi", &[])).await?;
    create(&setup.pods(), &mk_pod("app", "data", None)).await?;

    let pod = wait_running(&setup.pods(), "app").await;
    let (claim, volume) = wait_bound(&client, &namespace, "data").await;
    setup.assert_running();
    let node = pod.spec.and_then(|spec| spec.node_name).unwrap_or_default();
    assert!(NODES.contains(&node.as_str()), "ran on {node:?}");
    assert_eq!(selected_node(&claim), Some(node.as_str()));
    assert_eq!(affinity_node(&volume).as_deref(), Some(node.as_str()));

    // local-path's default directory name, on the chosen node's disk only.
    let volume_name = volume.metadata.name.clone().unwrap_or_default();
    let dir_name = format!("{volume_name}_{namespace}_data");
    let path = host_path(&volume).expect("a hostPath volume");
    assert_eq!(path, setup.disks.disk(&node).join(&dir_name));
    assert!(path.is_dir(), "{} was not created", path.display());
    assert!(
        setup.disks.entries(other(&node)).is_empty(),
        "the other disk was touched"
    );

    let claim_events = claim_events(&client, &namespace, "data").await?;
    let succeeded: Vec<_> = claim_events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningSucceeded"))
        .collect();
    assert_eq!(succeeded.len(), 1, "{}", describe(&claim_events));
    assert_eq!(
        succeeded[0].reporting_instance.as_deref(),
        Some(node.as_str())
    );
    assert!(
        !claim_events
            .iter()
            .any(|e| is_warning_from(e, &setup.provisioner)),
        "{}",
        describe(&claim_events)
    );

    delete(&setup.pods(), "app").await?;
    delete(&setup.claims(), "data").await?;
    wait_volume_gone(&client, &volume_name).await;
    assert!(!path.exists(), "{} survived the deletion", path.display());
    setup.assert_running();
    Ok(())
}

#[tokio::test]
async fn each_instance_acts_only_for_its_own_node() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let mut setup = Setup::new(plane, "hp-owners", &[], |_| Vec::new()).await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    // Three pods pinned to each node: both instances get work, and each sees the other's.
    let placements: Vec<(String, &str)> = (0..6)
        .map(|i| (format!("data-{i}"), NODES[i % 2]))
        .collect();
    for (claim, node) in &placements {
        create(&setup.claims(), &mk_claim(claim, &setup.class, "1Mi", &[])).await?;
        create(
            &setup.pods(),
            &mk_pod(&format!("app-{claim}"), claim, Some(node)),
        )
        .await?;
    }

    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for (claim, node) in &placements {
        let (bound, volume) = wait_bound(&client, &namespace, claim).await;
        assert_eq!(selected_node(&bound), Some(*node));
        assert_eq!(affinity_node(&volume).as_deref(), Some(*node));
        let path = host_path(&volume).expect("a hostPath volume");
        assert_eq!(path.parent(), Some(setup.disks.disk(node).as_path()));
        expected.insert((
            (*node).to_owned(),
            path.file_name().unwrap().to_string_lossy().into_owned(),
        ));
    }
    for node in NODES {
        let on_disk: BTreeSet<(String, String)> = setup
            .disks
            .entries(node)
            .into_iter()
            .filter(|entry| !entry.starts_with('.'))
            .map(|entry| (node.to_owned(), entry))
            .collect();
        let wanted: BTreeSet<(String, String)> = expected
            .iter()
            .filter(|(n, _)| n == node)
            .cloned()
            .collect();
        assert_eq!(on_disk, wanted, "directories on {node}'s disk");
    }

    // Each claim was provisioned once, by its node's instance; no instance complained.
    let all = events(&client, &namespace).await?;
    assert!(
        !all.iter().any(|e| is_warning_from(e, &setup.provisioner)),
        "{}",
        describe(&all)
    );
    for (claim, node) in &placements {
        let succeeded: Vec<_> = all
            .iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(claim.as_str())
                    && e.reason.as_deref() == Some("ProvisioningSucceeded")
            })
            .collect();
        assert_eq!(succeeded.len(), 1, "{claim}: {}", describe(&all));
        assert_eq!(succeeded[0].reporting_instance.as_deref(), Some(*node));
    }
    setup.assert_running();
    Ok(())
}

#[tokio::test]
async fn a_node_without_room_sends_the_claim_back_to_the_scheduler() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let full = NODES[0];
    // node-a's disk is too small for the claim: a real 1 MiB filesystem when the test may
    // mount one (root), else node-a's instance keeps all its space reserved.
    let mut disks = Disks::new()?;
    let shrunk = disks.shrink(full);
    let mut setup = Setup::with_disks(plane, "hp-full", &[], disks, |node| {
        if node == full && !shrunk {
            vec!["--reserved-space=1Ei".to_owned()]
        } else {
            Vec::new()
        }
    })
    .await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());

    // The claim starts on the full node (as if the scheduler had picked it), so the test
    // always exercises the way back; the pod may then land anywhere.
    create(
        &setup.claims(),
        &mk_claim("big", &setup.class, "64Mi", &[(SELECTED_NODE, full)]),
    )
    .await?;
    let refusal = wait_claim_event(
        &client,
        &namespace,
        "big",
        "ProvisioningFailed",
        &[&format!("no path on node {full} can hold"), "64.0 MiB"],
    )
    .await;
    assert_eq!(refusal.reporting_instance.as_deref(), Some(full));
    create(&setup.pods(), &mk_pod("app", "big", None)).await?;

    let (claim, volume) = wait_bound(&client, &namespace, "big").await;
    let node = other(full);
    assert_eq!(selected_node(&claim), Some(node));
    assert_eq!(affinity_node(&volume).as_deref(), Some(node));
    assert_eq!(
        host_path(&volume).and_then(|p| p.parent().map(Path::to_owned)),
        Some(setup.disks.disk(node))
    );
    let pod = wait_running(&setup.pods(), "app").await;
    assert_eq!(pod.spec.and_then(|s| s.node_name).as_deref(), Some(node));
    assert!(
        setup.disks.entries(full).is_empty(),
        "the full node's disk was written: {:?}",
        setup.disks.entries(full)
    );
    setup.assert_running();
    Ok(())
}

#[tokio::test]
async fn hostile_path_pattern_values_create_nothing_and_get_an_event() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let pattern = r#"{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ index .PVC.Annotations "sub" }}"#;
    let mut setup = Setup::new(plane, "hp-hostile", &[("pathPattern", pattern)], |_| {
        Vec::new()
    })
    .await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    let escape = testenv::unique_name("escaped");
    let outside = std::env::temp_dir().join(&escape);
    let hostile = [
        format!("../../../{escape}"),
        format!("../../../../../../../../..{}", outside.display()),
        format!("data/../../../../{escape}"),
        outside.display().to_string(),
        "./.".to_owned(),
        "a//b".to_owned(),
    ];
    let before = setup.disks.tree();
    for (i, value) in hostile.iter().enumerate() {
        let node = NODES[i % 2];
        create(
            &setup.claims(),
            &mk_claim(
                &format!("hostile-{i}"),
                &setup.class,
                "1Mi",
                &[("sub", value), (SELECTED_NODE, node)],
            ),
        )
        .await?;
    }
    for (i, _) in hostile.iter().enumerate() {
        let node = NODES[i % 2];
        let event = wait_claim_event(
            &client,
            &namespace,
            &format!("hostile-{i}"),
            "ProvisioningFailed",
            &["pathPattern rendered"],
        )
        .await;
        assert_eq!(event.reporting_instance.as_deref(), Some(node));
    }
    // A well-behaved claim of the same class still works: the refusals were about the
    // values, and the instances are healthy.
    create(
        &setup.claims(),
        &mk_claim("fine", &setup.class, "1Mi", &[("sub", "data")]),
    )
    .await?;
    create(&setup.pods(), &mk_pod("app", "fine", None)).await?;
    let (_, volume) = wait_bound(&client, &namespace, "fine").await;
    let path = host_path(&volume).expect("a hostPath volume");
    assert!(
        path.ends_with(format!("{namespace}/fine/data")),
        "{}",
        path.display()
    );

    let volumes = Api::<PersistentVolume>::all(client.clone())
        .list(&Default::default())
        .await?;
    for (i, _) in hostile.iter().enumerate() {
        let claim = format!("hostile-{i}");
        assert!(
            !volumes.items.iter().any(|v| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| {
                        r.namespace.as_deref() == Some(namespace.as_str())
                            && r.name.as_deref() == Some(claim.as_str())
                    })
            }),
            "{claim} got a volume"
        );
    }
    let created: BTreeSet<_> = setup.disks.tree().difference(&before).cloned().collect();
    let fine_node = affinity_node(&volume).unwrap();
    assert!(
        created
            .iter()
            .all(|p| p.starts_with(Path::new("disks").join(&fine_node))),
        "created outside the good claim's node: {created:?}"
    );
    assert!(
        created
            .iter()
            .all(|p| !p.to_string_lossy().contains("escaped")),
        "{created:?}"
    );
    assert!(!outside.exists(), "{} was created", outside.display());
    setup.assert_running();
    Ok(())
}

/// Short leases, so a takeover happens within seconds.
fn quick_election(_: &str) -> Vec<String> {
    [
        "--leader-election-lease-duration=4s",
        "--leader-election-renew-deadline=3s",
        "--leader-election-retry-period=1s",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The node of the instance holding the cluster-wide duties (from the Lease's holder,
/// `<node>_<random>`).
async fn duties_holder(client: &kube::Client, namespace: &str, provisioner: &str) -> String {
    let leases = Api::<Lease>::namespaced(client.clone(), namespace);
    let lock = provisioner_bin::hostpath::run::duties_lock_name(provisioner);
    eventually(format!("a holder of Lease {namespace}/{lock}"), || async {
        let lease = leases.get_opt(&lock).await?;
        let holder = lease
            .and_then(|lease| lease.spec?.holder_identity)
            .unwrap_or_default();
        Ok(holder
            .split_once('_')
            .map(|(node, _)| node.to_owned())
            .filter(|node| NODES.contains(&node.as_str())))
    })
    .await
}

#[tokio::test]
async fn one_instance_reports_immediate_binding_and_another_takes_over_when_it_dies()
-> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let mut setup = Setup::new(plane, "hp-duties", &[], quick_election).await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    let immediate = testenv::unique_name("hp-immediate");
    let mut class = mk_class(&immediate, &setup.provisioner, &[]);
    class.volume_binding_mode = Some("Immediate".into());
    create_class(&client, &class).await?;

    let holder = duties_holder(&client, &namespace, &setup.provisioner).await;
    create(&setup.claims(), &mk_claim("first", &immediate, "1Mi", &[])).await?;
    let event = wait_claim_event(
        &client,
        &namespace,
        "first",
        "ProvisioningFailed",
        &["WaitForFirstConsumer"],
    )
    .await;
    assert_eq!(event.reporting_instance.as_deref(), Some(holder.as_str()));
    // Both instances saw the claim at once; only the holder answered.
    let first = claim_events(&client, &namespace, "first").await?;
    assert!(
        first
            .iter()
            .filter(|e| is_warning_from(e, &setup.provisioner))
            .all(|e| e.reporting_instance.as_deref() == Some(holder.as_str())),
        "{}",
        describe(&first)
    );

    // The holder dies without releasing the Lease. A claim created now is skipped by the
    // survivor until it takes the duties over, then looked at again.
    let index = NODES.iter().position(|node| *node == holder).unwrap();
    drop(setup.instances.remove(index));
    create(&setup.claims(), &mk_claim("second", &immediate, "1Mi", &[])).await?;
    let survivor = other(&holder);
    let event = wait_claim_event(
        &client,
        &namespace,
        "second",
        "ProvisioningFailed",
        &["WaitForFirstConsumer"],
    )
    .await;
    assert_eq!(event.reporting_instance.as_deref(), Some(survivor));
    assert_eq!(
        duties_holder(&client, &namespace, &setup.provisioner).await,
        survivor
    );

    // The survivor, once holder, looked at the first claim again too (it is still
    // pending); the dead instance said nothing more, so every word on the second claim is
    // the survivor's.
    let second = claim_events(&client, &namespace, "second").await?;
    assert!(
        second
            .iter()
            .filter(|e| is_warning_from(e, &setup.provisioner))
            .all(|e| e.reporting_instance.as_deref() == Some(survivor)),
        "{}",
        describe(&second)
    );
    setup.assert_running();
    Ok(())
}

#[tokio::test]
async fn the_volume_of_a_vanished_node_is_released_and_its_data_kept() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let client = plane.client();
    // A third node of this test's own, which the scheduler never uses (unschedulable) and
    // kwok does not run.
    let gone = testenv::unique_name("node-gone");
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": gone, "labels": {"kubernetes.io/hostname": gone}},
        "spec": {"unschedulable": true},
    }))?;
    Api::<Node>::all(client.clone())
        .create(&Default::default(), &node)
        .await?;
    let disks = Disks::for_nodes(&[NODES[0], NODES[1], gone.as_str()])?;
    let mut setup = Setup::with_disks(plane, "hp-gone", &[], disks, |_| Vec::new()).await?;
    let namespace = setup.namespace.clone();
    let gone_instance = hostpath_support::Instance::start(
        plane,
        &namespace,
        &gone,
        &setup.provisioner,
        &setup.disks.config(),
        &[],
    )
    .await?;

    create(
        &setup.claims(),
        &mk_claim(
            "data",
            &setup.class,
            "1Mi",
            &[(SELECTED_NODE, gone.as_str())],
        ),
    )
    .await?;
    let (_, volume) = wait_bound(&client, &namespace, "data").await;
    assert_eq!(affinity_node(&volume).as_deref(), Some(gone.as_str()));
    let path = host_path(&volume).expect("a hostPath volume");
    assert!(path.is_dir());
    let volume_name = volume.metadata.name.clone().unwrap_or_default();

    // The node's instance goes with the node; the claim is deleted meanwhile.
    drop(gone_instance);
    delete(&setup.claims(), "data").await?;
    Api::<Node>::all(client.clone())
        .delete(&gone, &Default::default())
        .await?;

    wait_volume_gone(&client, &volume_name).await;
    assert!(path.is_dir(), "the data of a vanished node must stay");
    let warnings = eventually(format!("a Warning about volume {volume_name}"), || async {
        let events = Api::<Event>::all(client.clone())
            .list(&ListParams::default().fields(&format!("involvedObject.name={volume_name}")))
            .await?;
        let warnings: Vec<Event> = events
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .collect();
        Ok((!warnings.is_empty()).then_some(warnings))
    })
    .await;
    assert!(
        warnings.iter().any(|e| e
            .message
            .as_deref()
            .is_some_and(|m| m.contains(gone.as_str()))),
        "{}",
        describe(&warnings)
    );
    setup.assert_running();
    Ok(())
}

/// What `instance` has logged since byte `from` of its log.
fn log_since(instance: &hostpath_support::Instance, from: u64) -> String {
    let log = std::fs::read(instance.process.log_path()).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(log.len());
    String::from_utf8_lossy(&log[from..]).into_owned()
}

/// The current size of every instance's log.
fn log_sizes(setup: &Setup) -> Vec<u64> {
    setup
        .instances
        .iter()
        .map(|instance| std::fs::metadata(instance.process.log_path()).map_or(0, |meta| meta.len()))
        .collect()
}

/// Waits until every instance has logged `message` after the offsets in `sizes`.
async fn wait_logged(setup: &Setup, sizes: &[u64], message: &str) {
    eventually(format!("every instance to log {message:?}"), || async {
        Ok(setup
            .instances
            .iter()
            .zip(sizes)
            .all(|(instance, from)| log_since(instance, *from).contains(message))
            .then_some(()))
    })
    .await;
}

/// Replaces `path` the way a ConfigMap update does: a new file renamed over the old one.
fn replace_file(path: &Path, content: &str) -> anyhow::Result<()> {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, content)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

/// Creates claim `name` of the setup's class with `NODES[0]` as its selected node, and
/// waits until it is Bound; returns its volume and the volume's host path.
async fn provision_on_node(
    setup: &Setup,
    name: &str,
) -> anyhow::Result<(PersistentVolume, PathBuf)> {
    let on_node = [(SELECTED_NODE, NODES[0])];
    create(
        &setup.claims(),
        &mk_claim(name, &setup.class, "1Mi", &on_node),
    )
    .await?;
    let (_, volume) = wait_bound(&setup.client, &setup.namespace, name).await;
    let path = host_path(&volume).expect("a hostPath volume");
    Ok((volume, path))
}

#[tokio::test]
async fn the_running_binary_follows_config_changes_and_keeps_the_last_good_one()
-> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let mut setup = Setup::new(plane, "hp-reload", &[], |_| Vec::new()).await?;
    let client = setup.client.clone();
    let node = NODES[0];

    // The instances have read the first configuration once they serve.
    wait_logged(&setup, &[0; NODES.len()], "serving this node's claims").await;

    // A broken file is refused; the instances go on with the configuration they had.
    let sizes = log_sizes(&setup);
    replace_file(&setup.disks.config(), r#"{"nodePathMap": 42}"#)?;
    wait_logged(&setup, &sizes, "keeping the last good configuration").await;
    let (before, before_path) = provision_on_node(&setup, "before").await?;
    assert!(
        before_path.starts_with(setup.disks.disk(node)),
        "{} is not on the first configuration's disk",
        before_path.display()
    );

    // A valid new file moves the disks: new volumes go to the new paths.
    let moved_root = setup.disks.root.path().join("moved");
    let node_path_map: Vec<serde_json::Value> = NODES
        .iter()
        .map(|node| {
            let disk = moved_root.join(node);
            std::fs::create_dir_all(&disk)?;
            Ok(serde_json::json!({"node": node, "paths": [disk]}))
        })
        .collect::<anyhow::Result<_>>()?;
    let sizes = log_sizes(&setup);
    replace_file(
        &setup.disks.config(),
        &serde_json::json!({ "nodePathMap": node_path_map }).to_string(),
    )?;
    wait_logged(&setup, &sizes, "applied the new configuration").await;
    let (after, after_path) = provision_on_node(&setup, "after").await?;
    assert!(
        after_path.starts_with(moved_root.join(node)),
        "{} is not on the new configuration's disk",
        after_path.display()
    );
    assert!(after_path.is_dir());

    // Both are deleted from where they were made: the record on the volume says where,
    // also for the path the configuration no longer lists.
    for (claim, volume, path) in [
        ("before", &before, &before_path),
        ("after", &after, &after_path),
    ] {
        delete(&setup.claims(), claim).await?;
        wait_volume_gone(&client, volume.metadata.name.as_deref().unwrap_or_default()).await;
        assert!(!path.exists(), "{} survived the deletion", path.display());
    }
    setup.assert_running();
    Ok(())
}

#[tokio::test]
async fn a_shared_filesystem_serves_immediate_many_node_claims_from_the_duties_holder()
-> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    // One path "mounted on every node": here one directory all instances see.
    let disks = Disks::new()?;
    let shared = disks.root.path().join("shared");
    std::fs::create_dir(&shared)?;
    std::fs::write(
        disks.config(),
        serde_json::json!({ "sharedFileSystemPath": shared }).to_string(),
    )?;
    let mut setup = Setup::with_disks(plane, "hp-shared", &[], disks, |_| Vec::new()).await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    let immediate = testenv::unique_name("hp-shared-now");
    let mut class = mk_class(&immediate, &setup.provisioner, &[]);
    class.volume_binding_mode = Some("Immediate".into());
    create_class(&client, &class).await?;

    let holder = duties_holder(&client, &namespace, &setup.provisioner).await;
    let mut claim = mk_claim("files", &immediate, "1Mi", &[]);
    if let Some(spec) = claim.spec.as_mut() {
        spec.access_modes = Some(vec!["ReadWriteMany".into(), "ReadOnlyMany".into()]);
    }
    create(&setup.claims(), &claim).await?;

    // Bound before any pod exists, by the holder of the cluster-wide duties alone.
    let (_, volume) = wait_bound(&client, &namespace, "files").await;
    assert!(
        volume
            .spec
            .as_ref()
            .is_some_and(|spec| spec.node_affinity.is_none()),
        "a shared volume is on every node: {:?}",
        volume.spec
    );
    let volume_name = volume.metadata.name.clone().unwrap_or_default();
    let path = host_path(&volume).expect("a hostPath volume");
    assert_eq!(
        path,
        shared.join(format!("{volume_name}_{namespace}_files"))
    );
    assert!(path.is_dir());
    let claim_events = claim_events(&client, &namespace, "files").await?;
    let succeeded: Vec<_> = claim_events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningSucceeded"))
        .collect();
    assert_eq!(succeeded.len(), 1, "{}", describe(&claim_events));
    assert_eq!(
        succeeded[0].reporting_instance.as_deref(),
        Some(holder.as_str())
    );

    // Pods on both nodes use it at once.
    for node in NODES {
        let pod = format!("app-{node}");
        create(&setup.pods(), &mk_pod(&pod, "files", Some(node))).await?;
        let running = wait_running(&setup.pods(), &pod).await;
        assert_eq!(
            running.spec.and_then(|spec| spec.node_name).as_deref(),
            Some(node)
        );
    }

    for node in NODES {
        delete(&setup.pods(), &format!("app-{node}")).await?;
    }
    delete(&setup.claims(), "files").await?;
    wait_volume_gone(&client, &volume_name).await;
    assert!(!path.exists(), "{} survived the deletion", path.display());
    setup.assert_running();
    Ok(())
}

#[tokio::test]
async fn a_volume_left_by_local_path_provisioner_is_adopted_and_deleted() -> anyhow::Result<()> {
    const LOCAL_PATH: &str = "rancher.io/local-path";
    let plane = PLANE.get().await?;
    let mut setup = Setup::new(plane, "hp-adopt", &[], |_| {
        vec![format!("--alias={LOCAL_PATH}")]
    })
    .await?;
    let (client, namespace) = (setup.client.clone(), setup.namespace.clone());
    let legacy_class = testenv::unique_name("local-path");
    create_class(&client, &mk_class(&legacy_class, LOCAL_PATH, &[])).await?;

    // What local-path-provisioner left behind: a directory with data on node-a's disk and
    // its PV (none of our annotations), pre-bound to the claim that uses it.
    let node = NODES[0];
    let volume_name = testenv::unique_name("pvc-legacy");
    let dir = setup
        .disks
        .disk(node)
        .join(format!("{volume_name}_{namespace}_old"));
    std::fs::create_dir(&dir)?;
    std::fs::write(dir.join("data.txt"), "written before the switch")?;
    let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": volume_name,
            "annotations": {
                "pv.kubernetes.io/provisioned-by": LOCAL_PATH,
                "local.path.provisioner/selected-node": node,
            },
        },
        "spec": {
            "capacity": {"storage": "1Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": legacy_class,
            "hostPath": {"path": dir, "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
            ]}]}},
            "claimRef": {"namespace": namespace, "name": "old"},
        },
    }))?;
    create(&Api::<PersistentVolume>::all(client.clone()), &volume).await?;
    let mut claim = mk_claim("old", &legacy_class, "1Mi", &[]);
    if let Some(spec) = claim.spec.as_mut() {
        spec.volume_name = Some(volume_name.clone());
    }
    create(&setup.claims(), &claim).await?;
    wait_bound(&client, &namespace, "old").await;

    // The claim goes: the instance of the volume's node deletes the directory, then the PV.
    delete(&setup.claims(), "old").await?;
    wait_volume_gone(&client, &volume_name).await;
    assert!(!dir.exists(), "{} survived the deletion", dir.display());
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields(&format!("involvedObject.name={volume_name}")))
        .await?
        .items;
    assert!(
        !events
            .iter()
            .any(|e| is_warning_from(e, &setup.provisioner)),
        "{}",
        describe(&events)
    );
    setup.assert_running();
    Ok(())
}
