//! Which instance acts on which claim and volume: node-local ownership.
//!
//! Pure: no I/O. The provisioner runs once per node (a DaemonSet). The instance for node
//! *N*:
//!
//! - provisions claims whose `volume.kubernetes.io/selected-node` is *N*, and deletes
//!   volumes whose recorded node (or node affinity) is *N*;
//! - stays silent about everything else ([`ClaimDecision::Ignore`],
//!   [`DeleteDecision::Ignore`]: no Event, no Warning).
//!
//! Work that belongs to no node goes to the one instance that holds *cluster-wide duties*
//! (the binary decides which one, for example by holding a Lease):
//!
//! - claims without a selected node: shared-filesystem claims with Immediate binding are
//!   provisioned; node-local claims with Immediate binding get a clear error telling the
//!   operator to use `WaitForFirstConsumer` (reported once, by that instance only);
//! - shared-filesystem volumes without a node;
//! - volumes of nodes that no longer exist, per the [`NodeGonePolicy`].

use std::collections::BTreeMap;

/// The node this instance serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The Node object's name (`NODE_NAME` from the downward API).
    pub name: String,
    /// The Node's labels (for node-affinity values and keys other than the name).
    pub labels: BTreeMap<String, String>,
}

impl NodeIdentity {
    /// A node with no labels known.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    /// Sets the node's labels.
    #[must_use]
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The value to put in a PV's node affinity for `key`: the node's label, else its
    /// name (as local-path does).
    pub fn affinity_value(&self, key: &str) -> &str {
        self.labels
            .get(key)
            .map_or(self.name.as_str(), String::as_str)
    }

    /// Whether a node-affinity term `key In [value]` selects this node.
    pub fn matches(&self, key: &str, value: &str) -> bool {
        match self.labels.get(key) {
            Some(label) => label == value,
            // Labels unknown: local-path's fallback value is the node name.
            None => value == self.name,
        }
    }
}

/// Where a volume's data lives, as recorded on its PersistentVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeNode {
    /// On the node with this name (recorded by name).
    Named(String),
    /// On the node selected by `key In [value]` (older local-path volumes record only
    /// their node affinity).
    Affinity {
        /// The label key.
        key: String,
        /// The value.
        value: String,
    },
    /// On a filesystem shared by all nodes.
    Shared,
    /// The volume has a node affinity, but not one naming a single node.
    Unreadable(String),
}

/// Whether a volume's node still exists, as far as the caller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeExistence {
    /// The node exists.
    Exists,
    /// The node is gone.
    Gone,
    /// Not known (for example, the node cache is not synced yet).
    Unknown,
}

/// What to do with a volume whose node no longer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeGonePolicy {
    /// Leave the data where it is (the disk is unreachable anyway) and let the
    /// PersistentVolume object be deleted, with a message saying so. The default, as in
    /// local-path since lpp#31.
    #[default]
    ForgetVolume,
    /// Keep the PersistentVolume (Released) until the node comes back, then delete normally.
    KeepVolume,
}

/// What this instance does with a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Provision it.
    Provision,
    /// Not this instance's: stay silent.
    Ignore(String),
    /// A node-local class with Immediate binding and no selected node: tell the operator.
    NeedsWaitForFirstConsumer,
}

/// What this instance does with a Released volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteDecision {
    /// Remove its directory.
    RemoveDirectory,
    /// Its node is gone: keep the data, let the PersistentVolume go.
    Forget {
        /// The node that is gone.
        node: String,
    },
    /// Its node is gone: keep the PersistentVolume until the node returns.
    WaitForNode {
        /// The node that is gone.
        node: String,
    },
    /// Not this instance's: stay silent.
    Ignore(String),
    /// Nobody can tell which node holds the volume: report it (cluster-wide instance only).
    Refuse(String),
}

/// Whether this instance should look at a claim at all: a cheap pre-filter on the claim
/// alone (the selected node). [`decide_claim`] decides with the class known.
pub fn claim_is_ours(me: &NodeIdentity, cluster_wide: bool, selected_node: Option<&str>) -> bool {
    match selected_node {
        Some(node) => node == me.name,
        None => cluster_wide,
    }
}

