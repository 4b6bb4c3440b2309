//! StorageClass parameters and annotations, parsed into [`HostPathParams`] before any side
//! effect.
//!
//! Pure: no I/O.
//!
//! | key | where | meaning |
//! |---|---|---|
//! | `nodePath` | parameter | use only this base path; it must be configured for the node |
//! | `pathPattern` | parameter | directory template, see [`crate::pattern`] |
//! | `allowUnsafePathPattern` | parameter, else annotation | `"true"` lifts the `<namespace>/<name>` prefix rule (never containment) |
//! | `nodeAffinityKey` | parameter | node label key for the PV's node affinity (default `kubernetes.io/hostname`) |
//! | `defaultVolumeType` | annotation | `hostPath` (default) or `local`; a claim's `volumeType` annotation overrides it |
//! | `mode` | parameter | octal mode of the volume directory (default `0777`, see below) |
//! | `uid`, `gid` | parameter | owner and group of the volume directory (default: unchanged, i.e. the agent's) |
//! | `userPattern`, `groupPattern`, `permPattern` | parameter or annotation | accepted and ignored: upstream only hands them to helper scripts; use `uid`/`gid`/`mode` |
//!
//! Any other parameter is refused, naming it, so a typo does not silently fall back to a
//! default. (Upstream ignores unknown parameters.)
//!
//! **Default mode.** Volume directories are world-writable (`0777`) by default, exactly as
//! upstream's setup script (`mkdir -m 0777`) makes them: `hostPath` volumes ignore a pod's
//! `fsGroup`, so non-root pods could not write otherwise. Set `mode` (e.g. `"0770"`) with
//! `gid`, or use `volumeType: local` (the kubelet applies `fsGroup` to `local` volumes), to
//! avoid world-writable directories.

use std::collections::BTreeMap;

use provisioner_core::provisioner::ParameterError;

use crate::base_path::BasePath;
use crate::pattern::{PathPattern, PatternError, PrefixRule};

/// The node label local-path puts in PV node affinity unless the class says otherwise.
pub const DEFAULT_NODE_AFFINITY_KEY: &str = "kubernetes.io/hostname";

/// The default directory mode, upstream's `mkdir -m 0777`.
pub const DEFAULT_MODE: u32 = 0o777;

/// Parameter: use only this base path.
pub const PARAM_NODE_PATH: &str = "nodePath";
/// Parameter: directory template.
pub const PARAM_PATH_PATTERN: &str = "pathPattern";
/// Parameter (or class annotation): lift the claim-prefix rule of `pathPattern`.
pub const PARAM_ALLOW_UNSAFE_PATH_PATTERN: &str = "allowUnsafePathPattern";
/// Parameter: node label key of the PV's node affinity.
pub const PARAM_NODE_AFFINITY_KEY: &str = "nodeAffinityKey";
/// Parameter: directory mode (octal).
pub const PARAM_MODE: &str = "mode";
/// Parameter: directory owner.
pub const PARAM_UID: &str = "uid";
/// Parameter: directory group.
pub const PARAM_GID: &str = "gid";
/// Class annotation: default volume type.
pub const ANNOTATION_DEFAULT_VOLUME_TYPE: &str = "defaultVolumeType";
/// Claim annotation: volume type of this claim.
pub const ANNOTATION_VOLUME_TYPE: &str = "volumeType";

/// Upstream parameters that only configure its helper scripts.
const IGNORED_UPSTREAM_KEYS: [&str; 3] = ["userPattern", "groupPattern", "permPattern"];

