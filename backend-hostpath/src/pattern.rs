//! Volume directory names: local-path's default `<pv>_<namespace>_<claim>` and its
//! `pathPattern`, a subset of Go's `text/template`, rendered safely.
//!
//! Pure: no I/O. The pattern is parsed once when the StorageClass parameters are parsed
//! (so a broken template fails before any side effect) and rendered per claim.
//!
//! # Supported template syntax
//!
//! The data local-path hands its template is `{PVName, PVC: <the claim's ObjectMeta>}`.
//! This module accepts the parts of that which name something a directory can be made of:
//!
//! | action | value |
//! |---|---|
//! | `{{ .PVName }}` | the PV name |
//! | `{{ .PVC.Namespace }}`, `{{ .PVC.Name }}`, `{{ .PVC.UID }}` | the claim's namespace, name, UID |
//! | `{{ .PVC.Labels.key }}`, `{{ .PVC.Annotations.key }}` | a label or annotation (identifier keys) |
//! | `{{ index .PVC.Labels "key" }}`, `{{ index .PVC.Annotations "key" }}` | any label or annotation key |
//! | `{{/* comment */}}` | nothing |
//!
//! Go's trim markers (`{{- ` and ` -}}`) work as in Go. Everything else Go would accept
//! (pipelines, variables, functions other than `index`, `if`/`range`/`with`, other
//! `ObjectMeta` fields) is refused when the class is parsed, with the reason.
//!
//! # Deliberate differences from local-path (all refuse what it would accept)
//!
//! - A missing label or annotation, or a value that is empty, is an error. Go renders a
//!   missing key as `<no value>` (field syntax) or as an empty string (`index`), and an
//!   empty string silently collapses the directory onto its parent, shared with other
//!   claims.
//! - The rendered path must be a [`VolumePath`]: relative, no `.`/`..`, no empty segment,
//!   no control character (one trailing `/` is dropped, as Go's `filepath.Join` would).
//! - Unless the class allows unsafe patterns, the path must start with the claim's
//!   `<namespace>/<name>` (like local-path ≥ v0.0.33, which requires `<namespace>/<name>/`;
//!   here the claim's own `<namespace>/<name>` directory itself is accepted too). Allowing
//!   unsafe patterns only lifts this prefix rule: containment under the base path is never
//!   optional.

use std::collections::BTreeMap;
use std::fmt;

use provisioner_core::volume_path::{VolumePath, VolumePathError};

/// Why a `pathPattern` could not be parsed or rendered for a claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("pathPattern is empty")]
    EmptyPattern,
    /// An action was opened with `{{` and never closed.
    #[error("pathPattern has an unclosed action starting at byte {offset}")]
    Unclosed {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// A comment action has something besides the comment in it.
    #[error("pathPattern has a malformed comment at byte {offset}")]
    MalformedComment {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// A string literal is not terminated or uses an escape this parser does not know.
    #[error("pathPattern has a bad string literal in {{{{{action}}}}}: {reason}")]
    BadString {
        /// The action text.
        action: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An action uses template syntax outside the supported subset.
    #[error(
        "pathPattern action {{{{{action}}}}} is not supported: {reason} (supported: .PVName, \
         .PVC.Namespace, .PVC.Name, .PVC.UID, .PVC.Labels.<key>, .PVC.Annotations.<key>, \
         index .PVC.Labels \"<key>\", index .PVC.Annotations \"<key>\")"
    )]
    Unsupported {
        /// The action text.
        action: String,
        /// What is unsupported.
        reason: String,
    },
    /// The claim has no such label or annotation.
    #[error("pathPattern uses {what} {key:?}, which the claim does not have")]
    MissingKey {
        /// `label` or `annotation`.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// A value the pattern uses is empty, which would collapse the path onto its parent.
    #[error("pathPattern uses {what}, which is empty for this claim")]
    EmptyValue {
        /// What rendered empty.
        what: String,
    },
    /// The rendered path is not a contained relative path.
    #[error("pathPattern rendered {rendered:?}, which is refused: {source}")]
    Unsafe {
        /// What the template produced.
        rendered: String,
        /// Why it is refused.
        source: VolumePathError,
    },
    /// The default directory name would not be a single directory (a name with a `/`).
    #[error("the default directory name {rendered:?} is not a single directory name")]
    NestedDefaultName {
        /// The name that was built.
        rendered: String,
    },
    /// The rendered path does not start with the claim's `<namespace>/<name>`.
    #[error(
        "pathPattern rendered {rendered:?}, which does not start with the claim's own \
         directory {namespace}/{name} (set allowUnsafePathPattern to lift this rule)"
    )]
    OutsideClaimPrefix {
        /// What the template produced.
        rendered: String,
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        name: String,
    },
}

