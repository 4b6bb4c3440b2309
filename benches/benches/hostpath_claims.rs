//! Claim creation to Bound for node-local volumes, against a real control plane
//! (kube-apiserver, the PV binder of kube-controller-manager, kube-scheduler and two kwok
//! nodes), with the hostPath provisioner versus a baseline measured in the same run.
//!
//! Each round creates `BENCH_CLAIMS` (default 100) WaitForFirstConsumer claims, each with a
//! pod that mounts it, spread by the scheduler over the two fake nodes, and times every
//! claim from just before its create request to the moment a watch sees it Bound.
//!
//! - **hostpath**: the claims' class is served by two instances of `hostpath-provisioner`,
//!   one per node, run in-process through the binary's own entry point
//!   (`provisioner_bin::hostpath::run::run_until`, default settings), each with a temporary
//!   directory as its disk: scheduler → selected node → the node's instance makes the
//!   directory and the PersistentVolume → the PV binder binds.
//! - **baseline**: the same pods and claims, but a tight client has already created a
//!   PersistentVolume pre-bound to every claim (before the clock starts), so only
//!   Kubernetes' own binding remains: the least any dynamic provisioner could add to.
//!
//! Rounds alternate which runs first (`BENCH_ROUNDS`, default 3). Printed: per round and
//! kind, the median, 90th percentile and slowest claim and the time until the last claim
//! was Bound; then the medians over all rounds and the ratios hostpath / baseline. `--quick`
//! runs one round of 20 claims.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use provisioner_bin::hostpath::HostPathArgs;
use provisioner_bin::hostpath::run::run_until;
use provisioner_bin::runtime::CommonArgs;
use testenv::ControlPlane;

const NODES: [&str; 2] = ["node-a", "node-b"];
const PROVISIONER: &str = "bench.provisioner-rs.io/hostpath";
/// Requests in flight while creating the objects of a round.
const CREATE_CONCURRENCY: usize = 16;
/// A failure guard for one round, not a measurement.
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);

/// The command line of one instance.
#[derive(Parser)]
struct Instance {
    #[command(flatten)]
    hostpath: HostPathArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Baseline,
    HostPath,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline (pre-bound volumes)",
            Kind::HostPath => "hostpath provisioner",
        }
    }
}

/// Latencies of one round, sorted.
struct Round {
    latencies: Vec<Duration>,
    makespan: Duration,
}

impl Round {
    fn quantile(&self, q: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }
}

/// A figure of a round.
#[derive(Clone, Copy)]
enum Figure {
    P50,
    P90,
    AllBound,
}

impl Figure {
    fn of(self, round: &Round) -> Duration {
        match self {
            Figure::P50 => round.quantile(0.5),
            Figure::P90 => round.quantile(0.9),
            Figure::AllBound => round.makespan,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Figure::P50 => "p50 claim latency",
            Figure::P90 => "p90 claim latency",
            Figure::AllBound => "all claims Bound",
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let claims = if quick {
        20
    } else {
        env_usize("BENCH_CLAIMS", 100)
    };
    let rounds = if quick {
        1
    } else {
        env_usize("BENCH_ROUNDS", 3).max(1)
    };
    tokio::runtime::Runtime::new()?.block_on(run(claims, rounds))
}

async fn run(claims: usize, rounds: usize) -> anyhow::Result<()> {
    println!(
        "hostpath_claims: {claims} WaitForFirstConsumer claims with pods over {} kwok nodes, \
         {rounds} round(s)",
        NODES.len()
    );
    let plane = ControlPlane::builder()
        .controller_manager(true)
        .scheduler(true)
        .fake_nodes(&NODES)
        .start()
        .await?;
    let client = plane.client();

    // The provisioner: one instance per node, as the DaemonSet runs them.
    let disks = tempfile::tempdir()?;
    let config_path = disks.path().join("config.json");
    let node_path_map: Vec<serde_json::Value> = NODES
        .iter()
        .map(|node| {
            let disk = disks.path().join(node);
            std::fs::create_dir(&disk)?;
            Ok(serde_json::json!({"node": node, "paths": [disk.to_str().unwrap()]}))
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::write(
        &config_path,
        serde_json::json!({ "nodePathMap": node_path_map }).to_string(),
    )?;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut instances = Vec::new();
    for node in NODES {
        let cli = Instance::parse_from([
            "hostpath-provisioner".to_owned(),
            format!("--node-name={node}"),
            format!("--provisioner-name={PROVISIONER}"),
            format!("--config={}", config_path.display()),
            format!("--kubeconfig={}", plane.admin_kubeconfig().display()),
            "--metrics-address=127.0.0.1:0".to_owned(),
            "--leader-election-namespace=default".to_owned(),
        ]);
        let settings = cli.hostpath.resolve()?;
        let shutdown = stop.clone().cancelled_owned();
        instances.push(tokio::spawn(async move {
            run_until(&cli.common, settings, shutdown).await
        }));
    }
    wait_until_serving(&client).await?;

    let mut results: BTreeMap<Kind, Vec<Round>> = BTreeMap::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Kind::Baseline, Kind::HostPath]
        } else {
            [Kind::HostPath, Kind::Baseline]
        };
        for kind in order {
            let measured = tokio::time::timeout(ROUND_TIMEOUT, measure(&client, kind, claims))
                .await
                .with_context(|| {
                    format!("round {} of {} did not finish", round + 1, kind.label())
                })??;
            println!(
                "round {}: {:<30} p50 {:>7.1} ms  p90 {:>7.1} ms  max {:>7.1} ms  all Bound after {:>7.1} ms",
                round + 1,
                kind.label(),
                ms(measured.quantile(0.5)),
                ms(measured.quantile(0.9)),
                ms(measured.quantile(1.0)),
                ms(measured.makespan),
            );
            results.entry(kind).or_default().push(measured);
        }
    }

    let summary = |kind: Kind, figure: Figure| {
        let mut values: Vec<Duration> = results[&kind].iter().map(|r| figure.of(r)).collect();
        values.sort();
        values[values.len() / 2]
    };
    println!("median over rounds:");
    for figure in [Figure::P50, Figure::P90, Figure::AllBound] {
        let label = figure.label();
        let baseline = summary(Kind::Baseline, figure);
        let hostpath = summary(Kind::HostPath, figure);
        println!(
            "  {label:<18} baseline {:>7.1} ms  hostpath {:>7.1} ms  ratio {:.2}",
            ms(baseline),
            ms(hostpath),
            hostpath.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON)
        );
    }
    stop.cancel();
    for instance in instances {
        instance.await??;
    }
    Ok(())
}

