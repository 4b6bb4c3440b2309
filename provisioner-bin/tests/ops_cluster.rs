//! The provisioner process in operation, against a real control plane (etcd, apiserver,
//! kube-controller-manager's PV binder): two replicas with leader election (Leases, and the
//! seed scenario's RBAC with its Endpoints fallback), failover after SIGKILL, metrics
//! scraped over HTTP, and SIGTERM with work in flight.
//!
//! Each replica is the `noop-provisioner` binary run as a ServiceAccount; it writes its pid
//! on every PersistentVolume it creates, so the tests see which replica did the work.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use provisioner_bin::runtime::noop::PROVISIONED_BY_PROCESS;
use provisioner_core::leader::{ENDPOINTS_RECORD_ANNOTATION, LeaderRecord};
use provisioner_core::plan::keys::PROVISIONING_FINALIZER;
use serde_json::json;
use testenv::process::ChildProcess;
use testenv::{ControlPlane, SharedControlPlane};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static PLANE: SharedControlPlane =
    SharedControlPlane::new(|| ControlPlane::builder().controller_manager(true));

/// Any single condition may take this long (a failure guard, not a measurement).
const WAIT: Duration = Duration::from_secs(120);

/// Short election timings so failover tests take seconds.
const LEASE: Duration = Duration::from_secs(4);
const RENEW: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);

/// Which RBAC the provisioner's ServiceAccount gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rbac {
    /// The seed scenario's: a ClusterRole for volumes, claims, classes and events, and a
    /// Role for `endpoints` only.
    Seed,
    /// The seed's ClusterRole and a Role for `leases` only.
    Leases,
}

/// One test's world: a namespace (also the lock's), a provisioner name and a class for it.
struct World {
    plane: &'static ControlPlane,
    admin: Client,
    namespace: String,
    name: String,
    class: String,
}

impl World {
    async fn new(prefix: &str, rbac: Rbac) -> anyhow::Result<Self> {
        let plane = PLANE.get().await?;
        let admin = plane.admin_client().await?;
        let namespace = testenv::create_namespace(&admin, prefix).await?;
        grant(&admin, &namespace, rbac).await?;
        let name = format!("ops.provisioner-rs.io/{}", testenv::unique_name(prefix));
        let class = create_class(&admin, &name, json!({})).await?;
        Ok(Self {
            plane,
            admin,
            namespace,
            name,
            class,
        })
    }

