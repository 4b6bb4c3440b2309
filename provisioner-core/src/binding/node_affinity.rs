//! A volume's node affinity (`spec.nodeAffinity.required`), evaluated as
//! `storage/volume.CheckNodeAffinity` and `scheduling/corev1/nodeaffinity` do.
//!
//! Terms are ORed; within a term, `matchExpressions` (on labels) and `matchFields` (on node
//! fields) are ANDed. A term with neither matches nothing. A term that fails to parse fails
//! on its own: the other terms may still match. When checking a volume, Kubernetes builds
//! the node from its labels only, with no name, so `matchFields` requirements are parsed
//! (and a malformed one fails its term) but never evaluated.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
};

use super::labels::{Operator, Requirement, RequirementError};

/// Why one node selector term cannot be parsed; the term then matches no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermError {
    /// A `matchExpressions` operator that is not In, NotIn, Exists, DoesNotExist, Gt or Lt.
    #[error("matchExpressions[{index}]: {operator:?} is not a valid node selector operator")]
    InvalidOperator {
        /// Position in `matchExpressions`.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// A `matchExpressions` entry with an invalid key or values.
    #[error("matchExpressions[{index}]: {source}")]
    InvalidRequirement {
        /// Position in `matchExpressions`.
        index: usize,
        /// What is wrong.
        source: RequirementError,
    },
    /// A `matchFields` operator other than In/NotIn.
    #[error("matchFields[{index}]: {operator:?} is not a valid node field selector operator")]
    InvalidFieldOperator {
        /// Position in `matchFields`.
        index: usize,
        /// The operator given.
        operator: String,
    },
    /// A `matchFields` entry without exactly one value.
    #[error("matchFields[{index}]: a node field selector takes exactly one value, not {count}")]
    FieldValueCount {
        /// Position in `matchFields`.
        index: usize,
        /// How many values were given.
        count: usize,
    },
}

/// Why a volume's node affinity rejects a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityMismatch {
    /// Terms that failed to parse, by position in `nodeSelectorTerms`.
    pub invalid_terms: Vec<(usize, TermError)>,
}

impl fmt::Display for AffinityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no node selector term of the volume's node affinity matches the node")?;
        for (i, (index, error)) in self.invalid_terms.iter().enumerate() {
            let sep = if i == 0 { " (" } else { "; " };
            write!(f, "{sep}term {index} is invalid: {error}")?;
        }
        if !self.invalid_terms.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// One `metadata.name` requirement of `matchFields`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    key: String,
    equal: bool,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedTerm {
    labels: Vec<Requirement>,
    fields: Vec<FieldRequirement>,
}

/// A compiled `NodeSelector` (`nodeaffinity.LazyErrorNodeSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledNodeSelector {
    /// Non-empty terms in order, parsed or with their parse error.
    terms: Vec<(usize, Result<ParsedTerm, TermError>)>,
}

impl CompiledNodeSelector {
    /// Parses every term; parse errors are kept per term, never fatal.
    pub fn new(selector: &NodeSelector) -> CompiledNodeSelector {
        let terms = selector
            .node_selector_terms
            .iter()
            .enumerate()
            .filter(|(_, term)| !is_empty_term(term))
            .map(|(index, term)| (index, parse_term(term)))
            .collect();
        CompiledNodeSelector { terms }
    }

    /// Whether a node with these labels (and this name, if known) matches some term.
    ///
    /// `matchFields` requirements are evaluated only when a name is given.
    pub fn matches(
        &self,
        labels: &BTreeMap<String, String>,
        node_name: Option<&str>,
    ) -> Result<(), AffinityMismatch> {
        let mut invalid_terms = Vec::new();
        for (index, term) in &self.terms {
            match term {
                Err(error) => invalid_terms.push((*index, error.clone())),
                Ok(term) if term_matches(term, labels, node_name) => return Ok(()),
                Ok(_) => {}
            }
        }
        Err(AffinityMismatch { invalid_terms })
    }
}

