//! Shared pieces of the controller's cluster tests: one control plane per test binary, a
//! seed-RBAC ServiceAccount per test, a scriptable in-memory backend, and waiting helpers.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{
    Event, HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use provisioner_core::controller::{
    Checkpoint, CheckpointHook, Config, DeleteLabels, Observer, Outcome, ProvisionController,
    ProvisionLabels, QueueDepth, QueueKind,
};
use provisioner_core::plan::keys::PROVISIONING_FINALIZER;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};
use serde_json::json;
use testenv::{ControlPlane, SharedControlPlane};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One plane for the whole test binary: the PV binder, the scheduler and two fake nodes.
pub static PLANE: SharedControlPlane = SharedControlPlane::new(|| {
    ControlPlane::builder()
        .controller_manager(true)
        .scheduler(true)
        .fake_nodes(&["node-a", "node-b"])
});

/// The seed scenario's ClusterRole for the provisioner, verbatim.
const SEED_ROLE: &str = "seed-nfs-client-provisioner-runner";

/// How long any single condition may take to come true.
pub const WAIT: Duration = Duration::from_secs(90);

/// A failure the test backend returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Final,
    Reschedule,
    Infeasible,
    /// The asset is created, then the call fails as if it had timed out.
    AfterCreate,
}

/// What the test backend has done; shared by every controller instance of a test, like a
/// real storage system outlives the provisioner process.
#[derive(Clone, Debug, Default)]
pub struct BackendState {
    /// Assets that exist now (by volume name).
    pub assets: BTreeSet<String>,
    /// Assets ever created (a second creation of the same name would be a duplicate).
    pub created: u32,
    pub provision_calls: u32,
    pub delete_calls: u32,
    /// Delete calls that had no PersistentVolume (clean-up of an interrupted provisioning).
    pub orphan_deletes: u32,
    /// The selected node of each provisioning call.
    pub nodes: Vec<Option<String>>,
    /// Failures to return, one per call, before succeeding.
    pub fail_next: VecDeque<Failure>,
    /// A failure to return on every call (after `fail_next` is used up).
    pub fail_always: Option<Failure>,
    /// Provisioning calls that hang forever, one per call, before the others.
    pub hang_next: u32,
    /// Assets that exist now, by (tier, volume name): a tiered storage keeps an asset per
    /// tier, so one deleted under the wrong tier would stay.
    pub tiered: BTreeSet<(String, String)>,
    /// The (tier, volume name) of every delete call.
    pub deleted: Vec<(String, String)>,
    /// The claim labels each delete without a PersistentVolume got (`None`: no claim object).
    pub orphan_claim_labels: Vec<Option<BTreeMap<String, String>>>,
    /// Deletes answer "forgotten" (the data stays, the volume goes) instead of deleting.
    pub forget_deletes: bool,
    /// Calls answered with "ignored" by instances made with [`TestBackend::ignoring`].
    pub ignored_provisions: u32,
    pub ignored_deletes: u32,
}

/// The message of a "forgotten" delete.
pub const FORGOTTEN: &str = "test: the data stays on a node that no longer exists";

/// Typed parameters: `tier` is `fast` (default) or `slow`; nothing else is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestParameters {
    pub tier: String,
}

/// An in-memory backend that records what it is asked to do.
#[derive(Clone, Debug, Default)]
pub struct TestBackend {
    pub state: Arc<Mutex<BackendState>>,
    /// This instance leaves every claim and asset to another instance (and says so only
    /// when called: it accepts claims in `should_provision`).
    ignoring: bool,
}

