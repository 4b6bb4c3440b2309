//! Claim creation to Bound for NFS volumes, against a real control plane (kube-apiserver
//! and the PV binder of kube-controller-manager) and a real NFS server (NFS-Ganesha on
//! loopback), with the NFS provisioner in both access modes versus a baseline measured in
//! the same run.
//!
//! Each round creates `BENCH_CLAIMS` (default 100) ReadWriteMany claims at once (16
//! requests in flight) and times every claim from just before its create request to the
//! moment a watch sees it Bound.
//!
//! - **mounted**: the class is served by `nfs-provisioner`'s own wiring
//!   (`provisioner_bin::nfs::run`, in-process, default settings: leader election, client
//!   rate limit 100/s burst 200, concurrency 32) with the export "mounted" at Ganesha's
//!   export directory;
//! - **direct**: the same with the userspace NFSv3 client talking to Ganesha;
//! - **baseline**: the same claims, but a PersistentVolume pre-bound to every claim was
//!   created before the clock starts, so only Kubernetes' own binding remains: the least
//!   any dynamic provisioner could add to.
//!
//! Rounds rotate which kind runs first (`BENCH_ROUNDS`, default 3). Printed: per round and
//! kind the median, 90th percentile and slowest claim and the time until the last claim was
//! Bound; then the medians over all rounds and the ratios to the baseline. `--quick` runs
//! one round of 20 claims. Needs root (Ganesha).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    NFSVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use provisioner_bin::nfs::NfsArgs;
use provisioner_bin::runtime::CommonArgs;
use testenv::ControlPlane;
use testenv::nfs::NfsServer;

const MOUNTED: &str = "bench.provisioner-rs.io/nfs-mounted";
const DIRECT: &str = "bench.provisioner-rs.io/nfs-direct";
/// Requests in flight while creating the objects of a round.
const CREATE_CONCURRENCY: usize = 16;
/// A failure guard for one round, not a measurement.
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Baseline,
    Mounted,
    Direct,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Baseline, Kind::Mounted, Kind::Direct];

    fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline (pre-bound volumes)",
            Kind::Mounted => "nfs-provisioner, mounted",
            Kind::Direct => "nfs-provisioner, direct",
        }
    }

    /// The provisioner serving this kind's class (nobody serves the baseline's).
    fn provisioner(self) -> &'static str {
        match self {
            Kind::Baseline => "bench.provisioner-rs.io/none",
            Kind::Mounted => MOUNTED,
            Kind::Direct => DIRECT,
        }
    }
}

/// Picks one figure of a round.
type Pick = dyn Fn(&Round) -> Duration;

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

/// The binary's command line, parsed as the binary parses it.
#[derive(Parser)]
struct ProvisionerCli {
    #[command(flatten)]
    nfs: NfsArgs,
    #[command(flatten)]
    common: CommonArgs,
}

