//! Provisioning throughput and latency against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager's PV binder), with a backend that does nothing.
//!
//! - **baseline** (the limit): the claims exist; a tight client creates one
//!   PersistentVolume per claim, already pointing at it (`claimRef` with the UID), as a
//!   zero-cost provisioner would; clock from the first create until all claims are Bound.
//! - **ours**: the noop provisioner runs (this program re-executed as a separate process,
//!   leader election on); the same client creates the claims at once; clock from the first
//!   create until all are Bound.
//!
//! Printed: claims per second of both and the ratio ours/baseline, p50/p99 of create →
//! Bound per claim, API requests per volume (from the provisioner's own counters), the
//! provisioner's CPU seconds and peak RSS, and its RSS with many more claims cached.
//!
//! ```text
//! cargo bench -p provisioner-benches --bench throughput
//! THROUGHPUT_CLAIMS=100 THROUGHPUT_ROUNDS=1 THROUGHPUT_CACHED_CLAIMS=0 cargo bench -p provisioner-benches --bench throughput   # smoke run
//! ```
//!
//! `THROUGHPUT_CLAIMS` (default 1000) sets the burst size, `THROUGHPUT_ROUNDS` (default 2)
//! how many times baseline and ours alternate, `THROUGHPUT_CACHED_CLAIMS` (default 10000;
//! 0 skips) the extra claims for the memory figure. The provisioner runs through all
//! rounds (it watches the baseline's objects too, as it would in a cluster) and takes its
//! flags from the environment (`KUBE_API_QPS`, `CONCURRENCY`, …).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use provisioner_bin::runtime::noop::NoopBackend;
use provisioner_bin::runtime::{self, CommonArgs, RunOptions};
use serde_json::json;
use testenv::ControlPlane;
use testenv::process::ChildProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set in the environment of the re-executed provisioner process.
const PROVISIONER_ROLE: &str = "THROUGHPUT_BENCH_PROVISIONER";
/// The provisioner name of the "ours" phase.
const NAME: &str = "bench.provisioner-rs.io/noop";
/// Parallel requests of the client that creates claims and volumes.
const CLIENT_PARALLELISM: usize = 64;
/// Failure guard for one phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

/// The provisioner process: the noop backend behind the shared runtime.
#[derive(Debug, Parser)]
struct ProvisionerCli {
    #[arg(long)]
    provisioner_name: String,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if std::env::var_os(PROVISIONER_ROLE).is_some() {
        runtime::init_logging();
        let cli = ProvisionerCli::parse();
        return runtime.block_on(async {
            runtime::run_provisioner(
                &cli.common,
                &cli.provisioner_name,
                NoopBackend::new(Duration::ZERO),
                RunOptions::default(),
            )
            .await
            .map_err(anyhow::Error::from)
        });
    }
    runtime.block_on(bench())
}

fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text}")),
        Err(_) => Ok(default),
    }
}

async fn bench() -> anyhow::Result<()> {
    let claims = env_count("THROUGHPUT_CLAIMS", 1000)?;
    let cached = env_count("THROUGHPUT_CACHED_CLAIMS", 10_000)?;
    let rounds = env_count("THROUGHPUT_ROUNDS", 2)?.max(1);
    println!(
        "throughput: {claims} claims, control plane on 127.0.0.1 (etcd, apiserver, PV binder)"
    );
    let started = Instant::now();
    let plane = ControlPlane::builder()
        .controller_manager(true)
        .start()
        .await?;
    println!(
        "  control plane up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let client = plane.client();
    let mut provisioner = Provisioner::spawn(&plane).await?;

    // Rounds alternate baseline and ours, so load from elsewhere on the machine hits both.
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        println!("  round {round}/{rounds}:");
        let baseline = baseline(&client, claims).await?;
        baseline.print("baseline (volumes pre-created)");
        let ours = ours(&client, &mut provisioner, claims).await?;
        ours.phase.print("ours (noop provisioner)    ");
        let ratio = ours.phase.claims_per_second() / baseline.claims_per_second();
        println!("    ratio ours/baseline (claims/s): {ratio:.2}");
        ours.print_costs(claims);
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  median ratio ours/baseline over {rounds} round(s): {:.2}",
        ratios[ratios.len() / 2]
    );

    if cached > 0 {
        let (rss, peak) = rss_with_cached_claims(&client, &provisioner, cached).await?;
        println!(
            "  provisioner RSS with {} claims and {} volumes cached: {:.1} MiB (peak {:.1} MiB)",
            2 * claims * rounds + cached,
            2 * claims * rounds,
            mib(rss),
            mib(peak)
        );
    }
    drop(provisioner);
    Ok(())
}