/// A parameter or annotation that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A parameter this backend does not know.
    #[error(
        "unknown StorageClass parameter {name:?} (known: nodePath, pathPattern, \
         allowUnsafePathPattern, nodeAffinityKey, mode, uid, gid)"
    )]
    Unknown {
        /// The parameter.
        name: String,
    },
    /// A parameter or annotation with a value that cannot be used.
    #[error("{kind} {name:?} has the invalid value {value:?}: {reason}")]
    Invalid {
        /// `StorageClass parameter`, `StorageClass annotation` or `claim annotation`.
        kind: &'static str,
        /// The key.
        name: &'static str,
        /// The value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `pathPattern` does not parse.
    #[error("StorageClass parameter \"pathPattern\" is invalid: {0}")]
    PathPattern(#[source] PatternError),
}

/// The kind of volume source on the PV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeType {
    /// `hostPath` with type `DirectoryOrCreate` (upstream's default).
    #[default]
    HostPath,
    /// `local`: the kubelet applies `fsGroup` and the scheduler knows it is node-bound.
    Local,
}

impl VolumeType {
    /// Parses `hostPath` or `local`, case-insensitively as upstream does.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "hostpath" => Some(VolumeType::HostPath),
            "local" => Some(VolumeType::Local),
            _ => None,
        }
    }
}

/// Mode and owner of a new volume directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectorySettings {
    /// Permission bits, applied exactly (not filtered by the umask).
    pub mode: u32,
    /// Owner to set; `None` keeps the agent's.
    pub uid: Option<u32>,
    /// Group to set; `None` keeps the agent's.
    pub gid: Option<u32>,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        Self {
            mode: DEFAULT_MODE,
            uid: None,
            gid: None,
        }
    }
}

/// The typed parameters of one hostPath StorageClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathParams {
    /// Use only this base path (`nodePath`).
    pub node_path: Option<BasePath>,
    /// Directory template (`pathPattern`); `None` means `<pv>_<namespace>_<claim>`.
    pub path_pattern: Option<PathPattern>,
    /// How strictly a rendered `pathPattern` is checked.
    pub prefix_rule: PrefixRule,
    /// Node label key of the PV's node affinity.
    pub node_affinity_key: String,
    /// Volume type unless a claim says otherwise.
    pub default_volume_type: VolumeType,
    /// Mode and owner of new volume directories.
    pub directory: DirectorySettings,
    /// Keys that were accepted but have no effect, for an Event or a log line.
    pub ignored: Vec<String>,
    /// Whether `allowUnsafePathPattern` was a parameter (which wins over the annotation).
    prefix_rule_from_parameter: bool,
}

impl Default for HostPathParams {
    fn default() -> Self {
        Self {
            node_path: None,
            path_pattern: None,
            prefix_rule: PrefixRule::default(),
            node_affinity_key: DEFAULT_NODE_AFFINITY_KEY.to_owned(),
            default_volume_type: VolumeType::default(),
            directory: DirectorySettings::default(),
            ignored: Vec::new(),
            prefix_rule_from_parameter: false,
        }
    }
}

const PARAMETER: &str = "StorageClass parameter";
const CLASS_ANNOTATION: &str = "StorageClass annotation";
const CLAIM_ANNOTATION: &str = "claim annotation";

