//! The flows the project's tests depend on, against the real binaries: the PV binder, RBAC
//! for ServiceAccounts, and the scheduler with kwok nodes.
//!
//! All tests share one plane (started by the first test, stopped by its watchdog when the
//! test binary exits); each works in its own namespace with unique cluster-scoped names.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use testenv::{ControlPlane, SharedControlPlane, create_namespace, unique_name};

const FAKE_NODES: [&str; 2] = ["flows-node-a", "flows-node-b"];

static PLANE: SharedControlPlane = SharedControlPlane::new(|| {
    ControlPlane::builder()
        .controller_manager(true)
        .scheduler(true)
        .fake_nodes(&FAKE_NODES)
});

/// Failure guard for waiting on controllers; they normally take well under a second.
const WAIT: Duration = Duration::from_secs(120);

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

/// Creates `object` (given as JSON) with `api`.
async fn create<K>(api: &Api<K>, object: serde_json::Value) -> anyhow::Result<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + serde::Serialize,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object)?;
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {}", K::kind(&Default::default())))
}

/// Waits until `name` satisfies `condition`; on timeout the error shows the object as it is.
async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Condition<K>,
) -> anyhow::Result<K>
where
    K: Resource + Clone + Debug + Send + DeserializeOwned + 'static,
{
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition)).await {
        Ok(found) => found?.ok_or_else(|| anyhow!("{name} was deleted while waiting for {what}")),
        Err(_) => bail!(
            "{name}: {what} not seen within {WAIT:?}; now: {:#?}",
            api.get(name).await
        ),
    }
}

fn annotation<'a, K: Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn is_forbidden<T: Debug>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.is_forbidden())
}

#[tokio::test]
async fn the_pv_binder_binds_a_claim_to_a_matching_volume() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = create_namespace(&client, "pv-binder").await?;
    let class = unique_name("static");
    let volume = unique_name("pv");

    create(
        &Api::<StorageClass>::all(client.clone()),
        json!({
            "metadata": {"name": class},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        }),
    )
    .await?;
    create(
        &Api::<PersistentVolume>::all(client.clone()),
        json!({
            "metadata": {"name": volume},
            "spec": {
                "storageClassName": class,
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                // Never mounted: no kubelet runs.
                "hostPath": {"path": "/nonexistent/testenv"},
            },
        }),
    )
    .await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    create(
        &claims,
        json!({
            "metadata": {"name": "data"},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }),
    )
    .await?;

    let bound = wait_for(
        &claims,
        "data",
        "phase Bound",
        |claim: Option<&PersistentVolumeClaim>| {
            claim
                .and_then(|c| c.status.as_ref()?.phase.as_deref())
                .is_some_and(|phase| phase == "Bound")
        },
    )
    .await?;
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        Some(volume.as_str())
    );
    let pv = wait_for(
        &Api::<PersistentVolume>::all(client),
        &volume,
        "phase Bound",
        |pv: Option<&PersistentVolume>| {
            pv.and_then(|pv| pv.status.as_ref()?.phase.as_deref())
                .is_some_and(|phase| phase == "Bound")
        },
    )
    .await?;
    let claim_ref = pv
        .spec
        .and_then(|s| s.claim_ref)
        .context("PV has no claimRef")?;
    assert_eq!(claim_ref.namespace.as_deref(), Some(namespace.as_str()));
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    Ok(())
}