/// What a pattern may use from one claim.
#[derive(Debug, Clone, Copy)]
pub struct PatternInput<'a> {
    /// The name the PV will get.
    pub pv_name: &'a str,
    /// The claim's namespace.
    pub namespace: &'a str,
    /// The claim's name.
    pub name: &'a str,
    /// The claim's UID.
    pub uid: &'a str,
    /// The claim's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The claim's annotations.
    pub annotations: &'a BTreeMap<String, String>,
}

/// How strictly a rendered path is checked beyond containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefixRule {
    /// The path must start with the claim's `<namespace>/<name>` (the default).
    #[default]
    ClaimPrefix,
    /// Any contained path (`allowUnsafePathPattern: "true"`).
    AnyContained,
}

/// The default directory name of local-path: `<pv name>_<namespace>_<claim name>`.
///
/// ```
/// use backend_hostpath::pattern::default_dir;
///
/// let dir = default_dir("pvc-1234", "default", "data").unwrap();
/// assert_eq!(dir.to_string(), "pvc-1234_default_data");
/// ```
pub fn default_dir(pv_name: &str, namespace: &str, name: &str) -> Result<VolumePath, PatternError> {
    let rendered = format!("{pv_name}_{namespace}_{name}");
    // Kubernetes names never contain `/`; checking anyway keeps the guarantee local.
    if rendered.contains('/') {
        return Err(PatternError::NestedDefaultName { rendered });
    }
    VolumePath::parse(&rendered).map_err(|source| PatternError::Unsafe { rendered, source })
}

/// A parsed `pathPattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(ValueRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ValueRef {
    PvName,
    Namespace,
    Name,
    Uid,
    Label(String),
    Annotation(String),
}

impl ValueRef {
    fn describe(&self) -> String {
        match self {
            ValueRef::PvName => ".PVName".into(),
            ValueRef::Namespace => ".PVC.Namespace".into(),
            ValueRef::Name => ".PVC.Name".into(),
            ValueRef::Uid => ".PVC.UID".into(),
            ValueRef::Label(key) => format!("label {key:?}"),
            ValueRef::Annotation(key) => format!("annotation {key:?}"),
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PathPattern {
    /// Parses a `pathPattern` parameter.
    ///
    /// ```
    /// use backend_hostpath::pattern::PathPattern;
    ///
    /// assert!(PathPattern::parse("{{ .PVC.Namespace }}/{{ .PVC.Name }}/").is_ok());
    /// assert!(PathPattern::parse(r#"{{ printf "%s" .PVName }}"#).is_err());
    /// ```
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if source.is_empty() {
            return Err(PatternError::EmptyPattern);
        }
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        let mut trim_next_text = false;
        loop {
            let (text, after) = match rest.find("{{") {
                Some(at) => (&rest[..at], Some(at)),
                None => (rest, None),
            };
            let mut text = text;
            if trim_next_text {
                text = text.trim_start_matches(is_go_space);
            }
            let Some(at) = after else {
                push_text(&mut parts, text);
                break;
            };
            let action_start = offset + at;
            let inner = &rest[at + 2..];
            let (body, consumed, trim_left, trim_right) = split_action(inner, action_start)?;
            if trim_left {
                text = text.trim_end_matches(is_go_space);
            }
            push_text(&mut parts, text);
            if let Some(value) = parse_action(body, action_start)? {
                parts.push(Part::Value(value));
            }
            trim_next_text = trim_right;
            let advance = at + 2 + consumed;
            rest = &rest[advance..];
            offset += advance;
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The pattern as written in the StorageClass.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the pattern for one claim and checks the result.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use backend_hostpath::pattern::{PathPattern, PatternInput, PrefixRule};
    ///
    /// let pattern = PathPattern::parse(r#"{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ index .PVC.Labels "app" }}"#).unwrap();
    /// let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    /// let input = PatternInput {
    ///     pv_name: "pvc-1", namespace: "shop", name: "data", uid: "1",
    ///     labels: &labels, annotations: &BTreeMap::new(),
    /// };
    /// let dir = pattern.render(&input, PrefixRule::ClaimPrefix).unwrap();
    /// assert_eq!(dir.to_string(), "shop/data/web");
    /// ```
    pub fn render(
        &self,
        input: &PatternInput<'_>,
        rule: PrefixRule,
    ) -> Result<VolumePath, PatternError> {
        let mut rendered = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => rendered.push_str(text),
                Part::Value(value) => rendered.push_str(resolve(value, input)?),
            }
        }
        // local-path's documented patterns end in `/`, which its `filepath.Join` drops.
        let without_slash = match rendered.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => stripped,
            _ => &rendered,
        };
        let dir = VolumePath::parse(without_slash).map_err(|source| PatternError::Unsafe {
            rendered: rendered.clone(),
            source,
        })?;
        if rule == PrefixRule::ClaimPrefix {
            let mut segments = dir.segments();
            let starts_with_claim =
                segments.next() == Some(input.namespace) && segments.next() == Some(input.name);
            if !starts_with_claim {
                return Err(PatternError::OutsideClaimPrefix {
                    rendered,
                    namespace: input.namespace.to_owned(),
                    name: input.name.to_owned(),
                });
            }
        }
        Ok(dir)
    }
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Part::Text(previous)) = parts.last_mut() {
        previous.push_str(text);
    } else {
        parts.push(Part::Text(text.to_owned()));
    }
}

