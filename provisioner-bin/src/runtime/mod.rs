//! Running a provisioner as a process: the parts every shipped binary shares, so each
//! `main` is a few lines.
//!
//! [`run_provisioner`] builds the Kubernetes client ([`client`]: kubeconfig or in-cluster,
//! client-side rate limit, every request counted), joins the leader election
//! ([`provisioner_core::leader`]; off with `ENABLE_LEADER_ELECTION=false`), serves
//! `/healthz`, `/readyz` and `/metrics` ([`http`]) on every replica, runs the
//! [`ProvisionController`], and on SIGTERM or SIGINT stops taking new work, lets the
//! operations in flight finish within the grace period, releases the lock and returns
//! `Ok(())` (exit code 0).
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use provisioner_core::provisioner::*;
//! # struct MyBackend;
//! # impl Provisioner for MyBackend {
//! #     type Parameters = ();
//! #     fn parse_parameters(&self, _: &BTreeMap<String, String>) -> Result<(), ParameterError> { Ok(()) }
//! #     async fn provision(&self, _: ProvisionRequest<()>) -> Result<ProvisionedVolume, ProvisionError> { unimplemented!() }
//! #     async fn delete(&self, _: DeleteRequest<()>) -> Result<DeleteOutcome, DeleteError> { Ok(DeleteOutcome::Deleted) }
//! # }
//! use clap::Parser;
//! use provisioner_bin::runtime::{self, CommonArgs, RunOptions};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[arg(long, env = "PROVISIONER_NAME")]
//!     provisioner_name: String,
//!     #[command(flatten)]
//!     common: CommonArgs,
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     runtime::init_logging();
//!     let cli = Cli::parse();
//!     runtime::run_provisioner(&cli.common, &cli.provisioner_name, MyBackend, RunOptions::default()).await?;
//!     Ok(())
//! }
//! ```

pub mod args;
pub mod client;
pub mod http;
pub mod noop;
pub mod rate_limit;
pub mod request_kind;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use prometheus_client::registry::Registry;
use provisioner_core::controller::{self, Config, ProvisionController};
use provisioner_core::leader::{self, LeaderElectionConfig, LeaderElector, Timings, TimingsError};
use provisioner_core::metrics::Metrics;
use provisioner_core::provisioner::Provisioner;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use args::CommonArgs;
pub use client::{ClientError, ClientMetrics, ClientSettings};
pub use http::ReadinessCheck;