/// Decides what this instance does with a claim.
///
/// ```
/// use backend_hostpath::ownership::{decide_claim, ClaimDecision, NodeIdentity};
///
/// let me = NodeIdentity::new("node-a");
/// assert_eq!(decide_claim(&me, false, Some("node-a"), true), ClaimDecision::Provision);
/// assert!(matches!(decide_claim(&me, false, Some("node-b"), true), ClaimDecision::Ignore(_)));
/// assert_eq!(decide_claim(&me, true, None, true), ClaimDecision::NeedsWaitForFirstConsumer);
/// ```
pub fn decide_claim(
    me: &NodeIdentity,
    cluster_wide: bool,
    selected_node: Option<&str>,
    node_local: bool,
) -> ClaimDecision {
    match selected_node {
        Some(node) if node == me.name => ClaimDecision::Provision,
        Some(node) => ClaimDecision::Ignore(format!(
            "the claim is for node {node}; this instance serves node {}",
            me.name
        )),
        None if !cluster_wide => ClaimDecision::Ignore(
            "the claim has no selected node; the instance with cluster-wide duties handles it"
                .to_owned(),
        ),
        None if node_local => ClaimDecision::NeedsWaitForFirstConsumer,
        None => ClaimDecision::Provision,
    }
}

/// Decides what this instance does with a Released volume that is to be deleted.
/// `existence` says whether the volume's node exists (ignored for [`VolumeNode::Shared`]).
pub fn decide_delete(
    me: &NodeIdentity,
    cluster_wide: bool,
    volume_node: &VolumeNode,
    existence: NodeExistence,
    policy: NodeGonePolicy,
) -> DeleteDecision {
    let (is_mine, node) = match volume_node {
        VolumeNode::Named(node) => (*node == me.name, node.clone()),
        VolumeNode::Affinity { key, value } => (me.matches(key, value), format!("{key}={value}")),
        VolumeNode::Unreadable(why) => {
            return if cluster_wide {
                DeleteDecision::Refuse(format!(
                    "cannot tell which node holds the volume ({why}); delete its directory by \
                     hand and remove the PersistentVolume"
                ))
            } else {
                DeleteDecision::Ignore(format!("the volume's node cannot be read: {why}"))
            };
        }
        VolumeNode::Shared => {
            return if cluster_wide {
                DeleteDecision::RemoveDirectory
            } else {
                DeleteDecision::Ignore(
                    "a shared-filesystem volume; the instance with cluster-wide duties deletes it"
                        .to_owned(),
                )
            };
        }
    };
    if is_mine {
        return DeleteDecision::RemoveDirectory;
    }
    let elsewhere = || {
        DeleteDecision::Ignore(format!(
            "the volume is on node {node}; this instance serves node {}",
            me.name
        ))
    };
    if !cluster_wide {
        return elsewhere();
    }
    match (existence, policy) {
        (NodeExistence::Gone, NodeGonePolicy::ForgetVolume) => DeleteDecision::Forget { node },
        (NodeExistence::Gone, NodeGonePolicy::KeepVolume) => DeleteDecision::WaitForNode { node },
        (NodeExistence::Exists | NodeExistence::Unknown, _) => elsewhere(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_node(name: &str, labels: &[(&str, &str)]) -> NodeIdentity {
        NodeIdentity::new(name).with_labels(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    const HOSTNAME: &str = "kubernetes.io/hostname";

    #[test]
    fn each_instance_provisions_only_its_own_claims() {
        let a = mk_node("a", &[]);
        for cluster_wide in [false, true] {
            assert_eq!(
                decide_claim(&a, cluster_wide, Some("a"), true),
                ClaimDecision::Provision
            );
            assert!(matches!(
                decide_claim(&a, cluster_wide, Some("b"), true),
                ClaimDecision::Ignore(_)
            ));
            assert!(matches!(
                decide_claim(&a, cluster_wide, Some("b"), false),
                ClaimDecision::Ignore(_)
            ));
            assert!(claim_is_ours(&a, cluster_wide, Some("a")));
            assert!(!claim_is_ours(&a, cluster_wide, Some("b")));
        }
    }

    #[test]
    fn claims_without_a_node_go_to_the_cluster_wide_instance_only() {
        let a = mk_node("a", &[]);
        assert!(matches!(
            decide_claim(&a, false, None, true),
            ClaimDecision::Ignore(_)
        ));
        assert!(matches!(
            decide_claim(&a, false, None, false),
            ClaimDecision::Ignore(_)
        ));
        assert!(!claim_is_ours(&a, false, None));
        assert_eq!(
            decide_claim(&a, true, None, true),
            ClaimDecision::NeedsWaitForFirstConsumer
        );
        assert_eq!(
            decide_claim(&a, true, None, false),
            ClaimDecision::Provision
        );
        assert!(claim_is_ours(&a, true, None));
    }

    #[test]
    fn each_instance_deletes_only_its_own_volumes() {
        let a = mk_node("a", &[(HOSTNAME, "a.example.com"), ("rack", "r1")]);
        let decide = |node: VolumeNode| {
            decide_delete(
                &a,
                false,
                &node,
                NodeExistence::Exists,
                NodeGonePolicy::default(),
            )
        };
        assert_eq!(
            decide(VolumeNode::Named("a".into())),
            DeleteDecision::RemoveDirectory
        );
        assert!(matches!(
            decide(VolumeNode::Named("b".into())),
            DeleteDecision::Ignore(_)
        ));
        let by_hostname = VolumeNode::Affinity {
            key: HOSTNAME.into(),
            value: "a.example.com".into(),
        };
        assert_eq!(decide(by_hostname), DeleteDecision::RemoveDirectory);
        let other_host = VolumeNode::Affinity {
            key: HOSTNAME.into(),
            value: "a".into(),
        };
        assert!(
            matches!(decide(other_host), DeleteDecision::Ignore(_)),
            "the label wins over the name"
        );
        let unknown_label = VolumeNode::Affinity {
            key: "zone".into(),
            value: "a".into(),
        };
        assert_eq!(
            decide(unknown_label),
            DeleteDecision::RemoveDirectory,
            "falls back to the name"
        );
        assert!(matches!(
            decide(VolumeNode::Shared),
            DeleteDecision::Ignore(_)
        ));
    }

    #[test]
    fn volumes_of_vanished_nodes_follow_the_policy_on_the_cluster_wide_instance() {
        let a = mk_node("a", &[]);
        let gone = VolumeNode::Named("b".into());
        let decide = |cluster_wide, existence, policy| {
            decide_delete(&a, cluster_wide, &gone, existence, policy)
        };
        assert_eq!(
            decide(true, NodeExistence::Gone, NodeGonePolicy::ForgetVolume),
            DeleteDecision::Forget { node: "b".into() }
        );
        assert_eq!(
            decide(true, NodeExistence::Gone, NodeGonePolicy::KeepVolume),
            DeleteDecision::WaitForNode { node: "b".into() }
        );
        assert!(matches!(
            decide(true, NodeExistence::Exists, NodeGonePolicy::ForgetVolume),
            DeleteDecision::Ignore(_)
        ));
        assert!(matches!(
            decide(true, NodeExistence::Unknown, NodeGonePolicy::ForgetVolume),
            DeleteDecision::Ignore(_)
        ));
        assert!(matches!(
            decide(false, NodeExistence::Gone, NodeGonePolicy::ForgetVolume),
            DeleteDecision::Ignore(_)
        ));
        assert_eq!(
            decide_delete(
                &a,
                true,
                &VolumeNode::Shared,
                NodeExistence::Unknown,
                NodeGonePolicy::default()
            ),
            DeleteDecision::RemoveDirectory
        );
    }

    #[test]
    fn unreadable_volumes_are_reported_once() {
        let a = mk_node("a", &[]);
        let odd = VolumeNode::Unreadable("two values".into());
        let decide = |cluster_wide| {
            decide_delete(
                &a,
                cluster_wide,
                &odd,
                NodeExistence::Unknown,
                NodeGonePolicy::default(),
            )
        };
        assert!(matches!(decide(false), DeleteDecision::Ignore(_)));
        assert!(matches!(decide(true), DeleteDecision::Refuse(_)));
    }

    #[test]
    fn affinity_values_use_the_label_then_the_name() {
        let a = mk_node("node-a", &[(HOSTNAME, "host-a")]);
        assert_eq!(a.affinity_value(HOSTNAME), "host-a");
        assert_eq!(a.affinity_value("topology.example.com/node"), "node-a");
    }
}