    /// Starts a `noop-provisioner` replica as the ServiceAccount `provisioner`.
    async fn spawn(&self, replica: &str, extra: &[&str]) -> anyhow::Result<Replica> {
        let log = self
            .plane
            .dir()
            .join("logs")
            .join(format!("{}-{replica}.log", self.namespace));
        let mut command = Command::new(env!("CARGO_BIN_EXE_noop-provisioner"));
        command
            .env("POD_NAMESPACE", &self.namespace)
            .env("RUST_LOG", "info,provisioner_core=debug")
            .args([
                "--provisioner-name",
                &self.name,
                "--metrics-address",
                "127.0.0.1:0",
                "--leader-election-lease-duration",
                &format!("{}ms", LEASE.as_millis()),
                "--leader-election-renew-deadline",
                &format!("{}ms", RENEW.as_millis()),
                "--leader-election-retry-period",
                &format!("{}ms", RETRY.as_millis()),
            ])
            .args(extra);
        let process = self
            .plane
            .spawn_as_service_account(&self.namespace, "provisioner", &mut command, &log)
            .await?;
        let mut replica = Replica {
            process,
            log,
            metrics: None,
        };
        let address = wait_for("the replica's HTTP address", || async {
            Ok(replica.address_from_log())
        })
        .await?;
        replica.metrics = Some(address);
        Ok(replica)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    async fn create_claims(&self, count: usize) -> anyhow::Result<Vec<PersistentVolumeClaim>> {
        self.create_claims_of(&self.class, count).await
    }

    async fn create_claims_of(
        &self,
        class: &str,
        count: usize,
    ) -> anyhow::Result<Vec<PersistentVolumeClaim>> {
        let mut created = Vec::new();
        for _ in 0..count {
            let claim: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": { "name": testenv::unique_name("claim") },
                "spec": {
                    "storageClassName": class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } },
                },
            }))?;
            created.push(self.claims().create(&PostParams::default(), &claim).await?);
        }
        Ok(created)
    }

    /// Waits until every claim is Bound.
    async fn wait_bound(&self, claims: &[PersistentVolumeClaim]) -> anyhow::Result<()> {
        let names: BTreeSet<String> = claims.iter().map(ResourceExt::name_any).collect();
        wait_for("claims Bound", || async {
            let list = self.claims().list(&ListParams::default()).await?;
            let bound = list
                .items
                .iter()
                .filter(|claim| names.contains(&claim.name_any()))
                .filter(|claim| {
                    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                })
                .count();
            Ok((bound == names.len()).then_some(()))
        })
        .await
    }

    /// The PersistentVolumes of these claims, by claim UID.
    async fn volumes_of(
        &self,
        claims: &[PersistentVolumeClaim],
    ) -> anyhow::Result<BTreeMap<String, Vec<PersistentVolume>>> {
        let uids: BTreeSet<String> = claims.iter().filter_map(|c| c.uid()).collect();
        let mut by_claim: BTreeMap<String, Vec<PersistentVolume>> = BTreeMap::new();
        for volume in Api::<PersistentVolume>::all(self.admin.clone())
            .list(&ListParams::default())
            .await?
        {
            let uid = volume
                .spec
                .as_ref()
                .and_then(|spec| spec.claim_ref.as_ref())
                .and_then(|claim| claim.uid.clone());
            if let Some(uid) = uid.filter(|uid| uids.contains(uid)) {
                by_claim.entry(uid).or_default().push(volume);
            }
        }
        Ok(by_claim)
    }

    /// Asserts each claim has exactly one volume and returns which process made each.
    async fn provisioning_processes(
        &self,
        claims: &[PersistentVolumeClaim],
    ) -> anyhow::Result<BTreeSet<String>> {
        let volumes = self.volumes_of(claims).await?;
        assert_eq!(volumes.len(), claims.len(), "a volume for every claim");
        let mut processes = BTreeSet::new();
        for (claim, volumes) in volumes {
            assert_eq!(
                volumes.len(),
                1,
                "claim {claim} has {} volumes",
                volumes.len()
            );
            processes.insert(
                volumes[0]
                    .annotations()
                    .get(PROVISIONED_BY_PROCESS)
                    .cloned()
                    .context("volume without the process annotation")?,
            );
        }
        Ok(processes)
    }

    fn lock_name(&self) -> String {
        self.name.replace('/', "-")
    }

    async fn lease_record(&self) -> anyhow::Result<Option<LeaderRecord>> {
        let lease = Api::<Lease>::namespaced(self.admin.clone(), &self.namespace)
            .get_opt(&self.lock_name())
            .await?;
        Ok(lease
            .and_then(|lease| lease.spec)
            .map(|spec| LeaderRecord::from_lease_spec(&spec)))
    }

    async fn endpoints_record(&self) -> anyhow::Result<Option<LeaderRecord>> {
        let endpoints = Api::<Endpoints>::namespaced(self.admin.clone(), &self.namespace)
            .get_opt(&self.lock_name())
            .await?;
        endpoints
            .and_then(|endpoints| {
                endpoints
                    .annotations()
                    .get(ENDPOINTS_RECORD_ANNOTATION)
                    .cloned()
            })
            .map(|value| LeaderRecord::from_annotation(&value).map_err(Into::into))
            .transpose()
    }

    async fn events(&self) -> anyhow::Result<Vec<Event>> {
        Ok(
            Api::<Event>::namespaced(self.admin.clone(), &self.namespace)
                .list(&ListParams::default())
                .await?
                .items,
        )
    }
}

/// A running replica.
struct Replica {
    process: ChildProcess,
    log: PathBuf,
    metrics: Option<SocketAddr>,
}

impl Replica {
    fn pid(&self) -> String {
        self.process.pid().to_string()
    }