#[tokio::test]
async fn a_service_account_has_exactly_the_rights_it_was_granted() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let admin = plane.client();
    let namespace = create_namespace(&admin, "rbac").await?;
    let as_app = plane.service_account_client(&namespace, "app").await?;
    let config_maps = Api::<ConfigMap>::namespaced(as_app.clone(), &namespace);

    let before = config_maps.list(&ListParams::default()).await;
    assert!(
        is_forbidden(&before),
        "expected 403 before the grant, got {before:?}"
    );

    create(
        &Api::<Role>::namespaced(admin.clone(), &namespace),
        json!({
            "metadata": {"name": "config-maps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}],
        }),
    )
    .await?;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), &namespace),
        json!({
            "metadata": {"name": "app-config-maps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-maps"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": namespace}],
        }),
    )
    .await?;

    // The authorizer reads RBAC objects from an informer cache, so the grant lands shortly
    // after the create returns.
    let granted = tokio::time::timeout(WAIT, async {
        loop {
            let attempt = config_maps.list(&ListParams::default()).await;
            if !is_forbidden(&attempt) {
                return attempt;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("the RoleBinding never took effect")?;
    granted.context("listing ConfigMaps after the grant")?;
    create(&config_maps, json!({"metadata": {"name": "made-by-app"}})).await?;

    // Nothing beyond the grant: other resources, other namespaces.
    let secrets = Api::<Secret>::namespaced(as_app.clone(), &namespace)
        .list(&ListParams::default())
        .await;
    assert!(is_forbidden(&secrets), "secrets: {secrets:?}");
    let elsewhere = Api::<ConfigMap>::namespaced(as_app, "default")
        .list(&ListParams::default())
        .await;
    assert!(is_forbidden(&elsewhere), "other namespace: {elsewhere:?}");
    Ok(())
}

#[tokio::test]
async fn a_service_account_kubeconfig_authenticates_as_that_account() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let namespace = create_namespace(&plane.client(), "sa-kubeconfig").await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.kubeconfig");
    plane
        .service_account_kubeconfig(&namespace, "app", &path)
        .await?;

    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let review = Api::<SelfSubjectReview>::all(Client::try_from(config)?)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        user.as_deref(),
        Some(format!("system:serviceaccount:{namespace}:app").as_str())
    );
    Ok(())
}

#[tokio::test]
async fn the_scheduler_selects_a_fake_node_for_a_wait_for_first_consumer_claim()
-> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = create_namespace(&client, "wffc").await?;
    let class = unique_name("wffc");
    // No provisioner runs under this name: the test stops at the hand-over.
    let provisioner = format!("{class}.example.com/external");

    create(
        &Api::<StorageClass>::all(client.clone()),
        json!({
            "metadata": {"name": class},
            "provisioner": provisioner,
            "volumeBindingMode": "WaitForFirstConsumer",
        }),
    )
    .await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    create(
        &claims,
        json!({
            "metadata": {"name": "data"},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }),
    )
    .await?;
    create(
        &Api::<Pod>::namespaced(client.clone(), &namespace),
        json!({
            "metadata": {"name": "consumer"},
            "spec": {
                "containers": [{
                    "name": "app",
                    // Never pulled: kwok only pretends to run containers.
                    "image": "registry.invalid/app:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            },
        }),
    )
    .await?;

    let claim = wait_for(
        &claims,
        "data",
        SELECTED_NODE,
        |claim: Option<&PersistentVolumeClaim>| {
            claim.is_some_and(|c| annotation(c, SELECTED_NODE).is_some())
        },
    )
    .await?;
    let node = annotation(&claim, SELECTED_NODE).unwrap_or_default();
    assert!(
        FAKE_NODES.contains(&node),
        "selected {node:?}, not a fake node"
    );

    // The PV binder then hands the claim to the class's provisioner.
    let claim = wait_for(
        &claims,
        "data",
        STORAGE_PROVISIONER,
        |claim: Option<&PersistentVolumeClaim>| {
            claim.is_some_and(|c| annotation(c, STORAGE_PROVISIONER).is_some())
        },
    )
    .await?;
    assert_eq!(
        annotation(&claim, STORAGE_PROVISIONER),
        Some(provisioner.as_str())
    );
    Ok(())
}

#[tokio::test]
async fn pods_on_fake_nodes_run() -> anyhow::Result<()> {
    let plane = PLANE.get().await?;
    let client = plane.client();
    let namespace = create_namespace(&client, "kwok-pod").await?;
    let pods = Api::<Pod>::namespaced(client, &namespace);
    create(
        &pods,
        json!({
            "metadata": {"name": "app"},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
        }),
    )
    .await?;
    let pod = wait_for(&pods, "app", "phase Running", |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref()?.phase.as_deref())
            .is_some_and(|phase| phase == "Running")
    })
    .await?;
    let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
    assert!(FAKE_NODES.contains(&node.as_str()), "ran on {node:?}");
    Ok(())
}
