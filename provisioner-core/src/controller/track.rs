//! Bookkeeping behind the [`Observer`]'s gauges: operations reported exactly once
//! ([`Operation`]), and the depth of each work queue ([`QueueTracker`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::controller::Action;
use tokio::time::Instant;

use super::context::lock;
use super::observe::{DeleteLabels, Observer, Outcome, ProvisionLabels, QueueDepth, QueueKind};

/// What an operation reports itself as.
enum OperationLabels {
    Provision(ProvisionLabels),
    Delete(DeleteLabels),
}

/// An operation reported to the observer: `*_started` when created, `*_finished` exactly
/// once — by [`Operation::finish`], or as `"cancelled"` when dropped unfinished (its future
/// was dropped: leadership lost, controller stopped).
pub(crate) struct Operation<'a> {
    observer: &'a dyn Observer,
    labels: OperationLabels,
    started: Instant,
    finished: bool,
}

impl<'a> Operation<'a> {
    /// Starts a provisioning attempt.
    pub(crate) fn provision(observer: &'a dyn Observer, labels: ProvisionLabels) -> Self {
        observer.provision_started(&labels);
        Self::new(observer, OperationLabels::Provision(labels))
    }

    /// Starts a deletion attempt.
    pub(crate) fn delete(observer: &'a dyn Observer, labels: DeleteLabels) -> Self {
        observer.delete_started(&labels);
        Self::new(observer, OperationLabels::Delete(labels))
    }

    fn new(observer: &'a dyn Observer, labels: OperationLabels) -> Self {
        Self {
            observer,
            labels,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Ends the operation with `outcome`.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.report(outcome);
    }

    fn report(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        match &self.labels {
            OperationLabels::Provision(labels) => {
                self.observer.provision_finished(labels, outcome, elapsed);
            }
            OperationLabels::Delete(labels) => {
                self.observer.delete_finished(labels, outcome, elapsed);
            }
        }
    }
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        self.report(Outcome::Failed("cancelled"));
    }
}

/// An object in a queue: namespace (none for cluster-scoped objects) and name.
type QueueKey = (Option<String>, String);

/// Why an object waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// Due now.
    Queued,
    /// Due once its backoff expires.
    Retrying,
}

#[derive(Debug, Default)]
struct QueueState {
    waiting: HashMap<QueueKey, Waiting>,
    depth: QueueDepth,
}

impl QueueState {
    fn set(&mut self, key: QueueKey, state: Option<Waiting>) {
        let previous = match state {
            Some(state) => self.waiting.insert(key, state),
            None => self.waiting.remove(&key),
        };
        for (waiting, delta) in [(previous, -1isize), (state, 1)] {
            let counter = match waiting {
                Some(Waiting::Queued) => &mut self.depth.queued,
                Some(Waiting::Retrying) => &mut self.depth.retrying,
                None => continue,
            };
            *counter = counter.saturating_add_signed(delta);
        }
    }
}

/// Mirrors what one kube-runtime applier holds, which it does not expose: objects triggered
/// and not yet started, objects waiting for a requeue, and passes running. An entry leaves
/// when its pass starts, or when the applier finds the object gone
/// ([`QueueTracker::forget`]), so the map never outgrows the objects the applier holds.
pub(crate) struct QueueTracker {
    kind: QueueKind,
    observer: Arc<dyn Observer>,
    state: Mutex<QueueState>,
}

impl QueueTracker {
    pub(crate) fn new(kind: QueueKind, observer: Arc<dyn Observer>) -> Self {
        Self {
            kind,
            observer,
            state: Mutex::new(QueueState::default()),
        }
    }

    /// The current depth.
    #[cfg(test)]
    pub(crate) fn depth(&self) -> QueueDepth {
        lock(&self.state).depth
    }

    /// Applies `change` and reports the depth if it changed, under the lock so reports
    /// arrive in order.
    fn update(&self, change: impl FnOnce(&mut QueueState)) {
        let mut state = lock(&self.state);
        let before = state.depth;
        change(&mut state);
        if state.depth != before {
            self.observer.queue_depth(self.kind, state.depth);
        }
    }

    /// An object was handed to the applier: it is due now.
    pub(crate) fn triggered(&self, namespace: Option<&str>, name: &str) {
        let key = (namespace.map(str::to_owned), name.to_owned());
        self.update(|state| state.set(key, Some(Waiting::Queued)));
    }

    /// The applier dropped a request because the object is gone.
    pub(crate) fn forget(&self, namespace: Option<&str>, name: &str) {
        let key = (namespace.map(str::to_owned), name.to_owned());
        self.update(|state| state.set(key, None));
    }

    /// A pass over `object` starts; it runs until [`Pass::finish`] or the pass is dropped.
    pub(crate) fn start<K: Resource>(&self, object: &K) -> Pass<'_> {
        let key = (
            object.meta().namespace.clone(),
            object.meta().name.clone().unwrap_or_default(),
        );
        let pass_key = key.clone();
        self.update(|state| {
            state.set(key, None);
            state.depth.running += 1;
        });
        Pass {
            tracker: self,
            key: pass_key,
        }
    }
}