/// Claims per second and latencies of one phase.
struct Phase {
    total: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn claims_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.total.as_secs_f64()
    }

    fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    }

    fn print(&self, label: &str) {
        println!(
            "    {label}: {:.2} s for {} claims = {:.1} claims/s; create→Bound p50 {:.0} ms, p99 {:.0} ms",
            self.total.as_secs_f64(),
            self.latencies.len(),
            self.claims_per_second(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
        );
    }
}

async fn create_class(client: &Client, name: &str, provisioner: &str) -> anyhow::Result<()> {
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": { "name": name },
        "provisioner": provisioner,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))?;
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await?;
    Ok(())
}

fn claim(name: &str, class: &str) -> anyhow::Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": { "requests": { "storage": "1Gi" } },
        },
    }))?)
}

/// Creates `objects` with `CLIENT_PARALLELISM` requests in flight; returns when each
/// create was sent, by name, and the created objects.
async fn create_all<K>(
    api: &Api<K>,
    objects: Vec<K>,
) -> anyhow::Result<(HashMap<String, Instant>, Vec<K>)>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let results: Vec<(String, Instant, K)> = futures::stream::iter(objects)
        .map(|object| async move {
            let sent = Instant::now();
            let created = api.create(&PostParams::default(), &object).await?;
            anyhow::Ok((created.name_any(), sent, created))
        })
        .buffer_unordered(CLIENT_PARALLELISM)
        .try_collect()
        .await?;
    let mut sent = HashMap::new();
    let mut created = Vec::new();
    for (name, at, object) in results {
        sent.insert(name, at);
        created.push(object);
    }
    Ok((sent, created))
}

/// Watches the claims of `namespace` and returns, once all of `names` are Bound, when each
/// was first seen Bound.
fn watch_bound(
    api: Api<PersistentVolumeClaim>,
    names: HashSet<String>,
) -> tokio::task::JoinHandle<anyhow::Result<HashMap<String, Instant>>> {
    tokio::spawn(async move {
        let mut bound = HashMap::new();
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        while bound.len() < names.len() {
            let event = tokio::time::timeout_at(deadline, events.try_next())
                .await
                .context("timed out waiting for claims to be Bound")??
                .context("the watch ended")?;
            if let watcher::Event::Apply(claim) | watcher::Event::InitApply(claim) = event {
                let is_bound =
                    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                let name = claim.name_any();
                if is_bound && names.contains(&name) {
                    bound.entry(name).or_insert_with(Instant::now);
                }
            }
        }
        Ok(bound)
    })
}

fn phase(
    start: Instant,
    sent: &HashMap<String, Instant>,
    bound: &HashMap<String, Instant>,
) -> Phase {
    let end = bound.values().max().copied().unwrap_or(start);
    Phase {
        total: end - start,
        latencies: bound
            .iter()
            .map(|(name, at)| {
                at.saturating_duration_since(sent.get(name).copied().unwrap_or(start))
            })
            .collect(),
    }
}