/// Why a provisioner process could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The Kubernetes client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The leader election timings are inconsistent.
    #[error("leader election: {0}")]
    Timings(#[from] TimingsError),
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

/// What a binary adds to the [`CommonArgs`].
#[derive(Default)]
pub struct RunOptions {
    config: Config,
    readiness: Option<ReadinessCheck>,
    on_listening: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("config", &self.config)
            .field("readiness", &self.readiness.is_some())
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// Controller settings (aliases, timeouts, finalizer, …). Concurrency and identity are
    /// set from the [`CommonArgs`].
    #[must_use]
    pub fn controller_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// How `/readyz` learns whether the backend is reachable (for example, a `stat` of the
    /// export under a timeout).
    #[must_use]
    pub fn readiness(mut self, check: ReadinessCheck) -> Self {
        self.readiness = Some(check);
        self
    }

    /// Called with the address the HTTP endpoints listen on, once bound.
    #[must_use]
    pub fn on_listening(mut self, callback: impl FnOnce(SocketAddr) + Send + 'static) -> Self {
        self.on_listening = Some(Box::new(callback));
        self
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Does nothing if logging is already
/// set up.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs `backend` as the provisioner `name` until SIGTERM or SIGINT, then shuts down
/// gracefully (see the [module documentation](self)).
pub async fn run_provisioner<P: Provisioner>(
    args: &CommonArgs,
    name: &str,
    backend: P,
    options: RunOptions,
) -> Result<(), RuntimeError> {
    run_until(args, name, backend, options, termination_signal()).await
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn termination_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Like [`run_provisioner`], shutting down when `shutdown` completes instead of on a signal
/// (for embedding and tests).
pub async fn run_until<P: Provisioner>(
    args: &CommonArgs,
    name: &str,
    backend: P,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RuntimeError> {
    let timings = Timings::new(
        args.leader_election_lease_duration,
        args.leader_election_renew_deadline,
        args.leader_election_retry_period,
    )?;
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let client_metrics = ClientMetrics::new(&mut registry);
    let client = client::build_client(
        &ClientSettings {
            kubeconfig: args.kubeconfig.clone(),
            qps: args.kube_api_qps,
            burst: args.kube_api_burst,
        },
        &client_metrics,
    )
    .await?;
    let identity = leader::new_identity(&hostname().await);
    let lock = leader::lock_name(name);
    tracing::info!(provisioner = name, %identity, "starting");

    // Leadership: from the election, or always held.
    let (leadership, election) = if args.leader_election {
        let namespace = leader::lock_namespace(
            args.leader_election_namespace.as_deref(),
            service_account_namespace().await.as_deref(),
        );
        let config = LeaderElectionConfig::new(lock.clone(), namespace, identity.clone())
            .timings(timings)
            .event_component(format!("{name}_{identity}"));
        let elector = LeaderElector::new(client.clone(), &config);
        let leadership = elector.leadership();
        let (release, released) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async {
            let _ = released.await;
        }));
        (leadership, Some((release, task)))
    } else {
        tracing::warn!("leader election is disabled: run only one replica");
        let (always, leadership) = watch::channel(true);
        // Nobody revokes it; the receiver keeps reading `true` after the sender is gone.
        drop(always);
        (leadership, None)
    };
    let gauge = tokio::spawn(follow_leadership(leadership.clone(), metrics.clone(), lock));

    let stop_work = CancellationToken::new();
    let controller = ProvisionController::new(client, name, backend)
        .config(
            options
                .config
                .concurrency(args.concurrency)
                .identity(identity),
        )
        .leadership(leadership)
        .observer(Arc::new(metrics))
        .graceful_shutdown_on(stop_work.clone().cancelled_owned());
    let caches = controller.cache_status();

    let mut endpoints = http::Endpoints::new(Arc::new(registry)).readiness_check(
        "caches",
        Arc::new(move || {
            let synced = caches.is_synced();
            async move {
                if synced {
                    Ok(())
                } else {
                    Err("claims, volumes and classes not listed yet".to_owned())
                }
            }
            .boxed()
        }),
    );
    if let Some(check) = options.readiness {
        endpoints = endpoints.readiness_check("backend", check);
    }
    let (listener, address) =
        http::bind(args.metrics_address)
            .await
            .map_err(|source| RuntimeError::Bind {
                address: args.metrics_address,
                source,
            })?;
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");
    if let Some(callback) = options.on_listening {
        callback(address);
    }
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(http::serve(
        listener,
        endpoints,
        stop_http.clone().cancelled_owned(),
    ));

    let mut work = tokio::spawn(controller.run());
    let ended_early = tokio::select! {
        () = shutdown => None,
        result = &mut work => Some(result),
    };
    let outcome = match ended_early {
        Some(result) => result
            .map_err(RuntimeError::from)
            .and_then(|run| run.map_err(RuntimeError::from)),
        None => {
            tracing::info!(
                grace_period = ?args.grace_period,
                "shutting down: no new work; waiting for the operations in flight"
            );
            stop_work.cancel();
            match tokio::time::timeout(args.grace_period, &mut work).await {
                Ok(result) => result
                    .map_err(RuntimeError::from)
                    .and_then(|run| run.map_err(RuntimeError::from)),
                Err(_) => {
                    tracing::warn!(
                        "operations still in flight after the grace period; they resume on the next leader"
                    );
                    work.abort();
                    Ok(())
                }
            }
        }
    };

    // Work has stopped: give the lock to a standby.
    if let Some((release, task)) = election {
        let _ = release.send(());
        if let Err(error) = task.await {
            tracing::warn!(%error, "the leader election task failed");
        }
    }
    gauge.abort();
    stop_http.cancel();
    let _ = http.await;
    if outcome.is_ok() {
        tracing::info!("stopped");
    }
    outcome
}

/// Mirrors leadership into `leader_election_master_status`.
async fn follow_leadership(mut leadership: watch::Receiver<bool>, metrics: Metrics, lock: String) {
    loop {
        let leading = *leadership.borrow_and_update();
        metrics.set_leader(&lock, leading);
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

/// The host name as Go's `os.Hostname` reads it on Linux, else `HOSTNAME`, else
/// `localhost`.
async fn hostname() -> String {
    let from_kernel = tokio::time::timeout(
        client::FILE_READ_TIMEOUT,
        tokio::fs::read_to_string("/proc/sys/kernel/hostname"),
    )
    .await
    .ok()
    .and_then(Result::ok);
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The pod's ServiceAccount namespace, if mounted.
async fn service_account_namespace() -> Option<String> {
    tokio::time::timeout(
        client::FILE_READ_TIMEOUT,
        tokio::fs::read_to_string(leader::SERVICE_ACCOUNT_NAMESPACE_FILE),
    )
    .await
    .ok()
    .and_then(Result::ok)
}

/// Grace period the runtime gives itself on top of [`CommonArgs::grace_period`] to release
/// the lock: at most one renew deadline. Kubernetes' `terminationGracePeriodSeconds` should
/// exceed the sum.
pub fn shutdown_budget(args: &CommonArgs) -> Duration {
    args.grace_period + args.leader_election_renew_deadline
}
