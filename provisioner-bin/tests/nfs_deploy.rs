//! `deploy/nfs/` as users install it: rendered by `kubectl kustomize` (built with the
//! control plane by `scripts/build-control-plane.sh`) and checked by the real API server
//! with a server-side dry run of every object, strict field validation included.
//! Consistency checks tie the manifests to the binary (its settings, its health port) and
//! the pod template to the namespace's Pod Security level.

mod nfs_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, PolicyRule, Role};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use nfs_support::{binary, parse_objects, workspace};
use testenv::{ControlPlane, SharedControlPlane};

static PLANE: SharedControlPlane = SharedControlPlane::new(ControlPlane::builder);

/// The objects `kubectl kustomize deploy/nfs` emits.
async fn render() -> anyhow::Result<Vec<DynamicObject>> {
    let binaries = testenv::Binaries::locate().await?;
    let kubectl: PathBuf = binaries.dir().join("kubectl");
    anyhow::ensure!(
        kubectl.is_file(),
        "{} is missing: run scripts/build-control-plane.sh (it builds kubectl since recipe 2)",
        kubectl.display()
    );
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&kubectl)
            .arg("kustomize")
            .arg(workspace().join("deploy/nfs"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("kubectl kustomize did not finish")??;
    anyhow::ensure!(
        output.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_objects(&String::from_utf8(output.stdout)?)
}

fn kind(object: &DynamicObject) -> &str {
    object
        .types
        .as_ref()
        .map_or("", |types| types.kind.as_str())
}

fn typed<T: serde::de::DeserializeOwned>(objects: &[DynamicObject], wanted: &str) -> T {
    let object = objects
        .iter()
        .find(|object| kind(object) == wanted)
        .unwrap_or_else(|| panic!("no {wanted} rendered"));
    serde_json::from_value(serde_json::to_value(object).unwrap()).unwrap()
}

/// Server-side apply, dry run, strict field validation (`kubectl apply --server-side
/// --dry-run=server --validate=strict`).
async fn dry_run_apply(client: &Client, object: &DynamicObject) -> anyhow::Result<()> {
    let types = object.types.as_ref().context("object without a kind")?;
    let gvk = GroupVersionKind::try_from(types)?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = if capabilities.scope == Scope::Namespaced {
        let namespace = object
            .namespace()
            .with_context(|| format!("{} {} has no namespace", types.kind, object.name_any()))?;
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let params = PatchParams::apply("nfs-deploy-test")
        .dry_run()
        .validation_strict();
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
        .with_context(|| format!("dry run of {} {}", types.kind, object.name_any()))?;
    Ok(())
}

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    let objects = render().await?;
    let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "StorageClass",
        ])
    );
    let plane = PLANE.get().await?;
    let client = plane.client();

    // The namespace first: the API server refuses namespaced objects, even in a dry run,
    // in a namespace that does not exist. It is then created for real.
    let namespace: Namespace = typed(&objects, "Namespace");
    let namespace_object = objects.iter().find(|o| kind(o) == "Namespace").unwrap();
    dry_run_apply(&client, namespace_object).await?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    for object in objects.iter().filter(|o| kind(o) != "Namespace") {
        dry_run_apply(&client, object).await?;
    }

    // The pod the Deployment would create is admitted at the namespace's Pod Security level.
    let service_account: ServiceAccount = typed(&objects, "ServiceAccount");
    let namespace_name = namespace.name_any();
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace_name)
        .create(&PostParams::default(), &service_account)
        .await?;
    let deployment: Deployment = typed(&objects, "Deployment");
    let template = deployment.spec.template;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("nfs-provisioner-dry-run".into()),
            namespace: Some(namespace_name.clone()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Pod::default()
    };
    assert!(
        namespace
            .labels()
            .contains_key("pod-security.kubernetes.io/enforce"),
        "the namespace sets a Pod Security level"
    );
    Api::<Pod>::namespaced(client.clone(), &namespace_name)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .context("the Deployment's pod is refused")?;
    Ok(())
}