async fn baseline(client: &Client, count: usize) -> anyhow::Result<Phase> {
    let namespace = testenv::create_namespace(client, "baseline").await?;
    let class = testenv::unique_name("baseline");
    // Nobody serves this provisioner name: only the pre-created volumes bind the claims.
    create_class(client, &class, "baseline.provisioner-rs.io/none").await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..count).map(|i| format!("claim-{i:05}")).collect();
    let (_, created) = create_all(
        &claims,
        names
            .iter()
            .map(|name| claim(name, &class))
            .collect::<Result<_, _>>()?,
    )
    .await?;
    let volumes: Vec<PersistentVolume> = created
        .iter()
        .map(|claim| {
            serde_json::from_value(json!({
                "metadata": { "name": format!("baseline-{}", claim.uid().unwrap_or_default()) },
                "spec": {
                    "capacity": { "storage": "1Gi" },
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": class,
                    "hostPath": { "path": format!("/tmp/baseline/{}", claim.name_any()) },
                    "claimRef": {
                        "kind": "PersistentVolumeClaim",
                        "apiVersion": "v1",
                        "namespace": namespace,
                        "name": claim.name_any(),
                        "uid": claim.uid(),
                    },
                },
            }))
        })
        .collect::<Result<_, _>>()?;
    let watch = watch_bound(claims, names.iter().cloned().collect());
    // Let the watch list first, so every Bound is seen as it happens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let (sent_by_volume, _) = create_all(&Api::all(client.clone()), volumes).await?;
    let bound = watch.await??;
    // Latency per claim from its volume's create.
    let sent: HashMap<String, Instant> = created
        .iter()
        .filter_map(|claim| {
            let volume = format!("baseline-{}", claim.uid()?);
            Some((claim.name_any(), *sent_by_volume.get(&volume)?))
        })
        .collect();
    Ok(phase(start, &sent, &bound))
}

/// The provisioner process.
struct Provisioner {
    process: ChildProcess,
    metrics: SocketAddr,
}

