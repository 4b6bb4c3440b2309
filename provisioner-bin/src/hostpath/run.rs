//! Running one node's hostPath provisioner: [`HostPathSettings`] and the shared
//! [`CommonArgs`] wired to the backend, the controller and the HTTP endpoints.
//!
//! It assembles the [`crate::runtime`] pieces itself instead of calling
//! [`run_provisioner`](crate::runtime::run_provisioner), because a node agent's election is
//! different: the node's controller always works (a node's claims can only be served by
//! that node's instance), and the Lease only decides which instance also runs the
//! controller of the cluster-wide duties ([`super::duties`]). With
//! `--leader-election=false` every instance runs it (one-node clusters).
//!
//! Start-up order, each step failing with its reason: the config file (a broken
//! `config.json` stops the start first), the client, the list of Nodes (this node must be
//! among them: a wrong `NODE_NAME` would otherwise serve nothing, silently), then the
//! election, the controller and the endpoints. `/readyz` checks the controller's caches, the
//! Node cache and that every path of this node can be measured.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backend_hostpath::base_path::BasePath;
use backend_hostpath::config::ProvisionerConfig;
use backend_hostpath::fs::{DEFAULT_MAX_IN_FLIGHT, HostFilesystem, TimedFilesystem};
use backend_hostpath::ownership::NodeIdentity;
use backend_hostpath::provisioner::{ClusterDuties, HostPathProvisioner};
use backend_hostpath::reload::{ConfigReloader, ReloadError};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use prometheus_client::registry::Registry;
use provisioner_core::controller::{self, Config, ProvisionController};
use provisioner_core::leader::{self, LeaderElectionConfig, LeaderElector, Timings, TimingsError};
use provisioner_core::metrics::Metrics;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::HostPathSettings;
use super::duties::{self, ClusterWork, DutiesTimings, NODE_DELETION_SETTLE};
use super::nodes::{NodeCache, node_identity};
use super::reserve::ReservedSpace;
use crate::runtime::http::{self, Endpoints, ReadinessCheck};
use crate::runtime::{self, ClientError, ClientMetrics, ClientSettings, CommonArgs};

