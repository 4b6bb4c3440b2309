//! A claim's `spec.selector`, compiled as `metav1.LabelSelectorAsSelector` does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::labels::{Operator, Requirement, RequirementError};

/// Why a label selector is invalid; `field` is the path inside the selector, e.g.
/// `matchExpressions[1].operator`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The operator is not `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[error(
        "{field}: {operator:?} is not a valid label selector operator (expected In, NotIn, Exists or DoesNotExist)"
    )]
    InvalidOperator {
        /// Where in the selector.
        field: String,
        /// The operator given.
        operator: String,
    },
    /// The key, the values or their number are invalid for the operator.
    #[error("{field}: {source}")]
    InvalidRequirement {
        /// Where in the selector.
        field: String,
        /// What is wrong.
        source: RequirementError,
    },
}

/// A validated label selector: every requirement must hold. The empty selector (`{}`)
/// matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Compiles an API label selector, checking it as Kubernetes does.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    /// use provisioner_core::binding::label_selector::LabelSelector;
    ///
    /// let selector = LabelSelector::from_api(&meta::LabelSelector {
    ///     match_labels: Some(BTreeMap::from([("tier".into(), "gold".into())])),
    ///     match_expressions: Some(vec![meta::LabelSelectorRequirement {
    ///         key: "zone".into(),
    ///         operator: "NotIn".into(),
    ///         values: Some(vec!["a".into()]),
    ///     }]),
    /// })?;
    /// let labels = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
    /// assert!(selector.matches(&labels));
    /// # Ok::<(), provisioner_core::binding::label_selector::SelectorError>(())
    /// ```
    pub fn from_api(selector: &meta::LabelSelector) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let requirement = Requirement::new(key, Operator::Equals, vec![value.clone()])
                .map_err(|source| SelectorError::InvalidRequirement {
                    field: format!("matchLabels[{key:?}]"),
                    source,
                })?;
            requirements.push(requirement);
        }
        for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::InvalidOperator {
                        field: format!("matchExpressions[{i}].operator"),
                        operator: other.to_owned(),
                    });
                }
            };
            let values = expression.values.clone().unwrap_or_default();
            let requirement =
                Requirement::new(&expression.key, operator, values).map_err(|source| {
                    SelectorError::InvalidRequirement {
                        field: format!("matchExpressions[{i}]"),
                        source,
                    }
                })?;
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.first_mismatch(labels).is_none()
    }

    /// The first requirement `labels` fail (matchLabels in key order, then matchExpressions
    /// in order), for explaining a mismatch.
    pub fn first_mismatch(&self, labels: &BTreeMap<String, String>) -> Option<&Requirement> {
        self.requirements.iter().find(|r| !r.matches(labels))
    }

    /// The requirements, all of which must hold.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(key: &str, operator: &str, values: &[&str]) -> meta::LabelSelectorRequirement {
        meta::LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        expressions: Vec<meta::LabelSelectorRequirement>,
    ) -> meta::LabelSelector {
        meta::LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| {
                match_labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            match_expressions: (!expressions.is_empty()).then_some(expressions),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::from_api(&meta::LabelSelector::default()).unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn entries_are_anded() {
        let s = LabelSelector::from_api(&selector(
            &[("tier", "gold")],
            vec![
                expr("zone", "In", &["a", "b"]),
                expr("retired", "DoesNotExist", &[]),
                expr("disk", "Exists", &[]),
                expr("team", "NotIn", &["x"]),
            ],
        ))
        .unwrap();
        let good = labels(&[("tier", "gold"), ("zone", "b"), ("disk", "ssd")]);
        assert!(s.matches(&good));
        let mut retired = good.clone();
        retired.insert("retired".into(), "yes".into());
        assert_eq!(
            s.first_mismatch(&retired)
                .map(ToString::to_string)
                .as_deref(),
            Some("!retired")
        );
        let mut other_team = good.clone();
        other_team.insert("team".into(), "x".into());
        assert!(!s.matches(&other_team));
        assert!(!s.matches(&labels(&[
            ("tier", "silver"),
            ("zone", "b"),
            ("disk", "ssd")
        ])));
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let bad_op =
            LabelSelector::from_api(&selector(&[], vec![expr("k", "Gt", &["1"])])).unwrap_err();
        assert_eq!(
            bad_op,
            SelectorError::InvalidOperator {
                field: "matchExpressions[0].operator".into(),
                operator: "Gt".into()
            }
        );
        let no_values =
            LabelSelector::from_api(&selector(&[], vec![expr("k", "In", &[])])).unwrap_err();
        assert!(no_values.to_string().starts_with("matchExpressions[0]: "));
        let exists_values =
            LabelSelector::from_api(&selector(&[], vec![expr("k", "Exists", &["v"])])).unwrap_err();
        assert!(matches!(
            exists_values,
            SelectorError::InvalidRequirement { .. }
        ));
        let bad_label =
            LabelSelector::from_api(&selector(&[("k", "not valid")], vec![])).unwrap_err();
        assert!(bad_label.to_string().starts_with("matchLabels[\"k\"]: "));
    }
}