fn verbs(rules: &[PolicyRule], group: &str, resource: &str) -> BTreeSet<String> {
    rules
        .iter()
        .filter(|rule| rule.api_groups.iter().flatten().any(|g| g == group))
        .filter(|rule| rule.resources.iter().flatten().any(|r| r == resource))
        .flat_map(|rule| rule.verbs.iter().cloned())
        .collect()
}

#[tokio::test]
async fn the_manifests_agree_with_the_binary_and_with_each_other() -> anyhow::Result<()> {
    let objects = render().await?;
    let namespace: Namespace = typed(&objects, "Namespace");
    let deployment: Deployment = typed(&objects, "Deployment");
    let class: StorageClass = typed(&objects, "StorageClass");
    let binding: ClusterRoleBinding = typed(&objects, "ClusterRoleBinding");
    let role: Role = typed(&objects, "Role");
    let cluster_role: k8s_openapi::api::rbac::v1::ClusterRole = typed(&objects, "ClusterRole");
    let service_account: ServiceAccount = typed(&objects, "ServiceAccount");

    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let env: BTreeMap<String, String> = container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect();

    // Every variable the Deployment sets is one the binary reads.
    let help = std::process::Command::new(binary())
        .arg("--help")
        .output()?;
    let help = String::from_utf8(help.stdout)?;
    for name in env.keys() {
        assert!(
            help.contains(&format!("env: {name}=")),
            "the binary does not read {name}"
        );
    }
    // The class is served by the Deployment's provisioner name.
    assert_eq!(class.provisioner, env["PROVISIONER_NAME"]);
    // The mounted export is the one written into PersistentVolumes.
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.mount_path == "/persistentvolumes")
        .context("the export is mounted at /persistentvolumes")?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == mount.name)
        .and_then(|volume| volume.nfs.clone())
        .context("the mount is an NFS volume")?;
    assert_eq!(volume.server, env["NFS_SERVER"]);
    assert_eq!(volume.path, env["NFS_PATH"]);
    // The probes use the port the binary listens on by default (`--metrics-address=:8080`).
    assert!(help.contains("[default: :8080]"), "{help}");
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"));
    assert_eq!(port.map(|p| p.container_port), Some(8080));
    for (probe, path) in [
        (&container.liveness_probe, "/healthz"),
        (&container.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .context("HTTP probe")?;
        assert_eq!(get.path.as_deref(), Some(path));
    }

    // RBAC: bound to the Deployment's ServiceAccount in its namespace; least privilege.
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(service_account.name_any().as_str())
    );
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.name, service_account.name_any());
    assert_eq!(
        subject.namespace.as_deref(),
        Some(namespace.name_any().as_str())
    );
    assert_eq!(
        service_account.namespace().as_deref(),
        Some(namespace.name_any().as_str())
    );
    let rules = cluster_role.rules.unwrap_or_default();
    let set = |verbs: &[&str]| {
        verbs
            .iter()
            .map(|v| (*v).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        verbs(&rules, "", "persistentvolumes"),
        set(&["create", "delete", "get", "list", "watch"])
    );
    assert_eq!(
        verbs(&rules, "", "persistentvolumeclaims"),
        set(&["get", "list", "update", "watch"])
    );
    assert_eq!(
        verbs(&rules, "storage.k8s.io", "storageclasses"),
        set(&["get", "list", "watch"])
    );
    assert_eq!(verbs(&rules, "", "events"), set(&["create", "patch"]));
    assert_eq!(rules.len(), 4, "nothing else cluster-wide: {rules:?}");
    let namespaced = role.rules.unwrap_or_default();
    assert_eq!(
        verbs(&namespaced, "coordination.k8s.io", "leases"),
        set(&["create", "get", "update"])
    );
    assert_eq!(namespaced.len(), 1, "only the Lease: {namespaced:?}");
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(namespace.name_any().as_str())
    );
    Ok(())
}
