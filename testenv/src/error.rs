//! The error type of starting and using a control plane.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::binaries::BinariesError;
use crate::certs::CertError;
use crate::kubeconfig::KubeconfigError;
use crate::reaper::SpawnError;

/// Why a control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    /// The component binaries could not be found or built.
    #[error(transparent)]
    Binaries(#[from] BinariesError),
    /// Keys or certificates could not be generated.
    #[error(transparent)]
    Certificates(#[from] CertError),
    /// A kubeconfig could not be rendered.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// A process could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A file or directory of the plane could not be created or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// No free loopback port could be reserved.
    #[error("reserving free ports on 127.0.0.1: {0}")]
    Ports(#[source] std::io::Error),
    /// A program under test could not be started.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// A component exited while the plane was starting.
    #[error("{component} exited with {status} during start-up; last lines of its log:\n{log_tail}")]
    Exited {
        /// The component's name.
        component: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// A component did not become ready in time.
    #[error(
        "{component} was not ready after {waited:?} (last probe: {last_probe}); last lines of its log:\n{log_tail}"
    )]
    NotReady {
        /// The component's name.
        component: String,
        /// How long start-up had been waiting.
        waited: Duration,
        /// What the last readiness probe saw.
        last_probe: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The generated kubeconfig could not be turned into a client configuration.
    #[error("loading the kubeconfig for {user}: {source}")]
    ClientConfig {
        /// The kubeconfig user.
        user: String,
        /// Why it failed.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A request to the API server failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A TokenRequest was answered without a token.
    #[error("the TokenRequest for {namespace}/{name} returned no token")]
    NoToken {
        /// Namespace of the ServiceAccount.
        namespace: String,
        /// Name of the ServiceAccount.
        name: String,
    },
    /// The first start of a [`SharedControlPlane`](crate::SharedControlPlane) failed; every
    /// later user sees the same message instead of starting again.
    #[error("the shared control plane failed to start: {0}")]
    SharedStartFailed(String),
}

impl TestEnvError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        move |source| TestEnvError::Api {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| TestEnvError::Io {
            action,
            path,
            source,
        }
    }
}
