//! A real local Kubernetes control plane for tests, benchmarks and the demo.
//!
//! [`ControlPlane`] runs etcd and kube-apiserver as child processes on free 127.0.0.1 ports,
//! with RBAC, an admin client certificate (`system:masters`) and ServiceAccount token signing,
//! so a test can act as a ServiceAccount with exactly the RBAC it was granted. Optional per
//! plane: kube-controller-manager with only the PV binder and PV/PVC protection controllers,
//! kube-scheduler, and kwok-simulated Ready nodes.
//!
//! The binaries come from `scripts/build-control-plane.sh` (built from Go modules and
//! cached, see the crate README), or from `$PROVISIONER_TESTBIN_DIR`.
//!
//! Every process is killed and the plane's directory removed when the plane is dropped,
//! also when a test panics; if the test process ends without dropping it (a `static`, an
//! abort, a kill), a watchdog process does the same. [`SharedControlPlane`] shares one plane
//! between the tests of a test binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testenv::TestEnvError> {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, ListParams};
//!
//! let plane = testenv::ControlPlane::builder().start().await?;
//! let namespace = testenv::create_namespace(&plane.client(), "demo").await?;
//! let as_app = plane.service_account_client(&namespace, "app").await?;
//! // The ServiceAccount has no rights yet: this is forbidden.
//! let denied = Api::<ConfigMap>::namespaced(as_app, &namespace).list(&ListParams::default()).await;
//! assert!(denied.is_err());
//! # Ok(()) }
//! ```

mod binaries;
mod certs;
mod component;
mod error;
mod flags;
mod kubeconfig;
mod logs;
mod names;
pub mod nfs;
mod nodes;
mod plane;
pub mod process;
mod reaper;
mod shared;

pub use binaries::{BIN_DIR_ENV, Binaries, BinariesError, build_script};
pub use certs::CertError;
pub use component::Component;
pub use error::TestEnvError;
pub use kubeconfig::KubeconfigError;
pub use names::{create_namespace, unique_name};
pub use plane::{ControlPlane, ControlPlaneBuilder, DEFAULT_START_TIMEOUT, RunningComponent};
pub use reaper::SpawnError;
pub use shared::SharedControlPlane;
