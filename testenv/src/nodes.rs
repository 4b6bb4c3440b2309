//! Node objects for kwok to simulate.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::flags::FAKE_NODE_ANNOTATION;

/// A node that kwok manages: roomy enough that capacity never decides a test's scheduling.
pub(crate) fn fake_node(name: &str) -> Node {
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ("type".to_owned(), "kwok".to_owned()),
    ]);
    let annotations = BTreeMap::from([(
        FAKE_NODE_ANNOTATION.0.to_owned(),
        FAKE_NODE_ANNOTATION.1.to_owned(),
    )]);
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("32".to_owned())),
        ("memory".to_owned(), Quantity("256Gi".to_owned())),
        ("pods".to_owned(), Quantity("110".to_owned())),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            ..NodeStatus::default()
        }),
    }
}

/// Whether the node reports condition `Ready=True`.
pub(crate) fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeCondition;

    fn mk_condition(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            ..NodeCondition::default()
        }
    }

    fn with_conditions(conditions: Vec<NodeCondition>) -> Node {
        let mut node = fake_node("n");
        node.status
            .get_or_insert_with(NodeStatus::default)
            .conditions = Some(conditions);
        node
    }

    #[test]
    fn fake_nodes_carry_the_kwok_annotation_and_hostname_label() {
        let node = fake_node("fake-1");
        let meta = &node.metadata;
        assert_eq!(
            meta.annotations.as_ref().unwrap()["kwok.x-k8s.io/node"],
            "fake"
        );
        assert_eq!(
            meta.labels.as_ref().unwrap()["kubernetes.io/hostname"],
            "fake-1"
        );
        assert!(node.spec.is_none(), "no taints");
    }

    #[test]
    fn readiness_is_the_ready_condition() {
        assert!(!is_ready(&fake_node("n")));
        assert!(!is_ready(&with_conditions(vec![mk_condition(
            "Ready", "False"
        )])));
        assert!(!is_ready(&with_conditions(vec![mk_condition(
            "MemoryPressure",
            "True"
        )])));
        assert!(is_ready(&with_conditions(vec![
            mk_condition("MemoryPressure", "False"),
            mk_condition("Ready", "True"),
        ])));
    }
}