    fn address_from_log(&self) -> Option<SocketAddr> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        log.lines()
            .filter(|line| line.contains("serving /healthz"))
            .find_map(|line| line.split("address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
    }

    fn signal(&self, signal: rustix::process::Signal) -> anyhow::Result<()> {
        let pid =
            rustix::process::Pid::from_raw(i32::try_from(self.process.pid())?).context("pid 0")?;
        rustix::process::kill_process(pid, signal)?;
        Ok(())
    }

    async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let process = &mut self.process;
        let started = Instant::now();
        loop {
            if let Some(status) = process.try_exit_status() {
                return Ok(status);
            }
            if started.elapsed() > WAIT {
                bail!("{} did not exit:\n{}", process.name(), process.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let address = self.metrics.context("no HTTP address")?;
        tokio::time::timeout(Duration::from_secs(30), http_get(address, path))
            .await
            .context("HTTP request timed out")?
    }
}

/// A plain HTTP/1.1 GET (the response is read until the server closes).
async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_owned()))
}

/// Polls `check` until it returns `Some`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() > WAIT {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a StorageClass of provisioner `name` with these `parameters`; returns its name.
async fn create_class(
    admin: &Client,
    name: &str,
    parameters: serde_json::Value,
) -> anyhow::Result<String> {
    let class = testenv::unique_name("ops-class");
    let storage_class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": class },
        "provisioner": name,
        "parameters": parameters,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))?;
    Api::<StorageClass>::all(admin.clone())
        .create(&PostParams::default(), &storage_class)
        .await?;
    Ok(class)
}

/// Grants the ServiceAccount `provisioner` of `namespace` the seed's ClusterRole, plus a
/// Role for `endpoints` (seed) or `leases` (modern).
async fn grant(admin: &Client, namespace: &str, rbac: Rbac) -> anyhow::Result<()> {
    let cluster_role_name = testenv::unique_name("ops-runner");
    let cluster_role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": cluster_role_name },
        "rules": [
            { "apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "watch", "create", "delete"] },
            { "apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch", "update"] },
            { "apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"] },
        ],
    }))?;
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &cluster_role)
        .await?;
    let cluster_binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": cluster_role_name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name },
        "subjects": [{ "kind": "ServiceAccount", "name": "provisioner", "namespace": namespace }],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &cluster_binding)
        .await?;
    let lock_rule = match rbac {
        Rbac::Seed => json!({
            "apiGroups": [""], "resources": ["endpoints"],
            "verbs": ["get", "list", "watch", "create", "update", "patch"],
        }),
        Rbac::Leases => json!({
            "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }),
    };
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "leader-locking", "namespace": namespace },
        "rules": [lock_rule],
    }))?;
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "leader-locking", "namespace": namespace },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader-locking" },
        "subjects": [{ "kind": "ServiceAccount", "name": "provisioner", "namespace": namespace }],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Two replicas: only the leader provisions; after SIGKILL of the leader the standby takes
/// over, not before the dead leader's lease expired, and every claim has one volume.
async fn failover(world: &World) -> anyhow::Result<()> {
    let a = world.spawn("a", &[]).await?;
    let b = world.spawn("b", &[]).await?;

    let first = world.create_claims(4).await?;
    world.wait_bound(&first).await?;
    let leaders = world.provisioning_processes(&first).await?;
    assert_eq!(
        leaders.len(),
        1,
        "one replica provisioned everything: {leaders:?}"
    );
    let leader_pid = leaders.into_iter().next().unwrap_or_default();
    let (mut leader, standby) = if leader_pid == a.pid() {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leader.pid(), leader_pid);

    leader.signal(rustix::process::Signal::KILL)?;
    let killed = Instant::now();
    leader.wait_exit().await?;
    let second = world.create_claims(4).await?;
    world.wait_bound(&second).await?;
    let took_over_after = killed.elapsed();
    let successors = world.provisioning_processes(&second).await?;
    assert_eq!(successors, BTreeSet::from([standby.pid()]));
    // The standby saw the dead leader's last renewal at most a retry period (plus
    // jitter) before the kill, and must wait a full lease from then.
    assert!(
        took_over_after >= LEASE - 2 * RETRY,
        "took over {took_over_after:?} after the kill, before the lease ({LEASE:?}) could expire"
    );
    // Still one volume per claim, for all claims.
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    world.provisioning_processes(&all).await?;
    println!("failover: the standby provisioned {took_over_after:?} after SIGKILL of the leader");
    Ok(())
}