fn invalid(
    kind: &'static str,
    name: &'static str,
    value: &str,
    reason: impl Into<String>,
) -> ParamError {
    ParamError::Invalid {
        kind,
        name,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl HostPathParams {
    /// Parses a class's `parameters` (what [`Provisioner::parse_parameters`] gets).
    ///
    /// Class annotations are applied separately, by [`Self::with_class_annotations`].
    ///
    /// [`Provisioner::parse_parameters`]: provisioner_core::provisioner::Provisioner::parse_parameters
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use backend_hostpath::params::{HostPathParams, VolumeType};
    ///
    /// let parameters = BTreeMap::from([
    ///     ("pathPattern".to_string(), "{{ .PVC.Namespace }}/{{ .PVC.Name }}".to_string()),
    ///     ("mode".to_string(), "0770".to_string()),
    ///     ("gid".to_string(), "2000".to_string()),
    /// ]);
    /// let annotations = BTreeMap::from([("defaultVolumeType".to_string(), "local".to_string())]);
    /// let params = HostPathParams::parse(&parameters)
    ///     .and_then(|params| params.with_class_annotations(&annotations))
    ///     .unwrap();
    /// assert_eq!(params.directory.mode, 0o770);
    /// assert_eq!(params.default_volume_type, VolumeType::Local);
    /// ```
    pub fn parse(parameters: &BTreeMap<String, String>) -> Result<Self, ParamError> {
        let mut params = HostPathParams::default();
        for (key, value) in parameters {
            match key.as_str() {
                PARAM_NODE_PATH => {
                    let path = BasePath::parse(value)
                        .map_err(|e| invalid(PARAMETER, PARAM_NODE_PATH, value, e.to_string()))?;
                    params.node_path = Some(path);
                }
                PARAM_PATH_PATTERN => {
                    params.path_pattern =
                        Some(PathPattern::parse(value).map_err(ParamError::PathPattern)?);
                }
                PARAM_ALLOW_UNSAFE_PATH_PATTERN => {
                    let allow = parse_go_bool(PARAMETER, value)?;
                    params.prefix_rule = prefix_rule(allow);
                    params.prefix_rule_from_parameter = true;
                }
                PARAM_NODE_AFFINITY_KEY => {
                    validate_label_key(value).map_err(|reason| {
                        invalid(PARAMETER, PARAM_NODE_AFFINITY_KEY, value, reason)
                    })?;
                    params.node_affinity_key = value.clone();
                }
                PARAM_MODE => params.directory.mode = parse_mode(value)?,
                PARAM_UID => params.directory.uid = Some(parse_id(PARAM_UID, value)?),
                PARAM_GID => params.directory.gid = Some(parse_id(PARAM_GID, value)?),
                other if IGNORED_UPSTREAM_KEYS.contains(&other) => {
                    params.ignored.push(format!(
                        "StorageClass parameter {other:?} has no effect here (it only feeds \
                         local-path's helper scripts); use mode, uid and gid"
                    ));
                }
                other => {
                    return Err(ParamError::Unknown {
                        name: other.to_owned(),
                    });
                }
            }
        }
        Ok(params)
    }

    /// Applies a class's `metadata.annotations`: `defaultVolumeType`, and
    /// `allowUnsafePathPattern` unless the parameter of that name is set.
    pub fn with_class_annotations(
        mut self,
        class_annotations: &BTreeMap<String, String>,
    ) -> Result<Self, ParamError> {
        if !self.prefix_rule_from_parameter
            && let Some(value) = class_annotations.get(PARAM_ALLOW_UNSAFE_PATH_PATTERN)
        {
            self.prefix_rule = prefix_rule(parse_go_bool(CLASS_ANNOTATION, value)?);
        }
        if let Some(value) = class_annotations.get(ANNOTATION_DEFAULT_VOLUME_TYPE) {
            self.default_volume_type = VolumeType::parse(value).ok_or_else(|| {
                invalid(
                    CLASS_ANNOTATION,
                    ANNOTATION_DEFAULT_VOLUME_TYPE,
                    value,
                    "use hostPath or local",
                )
            })?;
        }
        for key in IGNORED_UPSTREAM_KEYS {
            if class_annotations.contains_key(key) {
                self.ignored.push(format!(
                    "StorageClass annotation {key:?} has no effect here (it only feeds \
                     local-path's helper scripts); use the mode, uid and gid parameters"
                ));
            }
        }
        Ok(self)
    }

    /// The volume type for one claim: its `volumeType` annotation, else the class default.
    pub fn volume_type_for_claim(
        &self,
        claim_annotations: &BTreeMap<String, String>,
    ) -> Result<VolumeType, ParamError> {
        match claim_annotations.get(ANNOTATION_VOLUME_TYPE) {
            Some(value) => VolumeType::parse(value).ok_or_else(|| {
                invalid(
                    CLAIM_ANNOTATION,
                    ANNOTATION_VOLUME_TYPE,
                    value,
                    "use hostPath or local",
                )
            }),
            None => Ok(self.default_volume_type),
        }
    }
}

fn prefix_rule(allow_unsafe: bool) -> PrefixRule {
    if allow_unsafe {
        PrefixRule::AnyContained
    } else {
        PrefixRule::ClaimPrefix
    }
}

impl From<ParamError> for ParameterError {
    fn from(error: ParamError) -> Self {
        match &error {
            ParamError::Unknown { name } => ParameterError::unknown(name.clone()),
            ParamError::Invalid { name, .. } => ParameterError::invalid(*name, error.to_string()),
            ParamError::PathPattern(source) => {
                ParameterError::invalid(PARAM_PATH_PATTERN, source.to_string())
            }
        }
    }
}

/// Go's `strconv.ParseBool`, which upstream uses for `allowUnsafePathPattern`.
fn parse_go_bool(kind: &'static str, value: &str) -> Result<bool, ParamError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(invalid(
            kind,
            PARAM_ALLOW_UNSAFE_PATH_PATTERN,
            value,
            "use \"true\" or \"false\"",
        )),
    }
}

