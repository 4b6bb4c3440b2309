//! One control plane shared by all tests of a test binary.

use tokio::sync::OnceCell;

use crate::error::TestEnvError;
use crate::plane::{ControlPlane, ControlPlaneBuilder};

/// A control plane started by the first test that asks for it and shared by the rest of the
/// test binary; meant for a `static`.
///
/// A `static` is never dropped, so the plane is stopped by its watchdog when the test
/// process exits (within a few seconds, directory included). Tests sharing it must not
/// collide: give each its own namespace ([`create_namespace`](crate::create_namespace)) and
/// unique cluster-scoped names ([`unique_name`](crate::unique_name)), and build clients per
/// test ([`ControlPlane::client`]), since each `#[tokio::test]` has its own runtime.
///
/// ```no_run
/// use testenv::{ControlPlane, SharedControlPlane};
///
/// static PLANE: SharedControlPlane =
///     SharedControlPlane::new(|| ControlPlane::builder().controller_manager(true));
///
/// #[tokio::test]
/// async fn binds_claims() -> anyhow::Result<()> {
///     let plane = PLANE.get().await?;
///     let client = plane.client();
///     let namespace = testenv::create_namespace(&client, "binds-claims").await?;
///     // ...
///     Ok(())
/// }
/// ```
pub struct SharedControlPlane {
    configure: fn() -> ControlPlaneBuilder,
    // A failed start is kept too, so that every test reports it instead of each trying again
    // for the whole start timeout.
    plane: OnceCell<Result<ControlPlane, String>>,
}

impl SharedControlPlane {
    /// A plane that `configure` describes, started on first use.
    pub const fn new(configure: fn() -> ControlPlaneBuilder) -> Self {
        Self {
            configure,
            plane: OnceCell::const_new(),
        }
    }

    /// The running plane, starting it if this is the first call.
    pub async fn get(&self) -> Result<&ControlPlane, TestEnvError> {
        let started = self
            .plane
            .get_or_init(|| async {
                (self.configure)()
                    .start()
                    .await
                    .map_err(|err| err.to_string())
            })
            .await;
        started
            .as_ref()
            .map_err(|message| TestEnvError::SharedStartFailed(message.clone()))
    }
}

impl std::fmt::Debug for SharedControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedControlPlane")
            .field("plane", &self.plane.get())
            .finish_non_exhaustive()
    }
}