impl TestBackend {
    /// Another instance over the same storage that ignores everything.
    pub fn ignoring(&self) -> Self {
        Self {
            state: self.state.clone(),
            ignoring: true,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, BackendState> {
        self.state.lock().unwrap()
    }

    /// A copy of the state, for assertions across awaits.
    pub fn snapshot(&self) -> BackendState {
        self.state().clone()
    }
}

impl Provisioner for TestBackend {
    type Parameters = TestParameters;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<TestParameters, ParameterError> {
        ParameterError::reject_unknown(raw, &["tier"])?;
        let tier = raw.get("tier").map_or("fast", String::as_str);
        if tier != "fast" && tier != "slow" {
            return Err(ParameterError::invalid(
                "tier",
                "expected \"fast\" or \"slow\"",
            ));
        }
        Ok(TestParameters {
            tier: tier.to_owned(),
        })
    }

    async fn provision(
        &self,
        request: ProvisionRequest<TestParameters>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        if self.ignoring {
            self.state().ignored_provisions += 1;
            return Err(ProvisionError::Ignored("another instance's claim".into()));
        }
        let hang = {
            let mut state = self.state();
            state.provision_calls += 1;
            state.nodes.push(request.selected_node.clone());
            let hang = state.hang_next > 0;
            state.hang_next = state.hang_next.saturating_sub(1);
            hang
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let mut state = self.state();
        let failure = state.fail_next.pop_front().or(state.fail_always);
        match failure {
            Some(Failure::Final) => return Err(ProvisionError::final_error("backend is broken")),
            Some(Failure::Reschedule) => {
                return Err(ProvisionError::Reschedule("node is full".into()));
            }
            Some(Failure::Infeasible) => {
                return Err(ProvisionError::Infeasible("no such tier".into()));
            }
            Some(Failure::AfterCreate) | None => {}
        }
        if state.assets.insert(request.volume_name.clone()) {
            state.created += 1;
        }
        state
            .tiered
            .insert((request.parameters.tier.clone(), request.volume_name.clone()));
        if failure == Some(Failure::AfterCreate) {
            return Err(ProvisionError::InBackground(
                "timed out after creating the asset".into(),
            ));
        }
        Ok(ProvisionedVolume::host_path(HostPathVolumeSource {
            path: format!("/srv/test/{}", request.volume_name),
            type_: None,
        })
        .with_annotation("test.provisioner-rs.io/tier", request.parameters.tier))
    }

    async fn delete(
        &self,
        request: DeleteRequest<TestParameters>,
    ) -> Result<DeleteOutcome, DeleteError> {
        let mut state = self.state();
        if self.ignoring {
            state.ignored_deletes += 1;
            return Err(DeleteError::Ignored("another instance's asset".into()));
        }
        state.delete_calls += 1;
        if request.volume.is_none() {
            state.orphan_deletes += 1;
            let labels = request
                .claim_object
                .as_ref()
                .map(|claim| claim.labels().clone());
            state.orphan_claim_labels.push(labels);
        }
        if state.forget_deletes {
            return Ok(DeleteOutcome::forgotten(FORGOTTEN));
        }
        let tier = request
            .parameters
            .map_or_else(|| "unknown".to_owned(), |parameters| parameters.tier);
        state
            .tiered
            .remove(&(tier.clone(), request.volume_name.clone()));
        state.deleted.push((tier, request.volume_name.clone()));
        // Idempotent: a missing asset is already deleted.
        state.assets.remove(&request.volume_name);
        Ok(DeleteOutcome::Deleted)
    }
}

/// One test's world: a namespace, a provisioner name, a ServiceAccount bound to the seed
/// RBAC, and a backend.
pub struct Harness {
    pub plane: &'static ControlPlane,
    pub admin: Client,
    pub namespace: String,
    pub name: String,
    pub backend: TestBackend,
    provisioner_client: Client,
}

impl Harness {
    pub async fn new(prefix: &str) -> anyhow::Result<Self> {
        Self::with_extra_rules(prefix, json!([])).await
    }

    /// Like [`Harness::new`], with RBAC rules beyond the seed's for this test's
    /// ServiceAccount.
    pub async fn with_extra_rules(prefix: &str, rules: serde_json::Value) -> anyhow::Result<Self> {
        // RUST_LOG=provisioner_core=debug shows the controller's decisions of failed tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let plane = PLANE.get().await?;
        let admin = plane.admin_client().await?;
        let namespace = testenv::create_namespace(&admin, prefix).await?;
        ensure_seed_role(&admin).await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": { "name": testenv::unique_name(prefix) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SEED_ROLE },
            "subjects": [{ "kind": "ServiceAccount", "name": "provisioner", "namespace": namespace }],
        }))?;
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &binding)
            .await?;
        if rules.as_array().is_some_and(|rules| !rules.is_empty()) {
            let extra_name = testenv::unique_name(&format!("{prefix}-extra"));
            let role: ClusterRole = serde_json::from_value(json!({
                "metadata": { "name": extra_name },
                "rules": rules,
            }))?;
            Api::<ClusterRole>::all(admin.clone())
                .create(&PostParams::default(), &role)
                .await?;
            let binding: ClusterRoleBinding = serde_json::from_value(json!({
                "metadata": { "name": extra_name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": extra_name },
                "subjects": [{ "kind": "ServiceAccount", "name": "provisioner", "namespace": namespace }],
            }))?;
            Api::<ClusterRoleBinding>::all(admin.clone())
                .create(&PostParams::default(), &binding)
                .await?;
        }
        let provisioner_client = plane
            .service_account_client(&namespace, "provisioner")
            .await?;
        Ok(Self {
            plane,
            admin,
            name: format!("test.provisioner-rs.io/{}", testenv::unique_name(prefix)),
            namespace,
            backend: TestBackend::default(),
            provisioner_client,
        })
    }