/// An octal mode: `0770`, `770` or `0o770`, at most `07777`.
fn parse_mode(value: &str) -> Result<u32, ParamError> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    let mode = (!digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .filter(|mode| *mode <= 0o7777);
    mode.ok_or_else(|| {
        invalid(
            PARAMETER,
            PARAM_MODE,
            value,
            "use an octal mode such as \"0770\"",
        )
    })
}

/// A numeric user or group ID. `4294967295` is refused: to `chown` it means "leave alone".
fn parse_id(name: &'static str, value: &str) -> Result<u32, ParamError> {
    let id = value.parse::<u32>().ok().filter(|id| *id != u32::MAX);
    id.ok_or_else(|| {
        invalid(
            PARAMETER,
            name,
            value,
            "use a numeric ID between 0 and 4294967294",
        )
    })
}

/// Kubernetes' qualified-name rule for label keys: an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(
            "not a valid label key name (at most 63 characters [A-Za-z0-9-_.], \
                    alphanumeric at both ends)"
                .into(),
        );
    }
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Err("the prefix is not a DNS subdomain".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(
        parameters: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<HostPathParams, ParamError> {
        HostPathParams::parse(&map(parameters))?.with_class_annotations(&map(annotations))
    }

    #[test]
    fn no_parameters_means_upstream_defaults() {
        let params = parse(&[], &[]).unwrap();
        assert_eq!(params, HostPathParams::default());
        assert_eq!(params.node_affinity_key, "kubernetes.io/hostname");
        assert_eq!(
            params.directory,
            DirectorySettings {
                mode: 0o777,
                uid: None,
                gid: None
            }
        );
        assert_eq!(params.default_volume_type, VolumeType::HostPath);
        assert_eq!(params.prefix_rule, PrefixRule::ClaimPrefix);
    }

    #[test]
    fn every_parameter() {
        let params = parse(
            &[
                ("nodePath", "/data/ssd/"),
                ("pathPattern", "{{ .PVC.Namespace }}/{{ .PVC.Name }}"),
                ("allowUnsafePathPattern", "true"),
                ("nodeAffinityKey", "topology.example.com/node"),
                ("mode", "0o2770"),
                ("uid", "1000"),
                ("gid", "0"),
            ],
            &[("defaultVolumeType", "Local")],
        )
        .unwrap();
        assert_eq!(params.node_path.unwrap().to_string(), "/data/ssd");
        assert!(params.path_pattern.is_some());
        assert_eq!(params.prefix_rule, PrefixRule::AnyContained);
        assert_eq!(params.node_affinity_key, "topology.example.com/node");
        assert_eq!(
            params.directory,
            DirectorySettings {
                mode: 0o2770,
                uid: Some(1000),
                gid: Some(0)
            }
        );
        assert_eq!(params.default_volume_type, VolumeType::Local);
    }

    #[test]
    fn allow_unsafe_comes_from_the_parameter_first_then_the_annotation() {
        let annotated = parse(&[], &[("allowUnsafePathPattern", "1")]).unwrap();
        assert_eq!(annotated.prefix_rule, PrefixRule::AnyContained);
        let overridden = parse(
            &[("allowUnsafePathPattern", "false")],
            &[("allowUnsafePathPattern", "true")],
        )
        .unwrap();
        assert_eq!(overridden.prefix_rule, PrefixRule::ClaimPrefix);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let name_of = |result: Result<HostPathParams, ParamError>| match result.unwrap_err() {
            ParamError::Invalid { name, .. } => name.to_owned(),
            ParamError::Unknown { name } => name,
            ParamError::PathPattern(_) => "pathPattern".to_owned(),
        };
        assert_eq!(name_of(parse(&[("nodePath", "data")], &[])), "nodePath");
        assert_eq!(name_of(parse(&[("nodePath", "/")], &[])), "nodePath");
        assert_eq!(
            name_of(parse(&[("pathPattern", "{{ .Nope }}")], &[])),
            "pathPattern"
        );
        assert_eq!(
            name_of(parse(&[("allowUnsafePathPattern", "yes")], &[])),
            "allowUnsafePathPattern"
        );
        assert_eq!(
            name_of(parse(&[], &[("allowUnsafePathPattern", "yes")])),
            "allowUnsafePathPattern"
        );
        assert_eq!(
            name_of(parse(&[("nodeAffinityKey", "bad key")], &[])),
            "nodeAffinityKey"
        );
        assert_eq!(
            name_of(parse(&[("nodeAffinityKey", "Bad_Prefix/x")], &[])),
            "nodeAffinityKey"
        );
        assert_eq!(name_of(parse(&[("mode", "0999")], &[])), "mode");
        assert_eq!(name_of(parse(&[("mode", "17777")], &[])), "mode");
        assert_eq!(name_of(parse(&[("mode", "")], &[])), "mode");
        assert_eq!(name_of(parse(&[("uid", "-1")], &[])), "uid");
        assert_eq!(name_of(parse(&[("gid", "4294967295")], &[])), "gid");
        assert_eq!(
            name_of(parse(&[], &[("defaultVolumeType", "nfs")])),
            "defaultVolumeType"
        );
        assert_eq!(name_of(parse(&[("nodepath", "/x")], &[])), "nodepath");
    }

    #[test]
    fn conversion_to_the_core_error_keeps_the_parameter_name() {
        let error: ParameterError = parse(&[("mode", "x")], &[]).unwrap_err().into();
        assert_eq!(error.parameter, "mode");
        let error: ParameterError = parse(&[("typo", "x")], &[]).unwrap_err().into();
        assert_eq!(error.parameter, "typo");
        let error: ParameterError = parse(&[("pathPattern", "{{ . }}")], &[])
            .unwrap_err()
            .into();
        assert_eq!(error.parameter, "pathPattern");
    }

    #[test]
    fn helper_script_patterns_are_accepted_and_reported() {
        let params = parse(&[("permPattern", "0770")], &[("userPattern", "1000")]).unwrap();
        assert_eq!(params.ignored.len(), 2, "{:?}", params.ignored);
        assert_eq!(params.directory.mode, DEFAULT_MODE);
    }

    #[test]
    fn the_claim_annotation_overrides_the_class_default() {
        let params = parse(&[], &[("defaultVolumeType", "local")]).unwrap();
        assert_eq!(
            params.volume_type_for_claim(&map(&[])).unwrap(),
            VolumeType::Local
        );
        assert_eq!(
            params
                .volume_type_for_claim(&map(&[("volumeType", "hostpath")]))
                .unwrap(),
            VolumeType::HostPath
        );
        assert!(matches!(
            params.volume_type_for_claim(&map(&[("volumeType", "block")])),
            Err(ParamError::Invalid {
                kind: "claim annotation",
                name: "volumeType",
                ..
            })
        ));
    }

    #[test]
    fn label_keys() {
        for ok in ["kubernetes.io/hostname", "node", "a.b-c/x_y.z", "x"] {
            assert!(validate_label_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "a/", "-x", "x-", "a b", "A.B/x", &"x".repeat(64)] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
    }
}