#[tokio::test]
async fn with_leases_only_the_leader_provisions_and_the_standby_takes_over_after_sigkill()
-> anyhow::Result<()> {
    let world = World::new("ops-lease", Rbac::Leases).await?;
    failover(&world).await?;
    let record = world.lease_record().await?.context("no Lease")?;
    assert!(record.leader_transitions >= 1, "{record:?}");
    assert!(
        world.endpoints_record().await?.is_none(),
        "no Endpoints lock when Leases work"
    );
    Ok(())
}

#[tokio::test]
async fn with_the_seed_rbac_the_endpoints_lock_elects_and_an_event_names_the_missing_rule()
-> anyhow::Result<()> {
    let world = World::new("ops-seed", Rbac::Seed).await?;
    failover(&world).await?;
    let record = world
        .endpoints_record()
        .await?
        .context("no Endpoints lock record")?;
    assert!(record.is_held(), "{record:?}");
    assert!(record.leader_transitions >= 1, "{record:?}");
    assert!(world.lease_record().await?.is_none());

    let events = world.events().await?;
    let warning = events
        .iter()
        .find(|event| event.reason.as_deref() == Some("LeaseForbidden"))
        .context("no LeaseForbidden Event")?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.involved_object.kind.as_deref(), Some("Endpoints"));
    assert_eq!(
        warning.involved_object.name.as_deref(),
        Some(world.lock_name().as_str())
    );
    let message = warning.message.as_deref().unwrap_or_default();
    for needed in [
        "coordination.k8s.io",
        "leases",
        "\"get\", \"create\", \"update\"",
    ] {
        assert!(message.contains(needed), "{message}");
    }
    Ok(())
}

/// One parsed OpenMetrics sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_openmetrics(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').context("sample without value")?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').context("unclosed labels")?),
            None => (series, ""),
        };
        let mut parsed = BTreeMap::new();
        // Label values here never contain `,` or `"` escapes.
        for pair in labels.split(',').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').context("label without =")?;
            parsed.insert(key.to_owned(), value.trim_matches('"').to_owned());
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels: parsed,
            value: value.parse()?,
        });
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && sample.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|sample| sample.value)
}