/// Go's template lexer treats these as space around trim markers.
fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits the inside of an action (after `{{`) into its body and the bytes consumed up to and
/// including `}}`, honouring string literals that contain `}}` and Go's trim markers.
fn split_action(inner: &str, offset: usize) -> Result<(&str, usize, bool, bool), PatternError> {
    let bytes = inner.as_bytes();
    let trim_left =
        bytes.first() == Some(&b'-') && bytes.get(1).is_some_and(|b| is_go_byte_space(*b));
    let body_start = if trim_left { 2 } else { 0 };
    let mut i = body_start;
    while bytes.get(i).is_some_and(|b| is_go_byte_space(*b)) {
        i += 1;
    }
    let mut in_comment = bytes[i..].starts_with(b"/*");
    if in_comment {
        i += 2;
    }
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if in_comment {
            if bytes[i..].starts_with(b"*/") {
                in_comment = false;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        match quote {
            Some(b'"') if b == b'\\' => {
                i += 2;
                continue;
            }
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'`' => quote = Some(b),
            None if bytes[i..].starts_with(b"}}") => {
                // Every index used here sits next to an ASCII byte, so slicing is on a
                // character boundary.
                let mut body = &inner[body_start..i];
                let trim_right = body.len() >= 2
                    && body.ends_with('-')
                    && is_go_byte_space(body.as_bytes()[body.len() - 2]);
                if trim_right {
                    body = &body[..body.len() - 1];
                }
                return Ok((body, i + 2, trim_left, trim_right));
            }
            None => {}
        }
        i += 1;
    }
    Err(PatternError::Unclosed { offset })
}

fn is_go_byte_space(b: u8) -> bool {
    is_go_space(char::from(b))
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Field(Vec<String>),
    Ident(String),
    Str(String),
}

/// Parses one action body into the value it names (`None` for a comment).
fn parse_action(body: &str, offset: usize) -> Result<Option<ValueRef>, PatternError> {
    let trimmed = body.trim_matches(is_go_space);
    if let Some(comment) = trimmed.strip_prefix("/*") {
        return if comment.ends_with("*/") && comment.len() >= 2 {
            Ok(None)
        } else {
            Err(PatternError::MalformedComment { offset })
        };
    }
    let unsupported = |reason: &str| PatternError::Unsupported {
        action: body.to_owned(),
        reason: reason.to_owned(),
    };
    let tokens = tokenize(trimmed, body)?;
    match tokens.as_slice() {
        [] => Err(unsupported("empty action")),
        [Token::Field(chain)] => field_value(chain)
            .map(Some)
            .map_err(|reason| unsupported(&reason)),
        [Token::Ident(func), Token::Field(chain), Token::Str(key)] if func == "index" => {
            match chain
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["PVC", "Labels"] => Ok(Some(ValueRef::Label(key.clone()))),
                ["PVC", "Annotations"] => Ok(Some(ValueRef::Annotation(key.clone()))),
                _ => Err(unsupported(
                    "index only works on .PVC.Labels and .PVC.Annotations",
                )),
            }
        }
        [Token::Ident(func), ..] if func == "index" => Err(unsupported(
            "index takes exactly a map (.PVC.Labels or .PVC.Annotations) and one string key",
        )),
        [Token::Ident(word), ..] => Err(unsupported(&format!("{word:?} is not supported"))),
        _ => Err(unsupported(
            "only a single field or an index call is supported",
        )),
    }
}