    /// A controller for this test's provisioner name, acting as the seed-RBAC
    /// ServiceAccount, with fast retries.
    pub fn controller(&self, config: Config) -> ProvisionController<TestBackend> {
        self.controller_with(self.backend.clone(), config)
    }

    /// A controller like [`Harness::controller`] with another backend instance.
    pub fn controller_with(
        &self,
        backend: TestBackend,
        config: Config,
    ) -> ProvisionController<TestBackend> {
        ProvisionController::new(self.provisioner_client.clone(), self.name.clone(), backend)
            .config(config)
    }

    /// Quick retries so failure tests do not wait for minutes.
    pub fn fast_config() -> Config {
        Config::default().backoff(Duration::from_millis(20), Duration::from_millis(200))
    }

    pub fn start(&self, config: Config) -> Running {
        Running::spawn(self.controller(config))
    }

    /// Starts a second instance of the provisioner (same name) that ignores every claim
    /// and asset.
    pub fn start_ignoring(&self, config: Config) -> Running {
        Running::spawn(self.controller_with(self.backend.ignoring(), config))
    }

    /// Starts a controller that freezes for good right after `checkpoint`, like a process
    /// killed there, and reports the object it froze on.
    pub fn start_crashing_at(
        &self,
        config: Config,
        checkpoint: Checkpoint,
    ) -> (Running, mpsc::UnboundedReceiver<String>) {
        let (frozen, keys) = mpsc::unbounded_channel();
        let hook: CheckpointHook = Arc::new(move |reached, key| {
            if reached == checkpoint {
                let _ = frozen.send(key.to_owned());
                std::future::pending().boxed()
            } else {
                std::future::ready(()).boxed()
            }
        });
        (
            Running::spawn(self.controller(config).checkpoint_hook(hook)),
            keys,
        )
    }

    pub async fn create_class(&self, extra: serde_json::Value) -> anyhow::Result<String> {
        let name = testenv::unique_name("class");
        let mut class = json!({
            "metadata": { "name": name },
            "provisioner": self.name,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        });
        merge(&mut class, extra);
        let class: StorageClass = serde_json::from_value(class)?;
        Api::<StorageClass>::all(self.admin.clone())
            .create(&PostParams::default(), &class)
            .await?;
        Ok(name)
    }

