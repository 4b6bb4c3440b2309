//! The cluster-wide duties of one instance: the work that belongs to no single node.
//!
//! Every instance runs a controller for its own node's claims and volumes, always. The
//! instance that holds the duties (elected with a Lease) runs a second controller for the
//! rest — claims without a selected node (shared-filesystem classes, and the Event telling
//! the operator that a node-local class needs WaitForFirstConsumer), shared-filesystem
//! volumes, and the volumes of nodes that no longer exist — with a backend wrapped in
//! [`ClusterWork`], so the two controllers never share an object.
//!
//! The second controller is started when the duties are taken, and started again when a
//! Node disappears while they are held: a controller looks at every object when it starts,
//! so claims skipped while another instance held the duties, and the vanished node's
//! Released volumes, are looked at. It is stopped at once when the duties are lost.

use std::collections::BTreeMap;
use std::time::Duration;

use backend_hostpath::ownership::{NodeIdentity, VolumeNode};
use backend_hostpath::volume::volume_node;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, TypedObjectReference};
use provisioner_core::plan::claim::selected_node;
use provisioner_core::provisioner::{
    DeleteError, DeleteOutcome, DeleteRequest, ParameterError, ProvisionError, ProvisionRequest,
    ProvisionedVolume, Provisioner,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Node deletions closer together than this restart the duties controller once.
pub const NODE_DELETION_SETTLE: Duration = Duration::from_secs(1);

/// How the duties manager is timed.
#[derive(Debug, Clone, Copy)]
pub struct DutiesTimings {
    /// Node deletions closer together than this restart the controller once.
    pub settle: Duration,
    /// How long a shutdown waits for the running controller.
    pub grace: Duration,
}

/// Whether a claim is this node's own work: the scheduler selected this node.
///
/// ```
/// use backend_hostpath::ownership::NodeIdentity;
/// use provisioner_bin::hostpath::duties::claim_on_node;
///
/// let me = NodeIdentity::new("node-a");
/// assert!(claim_on_node(&me, Some("node-a")));
/// assert!(!claim_on_node(&me, Some("node-b")));
/// assert!(!claim_on_node(&me, None));
/// ```
pub fn claim_on_node(me: &NodeIdentity, selected_node: Option<&str>) -> bool {
    selected_node == Some(me.name.as_str())
}

/// Whether a volume is this node's own work: its data is on this node.
///
/// ```
/// use backend_hostpath::ownership::{NodeIdentity, VolumeNode};
/// use provisioner_bin::hostpath::duties::volume_on_node;
///
/// let me = NodeIdentity::new("node-a");
/// assert!(volume_on_node(&me, &VolumeNode::Named("node-a".into())));
/// assert!(!volume_on_node(&me, &VolumeNode::Shared));
/// ```
pub fn volume_on_node(me: &NodeIdentity, node: &VolumeNode) -> bool {
    match node {
        VolumeNode::Named(name) => *name == me.name,
        VolumeNode::Affinity { key, value } => me.matches(key, value),
        VolumeNode::Shared | VolumeNode::Unreadable(_) => false,
    }
}

/// A backend for the duties controller: `inner`, minus this node's own claims and volumes
/// (the node's controller serves those).
#[derive(Debug)]
pub struct ClusterWork<P> {
    inner: P,
    me: NodeIdentity,
}

impl<P> ClusterWork<P> {
    /// Wraps `inner` for the instance of node `me`.
    pub fn new(inner: P, me: NodeIdentity) -> Self {
        Self { inner, me }
    }
}

impl<P: Provisioner> Provisioner for ClusterWork<P> {
    type Parameters = P::Parameters;

    fn parse_parameters(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<Self::Parameters, ParameterError> {
        self.inner.parse_parameters(raw)
    }

    async fn provision(
        &self,
        request: ProvisionRequest<Self::Parameters>,
    ) -> Result<ProvisionedVolume, ProvisionError> {
        self.inner.provision(request).await
    }

    async fn delete(
        &self,
        request: DeleteRequest<Self::Parameters>,
    ) -> Result<DeleteOutcome, DeleteError> {
        self.inner.delete(request).await
    }

    fn supports_block(&self) -> bool {
        self.inner.supports_block()
    }

    fn supports_data_source(&self, source: &TypedObjectReference) -> bool {
        self.inner.supports_data_source(source)
    }

    fn should_provision(&self, claim: &PersistentVolumeClaim) -> bool {
        !claim_on_node(&self.me, selected_node(claim)) && self.inner.should_provision(claim)
    }

    fn should_delete(&self, volume: &PersistentVolume) -> bool {
        !volume_on_node(&self.me, &volume_node(volume)) && self.inner.should_delete(volume)
    }
}

/// What the duties manager does next, given whether the duties are held and whether a
/// duties controller runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DutiesStep {
    /// Start the duties controller.
    Start,
    /// Stop it at once: another instance is taking over.
    Stop,
    /// Nothing to change.
    Keep,
}

/// Decides the [`DutiesStep`].
///
/// ```
/// use provisioner_bin::hostpath::duties::{DutiesStep, duties_step};
///
/// assert_eq!(duties_step(true, false), DutiesStep::Start);
/// assert_eq!(duties_step(false, true), DutiesStep::Stop);
/// assert_eq!(duties_step(true, true), DutiesStep::Keep);
/// ```
pub fn duties_step(held: bool, running: bool) -> DutiesStep {
    match (held, running) {
        (true, false) => DutiesStep::Start,
        (false, true) => DutiesStep::Stop,
        _ => DutiesStep::Keep,
    }
}

/// Runs the duties controller while `held` says `true`: `start()` starts one (it must stop
/// gracefully when `shutdown` is cancelled); a Node deletion restarts it (once per burst of
/// deletions within `timings.settle`); losing the duties aborts it. Returns when `shutdown`
/// is cancelled, after the running controller (if any) finished or `timings.grace` passed.
/// `on_change` hears every change of the duties.
pub async fn manage<F>(
    mut held: watch::Receiver<bool>,
    mut node_deletions: watch::Receiver<()>,
    start: F,
    shutdown: CancellationToken,
    timings: DutiesTimings,
    on_change: impl Fn(bool),
) where
    F: Fn() -> JoinHandle<()>,
{
    let mut running: Option<JoinHandle<()>> = None;
    // Without an election the channel is closed from the start and never changes.
    let mut electing = true;
    let mut was_held = false;
    loop {
        let now_held = *held.borrow_and_update();
        if now_held != was_held {
            was_held = now_held;
            on_change(now_held);
        }
        match duties_step(now_held, running.is_some()) {
            DutiesStep::Start => running = Some(start()),
            DutiesStep::Stop => {
                if let Some(task) = running.take() {
                    task.abort();
                }
            }
            DutiesStep::Keep => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = held.changed(), if electing => {
                if changed.is_err() {
                    electing = false;
                }
            }
            changed = node_deletions.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(task) = running.take() {
                    // A drain deletes nodes in a row: restart once they settle.
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            running = Some(task);
                            break;
                        }
                        () = tokio::time::sleep(timings.settle) => {}
                    }
                    node_deletions.mark_unchanged();
                    task.abort();
                    let _ = task.await;
                    tracing::info!("a Node was deleted: looking at every volume again");
                }
            }
        }
    }
    if let Some(task) = running {
        let abort = task.abort_handle();
        if tokio::time::timeout(timings.grace, task).await.is_err() {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn mk_identity(name: &str, labels: &[(&str, &str)]) -> NodeIdentity {
        NodeIdentity::new(name).with_labels(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn mk_claim(selected: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                annotations: selected.map(|node| {
                    BTreeMap::from([(
                        "volume.kubernetes.io/selected-node".to_owned(),
                        node.to_owned(),
                    )])
                }),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    #[test]
    fn claims_of_this_node_are_the_nodes_own() {
        let me = mk_identity("node-a", &[]);
        assert!(claim_on_node(&me, Some("node-a")));
        assert!(!claim_on_node(&me, Some("node-b")));
        assert!(!claim_on_node(&me, None));
    }

    #[test]
    fn volumes_by_name_or_affinity() {
        let me = mk_identity("node-a", &[("zone", "z1")]);
        assert!(volume_on_node(&me, &VolumeNode::Named("node-a".into())));
        assert!(!volume_on_node(&me, &VolumeNode::Named("node-b".into())));
        let affinity = |key: &str, value: &str| VolumeNode::Affinity {
            key: key.into(),
            value: value.into(),
        };
        assert!(volume_on_node(&me, &affinity("zone", "z1")));
        assert!(!volume_on_node(&me, &affinity("zone", "z2")));
        // Without the label, local-path's fallback value is the node name.
        assert!(volume_on_node(
            &me,
            &affinity("kubernetes.io/hostname", "node-a")
        ));
        assert!(!volume_on_node(&me, &VolumeNode::Shared));
        assert!(!volume_on_node(
            &me,
            &VolumeNode::Unreadable("two terms".into())
        ));
    }

    /// Accepts everything; counts nothing.
    struct Everything;

    impl Provisioner for Everything {
        type Parameters = ();

        fn parse_parameters(&self, _: &BTreeMap<String, String>) -> Result<(), ParameterError> {
            Ok(())
        }

        async fn provision(
            &self,
            _: ProvisionRequest<()>,
        ) -> Result<ProvisionedVolume, ProvisionError> {
            Err(ProvisionError::Ignored("test".into()))
        }

        async fn delete(&self, _: DeleteRequest<()>) -> Result<DeleteOutcome, DeleteError> {
            Ok(DeleteOutcome::Deleted)
        }
    }

    #[test]
    fn cluster_work_leaves_this_nodes_claims_to_the_node_controller() {
        let work = ClusterWork::new(Everything, mk_identity("node-a", &[]));
        assert!(!work.should_provision(&mk_claim(Some("node-a"))));
        assert!(work.should_provision(&mk_claim(Some("node-b"))));
        assert!(work.should_provision(&mk_claim(None)));
    }

    fn mk_volume(node: Option<&str>) -> PersistentVolume {
        let mut annotations = BTreeMap::from([(
            backend_hostpath::volume::ANNOTATION_DIRECTORY.to_owned(),
            "dir".to_owned(),
        )]);
        if let Some(node) = node {
            annotations.insert(
                backend_hostpath::volume::ANNOTATION_NODE.to_owned(),
                node.to_owned(),
            );
        }
        PersistentVolume {
            metadata: ObjectMeta {
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            ..PersistentVolume::default()
        }
    }

    #[test]
    fn cluster_work_leaves_this_nodes_volumes_to_the_node_controller() {
        let work = ClusterWork::new(Everything, mk_identity("node-a", &[]));
        assert!(!work.should_delete(&mk_volume(Some("node-a"))));
        assert!(work.should_delete(&mk_volume(Some("node-gone"))));
        assert!(work.should_delete(&mk_volume(None)), "shared volumes");
    }

    #[test]
    fn duties_steps() {
        assert_eq!(duties_step(true, false), DutiesStep::Start);
        assert_eq!(duties_step(false, true), DutiesStep::Stop);
        assert_eq!(duties_step(true, true), DutiesStep::Keep);
        assert_eq!(duties_step(false, false), DutiesStep::Keep);
    }

    /// A started "controller" that runs until aborted or shut down.
    fn counting_start(
        starts: Arc<AtomicUsize>,
        shutdown: CancellationToken,
    ) -> impl Fn() -> JoinHandle<()> {
        move || {
            starts.fetch_add(1, Ordering::SeqCst);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        }
    }

    const TIMINGS: DutiesTimings = DutiesTimings {
        settle: Duration::from_millis(50),
        grace: Duration::from_secs(5),
    };

    /// Lets the spawned tasks run until they wait again.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn starts_on_taking_the_duties_restarts_on_node_deletion_stops_on_loss() {
        let (held_tx, held) = watch::channel(false);
        let (deleted_tx, deleted) = watch::channel(());
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = changes.clone();
        let manager = tokio::spawn(manage(
            held,
            deleted,
            counting_start(starts.clone(), shutdown.clone()),
            shutdown.clone(),
            TIMINGS,
            move |now| recorded.lock().unwrap().push(now),
        ));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 0, "not held yet");

        // A deletion while not holding the duties changes nothing.
        deleted_tx.send_replace(());
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 0);

        held_tx.send_replace(true);
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);

        // Three deletions in a row: one restart, after they settle.
        for _ in 0..3 {
            deleted_tx.send_replace(());
            settle().await;
        }
        tokio::time::sleep(TIMINGS.settle * 4).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);

        held_tx.send_replace(false);
        settle().await;
        held_tx.send_replace(true);
        settle().await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "taken again: started again"
        );

        shutdown.cancel();
        manager.await.unwrap();
        assert_eq!(*changes.lock().unwrap(), [true, false, true]);
    }

    #[tokio::test]
    async fn without_an_election_the_duties_are_held_from_the_start() {
        let held = watch::channel(true).1; // sender gone: never changes
        let (_deleted_tx, deleted) = watch::channel(());
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let manager = tokio::spawn(manage(
            held,
            deleted,
            counting_start(starts.clone(), shutdown.clone()),
            shutdown.clone(),
            TIMINGS,
            |_| {},
        ));
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        manager.await.unwrap();
    }
}