fn field_value(chain: &[String]) -> Result<ValueRef, String> {
    let names: Vec<&str> = chain.iter().map(String::as_str).collect();
    match names.as_slice() {
        ["PVName"] => Ok(ValueRef::PvName),
        ["PVC", "Namespace"] => Ok(ValueRef::Namespace),
        ["PVC", "Name"] => Ok(ValueRef::Name),
        ["PVC", "UID"] => Ok(ValueRef::Uid),
        ["PVC", "Labels", key] => Ok(ValueRef::Label((*key).to_owned())),
        ["PVC", "Annotations", key] => Ok(ValueRef::Annotation((*key).to_owned())),
        [] => Err("`.` alone prints the whole template data, not a directory name".into()),
        ["PVC"] | ["PVC", "Labels" | "Annotations"] => {
            Err(format!(".{} is not a single value", names.join(".")))
        }
        _ => Err(format!("unknown field .{}", names.join("."))),
    }
}

fn tokenize(text: &str, action: &str) -> Result<Vec<Token>, PatternError> {
    let unsupported = |reason: String| PatternError::Unsupported {
        action: action.to_owned(),
        reason,
    };
    let bad_string = |reason: &'static str| PatternError::BadString {
        action: action.to_owned(),
        reason,
    };
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if is_go_space(c) {
            chars.next();
            continue;
        }
        if c == '.' {
            let mut chain = Vec::new();
            let mut end = start;
            while let Some(&(at, '.')) = chars.peek() {
                chars.next();
                let mut ident = String::new();
                while let Some(&(_, ch)) = chars.peek() {
                    if ch.is_alphanumeric() || ch == '_' {
                        ident.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                end = at + 1 + ident.len();
                if ident.is_empty() {
                    // `.` alone is valid Go (the whole data); `..` or `.x.` is not.
                    if chain.is_empty() && chars.peek().is_none_or(|(_, ch)| is_go_space(*ch)) {
                        break;
                    }
                    return Err(unsupported(format!(
                        "malformed field at {:?}",
                        &text[start..]
                    )));
                }
                chain.push(ident);
            }
            if let Some(&(_, ch)) = chars.peek()
                && !is_go_space(ch)
            {
                return Err(unsupported(format!(
                    "unexpected {ch:?} after {:?}",
                    &text[start..end.max(start + 1)]
                )));
            }
            tokens.push(Token::Field(chain));
        } else if c == '"' {
            chars.next();
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, ch)) = chars.next() {
                match ch {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, 'r')) => value.push('\r'),
                        _ => return Err(bad_string("unsupported escape sequence")),
                    },
                    '\n' => return Err(bad_string("newline in string literal")),
                    other => value.push(other),
                }
            }
            if !closed {
                return Err(bad_string("unterminated string literal"));
            }
            tokens.push(Token::Str(value));
        } else if c == '`' {
            chars.next();
            let mut value = String::new();
            let mut closed = false;
            for (_, ch) in chars.by_ref() {
                if ch == '`' {
                    closed = true;
                    break;
                }
                value.push(ch);
            }
            if !closed {
                return Err(bad_string("unterminated raw string literal"));
            }
            tokens.push(Token::Str(value));
        } else if c.is_alphabetic() || c == '_' {
            let mut ident = String::new();
            while let Some(&(_, ch)) = chars.peek() {
                if ch.is_alphanumeric() || ch == '_' {
                    ident.push(ch);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Ident(ident));
        } else {
            return Err(unsupported(format!("unexpected {c:?}")));
        }
    }
    Ok(tokens)
}