/// Waits until a claim of the provisioner is served: one claim pinned to each node is
/// provisioned (the instances have listed everything and are working). Not timed.
async fn wait_until_serving(client: &Client) -> anyhow::Result<()> {
    let namespace = testenv::create_namespace(client, "bench-warm-up").await?;
    let class = testenv::unique_name("bench-warm-up");
    create_class(client, &class, PROVISIONER).await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    for node in NODES {
        let mut claim = mk_claim(node, &class);
        claim.metadata.annotations = Some(BTreeMap::from([(
            "volume.kubernetes.io/selected-node".to_owned(),
            node.to_owned(),
        )]));
        claims.create(&PostParams::default(), &claim).await?;
    }
    let started = Instant::now();
    for node in NODES {
        loop {
            let claim = claims.get(node).await?;
            if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < ROUND_TIMEOUT,
                "the instances never served a claim"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn create_class(client: &Client, name: &str, provisioner: &str) -> anyhow::Result<()> {
    Api::<StorageClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &StorageClass {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                provisioner: provisioner.into(),
                reclaim_policy: Some("Delete".into()),
                volume_binding_mode: Some("WaitForFirstConsumer".into()),
                ..StorageClass::default()
            },
        )
        .await?;
    Ok(())
}

/// Runs one round in a new namespace: creates the claims (and pods), returns each claim's
/// time from creation to Bound.
async fn measure(client: &Client, kind: Kind, count: usize) -> anyhow::Result<Round> {
    let namespace = testenv::create_namespace(client, "bench-hostpath").await?;
    let class = testenv::unique_name("bench-class");
    let provisioner = match kind {
        Kind::HostPath => PROVISIONER,
        // Nobody serves this class: every claim binds to its pre-bound volume.
        Kind::Baseline => "bench.provisioner-rs.io/none",
    };
    create_class(client, &class, provisioner).await?;
    let names: Vec<String> = (0..count).map(|i| format!("claim-{i}")).collect();
    if kind == Kind::Baseline {
        let volumes = Api::<PersistentVolume>::all(client.clone());
        futures::stream::iter(names.iter().enumerate())
            .map(|(i, name)| {
                let volume = prebound_volume(&namespace, name, &class, NODES[i % NODES.len()]);
                let volumes = volumes.clone();
                async move { volumes.create(&PostParams::default(), &volume).await }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
    }

    // Watch first, so no Bound is missed.
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    let (bound_tx, mut bound_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(
        watcher(claims.clone(), watcher::Config::default()).try_for_each(move |event| {
            let now = Instant::now();
            if let watcher::Event::Apply(claim) | watcher::Event::InitApply(claim) = event
                && claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            {
                let _ = bound_tx.send((claim.name_any(), now));
            }
            futures::future::ready(Ok(()))
        }),
    );
    // Let the watch start before the clock does.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let started = Instant::now();
    let created: HashMap<String, Instant> = futures::stream::iter(names.iter())
        .map(|name| {
            let (claims, pods, class) = (claims.clone(), pods.clone(), class.clone());
            async move {
                let at = Instant::now();
                claims
                    .create(&PostParams::default(), &mk_claim(name, &class))
                    .await?;
                pods.create(&PostParams::default(), &mk_pod(name)).await?;
                anyhow::Ok((name.clone(), at))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect()
        .await?;

    let mut bound: HashMap<String, Instant> = HashMap::new();
    while bound.len() < count {
        let (name, at) = bound_rx.recv().await.context("the claim watch ended")?;
        bound.entry(name).or_insert(at);
    }
    watch.abort();
    // Free the nodes' pod slots (110 per fake node) for the next round: the pods go at once
    // (no kubelet to wait for); claims and volumes stay, as in a real cluster.
    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
        &ListParams::default(),
    )
    .await?;
    let last = bound.values().max().copied().unwrap_or(started);
    let mut latencies: Vec<Duration> = bound
        .iter()
        .map(|(name, at)| at.saturating_duration_since(created[name]))
        .collect();
    latencies.sort();
    Ok(Round {
        latencies,
        makespan: last.saturating_duration_since(started),
    })
}

fn mk_claim(name: &str, class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }))
    .expect("a valid claim")
}

fn mk_pod(claim: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("app-{claim}")},
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.invalid/app:1",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }))
    .expect("a valid pod")
}

/// What a tight client would create for `claim` ahead of time: a hostPath volume on `node`
/// whose `claimRef` already names the claim.
fn prebound_volume(namespace: &str, claim: &str, class: &str, node: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("{namespace}-{claim}")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity("1Mi".into()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(class.into()),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            host_path: Some(HostPathVolumeSource {
                path: format!("/var/bench/{namespace}/{claim}"),
                type_: Some("DirectoryOrCreate".into()),
            }),
            claim_ref: Some(ObjectReference {
                namespace: Some(namespace.into()),
                name: Some(claim.into()),
                ..ObjectReference::default()
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}