impl Provisioner {
    async fn spawn(plane: &ControlPlane) -> anyhow::Result<Self> {
        let namespace = testenv::create_namespace(&plane.client(), "provisioner").await?;
        let log = plane.dir().join("logs").join("bench-provisioner.log");
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(PROVISIONER_ROLE, "1")
            .env("POD_NAMESPACE", &namespace)
            // Warnings, and the line naming the bound HTTP address.
            .env("RUST_LOG", "warn,provisioner_bin::runtime=info")
            .args([
                "--provisioner-name",
                NAME,
                "--metrics-address",
                "127.0.0.1:0",
            ])
            .arg("--kubeconfig")
            .arg(plane.admin_kubeconfig());
        let process = ChildProcess::spawn("bench-provisioner", &mut command, &log)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let metrics = loop {
            if let Some(address) = address_from_log(&log) {
                break address;
            }
            if Instant::now() > deadline {
                bail!("the provisioner did not start:\n{}", process.log_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let provisioner = Self { process, metrics };
        // Ready (caches synced) and leading.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = provisioner
                .get("/readyz")
                .await
                .is_ok_and(|(status, _)| status == 200);
            let leading = provisioner
                .samples()
                .await
                .is_ok_and(|samples| sum(&samples, "leader_election_master_status", &[]) == 1.0);
            if ready && leading {
                return Ok(provisioner);
            }
            if Instant::now() > deadline {
                bail!(
                    "the provisioner never became ready and leader:\n{}",
                    provisioner.process.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        tokio::time::timeout(Duration::from_secs(30), http_get(self.metrics, path))
            .await
            .context("HTTP request timed out")?
    }

    async fn samples(&self) -> anyhow::Result<Vec<Sample>> {
        Ok(parse_samples(&self.get("/metrics").await?.1))
    }

    fn proc_status(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .with_context(|| format!("no {field} in /proc/<pid>/status"))
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.pid()))?;
        // Fields after the command name (which may contain spaces) start at field 3.
        let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let per_second = rustix::param::clock_ticks_per_second();
        Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
    }
}

fn address_from_log(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|line| line.contains("serving /healthz"))
        .find_map(|line| line.split("address=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
}

/// What the "ours" phase measured beyond the phase itself.
struct Ours {
    phase: Phase,
    requests: BTreeMap<String, f64>,
    controller_requests: f64,
    cpu: Duration,
    peak_rss: u64,
}

impl Ours {
    fn print_costs(&self, claims: usize) {
        let per_volume = |value: f64| value / claims as f64;
        let total: f64 = self.requests.values().sum();
        let by_verb = self
            .requests
            .iter()
            .map(|(verb, count)| format!("{verb} {:.2}", per_volume(*count)))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "    API requests per volume (provisioner, all): {:.2} ({by_verb}); for operations: {:.2}",
            per_volume(total),
            per_volume(self.controller_requests)
        );
        println!(
            "    provisioner: {:.2} CPU seconds during the burst, peak RSS {:.1} MiB",
            self.cpu.as_secs_f64(),
            mib(self.peak_rss)
        );
    }
}

async fn ours(
    client: &Client,
    provisioner: &mut Provisioner,
    count: usize,
) -> anyhow::Result<Ours> {
    let namespace = testenv::create_namespace(client, "ours").await?;
    let class = testenv::unique_name("ours");
    create_class(client, &class, NAME).await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let names: Vec<String> = (0..count).map(|i| format!("claim-{i:05}")).collect();
    let watch = watch_bound(claims.clone(), names.iter().cloned().collect());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = provisioner.samples().await?;
    let cpu_before = provisioner.cpu()?;
    let start = Instant::now();
    let (sent, _) = create_all(
        &claims,
        names
            .iter()
            .map(|name| claim(name, &class))
            .collect::<Result<_, _>>()?,
    )
    .await?;
    let bound = watch.await??;
    // The provisioner's last step (clearing the in-flight record) may follow the binding.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = provisioner.samples().await?;
    let cpu = provisioner.cpu()? - cpu_before;
    if let Some(status) = provisioner.process.try_exit_status() {
        bail!(
            "the provisioner exited ({status}):\n{}",
            provisioner.process.log_tail(30)
        );
    }

    let mut requests = BTreeMap::new();
    for sample in after
        .iter()
        .filter(|s| s.name == "kubernetes_client_requests_total")
    {
        let verb = sample.labels.get("verb").cloned().unwrap_or_default();
        let earlier = before
            .iter()
            .find(|s| s.name == sample.name && s.labels == sample.labels)
            .map_or(0.0, |s| s.value);
        *requests.entry(verb).or_insert(0.0) += sample.value - earlier;
    }
    requests.retain(|_, count| *count > 0.0);
    let controller_requests = sum(&after, "controller_api_requests_total", &[])
        - sum(&before, "controller_api_requests_total", &[]);
    Ok(Ours {
        phase: phase(start, &sent, &bound),
        requests,
        controller_requests,
        cpu,
        peak_rss: provisioner.proc_status("VmHWM")?,
    })
}

/// Creates `count` claims of a class served by nobody (the provisioner caches them, as it
/// caches every claim), lets the watch deliver them, and reads the provisioner's RSS.
async fn rss_with_cached_claims(
    client: &Client,
    provisioner: &Provisioner,
    count: usize,
) -> anyhow::Result<(u64, u64)> {
    let namespace = testenv::create_namespace(client, "cached").await?;
    let class = testenv::unique_name("cached");
    create_class(client, &class, "cached.provisioner-rs.io/none").await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let objects = (0..count)
        .map(|i| claim(&format!("claim-{i:05}"), &class))
        .collect::<Result<_, _>>()?;
    create_all(&claims, objects).await?;
    // The watch events of the last creates reach the provisioner within moments; a few
    // seconds settle the allocator too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok((
        provisioner.proc_status("VmRSS")?,
        provisioner.proc_status("VmHWM")?,
    ))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One OpenMetrics sample.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The sum of a metric's samples whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .sum()
}

/// A plain HTTP/1.1 GET, read until the server closes.
async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
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
