//! Running the NFS provisioner: [`NfsSettings`] wired to
//! [`run_provisioner`](crate::runtime::run_provisioner).
//!
//! Two things the generic runtime does not know about:
//!
//! - **The volumes the backend must not collide with.** [`NfsProvisioner`] refuses a
//!   directory another PersistentVolume uses; it reads them from a reflector of all
//!   PersistentVolumes, listed before the controller starts so the first claims are checked
//!   against every existing volume.
//! - **Whether the exports answer.** A background task probes every export in use
//!   ([`NfsProvisioner::check_exports`]) every [`EXPORT_CHECK_INTERVAL`]; `/readyz` reports
//!   the latest verdict at once instead of waiting on a possibly hung server.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backend_nfs::NfsProvisioner;
use backend_nfs::parameters::NfsParameters;
use backend_nfs::provisioner::NfsError;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, TypedObjectReference};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;
use provisioner_core::controller::Config;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};
use tokio::sync::watch;

use super::{NfsSettings, export_readiness};
use crate::runtime::{
    self, ClientError, ClientMetrics, ClientSettings, CommonArgs, ReadinessCheck, RunOptions,
    RuntimeError,
};

/// How often the exports are probed for `/readyz`.
pub const EXPORT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Why the NFS provisioner could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The backend configuration was refused.
    #[error(transparent)]
    Backend(#[from] NfsError),
    /// The client for the PersistentVolume watch could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The generic runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Runs the NFS provisioner until SIGTERM or SIGINT.
///
/// ```no_run
/// use clap::Parser;
/// use provisioner_bin::nfs::{NfsArgs, run};
/// use provisioner_bin::runtime::CommonArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     nfs: NfsArgs,
///     #[command(flatten)]
///     common: CommonArgs,
/// }
///
/// # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
/// let cli = Cli::parse();
/// run::run(&cli.common, cli.nfs.resolve()?).await?;
/// # Ok(())
/// # }
/// ```
pub async fn run(common: &CommonArgs, settings: NfsSettings) -> Result<(), RunError> {
    run_until(common, settings, runtime::termination_signal()).await
}

/// Like [`run`], stopping when `shutdown` completes.
pub async fn run_until(
    common: &CommonArgs,
    settings: NfsSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let NfsSettings {
        provisioner_name,
        aliases,
        config,
    } = settings;
    let backend = NfsProvisioner::new(config)?;
    tracing::info!(provisioner = %provisioner_name, ?aliases, config = ?backend.config(), "NFS provisioner configured");

    let mut shutdown = std::pin::pin!(shutdown);
    let (volumes, watch_task) = watch_volumes(common).await?;
    tokio::select! {
        () = volumes.wait_until_ready().map(|_| ()) => {}
        () = &mut shutdown => {
            watch_task.abort();
            return Ok(());
        }
    }
    let backend = Arc::new(backend.with_volume_lister(move || volumes.state()));

    let (verdict_tx, verdict_rx) =
        watch::channel(Err("the exports were not checked yet".to_owned()));
    let probe = tokio::spawn(probe_exports(Arc::clone(&backend), verdict_tx));
    let readiness: ReadinessCheck = Arc::new(move || {
        let verdict = verdict_rx.borrow().clone();
        async move { verdict }.boxed()
    });

    let options = RunOptions::default()
        .controller_config(Config::default().aliases(aliases))
        .readiness(readiness);
    let result = runtime::run_until(
        common,
        &provisioner_name,
        SharedNfs(backend),
        options,
        shutdown,
    )
    .await;
    probe.abort();
    watch_task.abort();
    Ok(result?)
}

/// A reflector of every PersistentVolume, on a client of its own (the runtime's client is
/// not shared with the binary).
async fn watch_volumes(
    common: &CommonArgs,
) -> Result<(Store<PersistentVolume>, tokio::task::JoinHandle<()>), ClientError> {
    let client = runtime::client::build_client(
        &ClientSettings {
            kubeconfig: common.kubeconfig.clone(),
            qps: common.kube_api_qps,
            burst: common.kube_api_burst,
        },
        &ClientMetrics::new(&mut Registry::default()),
    )
    .await?;
    let (store, writer) = reflector::store();
    let task = tokio::spawn(
        watcher(
            kube::Api::<PersistentVolume>::all(client),
            watcher::Config::default(),
        )
        .default_backoff()
        // Only the NFS source and annotations are read; keep the cache small.
        .modify(|volume| volume.metadata.managed_fields = None)
        .reflect(writer)
        .for_each(|event| {
            if let Err(error) = event {
                tracing::warn!(%error, "PersistentVolume watch failed; retrying");
            }
            futures::future::ready(())
        }),
    );
    Ok((store, task))
}

/// Probes the exports forever, publishing each verdict (and logging when it changes).
async fn probe_exports(backend: Arc<NfsProvisioner>, verdict: watch::Sender<Result<(), String>>) {
    loop {
        let now = export_readiness(&backend.check_exports().await);
        let changed = *verdict.borrow() != now;
        if changed {
            match &now {
                Ok(()) => tracing::info!("every export answers"),
                Err(reason) => tracing::warn!(%reason, "not ready"),
            }
        }
        // The previous verdict is not needed.
        let _previous = verdict.send_replace(now);
        tokio::time::sleep(EXPORT_CHECK_INTERVAL).await;
    }
}

/// The backend shared between the controller and the export probe.
struct SharedNfs(Arc<NfsProvisioner>);

impl Provisioner for SharedNfs {
    type Parameters = NfsParameters;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<NfsParameters, ParameterError> {
        self.0.parse_parameters(raw)
    }

    fn provision(
        &self,
        request: ProvisionRequest<NfsParameters>,
    ) -> impl Future<Output = Result<ProvisionedVolume, ProvisionError>> + Send {
        self.0.provision(request)
    }

    fn delete(
        &self,
        request: DeleteRequest<NfsParameters>,
    ) -> impl Future<Output = Result<DeleteOutcome, DeleteError>> + Send {
        self.0.delete(request)
    }

    fn supports_block(&self) -> bool {
        self.0.supports_block()
    }

    fn supports_data_source(&self, source: &TypedObjectReference) -> bool {
        self.0.supports_data_source(source)
    }

    fn should_provision(&self, claim: &PersistentVolumeClaim) -> bool {
        self.0.should_provision(claim)
    }

    fn should_delete(&self, volume: &PersistentVolume) -> bool {
        self.0.should_delete(volume)
    }
}
