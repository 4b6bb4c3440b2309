//! Label requirements, parsed and matched as `k8s.io/apimachinery/pkg/labels` does.
//!
//! Both a claim's `spec.selector` and a volume's node affinity compile to a list of
//! [`Requirement`]s that must all hold.

use std::collections::BTreeMap;
use std::fmt;

/// How a [`Requirement`] compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `matchLabels` entry: the label exists and equals the single value.
    Equals,
    /// The label exists and its value is one of the values.
    In,
    /// The label is missing, or its value is none of the values.
    NotIn,
    /// The label exists.
    Exists,
    /// The label is missing.
    DoesNotExist,
    /// The label exists, parses as an int64, and is greater than the single value.
    GreaterThan,
    /// The label exists, parses as an int64, and is less than the single value.
    LessThan,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equals => "=",
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::GreaterThan => "Gt",
            Operator::LessThan => "Lt",
        })
    }
}

/// Why a requirement is invalid (`labels.NewRequirement`'s checks, first failure only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// The key is not a qualified name (`[prefix/]name`).
    #[error("key {key:?} is not a valid label key: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `In`/`NotIn` with no values.
    #[error("operator {operator} needs at least one value")]
    ValuesRequired {
        /// The operator.
        operator: Operator,
    },
    /// `=`, `Gt` or `Lt` without exactly one value.
    #[error("operator {operator} takes exactly one value, not {count}")]
    ExactlyOneValue {
        /// The operator.
        operator: Operator,
        /// How many values were given.
        count: usize,
    },
    /// `Exists`/`DoesNotExist` with values.
    #[error("operator {operator} takes no values, not {count}")]
    NoValuesAllowed {
        /// The operator.
        operator: Operator,
        /// How many values were given.
        count: usize,
    },
    /// A `Gt`/`Lt` value that is not an int64.
    #[error("value {value:?} of operator {operator} is not an integer")]
    NotAnInteger {
        /// The operator.
        operator: Operator,
        /// The value.
        value: String,
    },
    /// A value that is not a valid label value.
    #[error("value {value:?} is not a valid label value: {reason}")]
    InvalidValue {
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One validated requirement on a set of labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Validates a requirement as `labels.NewRequirement` does.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use provisioner_core::binding::labels::{Operator, Requirement};
    ///
    /// let tier = Requirement::new("tier", Operator::In, vec!["gold".into()])?;
    /// let labels = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
    /// assert!(tier.matches(&labels));
    /// assert!(Requirement::new("tier", Operator::In, vec![]).is_err());
    /// # Ok::<(), provisioner_core::binding::labels::RequirementError>(())
    /// ```
    pub fn new(
        key: &str,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, RequirementError> {
        validate_qualified_name(key).map_err(|reason| RequirementError::InvalidKey {
            key: key.to_owned(),
            reason,
        })?;
        let count = values.len();
        match operator {
            Operator::In | Operator::NotIn if count == 0 => {
                return Err(RequirementError::ValuesRequired { operator });
            }
            Operator::Equals | Operator::GreaterThan | Operator::LessThan if count != 1 => {
                return Err(RequirementError::ExactlyOneValue { operator, count });
            }
            Operator::Exists | Operator::DoesNotExist if count != 0 => {
                return Err(RequirementError::NoValuesAllowed { operator, count });
            }
            _ => {}
        }
        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for value in &values {
                if value.parse::<i64>().is_err() {
                    return Err(RequirementError::NotAnInteger {
                        operator,
                        value: value.clone(),
                    });
                }
            }
        }
        for value in &values {
            validate_label_value(value).map_err(|reason| RequirementError::InvalidValue {
                value: value.clone(),
                reason,
            })?;
        }
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (empty for `Exists`/`DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement (`Requirement.Matches`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let found = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => found.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => found.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                // A label that is not an integer never satisfies Gt/Lt.
                let Some(Ok(actual)) = found.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let Some(Ok(bound)) = self.values.first().map(|v| v.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// Written as `kubectl` selectors are: `tier=gold`, `tier in (gold,silver)`, `!tier`, `n>3`.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, values),
            Operator::In => write!(f, "{} in ({})", self.key, values),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, values),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, values),
            Operator::LessThan => write!(f, "{}<{}", self.key, values),
        }
    }
}

const NAME_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// `validation.IsQualifiedName`: `[DNS-subdomain "/"] name`, name at most 63 characters of
/// alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric.
fn validate_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => return Err("a qualified name has at most one '/'".to_owned()),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("the prefix before '/' must not be empty".to_owned());
        }
        validate_dns_subdomain(prefix)?;
    }
    if name.is_empty() {
        return Err("the name part must not be empty".to_owned());
    }
    validate_name_part(name)
}

/// `validation.IsValidLabelValue`: empty, or a name part.
fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name_part(value)
}

fn validate_name_part(name: &str) -> Result<(), String> {
    if name.len() > NAME_MAX {
        return Err(format!("must be at most {NAME_MAX} characters"));
    }
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err("must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric".to_owned())
    }
}

fn validate_dns_subdomain(prefix: &str) -> Result<(), String> {
    if prefix.len() > SUBDOMAIN_MAX {
        return Err(format!(
            "the prefix must be at most {SUBDOMAIN_MAX} characters"
        ));
    }
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if prefix.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("the prefix must be a lowercase DNS subdomain".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement::new(
            key,
            operator,
            values.iter().map(|v| (*v).to_owned()).collect(),
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    #[test]
    fn operators_match_like_apimachinery() {
        let l = labels(&[("tier", "gold"), ("n", "5"), ("word", "five")]);
        assert!(req("tier", Operator::Equals, &["gold"]).matches(&l));
        assert!(!req("tier", Operator::Equals, &["silver"]).matches(&l));
        assert!(req("tier", Operator::In, &["silver", "gold"]).matches(&l));
        assert!(!req("zone", Operator::In, &["a"]).matches(&l));
        assert!(
            req("zone", Operator::NotIn, &["a"]).matches(&l),
            "missing key satisfies NotIn"
        );
        assert!(!req("tier", Operator::NotIn, &["gold"]).matches(&l));
        assert!(req("tier", Operator::Exists, &[]).matches(&l));
        assert!(req("zone", Operator::DoesNotExist, &[]).matches(&l));
        assert!(req("n", Operator::GreaterThan, &["4"]).matches(&l));
        assert!(!req("n", Operator::GreaterThan, &["5"]).matches(&l));
        assert!(req("n", Operator::LessThan, &["6"]).matches(&l));
        assert!(
            !req("word", Operator::LessThan, &["6"]).matches(&l),
            "non-integer label"
        );
        assert!(
            !req("zone", Operator::LessThan, &["6"]).matches(&l),
            "missing label"
        );
    }

    #[test]
    fn invalid_requirements_are_rejected() {
        let err = |key: &str, op, values: &[&str]| {
            Requirement::new(key, op, values.iter().map(|v| (*v).to_owned()).collect()).unwrap_err()
        };
        assert!(matches!(
            err("k", Operator::In, &[]),
            RequirementError::ValuesRequired { .. }
        ));
        assert!(matches!(
            err("k", Operator::Exists, &["x"]),
            RequirementError::NoValuesAllowed { .. }
        ));
        assert!(matches!(
            err("k", Operator::GreaterThan, &["1", "2"]),
            RequirementError::ExactlyOneValue { .. }
        ));
        assert!(matches!(
            err("k", Operator::LessThan, &["x"]),
            RequirementError::NotAnInteger { .. }
        ));
        assert!(matches!(
            err("", Operator::Exists, &[]),
            RequirementError::InvalidKey { .. }
        ));
        assert!(matches!(
            err("a/b/c", Operator::Exists, &[]),
            RequirementError::InvalidKey { .. }
        ));
        assert!(matches!(
            err("Example.COM/x", Operator::Exists, &[]),
            RequirementError::InvalidKey { .. }
        ));
        assert!(matches!(
            err("-x", Operator::Exists, &[]),
            RequirementError::InvalidKey { .. }
        ));
        assert!(matches!(
            err("k", Operator::In, &["bad value"]),
            RequirementError::InvalidValue { .. }
        ));
        assert!(
            Requirement::new("example.com/tier_1.x", Operator::In, vec![String::new()]).is_ok()
        );
        assert!(Requirement::new(&"k".repeat(64), Operator::Exists, vec![]).is_err());
    }

    #[test]
    fn displays_like_a_kubectl_selector() {
        assert_eq!(
            req("tier", Operator::In, &["a", "b"]).to_string(),
            "tier in (a,b)"
        );
        assert_eq!(
            req("tier", Operator::DoesNotExist, &[]).to_string(),
            "!tier"
        );
        assert_eq!(req("n", Operator::GreaterThan, &["3"]).to_string(), "n>3");
    }
}
