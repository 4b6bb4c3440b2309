//! Leader election, so that of several replicas only one provisions.
//!
//! client-go's algorithm on a `coordination.k8s.io/v1` Lease: every retry period each
//! replica reads the lock; the holder renews it, the others take it once it has not changed
//! for its lease duration, as timed by their own clocks ([`Election`], pure and tested with
//! hand-made times). The holder stops working when it could not renew within the renew
//! deadline, before its lease can expire for the others. Leadership is published on a
//! `watch` channel; losing it never ends the process, the replica keeps competing. On
//! shutdown the holder releases the lock (no holder, one-second lease) so a standby takes
//! over at once.
//!
//! **RBAC:** `leases` get, create and update in the lock's namespace. When Leases are
//! forbidden (the seed scenario's RBAC grants only `endpoints`), the election falls back to
//! the Endpoints object of the same name, in the record format client-go's `EndpointsLock`
//! used (and the Go provisioner library up to v8, so an old Go replica and this one see
//! each other), and warns in the log and in a `LeaseForbidden` Event which rule to add.
//! The choice is made once per process: replicas that share a ServiceAccount choose alike;
//! after adding the rule, restart all replicas together.
//!
//! ```no_run
//! use provisioner_core::leader::{self, LeaderElectionConfig, LeaderElector};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let config = LeaderElectionConfig::new(
//!     leader::lock_name("example.com/nfs"),
//!     leader::lock_namespace(std::env::var("POD_NAMESPACE").ok().as_deref(), None),
//!     leader::new_identity("node-1"),
//! );
//! let elector = LeaderElector::new(client, &config);
//! let mut leadership = elector.leadership();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let election = tokio::spawn(elector.run(async {
//!     let _ = stopped.await;
//! }));
//! leadership.wait_for(|leading| *leading).await?;
//! // ... work while `leadership` holds `true` ...
//! let _ = stop.send(());
//! election.await?; // the lock is released
//! # Ok(())
//! # }
//! ```

mod election;
mod elector;
mod lock;
mod record;
#[cfg(test)]
mod tests;

use std::hash::BuildHasher;

pub use election::{Election, Step, Timings, TimingsError};
pub use elector::LeaderElector;
pub use lock::{EndpointsLock, LeaderLock, LeaseLock, LockError, StoredRecord};
pub use record::{ENDPOINTS_RECORD_ANNOTATION, LeaderRecord};

/// Event reasons of the leader election.
pub mod reasons {
    /// Normal, on the lock: `<identity> became leader` / `<identity> stopped leading`
    /// (client-go's reason).
    pub const LEADER_ELECTION: &str = "LeaderElection";
    /// Warning, on the Endpoints lock: Leases are forbidden; the message names the RBAC
    /// rule to add.
    pub const LEASE_FORBIDDEN: &str = "LeaseForbidden";
}

/// Where a pod's ServiceAccount namespace is mounted.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Settings of one participant.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    lock_name: String,
    namespace: String,
    identity: String,
    timings: Timings,
    endpoints_fallback: bool,
    event_component: String,
}

impl LeaderElectionConfig {
    /// The lock `namespace/lock_name`, competed for as `identity`, with default
    /// [`Timings`] and the Endpoints fallback on. Events are reported by component
    /// `lock_name`.
    pub fn new(
        lock_name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        let lock_name = lock_name.into();
        Self {
            event_component: lock_name.clone(),
            lock_name,
            namespace: namespace.into(),
            identity: identity.into(),
            timings: Timings::default(),
            endpoints_fallback: true,
        }
    }

    /// Sets the timings.
    #[must_use]
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Whether to fall back to the Endpoints lock when Leases are forbidden (default on).
    #[must_use]
    pub fn endpoints_fallback(mut self, enabled: bool) -> Self {
        self.endpoints_fallback = enabled;
        self
    }

    /// The component Events are reported as.
    #[must_use]
    pub fn event_component(mut self, component: impl Into<String>) -> Self {
        self.event_component = component.into();
        self
    }

    /// The lock's name.
    pub fn lock_name(&self) -> &str {
        &self.lock_name
    }

    /// The lock's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings.
    pub fn get_timings(&self) -> Timings {
        self.timings
    }
}

/// The lock name for a provisioner: its name with `/` replaced by `-`, as the Go provisioner
/// library names its lock, so Go and Rust replicas of one provisioner compete for the same
/// lock.
///
/// ```
/// assert_eq!(
///     provisioner_core::leader::lock_name("k8s-sigs.io/nfs-subdir-external-provisioner"),
///     "k8s-sigs.io-nfs-subdir-external-provisioner"
/// );
/// ```
pub fn lock_name(provisioner_name: &str) -> String {
    provisioner_name.replace('/', "-")
}

/// A participant identity, `<hostname>_<random>` (random: 128 bits as a UUID-shaped hex
/// string), unique even for two replicas on one host.
///
/// ```
/// let identity = provisioner_core::leader::new_identity("node-1");
/// assert!(identity.starts_with("node-1_"));
/// assert_ne!(identity, provisioner_core::leader::new_identity("node-1"));
/// ```
pub fn new_identity(hostname: &str) -> String {
    let random = |salt: u8| std::collections::hash_map::RandomState::new().hash_one(salt);
    let bits = (u128::from(random(0)) << 64) | u128::from(random(1));
    let hex = format!("{bits:032x}");
    format!(
        "{hostname}_{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The namespace of the lock: `POD_NAMESPACE` if set, else the ServiceAccount's namespace
/// (the content of [`SERVICE_ACCOUNT_NAMESPACE_FILE`]), else `default`, as the Go
/// provisioner library chooses. Blank values count as unset.
///
/// ```
/// use provisioner_core::leader::lock_namespace;
///
/// assert_eq!(lock_namespace(Some("storage"), Some("kube-system\n")), "storage");
/// assert_eq!(lock_namespace(Some(""), Some("kube-system\n")), "kube-system");
/// assert_eq!(lock_namespace(None, None), "default");
/// ```
pub fn lock_namespace(
    pod_namespace: Option<&str>,
    service_account_namespace: Option<&str>,
) -> String {
    [pod_namespace, service_account_namespace]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|namespace| !namespace.is_empty())
        .unwrap_or("default")
        .to_owned()
}