/// `CheckNodeAffinity(pv, nodeLabels)`: no node affinity, or no `required` part, allows
/// every node; otherwise some term must match a node that has `node_labels` and no name.
///
/// ```
/// use std::collections::BTreeMap;
/// use k8s_openapi::api::core::v1::PersistentVolume;
/// use provisioner_core::binding::node_affinity::check_node_affinity;
///
/// let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "local-1"},
///     "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
///         {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}
///     ]}}}
/// }))?;
/// let n1 = BTreeMap::from([("kubernetes.io/hostname".to_owned(), "n1".to_owned())]);
/// let n2 = BTreeMap::from([("kubernetes.io/hostname".to_owned(), "n2".to_owned())]);
/// assert!(check_node_affinity(&pv, &n1).is_ok());
/// assert!(check_node_affinity(&pv, &n2).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn check_node_affinity(
    pv: &PersistentVolume,
    node_labels: &BTreeMap<String, String>,
) -> Result<(), AffinityMismatch> {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return Ok(());
    };
    CompiledNodeSelector::new(required).matches(node_labels, None)
}

fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty)
}

fn parse_term(term: &NodeSelectorTerm) -> Result<ParsedTerm, TermError> {
    let labels = term
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, r)| parse_label_requirement(index, r))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = term
        .match_fields
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, r)| parse_field_requirement(index, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParsedTerm { labels, fields })
}

fn parse_label_requirement(
    index: usize,
    requirement: &NodeSelectorRequirement,
) -> Result<Requirement, TermError> {
    let operator = match requirement.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        other => {
            return Err(TermError::InvalidOperator {
                index,
                operator: other.to_owned(),
            });
        }
    };
    let values = requirement.values.clone().unwrap_or_default();
    Requirement::new(&requirement.key, operator, values)
        .map_err(|source| TermError::InvalidRequirement { index, source })
}

fn parse_field_requirement(
    index: usize,
    requirement: &NodeSelectorRequirement,
) -> Result<FieldRequirement, TermError> {
    let equal = match requirement.operator.as_str() {
        "In" => true,
        "NotIn" => false,
        other => {
            return Err(TermError::InvalidFieldOperator {
                index,
                operator: other.to_owned(),
            });
        }
    };
    match requirement.values.as_deref().unwrap_or(&[]) {
        [value] => Ok(FieldRequirement {
            key: requirement.key.clone(),
            equal,
            value: value.clone(),
        }),
        values => Err(TermError::FieldValueCount {
            index,
            count: values.len(),
        }),
    }
}