#[tokio::test]
async fn metrics_are_scraped_with_the_go_names_and_labels_and_election_can_be_off()
-> anyhow::Result<()> {
    let world = World::new("ops-metrics", Rbac::Seed).await?;
    let failing = create_class(
        &world.admin,
        &world.name,
        json!({ "failProvision": "true" }),
    )
    .await?;
    let undeletable =
        create_class(&world.admin, &world.name, json!({ "failDelete": "true" })).await?;
    let replica = world
        .spawn("solo", &["--leader-election=false", "--concurrency=4"])
        .await?;
    assert_eq!(replica.get("/healthz").await?.0, 200);
    wait_for("/readyz", || async {
        Ok((replica.get("/readyz").await?.0 == 200).then_some(()))
    })
    .await?;

    // One volume provisioned and deleted, one provisioning failing, one deletion failing.
    let fine = world.create_claims(1).await?;
    let stuck = world.create_claims_of(&undeletable, 1).await?;
    world.create_claims_of(&failing, 1).await?;
    world.wait_bound(&fine).await?;
    world.wait_bound(&stuck).await?;
    for claim in fine.iter().chain(&stuck) {
        world
            .claims()
            .delete(&claim.name_any(), &Default::default())
            .await?;
    }
    let class = world.class.as_str();
    let (samples, _) = wait_for("every outcome in the metrics", || async {
        let (status, body) = replica.get("/metrics").await?;
        assert_eq!(status, 200);
        let samples = parse_openmetrics(&body)?;
        let seen = |name: &str, labels: &[(&str, &str)]| {
            value(&samples, name, labels).is_some_and(|value| value >= 1.0)
        };
        let complete = seen(
            "controller_persistentvolume_delete_total",
            &[("class", class)],
        ) && seen(
            "controller_persistentvolume_delete_failed_total",
            &[("class", &undeletable)],
        ) && seen(
            "controller_persistentvolumeclaim_provision_failed_total",
            &[("class", &failing), ("source", "")],
        );
        Ok(complete.then_some((samples, body)))
    })
    .await?;

    // The Go library's six metrics, with its labels.
    let provision = [("class", class), ("source", "")];
    assert_eq!(
        value(
            &samples,
            "controller_persistentvolumeclaim_provision_total",
            &provision
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "controller_persistentvolumeclaim_provision_duration_seconds_count",
            &provision
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "controller_persistentvolumeclaim_provision_duration_seconds_bucket",
            &[("class", class), ("source", ""), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "controller_persistentvolume_delete_duration_seconds_count",
            &[("class", class)]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "controller_persistentvolume_delete_total",
            &[("class", class)]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "controller_persistentvolumeclaim_provision_failed_total",
            &[("class", &failing), ("source", "")]
        )
        .is_some()
    );
    assert!(
        value(
            &samples,
            "controller_persistentvolume_delete_failed_total",
            &[("class", &undeletable)]
        )
        .is_some()
    );
    // A failure is not a success: no provision total and no success duration for it.
    assert_eq!(
        value(
            &samples,
            "controller_persistentvolumeclaim_provision_total",
            &[("class", &failing), ("source", "")]
        ),
        None
    );
    // Beyond the Go library: failure durations with their reason, leadership, requests.
    assert!(samples.iter().any(|s| s.name
        == "controller_persistentvolumeclaim_provision_failed_duration_seconds_count"
        && s.labels.get("class") == Some(&failing)
        && s.labels.get("reason").is_some_and(|r| !r.is_empty())));
    assert_eq!(
        value(
            &samples,
            "leader_election_master_status",
            &[("name", &world.lock_name())]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &samples,
            "controller_api_requests_total",
            &[("verb", "create"), ("resource", "persistentvolumes")]
        )
        .is_some_and(|count| count >= 2.0)
    );
    // The queues report their depth by state.
    for state in ["queued", "retrying", "running"] {
        assert!(
            value(
                &samples,
                "controller_queue_depth",
                &[("queue", "claims"), ("state", state)]
            )
            .is_some(),
            "{state}"
        );
    }
    let watches: f64 = samples
        .iter()
        .filter(|s| s.name == "kubernetes_client_requests_total")
        .filter(|s| s.labels["verb"] == "watch")
        .map(|s| s.value)
        .sum();
    assert!(watches >= 3.0, "the client counted its watches: {watches}");
    // Election off: no lock of either kind.
    assert!(world.lease_record().await?.is_none());
    assert!(world.endpoints_record().await?.is_none());
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_the_operation_in_flight_finish_releases_the_lock_and_exits_zero()
-> anyhow::Result<()> {
    let world = World::new("ops-sigterm", Rbac::Leases).await?;
    let mut replica = world
        .spawn("slow", &["--provision-delay=4s", "--grace-period=60s"])
        .await?;
    wait_for("leadership", || async {
        Ok(world
            .lease_record()
            .await?
            .filter(LeaderRecord::is_held)
            .map(drop))
    })
    .await?;
    let in_flight = world.create_claims(1).await?;
    let name = in_flight[0].name_any();
    // The in-flight record goes on the claim right before the backend is called.
    wait_for("provisioning to start", || async {
        let claim = world.claims().get(&name).await?;
        Ok(claim
            .finalizers()
            .iter()
            .any(|f| f == PROVISIONING_FINALIZER)
            .then_some(()))
    })
    .await?;

    replica.signal(rustix::process::Signal::TERM)?;
    wait_for("shutdown to begin", || async {
        Ok(replica
            .process
            .log_tail(20)
            .contains("shutting down")
            .then_some(()))
    })
    .await?;
    // New work is not taken once shutdown began.
    let late = world.create_claims(1).await?;
    let status = replica.wait_exit().await?;
    assert_eq!(status.code(), Some(0), "{}", replica.process.log_tail(40));

    // The operation in flight finished before the exit: its volume exists, made by it.
    let processes = world.provisioning_processes(&in_flight).await?;
    assert_eq!(processes, BTreeSet::from([replica.pid()]));
    assert!(
        world.volumes_of(&late).await?.is_empty(),
        "new work was taken after SIGTERM"
    );
    // The lock was given up for a standby.
    let record = world.lease_record().await?.context("no Lease")?;
    assert!(!record.is_held(), "lease still held: {record:?}");
    assert_eq!(record.lease_duration_seconds, 1);
    Ok(())
}