/// A pass of the applier over one object.
pub(crate) struct Pass<'a> {
    tracker: &'a QueueTracker,
    key: QueueKey,
}

impl Pass<'_> {
    /// The pass ended with `action`: a requeue makes the object wait for it, unless it was
    /// triggered again meanwhile (then it is due now).
    pub(crate) fn finish(self, action: &Action) {
        if *action != Action::await_change() {
            let key = self.key.clone();
            self.tracker.update(|state| {
                if state.waiting.get(&key) != Some(&Waiting::Queued) {
                    state.set(key, Some(Waiting::Retrying));
                }
            });
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.tracker.update(|state| {
            state.depth.running = state.depth.running.saturating_sub(1);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// Records every call, in order.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        depths: Mutex<Vec<QueueDepth>>,
    }

    impl Observer for Recorder {
        fn provision_started(&self, labels: &ProvisionLabels) {
            lock(&self.calls).push(format!("started {}", labels.class));
        }
        fn provision_finished(&self, labels: &ProvisionLabels, outcome: Outcome, _: Duration) {
            lock(&self.calls).push(format!("finished {} {outcome:?}", labels.class));
        }
        fn delete_started(&self, labels: &DeleteLabels) {
            lock(&self.calls).push(format!("delete started {}", labels.class));
        }
        fn delete_finished(&self, labels: &DeleteLabels, outcome: Outcome, _: Duration) {
            lock(&self.calls).push(format!("delete finished {} {outcome:?}", labels.class));
        }
        fn queue_depth(&self, queue: QueueKind, depth: QueueDepth) {
            assert_eq!(queue, QueueKind::Claims);
            lock(&self.depths).push(depth);
        }
    }

    fn mk_labels(class: &str) -> ProvisionLabels {
        ProvisionLabels {
            class: class.into(),
            source: String::new(),
        }
    }

    fn mk_claim(name: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    fn depth(queued: usize, retrying: usize, running: usize) -> QueueDepth {
        QueueDepth {
            queued,
            retrying,
            running,
        }
    }

    #[test]
    fn an_operation_finishes_exactly_once() {
        let recorder = Recorder::default();
        Operation::provision(&recorder, mk_labels("a")).finish(Outcome::Succeeded);
        {
            let _dropped = Operation::provision(&recorder, mk_labels("b"));
        }
        Operation::delete(&recorder, DeleteLabels { class: "c".into() })
            .finish(Outcome::Failed("api"));
        assert_eq!(
            *lock(&recorder.calls),
            [
                "started a",
                "finished a Succeeded",
                "started b",
                "finished b Failed(\"cancelled\")",
                "delete started c",
                "delete finished c Failed(\"api\")",
            ]
        );
    }

    #[test]
    fn queue_depth_follows_triggers_passes_and_requeues() {
        let recorder = Arc::new(Recorder::default());
        let tracker = QueueTracker::new(QueueKind::Claims, recorder.clone());
        let (a, b) = (mk_claim("a"), mk_claim("b"));
        tracker.triggered(Some("ns"), "a");
        tracker.triggered(Some("ns"), "a"); // deduplicated, like the applier does
        tracker.triggered(Some("ns"), "b");
        assert_eq!(tracker.depth(), depth(2, 0, 0));

        let pass_a = tracker.start(&a);
        let pass_b = tracker.start(&b);
        assert_eq!(tracker.depth(), depth(0, 0, 2));
        // `a` fails and waits for its backoff; `b` is done.
        pass_a.finish(&Action::requeue(Duration::from_secs(5)));
        pass_b.finish(&Action::await_change());
        assert_eq!(tracker.depth(), depth(0, 1, 0));

        // A trigger during a pass makes the object due again, whatever the pass returns.
        tracker.triggered(Some("ns"), "b");
        let pass_b = tracker.start(&b);
        tracker.triggered(Some("ns"), "b");
        pass_b.finish(&Action::requeue(Duration::from_secs(5)));
        assert_eq!(tracker.depth(), depth(1, 1, 0));

        // Objects found gone leave the queue.
        tracker.forget(Some("ns"), "a");
        tracker.forget(Some("ns"), "b");
        tracker.forget(Some("ns"), "never-seen");
        assert_eq!(tracker.depth(), QueueDepth::default());
        let depths = lock(&recorder.depths).clone();
        assert_eq!(depths.last(), Some(&QueueDepth::default()));
        assert!(
            depths.windows(2).all(|pair| pair[0] != pair[1]),
            "only changes are reported: {depths:?}"
        );
    }

    #[test]
    fn a_dropped_pass_stops_running_without_requeueing() {
        let recorder = Arc::new(Recorder::default());
        let tracker = QueueTracker::new(QueueKind::Claims, recorder);
        tracker.triggered(Some("ns"), "a");
        drop(tracker.start(&mk_claim("a")));
        assert_eq!(tracker.depth(), QueueDepth::default());
    }
}
