//! `pathPattern`: the directory template, rendered so that it cannot leave the export.
//!
//! Syntax as in nfs-subdir-external-provisioner (a string substitution, not a Go
//! template): `${.PVC.namespace}`, `${.PVC.name}`, `${.PVC.labels.<key>}`,
//! `${.PVC.annotations.<key>}`, plus `${.PV.name}` (the volume's name, which users asked
//! nfs-subdir for). A key runs to the first `}`, so it may contain `.` and `/`
//! (`${.PVC.annotations.nfs.io/storage-path}`). Placeholders may appear anywhere, any
//! number of times; `/` in the pattern (or in a value) nests directories.
//!
//! Where nfs-subdir substituted an empty string and let `filepath.Join` clean the result —
//! collapsing a claim onto a parent directory shared with other claims, or climbing out of
//! the export with `..` — rendering here fails with a [`PathPatternError`] naming the claim
//! and the offending placeholder or value:
//!
//! - an unknown placeholder (`${.PVC.Namespace}`, `${.PVC.uid}`) is refused when the class
//!   is parsed;
//! - a label or annotation that is missing or empty is refused;
//! - a result that is absolute, has an empty, `.` or `..` segment, or a control character
//!   is refused (see [`VolumePath`]).
//!
//! One harmless quirk is accepted for compatibility: a single trailing `/` in the pattern
//! (`${.PVC.namespace}/${.PVC.name}/`) is dropped, as `filepath.Join` did.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use provisioner_core::volume_path::{VolumePath, VolumePathError};

/// Why a pattern cannot be parsed or rendered for a claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathPatternError {
    /// `${` without a closing `}`.
    #[error("pattern {pattern:?} has a '${{' without a closing '}}'")]
    Unterminated {
        /// The pattern.
        pattern: String,
    },
    /// A placeholder this backend does not know (nfs-subdir rendered these as "").
    #[error(
        "unknown placeholder {placeholder}; known are ${{.PVC.namespace}}, ${{.PVC.name}}, \
         ${{.PVC.labels.<key>}}, ${{.PVC.annotations.<key>}} and ${{.PV.name}}"
    )]
    UnknownPlaceholder {
        /// The placeholder as written.
        placeholder: String,
    },
    /// The pattern's fixed parts alone already make an unsafe path.
    #[error("pattern {pattern:?} cannot produce a safe directory: {reason}")]
    UnsafePattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: VolumePathError,
    },
    /// A label or annotation the pattern needs is missing or empty on the claim.
    #[error(
        "claim {claim}: {placeholder} resolves to nothing (missing or empty), which would \
         collapse the directory onto a parent shared with other claims"
    )]
    Unresolved {
        /// The claim, `namespace/name`.
        claim: String,
        /// The placeholder as written.
        placeholder: String,
    },
    /// A placeholder's value makes the directory unsafe (`..`, a leading `/`, …).
    #[error("claim {claim}: {placeholder} has the value {value:?}, refused: {reason}")]
    UnsafeValue {
        /// The claim, `namespace/name`.
        claim: String,
        /// The placeholder as written.
        placeholder: String,
        /// Its value on the claim.
        value: String,
        /// What is wrong with the resulting path.
        reason: VolumePathError,
    },
    /// The rendered directory is unsafe, and no single value is to blame.
    #[error("claim {claim}: the directory {rendered:?} is refused: {reason}")]
    UnsafePath {
        /// The claim, `namespace/name`.
        claim: String,
        /// The rendered directory.
        rendered: String,
        /// What is wrong with it.
        reason: VolumePathError,
    },
}

/// One `${…}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// `${.PVC.namespace}`.
    Namespace,
    /// `${.PVC.name}`.
    Name,
    /// `${.PVC.labels.<key>}`.
    Label(String),
    /// `${.PVC.annotations.<key>}`.
    Annotation(String),
    /// `${.PV.name}`.
    VolumeName,
}

impl Placeholder {
    fn parse(inner: &str) -> Option<Self> {
        let placeholder = match inner {
            ".PVC.namespace" => Self::Namespace,
            ".PVC.name" => Self::Name,
            ".PV.name" => Self::VolumeName,
            _ => {
                if let Some(key) = inner.strip_prefix(".PVC.labels.") {
                    Self::Label(key.to_owned())
                } else if let Some(key) = inner.strip_prefix(".PVC.annotations.") {
                    Self::Annotation(key.to_owned())
                } else {
                    return None;
                }
            }
        };
        match &placeholder {
            Self::Label(key) | Self::Annotation(key) if key.is_empty() => None,
            _ => Some(placeholder),
        }
    }

