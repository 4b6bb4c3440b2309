//! Prometheus metrics of the controller, registered into a registry the caller owns.
//!
//! [`Metrics`] is an [`Observer`]: hand it to
//! [`ProvisionController::observer`](crate::controller::ProvisionController::observer).
//! It exports the Go provisioner library's six metrics under the same names and labels, so
//! dashboards and alerts carry over:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `controller_persistentvolumeclaim_provision_total` | counter (successes) | `class`, `source` |
//! | `controller_persistentvolumeclaim_provision_failed_total` | counter | `class`, `source` |
//! | `controller_persistentvolumeclaim_provision_duration_seconds` | histogram (successes) | `class`, `source` |
//! | `controller_persistentvolume_delete_total` | counter (successes) | `class` |
//! | `controller_persistentvolume_delete_failed_total` | counter | `class` |
//! | `controller_persistentvolume_delete_duration_seconds` | histogram (successes) | `class` |
//!
//! The histograms have the Go buckets (0.005 s to 10 s) plus buckets up to ten minutes
//! ([`DURATION_BUCKETS`]): a superset, so queries on the Go buckets still work. Beyond the
//! Go library:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `controller_persistentvolumeclaim_provision_failed_duration_seconds` | histogram | `class`, `source`, `reason` |
//! | `controller_persistentvolume_delete_failed_duration_seconds` | histogram | `class`, `reason` |
//! | `controller_persistentvolumeclaim_provision_in_flight` | gauge | |
//! | `controller_persistentvolume_delete_in_flight` | gauge | |
//! | `controller_queue_depth` | gauge | `queue` (`claims`, `volumes`), `state` (`queued`, `retrying`, `running`) |
//! | `controller_retries_total` | counter | |
//! | `controller_api_requests_total` | counter | `verb`, `resource` |
//! | `leader_election_master_status` | gauge (1 leading, 0 not) | `name` (client-go's metric) |
//!
//! `reason` is the failure kind the controller reports (for example `final`, `timeout`,
//! `api`, `cancelled`). `controller_api_requests_total` counts the requests the controller
//! makes for its operations (watches and lists excluded); a binary that wraps its client can
//! count every request separately. `leader_election_master_status` is set by whoever runs
//! the election ([`Metrics::set_leader`]), not by the controller: a replica may run several
//! controllers under one election, or one controller that always works.
//!
//! Give each controller its own `Metrics` if the queue gauges must not mix.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use provisioner_core::metrics::Metrics;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::new(&mut registry);
//! metrics.set_leader("example-com-nfs", true);
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("leader_election_master_status{name=\"example-com-nfs\"} 1"));
//! ```

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::controller::{
    ApiRequest, DeleteLabels, Observer, Outcome, ProvisionLabels, QueueDepth, QueueKind,
};