    pub fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    pub async fn create_claim(
        &self,
        class: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<PersistentVolumeClaim> {
        let mut claim = json!({
            "metadata": { "name": testenv::unique_name("claim") },
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "50Mi" } },
            },
        });
        merge(&mut claim, extra);
        let claim: PersistentVolumeClaim = serde_json::from_value(claim)?;
        Ok(self.claims().create(&PostParams::default(), &claim).await?)
    }

    pub async fn delete_claim(&self, name: &str) -> anyhow::Result<()> {
        self.claims().delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// Waits until the claim is Bound and returns it.
    pub async fn wait_bound(&self, name: &str) -> anyhow::Result<PersistentVolumeClaim> {
        let claims = self.claims();
        wait_for(&format!("claim {name} Bound"), || async {
            let claim = claims.get(name).await?;
            let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            Ok(bound.then_some(claim))
        })
        .await
    }

    /// Waits until the claim no longer carries the in-flight finalizer and returns it.
    pub async fn wait_record_cleared(&self, name: &str) -> anyhow::Result<PersistentVolumeClaim> {
        let claims = self.claims();
        wait_for(&format!("claim {name} record cleared"), || async {
            let claim = claims.get(name).await?;
            let in_flight = claim
                .finalizers()
                .iter()
                .any(|f| f == PROVISIONING_FINALIZER);
            Ok((!in_flight).then_some(claim))
        })
        .await
    }

    pub async fn wait_claim_gone(&self, name: &str) -> anyhow::Result<()> {
        let claims = self.claims();
        wait_for(&format!("claim {name} gone"), || async {
            Ok(claims.get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// The PersistentVolumes whose claimRef carries this UID.
    pub async fn volumes_of(&self, claim_uid: &str) -> anyhow::Result<Vec<PersistentVolume>> {
        let volumes = Api::<PersistentVolume>::all(self.admin.clone())
            .list(&ListParams::default())
            .await?;
        Ok(volumes
            .items
            .into_iter()
            .filter(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|r| r.uid.as_deref())
                    == Some(claim_uid)
            })
            .collect())
    }

    pub async fn wait_volume_gone(&self, name: &str) -> anyhow::Result<()> {
        let volumes = Api::<PersistentVolume>::all(self.admin.clone());
        wait_for(&format!("volume {name} gone"), || async {
            Ok(volumes.get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// The Events about an object (by UID), in this namespace or, for volumes, "default".
    pub async fn events_about(&self, namespace: &str, uid: &str) -> anyhow::Result<Vec<Event>> {
        let events = Api::<Event>::namespaced(self.admin.clone(), namespace)
            .list(&ListParams::default())
            .await?;
        Ok(events
            .items
            .into_iter()
            .filter(|event| event.involved_object.uid.as_deref() == Some(uid))
            .collect())
    }

    /// Waits until `check` holds for the backend's state.
    pub async fn wait_backend(
        &self,
        what: &str,
        check: impl Fn(&BackendState) -> bool,
    ) -> anyhow::Result<()> {
        wait_for(what, || async {
            Ok(check(&self.backend.state()).then_some(()))
        })
        .await
    }

    /// Waits for an Event with `reason` whose message contains `text` on the claim.
    pub async fn wait_claim_event(
        &self,
        claim: &PersistentVolumeClaim,
        reason: &str,
        text: &str,
    ) -> anyhow::Result<Event> {
        let uid = claim.uid().context("claim uid")?;
        wait_for(&format!("{reason} event containing {text:?}"), || async {
            let events = self.events_about(&self.namespace, &uid).await?;
            Ok(events.into_iter().find(|event| {
                event.reason.as_deref() == Some(reason)
                    && event.message.as_deref().is_some_and(|m| m.contains(text))
            }))
        })
        .await
    }
}

/// What a [`CountingObserver`] has seen.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub provisions_started: u32,
    pub provisions_finished: u32,
    pub deletes_started: u32,
    pub deletes_finished: u32,
    pub leadership: Vec<bool>,
    pub claims_depth: QueueDepth,
    pub volumes_depth: QueueDepth,
    pub max_claims_queued: usize,
}

/// An observer that counts operations and keeps the latest queue depths and every
/// leadership change.
#[derive(Debug, Default)]
pub struct CountingObserver {
    seen: Mutex<Seen>,
}

impl CountingObserver {
    pub fn snapshot(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

impl Observer for CountingObserver {
    fn provision_started(&self, _: &ProvisionLabels) {
        self.seen.lock().unwrap().provisions_started += 1;
    }
    fn provision_finished(&self, _: &ProvisionLabels, _: Outcome, _: Duration) {
        self.seen.lock().unwrap().provisions_finished += 1;
    }
    fn delete_started(&self, _: &DeleteLabels) {
        self.seen.lock().unwrap().deletes_started += 1;
    }
    fn delete_finished(&self, _: &DeleteLabels, _: Outcome, _: Duration) {
        self.seen.lock().unwrap().deletes_finished += 1;
    }
    fn queue_depth(&self, queue: QueueKind, depth: QueueDepth) {
        let mut seen = self.seen.lock().unwrap();
        match queue {
            QueueKind::Claims => {
                seen.claims_depth = depth;
                seen.max_claims_queued = seen.max_claims_queued.max(depth.queued);
            }
            _ => seen.volumes_depth = depth,
        }
    }
    fn leadership_changed(&self, leading: bool) {
        self.seen.lock().unwrap().leadership.push(leading);
    }
}

/// A controller running on its own task; dropping it (or [`Running::kill`]) drops the
/// controller future wherever it is, like a killed process.
pub struct Running {
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub fn spawn(controller: ProvisionController<TestBackend>) -> Self {
        let task = tokio::spawn(async move {
            controller.run().await.expect("controller runs");
        });
        Self { task: Some(task) }
    }

    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `check` until it yields a value, failing after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the seed scenario's provisioner ClusterRole once per plane.
async fn ensure_seed_role(admin: &Client) -> anyhow::Result<()> {
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": SEED_ROLE },
        "rules": [
            { "apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "watch", "create", "delete"] },
            { "apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch", "update"] },
            { "apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"] },
        ],
    }))?;
    match Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deep-merges `extra` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}
