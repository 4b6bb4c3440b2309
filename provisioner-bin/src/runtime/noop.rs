//! A backend that creates nothing: every volume is a hostPath that is never made. For
//! tests of the runtime (leader election, shutdown, metrics) and for the throughput
//! benchmark, where the provisioner's own cost is what is measured.
//!
//! StorageClass parameters make it fail on purpose: `failProvision: "true"` fails every
//! provisioning, `failDelete: "true"` every deletion of the class's volumes (final errors).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::HostPathVolumeSource;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};

/// The annotation naming the process (its pid) that provisioned a volume, so tests can
/// tell which replica did the work.
pub const PROVISIONED_BY_PROCESS: &str = "noop.provisioner-rs.io/process";

/// A backend that creates nothing, optionally taking its time.
///
/// ```
/// use std::time::Duration;
/// use provisioner_bin::runtime::noop::NoopBackend;
///
/// let backend = NoopBackend::new(Duration::from_secs(2));
/// assert_eq!(backend.delay(), Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct NoopBackend {
    delay: Duration,
    process: String,
}

impl NoopBackend {
    /// A backend whose every provisioning takes `delay`.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            process: std::process::id().to_string(),
        }
    }

    /// How long each provisioning takes.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl Provisioner for NoopBackend {
    type Parameters = BTreeMap<String, String>;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<Self::Parameters, ParameterError> {
        Ok(raw.clone())
    }

    async fn provision(
        &self,
        request: ProvisionRequest<Self::Parameters>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if is_set(&request.parameters, FAIL_PROVISION) {
            return Err(ProvisionError::final_error(
                "failProvision is set on the StorageClass",
            ));
        }
        Ok(ProvisionedVolume::host_path(HostPathVolumeSource {
            path: format!("/tmp/noop-provisioner/{}", request.volume_name),
            type_: None,
        })
        .with_annotation(PROVISIONED_BY_PROCESS, self.process.clone()))
    }

    async fn delete(
        &self,
        request: DeleteRequest<Self::Parameters>,
    ) -> Result<DeleteOutcome, DeleteError> {
        if request
            .parameters
            .as_ref()
            .is_some_and(|parameters| is_set(parameters, FAIL_DELETE))
        {
            return Err(DeleteError::failed("failDelete is set on the StorageClass"));
        }
        Ok(DeleteOutcome::Deleted)
    }
}

/// The parameter that makes provisioning fail.
pub const FAIL_PROVISION: &str = "failProvision";
/// The parameter that makes deletion fail.
pub const FAIL_DELETE: &str = "failDelete";

fn is_set(parameters: &BTreeMap<String, String>, key: &str) -> bool {
    parameters.get(key).is_some_and(|value| value == "true")
}