/// Histogram buckets in seconds: Prometheus' default buckets (the Go library's) and then
/// up to ten minutes, for backends that take minutes.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    class: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimFailureLabels {
    class: String,
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeFailureLabels {
    class: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaderLabels {
    name: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(duration_histogram as fn() -> Histogram)
}

/// The controller's metrics. Cheap to clone (clones share the values).
#[derive(Clone, Debug)]
pub struct Metrics {
    provisioned: Family<ClaimLabels, Counter>,
    provision_failed: Family<ClaimLabels, Counter>,
    provision_duration: Histograms<ClaimLabels>,
    provision_failed_duration: Histograms<ClaimFailureLabels>,
    provisions_in_flight: Gauge,
    deleted: Family<VolumeLabels, Counter>,
    delete_failed: Family<VolumeLabels, Counter>,
    delete_duration: Histograms<VolumeLabels>,
    delete_failed_duration: Histograms<VolumeFailureLabels>,
    deletes_in_flight: Gauge,
    queue_depth: Family<QueueLabels, Gauge>,
    retries: Counter,
    api_requests: Family<RequestLabels, Counter>,
    leader: Family<LeaderLabels, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (at its root: the names above
    /// are complete).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            provisioned: Family::default(),
            provision_failed: Family::default(),
            provision_duration: histograms(),
            provision_failed_duration: histograms(),
            provisions_in_flight: Gauge::default(),
            deleted: Family::default(),
            delete_failed: Family::default(),
            delete_duration: histograms(),
            delete_failed_duration: histograms(),
            deletes_in_flight: Gauge::default(),
            queue_depth: Family::default(),
            retries: Counter::default(),
            api_requests: Family::default(),
            leader: Family::default(),
        };
        // Counter names are registered without `_total`: the encoder appends it.
        registry.register(
            "controller_persistentvolumeclaim_provision",
            "Total number of persistent volumes provisioned successfully. Broken down by storage class name and data source kind",
            metrics.provisioned.clone(),
        );
        registry.register(
            "controller_persistentvolumeclaim_provision_failed",
            "Total number of persistent volume provision failed attempts. Broken down by storage class name and data source kind",
            metrics.provision_failed.clone(),
        );
        registry.register(
            "controller_persistentvolumeclaim_provision_duration_seconds",
            "Latency in seconds to provision persistent volumes. Failed provisioning attempts are ignored. Broken down by storage class name and data source kind",
            metrics.provision_duration.clone(),
        );
        registry.register(
            "controller_persistentvolumeclaim_provision_failed_duration_seconds",
            "Latency in seconds of failed provisioning attempts. Broken down by storage class name, data source kind and failure reason",
            metrics.provision_failed_duration.clone(),
        );
        registry.register(
            "controller_persistentvolumeclaim_provision_in_flight",
            "Provisioning operations running now",
            metrics.provisions_in_flight.clone(),
        );
        registry.register(
            "controller_persistentvolume_delete",
            "Total number of persistent volumes deleted successfully. Broken down by storage class name",
            metrics.deleted.clone(),
        );
        registry.register(
            "controller_persistentvolume_delete_failed",
            "Total number of persistent volume delete failed attempts. Broken down by storage class name",
            metrics.delete_failed.clone(),
        );
        registry.register(
            "controller_persistentvolume_delete_duration_seconds",
            "Latency in seconds to delete persistent volumes. Failed deletion attempts are ignored. Broken down by storage class name",
            metrics.delete_duration.clone(),
        );
        registry.register(
            "controller_persistentvolume_delete_failed_duration_seconds",
            "Latency in seconds of failed deletion attempts. Broken down by storage class name and failure reason",
            metrics.delete_failed_duration.clone(),
        );
        registry.register(
            "controller_persistentvolume_delete_in_flight",
            "Deletion operations running now",
            metrics.deletes_in_flight.clone(),
        );
        registry.register(
            "controller_queue_depth",
            "Objects in the controller's work queues: due and waiting for a slot, waiting for a retry, being worked on",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "controller_retries",
            "Total number of failed operations scheduled for a retry",
            metrics.retries.clone(),
        );
        registry.register(
            "controller_api_requests",
            "Total number of API requests the controller made for its operations (watches and lists excluded). Broken down by verb and resource",
            metrics.api_requests.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this replica leads the election of the named lock, 0 otherwise",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Records whether this replica leads the election of lock `name`.
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader
            .get_or_create(&LeaderLabels {
                name: name.to_owned(),
            })
            .set(i64::from(leading));
    }
}

fn claim_labels(labels: &ProvisionLabels) -> ClaimLabels {
    ClaimLabels {
        class: labels.class.clone(),
        source: labels.source.clone(),
    }
}

fn volume_labels(labels: &DeleteLabels) -> VolumeLabels {
    VolumeLabels {
        class: labels.class.clone(),
    }
}

impl Observer for Metrics {
    fn provision_started(&self, _labels: &ProvisionLabels) {
        self.provisions_in_flight.inc();
    }

    fn provision_finished(&self, labels: &ProvisionLabels, outcome: Outcome, elapsed: Duration) {
        self.provisions_in_flight.dec();
        let claim = claim_labels(labels);
        match outcome {
            Outcome::Succeeded => {
                self.provisioned.get_or_create(&claim).inc();
                self.provision_duration
                    .get_or_create(&claim)
                    .observe(elapsed.as_secs_f64());
            }
            Outcome::Failed(reason) => {
                self.provision_failed.get_or_create(&claim).inc();
                self.provision_failed_duration
                    .get_or_create(&ClaimFailureLabels {
                        class: claim.class,
                        source: claim.source,
                        reason: reason.to_owned(),
                    })
                    .observe(elapsed.as_secs_f64());
            }
        }
    }

    fn delete_started(&self, _labels: &DeleteLabels) {
        self.deletes_in_flight.inc();
    }

    fn delete_finished(&self, labels: &DeleteLabels, outcome: Outcome, elapsed: Duration) {
        self.deletes_in_flight.dec();
        let volume = volume_labels(labels);
        match outcome {
            Outcome::Succeeded => {
                self.deleted.get_or_create(&volume).inc();
                self.delete_duration
                    .get_or_create(&volume)
                    .observe(elapsed.as_secs_f64());
            }
            Outcome::Failed(reason) => {
                self.delete_failed.get_or_create(&volume).inc();
                self.delete_failed_duration
                    .get_or_create(&VolumeFailureLabels {
                        class: volume.class,
                        reason: reason.to_owned(),
                    })
                    .observe(elapsed.as_secs_f64());
            }
        }
    }

    fn retry_scheduled(&self, _delay: Duration) {
        self.retries.inc();
    }

    fn queue_depth(&self, queue: QueueKind, depth: QueueDepth) {
        for (state, count) in [
            ("queued", depth.queued),
            ("retrying", depth.retrying),
            ("running", depth.running),
        ] {
            self.queue_depth
                .get_or_create(&QueueLabels {
                    queue: queue.as_str(),
                    state,
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    fn api_request(&self, request: ApiRequest) {
        self.api_requests
            .get_or_create(&RequestLabels {
                verb: request.verb.to_owned(),
                resource: request.resource.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provision(class: &str, source: &str) -> ProvisionLabels {
        ProvisionLabels {
            class: class.into(),
            source: source.into(),
        }
    }

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn exports_the_go_library_names_and_labels() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let gold = provision("gold", "");
        metrics.provision_started(&gold);
        metrics.provision_finished(&gold, Outcome::Succeeded, Duration::from_millis(300));
        let clone = provision("gold", "VolumeSnapshot");
        metrics.provision_started(&clone);
        metrics.provision_finished(&clone, Outcome::Failed("final"), Duration::from_secs(2));
        let delete = DeleteLabels {
            class: "gold".into(),
        };
        metrics.delete_started(&delete);
        metrics.delete_finished(&delete, Outcome::Succeeded, Duration::from_millis(40));
        metrics.delete_started(&delete);
        metrics.delete_finished(&delete, Outcome::Failed("timeout"), Duration::from_secs(61));

        let text = encoded(&registry);
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_total{class="gold",source=""}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_failed_total{class="gold",source="VolumeSnapshot"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_duration_seconds_count{class="gold",source=""}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_duration_seconds_bucket{le="0.25",class="gold",source=""}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_duration_seconds_bucket{le="0.5",class="gold",source=""}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolume_delete_total{class="gold"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolume_delete_failed_total{class="gold"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolume_delete_duration_seconds_count{class="gold"}"#
            ),
            Some("1")
        );
        // Failures are timed apart, with their reason, in buckets that reach minutes.
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolume_delete_failed_duration_seconds_bucket{le="60.0",class="gold",reason="timeout"}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolume_delete_failed_duration_seconds_bucket{le="120.0",class="gold",reason="timeout"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_failed_duration_seconds_count{class="gold",source="VolumeSnapshot",reason="final"}"#
            ),
            Some("1")
        );
        // Successful durations only in the Go histogram.
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_duration_seconds_count{class="gold",source="VolumeSnapshot"}"#
            ),
            None
        );
        assert!(!text.contains("_total_total"));
    }

    #[test]
    fn in_flight_gauges_follow_started_and_finished() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let gold = provision("gold", "");
        metrics.provision_started(&gold);
        metrics.provision_started(&gold);
        metrics.delete_started(&DeleteLabels {
            class: "gold".into(),
        });
        let text = encoded(&registry);
        assert_eq!(
            sample(
                &text,
                "controller_persistentvolumeclaim_provision_in_flight"
            ),
            Some("2")
        );
        assert_eq!(
            sample(&text, "controller_persistentvolume_delete_in_flight"),
            Some("1")
        );

        metrics.provision_finished(&gold, Outcome::Succeeded, Duration::ZERO);
        metrics.provision_finished(&gold, Outcome::Failed("cancelled"), Duration::ZERO);
        let text = encoded(&registry);
        assert_eq!(
            sample(
                &text,
                "controller_persistentvolumeclaim_provision_in_flight"
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_persistentvolumeclaim_provision_failed_total{class="gold",source=""}"#
            ),
            Some("1")
        );
    }

    #[test]
    fn queue_depth_by_queue_and_state_and_leadership_by_lock() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let depth = QueueDepth {
            queued: 7,
            retrying: 2,
            running: 32,
        };
        metrics.queue_depth(QueueKind::Claims, depth);
        metrics.queue_depth(QueueKind::Volumes, QueueDepth::default());
        metrics.set_leader("example-com-nfs", true);
        metrics.set_leader("example-com-nfs", false);
        let text = encoded(&registry);
        assert_eq!(
            sample(
                &text,
                r#"controller_queue_depth{queue="claims",state="queued"}"#
            ),
            Some("7")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_queue_depth{queue="claims",state="retrying"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_queue_depth{queue="claims",state="running"}"#
            ),
            Some("32")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_queue_depth{queue="volumes",state="running"}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                r#"leader_election_master_status{name="example-com-nfs"}"#
            ),
            Some("0")
        );
    }

    #[test]
    fn counts_retries_and_api_requests_by_verb_and_resource() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.retry_scheduled(Duration::from_secs(1));
        metrics.retry_scheduled(Duration::from_secs(2));
        for _ in 0..3 {
            metrics.api_request(ApiRequest {
                verb: "update",
                resource: "persistentvolumeclaims",
            });
        }
        metrics.api_request(ApiRequest {
            verb: "create",
            resource: "persistentvolumes",
        });
        let text = encoded(&registry);
        assert_eq!(sample(&text, "controller_retries_total"), Some("2"));
        assert_eq!(
            sample(
                &text,
                r#"controller_api_requests_total{verb="update",resource="persistentvolumeclaims"}"#
            ),
            Some("3")
        );
        assert_eq!(
            sample(
                &text,
                r#"controller_api_requests_total{verb="create",resource="persistentvolumes"}"#
            ),
            Some("1")
        );
    }
}