fn term_matches(
    term: &ParsedTerm,
    labels: &BTreeMap<String, String>,
    node_name: Option<&str>,
) -> bool {
    // An empty matchExpressions list puts no constraint on labels here: such a term has
    // matchFields (empty terms were dropped) and is decided by them.
    if !term.labels.iter().all(|r| r.matches(labels)) {
        return false;
    }
    // Node fields hold only metadata.name, and only when the node has a name.
    match node_name.filter(|n| !n.is_empty()) {
        None => true,
        Some(name) => term.fields.iter().all(|f| {
            let actual = if f.key == "metadata.name" { name } else { "" };
            (actual == f.value) == f.equal
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeSpec, VolumeNodeAffinity};

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn term(
        expressions: Vec<NodeSelectorRequirement>,
        fields: Vec<NodeSelectorRequirement>,
    ) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: (!expressions.is_empty()).then_some(expressions),
            match_fields: (!fields.is_empty()).then_some(fields),
        }
    }

    fn pv_with(terms: Option<Vec<NodeSelectorTerm>>) -> PersistentVolume {
        PersistentVolume {
            spec: Some(PersistentVolumeSpec {
                node_affinity: Some(VolumeNodeAffinity {
                    required: terms.map(|node_selector_terms| NodeSelector {
                        node_selector_terms,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_affinity_or_no_required_allows_every_node() {
        assert!(check_node_affinity(&PersistentVolume::default(), &labels(&[])).is_ok());
        assert!(check_node_affinity(&pv_with(None), &labels(&[])).is_ok());
    }

    #[test]
    fn no_terms_or_empty_terms_match_nothing() {
        assert!(check_node_affinity(&pv_with(Some(vec![])), &labels(&[("a", "b")])).is_err());
        let empty = term(vec![], vec![]);
        assert!(check_node_affinity(&pv_with(Some(vec![empty])), &labels(&[("a", "b")])).is_err());
    }

    #[test]
    fn terms_are_ored_and_expressions_anded() {
        let pv = pv_with(Some(vec![
            term(
                vec![
                    requirement("zone", "In", &["a"]),
                    requirement("disk", "Exists", &[]),
                ],
                vec![],
            ),
            term(vec![requirement("zone", "In", &["b"])], vec![]),
        ]));
        assert!(check_node_affinity(&pv, &labels(&[("zone", "a"), ("disk", "ssd")])).is_ok());
        assert!(check_node_affinity(&pv, &labels(&[("zone", "a")])).is_err());
        assert!(check_node_affinity(&pv, &labels(&[("zone", "b")])).is_ok());
    }

    #[test]
    fn all_operators() {
        let node = labels(&[("zone", "a"), ("cpus", "8")]);
        let check = |r: NodeSelectorRequirement| {
            check_node_affinity(&pv_with(Some(vec![term(vec![r], vec![])])), &node).is_ok()
        };
        assert!(check(requirement("zone", "In", &["a", "b"])));
        assert!(!check(requirement("zone", "NotIn", &["a"])));
        assert!(check(requirement("rack", "NotIn", &["r1"])));
        assert!(check(requirement("zone", "Exists", &[])));
        assert!(check(requirement("rack", "DoesNotExist", &[])));
        assert!(check(requirement("cpus", "Gt", &["4"])));
        assert!(!check(requirement("cpus", "Gt", &["8"])));
        assert!(check(requirement("cpus", "Lt", &["9"])));
        assert!(!check(requirement("zone", "Lt", &["9"])));
        assert!(!check(requirement("gpus", "Gt", &["0"])));
    }

    #[test]
    fn a_term_that_fails_to_parse_fails_alone() {
        let bad = term(vec![requirement("zone", "Gt", &["a"])], vec![]);
        let good = term(vec![requirement("zone", "In", &["a"])], vec![]);
        let node = labels(&[("zone", "a")]);
        assert!(check_node_affinity(&pv_with(Some(vec![bad.clone(), good])), &node).is_ok());
        let err = check_node_affinity(&pv_with(Some(vec![bad])), &node).unwrap_err();
        assert_eq!(err.invalid_terms.len(), 1);
        assert!(err.to_string().contains("term 0 is invalid"));
        let bad_op = term(vec![requirement("zone", "Near", &["a"])], vec![]);
        assert!(check_node_affinity(&pv_with(Some(vec![bad_op])), &node).is_err());
    }

    #[test]
    fn match_fields_are_parsed_but_not_evaluated_for_volumes() {
        let node = labels(&[("zone", "a")]);
        let fields_only = term(
            vec![],
            vec![requirement("metadata.name", "In", &["other-node"])],
        );
        assert!(check_node_affinity(&pv_with(Some(vec![fields_only.clone()])), &node).is_ok());
        let mixed = term(
            vec![requirement("zone", "In", &["b"])],
            vec![requirement("metadata.name", "In", &["n1"])],
        );
        assert!(check_node_affinity(&pv_with(Some(vec![mixed])), &node).is_err());
        let malformed = term(vec![], vec![requirement("metadata.name", "Exists", &[])]);
        assert!(check_node_affinity(&pv_with(Some(vec![malformed])), &node).is_err());
        let two_values = term(
            vec![],
            vec![requirement("metadata.name", "In", &["a", "b"])],
        );
        assert!(check_node_affinity(&pv_with(Some(vec![two_values])), &node).is_err());
        // With a node name, as the scheduler's own node-affinity plugin evaluates them.
        let selector = NodeSelector {
            node_selector_terms: vec![fields_only],
        };
        let compiled = CompiledNodeSelector::new(&selector);
        assert!(compiled.matches(&node, Some("other-node")).is_ok());
        assert!(compiled.matches(&node, Some("n1")).is_err());
    }
}