/// How long start-up waits for the first list of Nodes.
pub const NODE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the hostPath provisioner could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config file could not be loaded.
    #[error(transparent)]
    Config(#[from] ReloadError),
    /// The Kubernetes client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The leader election timings are inconsistent.
    #[error("leader election: {0}")]
    Timings(#[from] TimingsError),
    /// The Nodes could not be listed in time.
    #[error(
        "listing Nodes did not finish within {0:?} (the provisioner needs get, list and watch \
         on nodes)"
    )]
    NodesNotListed(Duration),
    /// `NODE_NAME` names no Node.
    #[error(
        "there is no Node named {0:?}: NODE_NAME must be the Node's name (in a DaemonSet, \
         `valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}`)"
    )]
    UnknownNode(String),
    /// The HTTP address could not be bound.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The controller refused to run.
    #[error(transparent)]
    Controller(#[from] controller::Error),
    /// The controller task panicked.
    #[error("the controller stopped unexpectedly: {0}")]
    ControllerTask(#[from] tokio::task::JoinError),
}

/// The name of the Lease electing the instance with the cluster-wide duties:
/// `<provisioner name, '/' → '-'>-cluster-duties`.
///
/// ```
/// use provisioner_bin::hostpath::run::duties_lock_name;
///
/// assert_eq!(
///     duties_lock_name("provisioner-rs.io/hostpath"),
///     "provisioner-rs.io-hostpath-cluster-duties"
/// );
/// ```
pub fn duties_lock_name(provisioner_name: &str) -> String {
    format!("{}-cluster-duties", leader::lock_name(provisioner_name))
}

/// Runs this node's provisioner until SIGTERM or SIGINT.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use clap::Parser;
/// use provisioner_bin::hostpath::HostPathArgs;
/// use provisioner_bin::runtime::CommonArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     hostpath: HostPathArgs,
///     #[command(flatten)]
///     common: CommonArgs,
/// }
///
/// let cli = Cli::parse();
/// provisioner_bin::hostpath::run::run(&cli.common, cli.hostpath.resolve()?).await?;
/// # Ok(()) }
/// ```
pub async fn run(common: &CommonArgs, settings: HostPathSettings) -> Result<(), RunError> {
    run_until(common, settings, runtime::termination_signal()).await
}

/// Like [`run`], stopping when `shutdown` completes.
pub async fn run_until(
    common: &CommonArgs,
    settings: HostPathSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let timings = Timings::new(
        common.leader_election_lease_duration,
        common.leader_election_renew_deadline,
        common.leader_election_retry_period,
    )?;
    let reloader = ConfigReloader::load(&settings.config, settings.fs_timeout).await?;
    for warning in reloader.current().warnings() {
        tracing::warn!(config = %settings.config.display(), "{warning}");
    }
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let client_metrics = ClientMetrics::new(&mut registry);
    let client = runtime::client::build_client(
        &ClientSettings {
            kubeconfig: common.kubeconfig.clone(),
            qps: common.kube_api_qps,
            burst: common.kube_api_burst,
        },
        &client_metrics,
    )
    .await?;
    // Stops the background tasks (watches, election, reloader, endpoints) at the end.
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();

    // Node metadata: this node's labels now, vanished nodes later.
    let (store, writer) = reflector::store();
    let (node_deleted, node_deletions) = watch::channel(());
    let node_events = watcher(
        Api::<PartialObjectMeta<Node>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .take_until(stop.clone().cancelled_owned())
    .for_each(move |event| {
        match event {
            Ok(watcher::Event::Delete(_)) => node_deleted.send_replace(()),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "watching Nodes failed; retrying"),
        }
        futures::future::ready(())
    });
    tokio::spawn(node_events);
    let nodes = NodeCache::new(store.clone());
    tokio::time::timeout(NODE_SYNC_TIMEOUT, store.wait_until_ready())
        .await
        .map_err(|_| RunError::NodesNotListed(NODE_SYNC_TIMEOUT))?
        .map_err(|_| RunError::NodesNotListed(NODE_SYNC_TIMEOUT))?;
    let me = nodes
        .get(&settings.node_name)
        .ok_or_else(|| RunError::UnknownNode(settings.node_name.clone()))?;
    let identity = node_identity(&settings.node_name, Some(&me.metadata));
    let (listener, address) =
        http::bind(common.metrics_address)
            .await
            .map_err(|source| RunError::Bind {
                address: common.metrics_address,
                source,
            })?;

    // The cluster-wide duties: under a Lease, or always.
    let lock = duties_lock_name(&settings.provisioner_name);
    let (duties_held, election) = if common.leader_election {
        let namespace = leader::lock_namespace(
            common.leader_election_namespace.as_deref(),
            service_account_namespace().await.as_deref(),
        );
        let config = LeaderElectionConfig::new(
            lock.clone(),
            namespace,
            leader::new_identity(&settings.node_name),
        )
        .timings(timings)
        .event_component(format!(
            "{}_{}",
            settings.provisioner_name, settings.node_name
        ));
        let elector = LeaderElector::new(client.clone(), &config);
        let held = elector.leadership();
        let (release, released) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async {
            let _ = released.await;
        }));
        (held, Some((release, task)))
    } else {
        tracing::warn!(
            "leader election is disabled: this instance does the cluster-wide work; run it \
             on one node only"
        );
        // Held from the start, and never lost: nobody sends on this channel.
        (watch::channel(true).1, None)
    };

    let config = reloader.subscribe();
    tokio::spawn(reloader.run(
        settings.config_poll_interval,
        stop.clone().cancelled_owned(),
    ));
    let backend = Backend {
        identity,
        config: config.clone(),
        nodes: nodes.clone(),
        settings: settings.clone(),
    };
    let controller_config = Config::default()
        .aliases(settings.aliases.clone())
        .concurrency(common.concurrency)
        .identity(settings.node_name.clone());
    let stop_work = CancellationToken::new();
    let controller = ProvisionController::new(
        client.clone(),
        settings.provisioner_name.clone(),
        backend.provisioner(ClusterDuties::new(false)),
    )
    .config(controller_config.clone())
    .observer(Arc::new(metrics.clone()))
    .graceful_shutdown_on(stop_work.clone().cancelled_owned());
    let start_duties = {
        let (client, backend, stop_work) = (client.clone(), backend.clone(), stop_work.clone());
        let (name, metrics) = (settings.provisioner_name.clone(), metrics.clone());
        move || {
            let cluster_work = ClusterWork::new(
                backend.provisioner(ClusterDuties::new(true)),
                backend.identity.clone(),
            );
            let controller = ProvisionController::new(client.clone(), name.clone(), cluster_work)
                .config(controller_config.clone())
                .observer(Arc::new(metrics.clone()))
                .graceful_shutdown_on(stop_work.clone().cancelled_owned());
            tokio::spawn(async move {
                if let Err(error) = controller.run().await {
                    tracing::error!(%error, "the cluster-wide duties controller failed");
                }
            })
        }
    };
    let duties = tokio::spawn(duties::manage(
        duties_held,
        node_deletions,
        start_duties,
        stop_work.clone(),
        DutiesTimings {
            settle: NODE_DELETION_SETTLE,
            grace: common.grace_period,
        },
        move |held| {
            metrics.set_leader(&lock, held);
            tracing::info!(held, "cluster-wide duties changed hands");
        },
    ));
    let caches = controller.cache_status();
    let endpoints = Endpoints::new(Arc::new(registry))
        .readiness_check(
            "caches",
            Arc::new(move || {
                let synced = caches.is_synced();
                async move {
                    synced
                        .then_some(())
                        .ok_or_else(|| "claims, volumes and classes not listed yet".to_owned())
                }
                .boxed()
            }),
        )
        .readiness_check(
            "nodes",
            Arc::new(move || {
                let synced = nodes.is_synced();
                async move {
                    synced
                        .then_some(())
                        .ok_or_else(|| "Nodes not listed yet".to_owned())
                }
                .boxed()
            }),
        )
        .readiness_check(
            "disks",
            disks_check(config, settings.node_name.clone(), settings.fs_timeout),
        );
    tokio::spawn(http::serve(
        listener,
        endpoints,
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(
        node = %settings.node_name,
        provisioner = %settings.provisioner_name,
        aliases = ?settings.aliases,
        %address,
        "serving this node's claims (/healthz, /readyz and /metrics on the address)"
    );

    let mut work = tokio::spawn(controller.run());
    let ended_early = tokio::select! {
        () = shutdown => None,
        result = &mut work => Some(result),
    };
    let outcome = match ended_early {
        Some(result) => result.map_err(RunError::from).and_then(|run| Ok(run?)),
        None => {
            tracing::info!(
                grace_period = ?common.grace_period,
                "shutting down: no new work; waiting for the operations in flight"
            );
            stop_work.cancel();
            match tokio::time::timeout(common.grace_period, &mut work).await {
                Ok(result) => result.map_err(RunError::from).and_then(|run| Ok(run?)),
                Err(_) => {
                    tracing::warn!(
                        "operations still in flight after the grace period; this node's \
                         instance resumes them when it restarts"
                    );
                    work.abort();
                    Ok(())
                }
            }
        }
    };
    stop_work.cancel();
    if let Err(error) = duties.await {
        tracing::warn!(%error, "the cluster-wide duties task failed");
    }
    // Work has stopped: hand the duties to another instance at once.
    if let Some((release, task)) = election {
        let _ = release.send(());
        if let Err(error) = task.await {
            tracing::warn!(%error, "the leader election task failed");
        }
    }
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome
}

/// What both controllers' backends are made of.
#[derive(Clone)]
struct Backend {
    identity: NodeIdentity,
    config: watch::Receiver<Arc<ProvisionerConfig>>,
    nodes: NodeCache,
    settings: HostPathSettings,
}

impl Backend {
    /// A backend for this node, with or without the cluster-wide duties.
    fn provisioner(
        &self,
        duties: ClusterDuties,
    ) -> HostPathProvisioner<ReservedSpace<HostFilesystem>> {
        let fs = TimedFilesystem::with_limits(
            ReservedSpace::new(HostFilesystem, self.settings.reserved_bytes),
            self.settings.fs_timeout,
            DEFAULT_MAX_IN_FLIGHT,
        );
        HostPathProvisioner::new(self.identity.clone(), self.config.clone(), fs)
            .with_cluster_duties(duties)
            .with_node_directory(Arc::new(self.nodes.clone()))
            .with_node_gone_policy(self.settings.node_gone_policy)
    }
}

/// A readiness check: every path configured for `node` answers `statvfs` within `timeout`
/// (a dead disk makes the pod NotReady, with the path and the error).
fn disks_check(
    config: watch::Receiver<Arc<ProvisionerConfig>>,
    node: String,
    timeout: Duration,
) -> ReadinessCheck {
    let fs = Arc::new(TimedFilesystem::with_limits(HostFilesystem, timeout, 1));
    Arc::new(move || {
        let paths: Vec<BasePath> = config.borrow().base_paths_on_node(&node).cloned().collect();
        let fs = Arc::clone(&fs);
        async move {
            let measured =
                futures::future::join_all(paths.iter().map(|path| fs.available_bytes(path))).await;
            let failures: Vec<String> = measured
                .into_iter()
                .filter_map(|result| result.err().map(|error| error.to_string()))
                .collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        }
        .boxed()
    })
}

/// The pod's ServiceAccount namespace, if mounted.
async fn service_account_namespace() -> Option<String> {
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::fs::read_to_string(leader::SERVICE_ACCOUNT_NAMESPACE_FILE),
    )
    .await
    .ok()
    .and_then(Result::ok)
}
