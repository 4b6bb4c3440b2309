//! Controller settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use crate::plan::claim::default_volume_name;
use crate::plan::retry::RetryPolicy;

/// Names the PersistentVolume of a claim. It must be deterministic (the same claim always
/// gets the same name, across restarts) and unique per claim; include the claim's UID.
pub type VolumeNamer = Arc<dyn Fn(&PersistentVolumeClaim) -> String + Send + Sync>;

/// Controller settings. Every setting has a default; setters consume and return the
/// value, kube-runtime style.
///
/// ```
/// use std::time::Duration;
/// use provisioner_core::controller::Config;
///
/// let config = Config::default()
///     .concurrency(64)
///     .provision_timeout(Duration::from_secs(120))
///     .failure_threshold(10);
/// assert_eq!(config.get_concurrency(), 64);
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) aliases: Vec<String>,
    pub(crate) concurrency: u16,
    pub(crate) provision_retry: RetryPolicy,
    pub(crate) delete_retry: RetryPolicy,
    pub(crate) provision_timeout: Duration,
    pub(crate) delete_timeout: Duration,
    pub(crate) api_timeout: Duration,
    pub(crate) volume_finalizer: bool,
    pub(crate) volume_namer: VolumeNamer,
    pub(crate) identity: Option<String>,
}

impl Default for Config {
    /// Concurrency 32 per queue; backend calls limited to 60 s and API calls to 30 s;
    /// provisioning and deleting retried forever with backoff from 1 s to 5 min (5 min after
    /// an infeasible error); no PersistentVolume finalizer; volumes named `pvc-<claim uid>`.
    fn default() -> Self {
        Self {
            aliases: Vec::new(),
            concurrency: 32,
            provision_retry: RetryPolicy::default(),
            delete_retry: RetryPolicy::default(),
            provision_timeout: Duration::from_secs(60),
            delete_timeout: Duration::from_secs(60),
            api_timeout: Duration::from_secs(30),
            volume_finalizer: false,
            volume_namer: Arc::new(default_volume_name),
            identity: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("aliases", &self.aliases)
            .field("concurrency", &self.concurrency)
            .field("provision_retry", &self.provision_retry)
            .field("delete_retry", &self.delete_retry)
            .field("provision_timeout", &self.provision_timeout)
            .field("delete_timeout", &self.delete_timeout)
            .field("api_timeout", &self.api_timeout)
            .field("volume_finalizer", &self.volume_finalizer)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Other provisioner names this one answers to (in claims' `storage-provisioner`
    /// annotation, classes' `provisioner` and volumes' `provisioned-by`), for example the
    /// name of the provisioner it replaces.
    #[must_use]
    pub fn aliases<I, S>(mut self, aliases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// How many claims are provisioned, and how many volumes deleted, at the same time
    /// (each). A hung backend call holds one slot until [`Self::provision_timeout`]. A value
    /// of 0 is raised to 1.
    #[must_use]
    pub fn concurrency(mut self, concurrency: u16) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The concurrency setting.
    pub fn get_concurrency(&self) -> u16 {
        self.concurrency
    }

    /// Backoff start and cap for failed provisioning and deletion.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        for policy in [&mut self.provision_retry, &mut self.delete_retry] {
            policy.initial_backoff = initial;
            policy.max_backoff = max.max(initial);
        }
        self
    }

    /// Consecutive failed provisioning attempts of a claim after which the controller stops
    /// until the claim or its class changes; 0 (the default) retries forever.
    #[must_use]
    pub fn failure_threshold(mut self, attempts: u32) -> Self {
        self.provision_retry.failure_threshold = attempts;
        self
    }

    /// Consecutive failed deletions of a volume after which the controller stops until the
    /// volume changes; 0 (the default) retries forever.
    #[must_use]
    pub fn delete_failure_threshold(mut self, attempts: u32) -> Self {
        self.delete_retry.failure_threshold = attempts;
        self
    }

    /// How long to wait after an infeasible error before retrying a claim that did not
    /// change.
    #[must_use]
    pub fn infeasible_delay(mut self, delay: Duration) -> Self {
        self.provision_retry.infeasible_delay = delay;
        self
    }

    /// Time limit of one backend provisioning call; on expiry the call is dropped and
    /// counted as [`ProvisionError::InBackground`](crate::provisioner::ProvisionError).
    #[must_use]
    pub fn provision_timeout(mut self, timeout: Duration) -> Self {
        self.provision_timeout = timeout;
        self
    }

    /// Time limit of one backend delete call.
    #[must_use]
    pub fn delete_timeout(mut self, timeout: Duration) -> Self {
        self.delete_timeout = timeout;
        self
    }

    /// Time limit of one API request.
    #[must_use]
    pub fn api_timeout(mut self, timeout: Duration) -> Self {
        self.api_timeout = timeout;
        self
    }

    /// Puts `external-provisioner.volume.kubernetes.io/finalizer` on provisioned volumes, so
    /// a volume deleted by hand while bound still has its asset deleted per its reclaim
    /// policy. **Needs `patch` on `persistentvolumes`**, which the seed RBAC does not grant.
    #[must_use]
    pub fn volume_finalizer(mut self, enabled: bool) -> Self {
        self.volume_finalizer = enabled;
        self
    }

    /// Names volumes with `namer` instead of `pvc-<claim uid>`.
    #[must_use]
    pub fn volume_namer(
        mut self,
        namer: impl Fn(&PersistentVolumeClaim) -> String + Send + Sync + 'static,
    ) -> Self {
        self.volume_namer = Arc::new(namer);
        self
    }

    /// This instance's identity (for example `<hostname>_<random>`), reported in Events.
    #[must_use]
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }
}