fn resolve<'a>(value: &ValueRef, input: &PatternInput<'a>) -> Result<&'a str, PatternError> {
    let resolved = match value {
        ValueRef::PvName => input.pv_name,
        ValueRef::Namespace => input.namespace,
        ValueRef::Name => input.name,
        ValueRef::Uid => input.uid,
        ValueRef::Label(key) => input
            .labels
            .get(key)
            .ok_or_else(|| PatternError::MissingKey {
                what: "label",
                key: key.clone(),
            })?,
        ValueRef::Annotation(key) => {
            input
                .annotations
                .get(key)
                .ok_or_else(|| PatternError::MissingKey {
                    what: "annotation",
                    key: key.clone(),
                })?
        }
    };
    if resolved.is_empty() {
        return Err(PatternError::EmptyValue {
            what: value.describe(),
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Component, Path};

    struct Claim {
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    }

    fn mk_claim(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Claim {
        let own = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Claim {
            labels: own(labels),
            annotations: own(annotations),
        }
    }

    fn input(claim: &Claim) -> PatternInput<'_> {
        PatternInput {
            pv_name: "pvc-0f1e",
            namespace: "shop",
            name: "data",
            uid: "0f1e",
            labels: &claim.labels,
            annotations: &claim.annotations,
        }
    }

    fn render(pattern: &str, claim: &Claim, rule: PrefixRule) -> Result<String, PatternError> {
        PathPattern::parse(pattern)?
            .render(&input(claim), rule)
            .map(|d| d.to_string())
    }

    #[test]
    fn renders_every_supported_value() {
        let claim = mk_claim(
            &[("app", "web"), ("tier.x/y", "db")],
            &[("owner", "team-a")],
        );
        let any = PrefixRule::AnyContained;
        assert_eq!(render("{{ .PVName }}", &claim, any).unwrap(), "pvc-0f1e");
        assert_eq!(render("{{.PVC.UID}}", &claim, any).unwrap(), "0f1e");
        assert_eq!(
            render(
                "{{ .PVC.Namespace }}/{{ .PVC.Name }}/",
                &claim,
                PrefixRule::ClaimPrefix
            )
            .unwrap(),
            "shop/data"
        );
        assert_eq!(
            render("x-{{ .PVC.Labels.app }}", &claim, any).unwrap(),
            "x-web"
        );
        assert_eq!(
            render(r#"{{ index .PVC.Labels "tier.x/y" }}"#, &claim, any).unwrap(),
            "db"
        );
        assert_eq!(
            render("{{ index .PVC.Annotations `owner` }}", &claim, any).unwrap(),
            "team-a"
        );
        assert_eq!(
            render("{{ .PVC.Annotations.owner }}", &claim, any).unwrap(),
            "team-a"
        );
        assert_eq!(render("a{{/* note */}}b", &claim, any).unwrap(), "ab");
    }

    #[test]
    fn trim_markers_behave_like_go() {
        let claim = mk_claim(&[], &[]);
        let any = PrefixRule::AnyContained;
        assert_eq!(
            render("a  {{- .PVName -}}  b", &claim, any).unwrap(),
            "apvc-0f1eb"
        );
        assert_eq!(
            render("a {{ .PVName }} b", &claim, any).unwrap(),
            "a pvc-0f1e b"
        );
        assert_eq!(render("a\n{{- /* c */ -}}\nb", &claim, any).unwrap(), "ab");
    }

    #[test]
    fn strings_may_contain_the_closing_delimiter() {
        let claim = mk_claim(&[], &[("a}}b", "v")]);
        let rendered = render(
            r#"{{ index .PVC.Annotations "a}}b" }}"#,
            &claim,
            PrefixRule::AnyContained,
        );
        assert_eq!(rendered.unwrap(), "v");
    }

    #[test]
    fn refuses_template_features_outside_the_subset() {
        for pattern in [
            "{{ printf \"%s\" .PVName }}",
            "{{ .PVName | lower }}",
            "{{ $x := .PVName }}",
            "{{ if .PVName }}a{{ end }}",
            "{{ . }}",
            "{{ .PVC }}",
            "{{ .PVC.Labels }}",
            "{{ .PVC.ResourceVersion }}",
            "{{ .pvc.name }}",
            "{{ index .PVC.Labels \"a\" \"b\" }}",
            "{{ index .PVName \"a\" }}",
            "{{ }}",
            "{{ .PVC..Name }}",
            "{{ (.PVName) }}",
        ] {
            let err = PathPattern::parse(pattern).unwrap_err();
            assert!(
                matches!(err, PatternError::Unsupported { .. }),
                "{pattern}: {err}"
            );
        }
        assert!(matches!(
            PathPattern::parse(""),
            Err(PatternError::EmptyPattern)
        ));
        assert!(matches!(
            PathPattern::parse("a{{ .PVName"),
            Err(PatternError::Unclosed { .. })
        ));
        assert!(matches!(
            PathPattern::parse("{{ index .PVC.Labels \"a }}"),
            Err(PatternError::Unclosed { .. }) | Err(PatternError::BadString { .. })
        ));
        assert!(matches!(
            PathPattern::parse("{{ index .PVC.Labels \"\\q\" }}"),
            Err(PatternError::BadString { .. })
        ));
    }

    #[test]
    fn missing_or_empty_values_are_errors_not_collapsed_paths() {
        let claim = mk_claim(&[("empty", "")], &[]);
        let any = PrefixRule::AnyContained;
        assert_eq!(
            render("{{ .PVC.Namespace }}/{{ .PVC.Labels.app }}", &claim, any),
            Err(PatternError::MissingKey {
                what: "label",
                key: "app".into()
            })
        );
        assert_eq!(
            render(
                "{{ .PVC.Namespace }}/{{ index .PVC.Annotations \"dir\" }}",
                &claim,
                any
            ),
            Err(PatternError::MissingKey {
                what: "annotation",
                key: "dir".into()
            })
        );
        assert!(matches!(
            render("{{ .PVC.Namespace }}/{{ .PVC.Labels.empty }}", &claim, any),
            Err(PatternError::EmptyValue { .. })
        ));
    }

    #[test]
    fn hostile_values_are_refused() {
        let any = PrefixRule::AnyContained;
        for value in [
            "..",
            "../../etc",
            "/etc",
            "a/../../b",
            ".",
            "a//b",
            "x\0y",
            "a/./b",
        ] {
            let claim = mk_claim(&[], &[("dir", value)]);
            let result = render("{{ .PVC.Annotations.dir }}", &claim, any);
            assert!(
                matches!(result, Err(PatternError::Unsafe { .. })),
                "{value:?}: {result:?}"
            );
        }
    }

    #[test]
    fn the_claim_prefix_rule_keeps_claims_in_their_own_directory() {
        let claim = mk_claim(&[], &[("dir", "other/claim")]);
        let rule = PrefixRule::ClaimPrefix;
        assert!(matches!(
            render("{{ .PVC.Annotations.dir }}", &claim, rule),
            Err(PatternError::OutsideClaimPrefix { .. })
        ));
        assert!(matches!(
            render("{{ .PVC.Namespace }}", &claim, rule),
            Err(PatternError::OutsideClaimPrefix { .. })
        ));
        assert!(matches!(
            render("{{ .PVC.Namespace }}/{{ .PVC.Name }}x", &claim, rule),
            Err(PatternError::OutsideClaimPrefix { .. })
        ));
        assert_eq!(
            render(
                "{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ .PVC.Annotations.dir }}",
                &claim,
                rule
            )
            .unwrap(),
            "shop/data/other/claim"
        );
        assert_eq!(
            render(
                "{{ .PVC.Annotations.dir }}",
                &claim,
                PrefixRule::AnyContained
            )
            .unwrap(),
            "other/claim"
        );
    }

    #[test]
    fn default_directory_is_local_paths_name() {
        assert_eq!(
            default_dir("pvc-1", "ns", "claim").unwrap().to_string(),
            "pvc-1_ns_claim"
        );
        assert!(matches!(
            default_dir("pvc-1", "../x", "claim"),
            Err(PatternError::NestedDefaultName { .. })
        ));
        assert!(matches!(
            default_dir("pvc-1", "ns", "a\nb"),
            Err(PatternError::Unsafe { .. })
        ));
    }

    fn hostile_string() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[./a-z\\\\\0]{0,12}",
            Just("..".to_owned()),
            Just("../".to_owned()),
            Just("/".to_owned()),
            Just(String::new()),
            "(\\.\\./)+[a-z]{0,3}",
            "/[a-z/]{0,10}",
        ]
    }

    fn pattern_over(key: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![
            Just(format!("{{{{ .PVC.Annotations.{key} }}}}")),
            Just(format!("{{{{ index .PVC.Labels \"{key}\" }}}}")),
            Just(format!(
                "{{{{ .PVC.Namespace }}}}/{{{{ .PVC.Name }}}}/{{{{ .PVC.Annotations.{key} }}}}"
            )),
            Just(format!(
                "{{{{ .PVC.Namespace }}}}/{{{{ index .PVC.Annotations \"{key}\" }}}}/x"
            )),
            Just(format!("../{{{{ .PVC.Labels.{key} }}}}")),
            Just(format!(
                "{{{{ .PVC.Labels.{key} }}}}/{{{{ .PVC.Annotations.{key} }}}}"
            )),
            "[a-z/.]{0,6}"
                .prop_map(move |prefix| format!("{prefix}{{{{ .PVC.Annotations.{key} }}}}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever labels and annotations a claim carries, a rendered directory stays under
        /// the base path, and under the claim's own directory unless the class opted out.
        #[test]
        fn rendered_paths_stay_contained(
            pattern in pattern_over("k"),
            label in hostile_string(),
            annotation in hostile_string(),
            claim_prefix in any::<bool>(),
        ) {
            let claim = mk_claim(&[("k", &label)], &[("k", &annotation)]);
            let rule = if claim_prefix { PrefixRule::ClaimPrefix } else { PrefixRule::AnyContained };
            let parsed = PathPattern::parse(&pattern).unwrap();
            if let Ok(dir) = parsed.render(&input(&claim), rule) {
                let base = Path::new("/var/lib/storage");
                let joined = dir.to_path_under(base);
                let below = joined.strip_prefix(base).unwrap();
                prop_assert!(below.components().count() >= 1);
                prop_assert!(below.components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(!dir.to_string().chars().any(char::is_control));
                if claim_prefix {
                    prop_assert!(below.starts_with("shop/data"));
                }
            }
        }

        /// Ordinary values always render, so the containment property above is not vacuous.
        #[test]
        fn ordinary_values_render_under_the_claim(value in "[a-z0-9][a-z0-9._-]{0,20}(/[a-z0-9]{1,5})?") {
            let claim = mk_claim(&[("k", &value)], &[("k", &value)]);
            let pattern = "{{ .PVC.Namespace }}/{{ .PVC.Name }}/{{ .PVC.Annotations.k }}";
            let dir = PathPattern::parse(pattern).unwrap().render(&input(&claim), PrefixRule::ClaimPrefix).unwrap();
            prop_assert_eq!(dir.to_string(), format!("shop/data/{value}"));
        }

        /// Parsing and rendering never panic, whatever the pattern.
        #[test]
        fn arbitrary_patterns_never_panic(pattern in any::<String>(), value in any::<String>()) {
            let claim = mk_claim(&[("k", &value)], &[("k", &value)]);
            if let Ok(parsed) = PathPattern::parse(&pattern) {
                let _ = parsed.render(&input(&claim), PrefixRule::AnyContained);
            }
        }

        /// Literal text without actions renders as itself when it is a contained path.
        #[test]
        fn plain_text_renders_verbatim(text in "[a-z0-9_-]{1,8}(/[a-z0-9_-]{1,8}){0,3}") {
            let claim = mk_claim(&[], &[]);
            let dir = PathPattern::parse(&text).unwrap().render(&input(&claim), PrefixRule::AnyContained).unwrap();
            prop_assert_eq!(dir.to_string(), text);
        }
    }
}
