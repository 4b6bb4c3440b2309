//! `deploy/hostpath/` as users install it: rendered by `kubectl kustomize` (built with the
//! control plane by `scripts/build-control-plane.sh`) and checked by the real API server
//! with a server-side dry run of every object, strict field validation included, and the
//! DaemonSet's pod admitted at the namespace's Pod Security level. Consistency checks tie
//! the manifests to the binary (its settings, its health port, its config format) and to
//! each other (every configured path is mounted; RBAC bound to the pod's account).

mod hostpath_support;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use backend_hostpath::config::ProvisionerConfig;
use hostpath_support::{binary, kind, render_deploy, the};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, ResourceExt};
use testenv::{ControlPlane, SharedControlPlane};

static PLANE: SharedControlPlane = SharedControlPlane::new(ControlPlane::builder);

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
    let params = PatchParams::apply("hostpath-deploy-test")
        .dry_run()
        .validation_strict();
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
        .with_context(|| format!("dry run of {} {}", types.kind, object.name_any()))?;
    Ok(())
}

#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    let objects = render_deploy().await?;
    let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
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
    let namespace: Namespace = the(&objects, "Namespace")?;
    let namespace_object = objects.iter().find(|o| kind(o) == "Namespace").unwrap();
    dry_run_apply(&client, namespace_object).await?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    for object in objects.iter().filter(|o| kind(o) != "Namespace") {
        dry_run_apply(&client, object).await?;
    }

    // The pod the DaemonSet would create on a node is admitted at the namespace's Pod
    // Security level (hostPath volumes need `privileged`).
    let namespace_name = namespace.name_any();
    assert!(
        namespace
            .labels()
            .contains_key("pod-security.kubernetes.io/enforce"),
        "the namespace sets a Pod Security level"
    );
    let service_account: ServiceAccount = the(&objects, "ServiceAccount")?;
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace_name)
        .create(&PostParams::default(), &service_account)
        .await?;
    let daemon_set: DaemonSet = the(&objects, "DaemonSet")?;
    let template = daemon_set.spec.template;
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("hostpath-provisioner-dry-run".into()),
            namespace: Some(namespace_name.clone()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Pod::default()
    };
    Api::<Pod>::namespaced(client.clone(), &namespace_name)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .context("the DaemonSet's pod is refused")?;
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

fn set(verbs: &[&str]) -> BTreeSet<String> {
    verbs.iter().map(|v| (*v).to_owned()).collect()
}

#[tokio::test]
async fn the_rbac_is_least_privilege_and_bound_to_the_pods_account() -> anyhow::Result<()> {
    let objects = render_deploy().await?;
    let namespace: Namespace = the(&objects, "Namespace")?;
    let service_account: ServiceAccount = the(&objects, "ServiceAccount")?;
    let binding: ClusterRoleBinding = the(&objects, "ClusterRoleBinding")?;
    let daemon_set: DaemonSet = the(&objects, "DaemonSet")?;

    let rules = the::<ClusterRole>(&objects, "ClusterRole")?
        .rules
        .unwrap_or_default();
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
    assert_eq!(verbs(&rules, "", "nodes"), set(&["get", "list", "watch"]));
    // No helper pods: no pods at all, and nothing else cluster-wide.
    assert!(verbs(&rules, "", "pods").is_empty());
    assert_eq!(rules.len(), 5, "nothing else cluster-wide: {rules:?}");
    let role: Role = the(&objects, "Role")?;
    let namespaced = role.rules.clone().unwrap_or_default();
    assert_eq!(
        verbs(&namespaced, "coordination.k8s.io", "leases"),
        set(&["create", "get", "update"])
    );
    assert_eq!(namespaced.len(), 1, "only the Lease: {namespaced:?}");
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(namespace.name_any().as_str())
    );

    let pod = daemon_set.spec.template.spec.context("a pod template")?;
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(service_account.name_any().as_str())
    );
    let subject = &binding.subjects.as_ref().context("subjects")?[0];
    assert_eq!(subject.name, service_account.name_any());
    assert_eq!(
        subject.namespace.as_deref(),
        Some(namespace.name_any().as_str())
    );
    Ok(())
}

#[tokio::test]
async fn the_manifests_agree_with_the_binary_and_with_each_other() -> anyhow::Result<()> {
    let objects = render_deploy().await?;
    let daemon_set: DaemonSet = the(&objects, "DaemonSet")?;
    let pod = daemon_set.spec.template.spec.context("a pod template")?;
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];

    // NODE_NAME from the downward API; every variable set is one the binary reads.
    let env = container.env.clone().unwrap_or_default();
    let node_name = env
        .iter()
        .find(|var| var.name == "NODE_NAME")
        .context("NODE_NAME is set")?;
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|source| source.field_ref.as_ref())
        .map(|field| field.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));
    let help = std::process::Command::new(binary())
        .arg("--help")
        .output()?;
    let help = String::from_utf8(help.stdout)?;
    for var in &env {
        assert!(
            help.contains(&format!("env: {}=", var.name)),
            "the binary does not read {}",
            var.name
        );
    }

    // The shipped config is valid, and every path it names is mounted at the same path
    // from the node.
    let config_map: ConfigMap = the(&objects, "ConfigMap")?;
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get("config.json"))
        .context("config.json in the ConfigMap")?;
    let config = ProvisionerConfig::parse(text)?;
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let mounts: BTreeMap<String, String> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| (mount.mount_path.clone(), mount.name.clone()))
        .collect();
    let paths: Vec<String> = config
        .all_base_paths()
        .map(|path| path.as_path().display().to_string())
        .collect();
    assert!(!paths.is_empty());
    for path in &paths {
        let volume = mounts
            .get(path)
            .and_then(|name| pod.volumes.iter().flatten().find(|v| &v.name == name))
            .with_context(|| format!("{path} is not mounted: {mounts:?}"))?;
        let host_path = volume
            .host_path
            .as_ref()
            .with_context(|| format!("{path} is not a hostPath volume"))?;
        assert_eq!(
            &host_path.path, path,
            "mounted from the same path on the node"
        );
    }
    // The config file the binary reads is the ConfigMap's key.
    let config_mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| {
            pod.volumes.iter().flatten().any(|volume| {
                volume.name == mount.name
                    && volume
                        .config_map
                        .as_ref()
                        .is_some_and(|source| source.name == config_map.name_any())
            })
        })
        .context("the ConfigMap is mounted")?;
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&format!("--config={}/config.json", config_mount.mount_path)),
        "{args:?}"
    );

    // The binary accepts the container's arguments and environment as written: it gets as
    // far as reading the config file (which only exists inside the pod).
    let mut command = std::process::Command::new(binary());
    command.env_clear().args(&args);
    for var in &env {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(_)) => "node-a".to_owned(), // a downward API value
            (None, None) => String::new(),
        };
        command.env(&var.name, value);
    }
    let output = command.output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("/etc/config/config.json"),
        "the binary did not get to the config file:\n{stderr}"
    );

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

    // The class: local-path's, served through the default alias, WaitForFirstConsumer.
    let class: StorageClass = the(&objects, "StorageClass")?;
    assert_eq!(class.name_any(), "local-path");
    assert_eq!(class.provisioner, "rancher.io/local-path");
    assert!(help.contains("[default: rancher.io/local-path]"), "{help}");
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    Ok(())
}