    /// Whether the value comes from labels or annotations (which any claim author sets)
    /// rather than from names Kubernetes validates.
    pub fn is_user_metadata(&self) -> bool {
        matches!(self, Self::Label(_) | Self::Annotation(_))
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Namespace => f.write_str("${.PVC.namespace}"),
            Self::Name => f.write_str("${.PVC.name}"),
            Self::Label(key) => write!(f, "${{.PVC.labels.{key}}}"),
            Self::Annotation(key) => write!(f, "${{.PVC.annotations.{key}}}"),
            Self::VolumeName => f.write_str("${.PV.name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// What a pattern is rendered from: the claim's identity and metadata and the volume name.
#[derive(Debug, Clone, Copy)]
pub struct PatternInput<'a> {
    /// The claim's namespace.
    pub namespace: &'a str,
    /// The claim's name.
    pub name: &'a str,
    /// The claim's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The claim's annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// The PersistentVolume's name.
    pub volume_name: &'a str,
}

impl PatternInput<'_> {
    fn value(&self, placeholder: &Placeholder) -> Option<&str> {
        match placeholder {
            Placeholder::Namespace => Some(self.namespace),
            Placeholder::Name => Some(self.name),
            Placeholder::VolumeName => Some(self.volume_name),
            Placeholder::Label(key) => self.labels.get(key).map(String::as_str),
            Placeholder::Annotation(key) => self.annotations.get(key).map(String::as_str),
        }
    }

    fn claim(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A parsed `pathPattern`.
///
/// ```
/// use std::collections::BTreeMap;
/// use backend_nfs::path_pattern::{PathPattern, PatternInput};
///
/// let pattern = PathPattern::parse("${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}").unwrap();
/// let annotations = BTreeMap::from([("nfs.io/storage-path".to_owned(), "data".to_owned())]);
/// let labels = BTreeMap::new();
/// let input = PatternInput {
///     namespace: "team-a",
///     name: "claim",
///     labels: &labels,
///     annotations: &annotations,
///     volume_name: "pvc-1",
/// };
/// assert_eq!(pattern.render(&input).unwrap().to_string(), "team-a/data");
///
/// // Without the annotation nfs-subdir would have used "team-a" itself, shared by every
/// // claim of the namespace; here it is an error naming the claim.
/// let bare = PatternInput { annotations: &BTreeMap::new(), ..input };
/// assert!(pattern.render(&bare).unwrap_err().to_string().contains("team-a/claim"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    parts: Vec<Part>,
}

impl PathPattern {
    /// Parses and checks a pattern: every placeholder must be known, and the fixed parts
    /// must be able to produce a safe path.
    pub fn parse(pattern: &str) -> Result<Self, PathPatternError> {
        let trimmed = pattern.strip_suffix('/').unwrap_or(pattern);
        let mut parts = Vec::new();
        let mut rest = trimmed;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| PathPatternError::Unterminated {
                    pattern: pattern.to_owned(),
                })?;
            let inner = &after[..end];
            let placeholder =
                Placeholder::parse(inner).ok_or_else(|| PathPatternError::UnknownPlaceholder {
                    placeholder: format!("${{{inner}}}"),
                })?;
            parts.push(Part::Placeholder(placeholder));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        let parsed = Self {
            source: pattern.to_owned(),
            parts,
        };
        // With every placeholder standing for a plain name, only the fixed parts can make
        // the path unsafe (a leading '/', "..", "a//b"): refuse those with the class.
        let sample = parsed.substitute(|_| Some("x"));
        VolumePath::parse(&sample).map_err(|reason| PathPatternError::UnsafePattern {
            pattern: pattern.to_owned(),
            reason,
        })?;
        Ok(parsed)
    }

    /// The pattern as written in the class.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders used, in order of appearance (with repeats).
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(placeholder) => Some(placeholder),
            Part::Literal(_) => None,
        })
    }

    /// Whether rendering needs the claim's labels or annotations (and so cannot be
    /// repeated from a claim's identity alone).
    pub fn uses_claim_metadata(&self) -> bool {
        self.placeholders().any(Placeholder::is_user_metadata)
    }

    /// Renders the directory for one claim, refusing anything that is not a plain
    /// relative path strictly below the export root.
    pub fn render(&self, input: &PatternInput<'_>) -> Result<VolumePath, PathPatternError> {
        for placeholder in self.placeholders() {
            if input.value(placeholder).is_none_or(str::is_empty) {
                return Err(PathPatternError::Unresolved {
                    claim: input.claim(),
                    placeholder: placeholder.to_string(),
                });
            }
        }
        let rendered = self.substitute(|placeholder| input.value(placeholder));
        VolumePath::parse(&rendered).map_err(|reason| self.blame(input, rendered, reason))
    }

    fn substitute<'v>(&self, mut value: impl FnMut(&Placeholder) -> Option<&'v str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(placeholder) => out.push_str(value(placeholder).unwrap_or("")),
            }
        }
        out
    }

    /// Names the placeholder whose value is to blame for an unsafe path, when one is: a
    /// value that is unsafe wherever it is put.
    fn blame(
        &self,
        input: &PatternInput<'_>,
        rendered: String,
        reason: VolumePathError,
    ) -> PathPatternError {
        let culprit = self.placeholders().find_map(|placeholder| {
            let value = input.value(placeholder)?;
            let suspicious = value.starts_with('/')
                || value.ends_with('/')
                || value.contains("//")
                || value.chars().any(char::is_control)
                || value
                    .split('/')
                    .any(|segment| segment == "." || segment == "..");
            suspicious.then(|| (placeholder.to_string(), value.to_owned()))
        });
        match culprit {
            Some((placeholder, value)) => PathPatternError::UnsafeValue {
                claim: input.claim(),
                placeholder,
                value,
                reason,
            },
            None => PathPatternError::UnsafePath {
                claim: input.claim(),
                rendered,
                reason,
            },
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Component, Path};

    struct Claim {
        namespace: String,
        name: String,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    }

    fn mk_claim(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Claim {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Claim {
            namespace: "team-a".into(),
            name: "data".into(),
            labels: map(labels),
            annotations: map(annotations),
        }
    }

    fn input(claim: &Claim) -> PatternInput<'_> {
        PatternInput {
            namespace: &claim.namespace,
            name: &claim.name,
            labels: &claim.labels,
            annotations: &claim.annotations,
            volume_name: "pvc-123",
        }
    }

    fn render(pattern: &str, claim: &Claim) -> Result<String, PathPatternError> {
        PathPattern::parse(pattern)?
            .render(&input(claim))
            .map(|dir| dir.to_string())
    }

    #[test]
    fn renders_every_placeholder() {
        let claim = mk_claim(&[("app", "web")], &[("nfs.io/storage-path", "store")]);
        assert_eq!(render("${.PVC.namespace}", &claim).unwrap(), "team-a");
        assert_eq!(
            render("${.PVC.namespace}/${.PVC.name}", &claim).unwrap(),
            "team-a/data"
        );
        assert_eq!(
            render("${.PVC.labels.app}-${.PV.name}", &claim).unwrap(),
            "web-pvc-123"
        );
        assert_eq!(
            render(
                "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}",
                &claim
            )
            .unwrap(),
            "team-a/store"
        );
        assert_eq!(
            render("fixed/${.PVC.name}/${.PVC.name}", &claim).unwrap(),
            "fixed/data/data"
        );
        assert_eq!(render("literal", &claim).unwrap(), "literal");
        assert_eq!(render("$dollar}brace", &claim).unwrap(), "$dollar}brace");
    }

    #[test]
    fn a_single_trailing_slash_is_dropped_like_filepath_join() {
        let claim = mk_claim(&[], &[]);
        assert_eq!(
            render("${.PVC.namespace}/${.PVC.name}/", &claim).unwrap(),
            "team-a/data"
        );
    }

    #[test]
    fn unknown_placeholders_are_refused_when_parsing() {
        for pattern in [
            "${.PVC.Namespace}",
            "${.PVC.uid}",
            "${.PVC.labels.}",
            "${.PVC.labels}",
            "${name}",
            "${}",
        ] {
            assert!(
                matches!(
                    PathPattern::parse(pattern),
                    Err(PathPatternError::UnknownPlaceholder { .. })
                ),
                "{pattern}"
            );
        }
        assert!(matches!(
            PathPattern::parse("${.PVC.name"),
            Err(PathPatternError::Unterminated { .. })
        ));
    }

    #[test]
    fn unsafe_fixed_parts_are_refused_when_parsing() {
        for pattern in [
            "/abs/${.PVC.name}",
            "../${.PVC.name}",
            "a//${.PVC.name}",
            "${.PVC.name}/..",
            "a/./b",
            "//",
        ] {
            assert!(
                matches!(
                    PathPattern::parse(pattern),
                    Err(PathPatternError::UnsafePattern { .. })
                ),
                "{pattern}"
            );
        }
    }

    #[test]
    fn missing_or_empty_metadata_is_refused_not_collapsed() {
        let pattern = "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}";
        let error = render(pattern, &mk_claim(&[], &[])).unwrap_err();
        assert_eq!(
            error,
            PathPatternError::Unresolved {
                claim: "team-a/data".into(),
                placeholder: "${.PVC.annotations.nfs.io/storage-path}".into(),
            }
        );
        let error = render(pattern, &mk_claim(&[], &[("nfs.io/storage-path", "")])).unwrap_err();
        assert!(matches!(error, PathPatternError::Unresolved { .. }));
        assert!(matches!(
            render("${.PVC.labels.app}", &mk_claim(&[], &[])).unwrap_err(),
            PathPatternError::Unresolved { .. }
        ));
    }

    #[test]
    fn hostile_values_are_refused_naming_the_value() {
        for value in [
            "..",
            "../../etc",
            "/etc",
            "a/../../b",
            "a//b",
            "a/",
            ".",
            "x\ny",
        ] {
            let claim = mk_claim(&[], &[("path", value)]);
            let error = render("${.PVC.namespace}/${.PVC.annotations.path}", &claim).unwrap_err();
            match &error {
                PathPatternError::UnsafeValue {
                    claim,
                    placeholder,
                    value: v,
                    ..
                } => {
                    assert_eq!(claim, "team-a/data");
                    assert_eq!(placeholder, "${.PVC.annotations.path}");
                    assert_eq!(v, value);
                }
                other => panic!("{value:?}: unexpected {other:?}"),
            }
            assert!(error.to_string().contains("team-a/data"));
        }
    }

    #[test]
    fn values_are_blamed_only_when_they_are_at_fault() {
        // Two harmless values that together make a segment longer than NAME_MAX.
        let long = "x".repeat(200);
        let claim = mk_claim(&[("a", &long), ("b", &long)], &[]);
        let error = render("${.PVC.labels.a}${.PVC.labels.b}", &claim).unwrap_err();
        assert!(
            matches!(error, PathPatternError::UnsafePath { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn nested_values_nest() {
        let claim = mk_claim(&[], &[("path", "x/y")]);
        assert_eq!(render("${.PVC.annotations.path}", &claim).unwrap(), "x/y");
    }

    #[test]
    fn reports_whether_claim_metadata_is_needed() {
        assert!(
            !PathPattern::parse("${.PVC.namespace}/${.PV.name}")
                .unwrap()
                .uses_claim_metadata()
        );
        assert!(
            PathPattern::parse("${.PVC.labels.a}")
                .unwrap()
                .uses_claim_metadata()
        );
    }

    fn any_metadata() -> impl Strategy<Value = BTreeMap<String, String>> {
        // Keys and values from an alphabet rich in the characters that matter.
        let text = || proptest::string::string_regex("[a-z./\\\\ \\x00\\n{}$-]{0,12}").unwrap();
        proptest::collection::btree_map(
            prop_oneof![Just("k".to_owned()), Just("nfs.io/p".to_owned()), text()],
            prop_oneof![
                Just("..".to_owned()),
                Just("/".to_owned()),
                Just("".to_owned()),
                text()
            ],
            0..4,
        )
    }

    proptest! {
        /// Containment: for arbitrary labels and annotations, every rendered directory is a
        /// plain relative path that, joined onto the export root, stays strictly below it
        /// and never shares the root itself.
        #[test]
        fn rendered_directories_stay_inside_the_export(
            labels in any_metadata(),
            annotations in any_metadata(),
            pattern in prop_oneof![
                Just("${.PVC.annotations.k}".to_owned()),
                Just("${.PVC.namespace}/${.PVC.annotations.nfs.io/p}".to_owned()),
                Just("${.PVC.labels.k}/${.PVC.annotations.k}".to_owned()),
                Just("${.PVC.labels.k}${.PVC.annotations.k}".to_owned()),
                Just("x${.PVC.annotations.k}/${.PV.name}".to_owned()),
            ],
        ) {
            let claim = Claim { namespace: "ns".into(), name: "claim".into(), labels, annotations };
            let pattern = PathPattern::parse(&pattern).unwrap();
            if let Ok(dir) = pattern.render(&input(&claim)) {
                let root = Path::new("/persistentvolumes");
                let joined = dir.to_path_under(root);
                prop_assert!(joined.starts_with(root) && joined != root);
                prop_assert!(joined.strip_prefix(root).unwrap().components()
                    .all(|c| matches!(c, Component::Normal(_))));
                // Every placeholder contributed something: nothing collapsed.
                for placeholder in pattern.placeholders() {
                    prop_assert!(input(&claim).value(placeholder).is_some_and(|v| !v.is_empty()));
                }
            }
        }

        /// Arbitrary patterns never panic, and an accepted one with plain values renders.
        #[test]
        fn parsing_arbitrary_patterns_never_panics(pattern in ".{0,40}") {
            if let Ok(parsed) = PathPattern::parse(&pattern) {
                let claim = mk_claim(&[], &[]);
                let plain = PatternInput { volume_name: "pvc-1", ..input(&claim) };
                if !parsed.uses_claim_metadata() {
                    prop_assert!(parsed.render(&plain).is_ok());
                }
            }
        }
    }
}