async fn run(claims: usize, rounds: usize) -> anyhow::Result<()> {
    println!("nfs_claims: {claims} ReadWriteMany claims per round, {rounds} round(s)");
    let plane = ControlPlane::builder()
        .controller_manager(true)
        .start()
        .await?;
    let client = plane.client();
    let export = tempfile::tempdir()?;
    let server = match NfsServer::start(export.path()).await {
        Ok(server) => server,
        Err(error) => anyhow::bail!("nfs_claims needs NFS-Ganesha (run as root): {error}"),
    };
    let share = server.export().to_str().context("UTF-8 path")?.to_owned();
    let kubeconfig = plane.admin_kubeconfig().to_str().context("UTF-8 path")?;

    // The two provisioners, each as `nfs-provisioner` would run with these flags.
    let mut provisioners = Vec::new();
    for (name, access) in [
        (
            MOUNTED,
            vec![
                "--access=mounted".to_owned(),
                format!("--mount-root={share}"),
            ],
        ),
        (
            DIRECT,
            vec![
                "--access=direct".to_owned(),
                format!("--nfs-port={}", server.nfs_port()),
                format!("--mount-port={}", server.mount_port()),
            ],
        ),
    ] {
        let mut argv = vec![
            "nfs-provisioner".to_owned(),
            format!("--provisioner-name={name}"),
            format!("--nfs-server={}", server.address()),
            format!("--nfs-path={share}"),
            format!("--kubeconfig={kubeconfig}"),
            "--metrics-address=127.0.0.1:0".to_owned(),
        ];
        argv.extend(access);
        let cli = ProvisionerCli::try_parse_from(argv)?;
        let settings = cli.nfs.resolve()?;
        provisioners.push(tokio::spawn(async move {
            provisioner_bin::nfs::run::run_until(&cli.common, settings, std::future::pending())
                .await
        }));
    }
    // Warm up: one claim each, so leadership and caches are in place before any clock.
    for kind in [Kind::Mounted, Kind::Direct] {
        tokio::time::timeout(ROUND_TIMEOUT, measure(&client, &server, kind, 1))
            .await
            .with_context(|| format!("{} never bound a first claim", kind.label()))??;
    }

    let mut results: BTreeMap<Kind, Vec<Round>> = BTreeMap::new();
    for round in 0..rounds {
        let mut order = Kind::ALL;
        order.rotate_left(round % Kind::ALL.len());
        for kind in order {
            let measured =
                tokio::time::timeout(ROUND_TIMEOUT, measure(&client, &server, kind, claims))
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

    let summary = |kind: Kind, pick: &Pick| {
        let mut values: Vec<Duration> = results[&kind].iter().map(pick).collect();
        values.sort();
        values[values.len() / 2]
    };
    println!("median over rounds (ratio: provisioner / baseline):");
    let figures: [(&str, &Pick); 3] = [
        ("p50 claim latency", &|r: &Round| r.quantile(0.5)),
        ("p90 claim latency", &|r: &Round| r.quantile(0.9)),
        ("all claims Bound", &|r: &Round| r.makespan),
    ];
    for (label, pick) in figures {
        let baseline = summary(Kind::Baseline, pick);
        let mounted = summary(Kind::Mounted, pick);
        let direct = summary(Kind::Direct, pick);
        let ratio = |d: Duration| d.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON);
        println!(
            "  {label:<18} baseline {:>7.1} ms  mounted {:>7.1} ms (x{:.2})  direct {:>7.1} ms (x{:.2})",
            ms(baseline),
            ms(mounted),
            ratio(mounted),
            ms(direct),
            ratio(direct),
        );
    }
    for provisioner in provisioners {
        provisioner.abort();
    }
    Ok(())
}

/// Runs one round in a new namespace: creates the claims, returns each claim's time from
/// creation to Bound.
async fn measure(
    client: &Client,
    server: &NfsServer,
    kind: Kind,
    count: usize,
) -> anyhow::Result<Round> {
    let namespace = testenv::create_namespace(client, "bench-nfs").await?;
    let class = testenv::unique_name("bench-nfs");
    Api::<StorageClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &StorageClass {
                metadata: ObjectMeta {
                    name: Some(class.clone()),
                    ..ObjectMeta::default()
                },
                provisioner: kind.provisioner().into(),
                reclaim_policy: Some("Delete".into()),
                parameters: Some(BTreeMap::from([(
                    "archiveOnDelete".to_owned(),
                    "false".to_owned(),
                )])),
                ..StorageClass::default()
            },
        )
        .await?;
    let names: Vec<String> = (0..count).map(|i| format!("claim-{i}")).collect();
    if kind == Kind::Baseline {
        let volumes = Api::<PersistentVolume>::all(client.clone());
        let share = server.export().to_str().context("UTF-8 path")?;
        futures::stream::iter(names.iter())
            .map(|name| {
                let volume = prebound_volume(&namespace, name, &class, server.address(), share);
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

    let started = Instant::now();
    let created: HashMap<String, Instant> = futures::stream::iter(names.iter())
        .map(|name| {
            let (claims, class) = (claims.clone(), class.clone());
            async move {
                let at = Instant::now();
                claims
                    .create(&PostParams::default(), &mk_claim(name, &class))
                    .await?;
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
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
            storage_class_name: Some(class.into()),
            access_modes: Some(vec!["ReadWriteMany".into()]),
            resources: Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity("1Mi".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The volume a static provisioning would offer: on the same export, pre-bound to `claim`.
fn prebound_volume(
    namespace: &str,
    claim: &str,
    class: &str,
    server: &str,
    share: &str,
) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(testenv::unique_name("bench-pv")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Mi".into()))])),
            access_modes: Some(vec!["ReadWriteMany".into()]),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(class.into()),
            nfs: Some(NFSVolumeSource {
                server: server.into(),
                path: format!("{share}/{namespace}-{claim}"),
                read_only: None,
            }),
            claim_ref: Some(ObjectReference {
                namespace: Some(namespace.into()),
                name: Some(claim.into()),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    }
}
