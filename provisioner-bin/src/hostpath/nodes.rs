//! This node and the others, as the backend needs them: [`node_identity`] (this node's
//! labels, for node-affinity values) and [`NodeCache`] (whether a volume's node still
//! exists, for the node-gone policy), from a watch of Node metadata.
//!
//! [`node_existence`] is the pure decision; [`NodeCache`] feeds it from a reflector.

use std::collections::BTreeMap;
use std::sync::Arc;

use backend_hostpath::ownership::{NodeExistence, NodeIdentity, VolumeNode};
use backend_hostpath::provisioner::NodeDirectory;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

/// This node as the backend sees it: its name and labels (for node-affinity values of
/// classes with a `nodeAffinityKey`).
///
/// ```
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
/// use provisioner_bin::hostpath::nodes::node_identity;
///
/// let meta = ObjectMeta {
///     name: Some("node-a".into()),
///     labels: Some([("topology.kubernetes.io/zone".to_owned(), "z1".to_owned())].into()),
///     ..ObjectMeta::default()
/// };
/// let me = node_identity("node-a", Some(&meta));
/// assert_eq!(me.affinity_value("topology.kubernetes.io/zone"), "z1");
/// assert_eq!(me.affinity_value("kubernetes.io/hostname"), "node-a");
/// ```
pub fn node_identity(name: &str, node: Option<&ObjectMeta>) -> NodeIdentity {
    let labels = node
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    NodeIdentity::new(name).with_labels(labels)
}

/// Whether the node a volume lives on still exists, given the Nodes of the cluster (their
/// metadata) and whether that list is complete (`synced`).
///
/// A volume recorded by node name is looked up by name; one recorded only by its node
/// affinity (`key In [value]`, older local-path volumes) matches a node whose label `key`
/// is `value`, or, for a node without that label, whose name is `value` (local-path's
/// fallback). Until the list is complete, or for a volume on no single node, the answer is
/// [`NodeExistence::Unknown`], which never lets a volume be forgotten.
///
/// ```
/// use backend_hostpath::ownership::{NodeExistence, VolumeNode};
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
/// use provisioner_bin::hostpath::nodes::node_existence;
///
/// let nodes = [ObjectMeta { name: Some("node-a".into()), ..ObjectMeta::default() }];
/// let gone = VolumeNode::Named("node-b".into());
/// assert_eq!(node_existence(true, &nodes, &gone), NodeExistence::Gone);
/// assert_eq!(node_existence(false, &nodes, &gone), NodeExistence::Unknown);
/// ```
pub fn node_existence<'a>(
    synced: bool,
    nodes: impl IntoIterator<Item = &'a ObjectMeta>,
    target: &VolumeNode,
) -> NodeExistence {
    if !synced {
        return NodeExistence::Unknown;
    }
    let mut nodes = nodes.into_iter();
    let found = match target {
        VolumeNode::Named(name) => nodes.any(|meta| meta.name.as_deref() == Some(name.as_str())),
        VolumeNode::Affinity { key, value } => nodes.any(|meta| {
            let no_labels = BTreeMap::new();
            let labels = meta.labels.as_ref().unwrap_or(&no_labels);
            match labels.get(key) {
                Some(label) => label == value,
                None => meta.name.as_deref() == Some(value.as_str()),
            }
        }),
        VolumeNode::Shared | VolumeNode::Unreadable(_) => return NodeExistence::Unknown,
    };
    if found {
        NodeExistence::Exists
    } else {
        NodeExistence::Gone
    }
}

/// A [`NodeDirectory`] answering from a reflector cache of Node metadata (kept by a
/// `metadata_watcher` on Nodes: needs `get`, `list` and `watch` on `nodes`).
#[derive(Clone)]
pub struct NodeCache {
    nodes: Store<PartialObjectMeta<Node>>,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("synced", &self.is_synced())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl NodeCache {
    /// Answers from `nodes`.
    pub fn new(nodes: Store<PartialObjectMeta<Node>>) -> Self {
        Self { nodes }
    }

    /// Whether the cache holds a complete list of Nodes.
    pub fn is_synced(&self) -> bool {
        self.nodes.wait_until_ready().now_or_never().is_some()
    }

    /// The metadata of the Node called `name`, if the cache has it.
    pub fn get(&self, name: &str) -> Option<Arc<PartialObjectMeta<Node>>> {
        self.nodes.get(&ObjectRef::new(name))
    }
}

impl NodeDirectory for NodeCache {
    fn existence(&self, node: &VolumeNode) -> NodeExistence {
        let synced = self.is_synced();
        if let VolumeNode::Named(name) = node {
            // The common case, without a scan.
            return match (synced, self.get(name)) {
                (false, _) => NodeExistence::Unknown,
                (true, Some(_)) => NodeExistence::Exists,
                (true, None) => NodeExistence::Gone,
            };
        }
        let nodes = self.nodes.state();
        node_existence(synced, nodes.iter().map(|node| &node.metadata), node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_node(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn affinity(key: &str, value: &str) -> VolumeNode {
        VolumeNode::Affinity {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn node_existence_by_name() {
        let nodes = [mk_node("node-a", &[]), mk_node("node-b", &[])];
        let named = |name: &str| VolumeNode::Named(name.to_owned());
        assert_eq!(
            node_existence(true, &nodes, &named("node-a")),
            NodeExistence::Exists
        );
        assert_eq!(
            node_existence(true, &nodes, &named("node-c")),
            NodeExistence::Gone
        );
        assert_eq!(
            node_existence(true, [], &named("node-a")),
            NodeExistence::Gone
        );
    }

    #[test]
    fn node_existence_by_affinity_uses_the_label_then_the_name() {
        let nodes = [
            mk_node("node-a", &[("kubernetes.io/hostname", "host-a")]),
            mk_node("node-b", &[]),
        ];
        let hostname = |value: &str| affinity("kubernetes.io/hostname", value);
        assert_eq!(
            node_existence(true, &nodes, &hostname("host-a")),
            NodeExistence::Exists
        );
        // node-a has the label with another value: its name does not count.
        assert_eq!(
            node_existence(true, &nodes, &hostname("node-a")),
            NodeExistence::Gone
        );
        // node-b has no such label: its name is the value local-path would have written.
        assert_eq!(
            node_existence(true, &nodes, &hostname("node-b")),
            NodeExistence::Exists
        );
        assert_eq!(
            node_existence(true, &nodes, &affinity("zone", "z1")),
            NodeExistence::Gone
        );
    }

    #[test]
    fn node_existence_is_unknown_before_sync_and_for_volumes_on_no_single_node() {
        let nodes = [mk_node("node-a", &[])];
        let targets = [
            VolumeNode::Named("node-z".to_owned()),
            affinity("kubernetes.io/hostname", "node-z"),
        ];
        for target in &targets {
            assert_eq!(
                node_existence(false, &nodes, target),
                NodeExistence::Unknown
            );
        }
        for target in [
            VolumeNode::Shared,
            VolumeNode::Unreadable("two terms".to_owned()),
        ] {
            assert_eq!(
                node_existence(true, &nodes, &target),
                NodeExistence::Unknown
            );
        }
    }
}
