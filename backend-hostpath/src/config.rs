//! local-path-provisioner's `config.json`, parsed into typed configuration.
//!
//! Pure: [`ProvisionerConfig::parse`] takes the file's text; reading and re-reading the file
//! is [`crate::reload`]'s job.
//!
//! # Schema (as local-path-provisioner v0.0.2x–v0.0.3x reads it)
//!
//! ```json
//! {
//!   "nodePathMap": [
//!     {"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/opt/local-path-provisioner"]},
//!     {"node": "node-a", "paths": ["/data1", "/data2"]},
//!     {"node": "node-b", "paths": []}
//!   ],
//!   "sharedFileSystemPath": "/mnt/shared",
//!   "storageClassConfigs": {
//!     "fast": {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/nvme"]}]},
//!     "shared": {"sharedFileSystemPath": "/mnt/nfs"}
//!   },
//!   "setupCommand": "", "teardownCommand": "", "cmdTimeoutSeconds": 120
//! }
//! ```
//!
//! - `nodePathMap`: the listed node's `paths`, else those of
//!   `DEFAULT_PATH_FOR_NON_LISTED_NODES`; `paths: []` means "never on this node".
//! - `sharedFileSystemPath`: one path mounted on every node.
//! - `storageClassConfigs`: class name → its own `nodePathMap` or `sharedFileSystemPath`.
//!   When it is non-empty, the top-level `nodePathMap`/`sharedFileSystemPath` are ignored
//!   and a class that is not listed is refused (as upstream does).
//! - `setupCommand`, `teardownCommand`, `cmdTimeoutSeconds` configure upstream's helper
//!   pods. This backend has none, so they are accepted and ignored with a warning.
//!
//! Like Go's `encoding/json`, keys match case-insensitively (an exact match wins), so the
//! `sharedFilesystemPath` spelling in upstream's README works; `null` counts as absent;
//! unknown keys are ignored (each with a warning).
//!
//! # Validation
//!
//! Upstream's load-time rules: a path starts with `/`, is cleaned (`filepath.Abs`), is not
//! `/`; no node is listed twice; no path is listed twice for one node. Upstream only checks
//! at provisioning time that a class sets exactly one of `nodePathMap` and
//! `sharedFileSystemPath`; this parser checks it at load time, so a config that could only
//! fail later is refused (and on reload, the last good one is kept). A node entry with an
//! empty name, or a `paths` entry that is not a string, is refused too (upstream would
//! panic or silently create an entry for the node "").

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::base_path::{BasePath, BasePathError};

/// The `node` name standing for every node not listed in a `nodePathMap`.
pub const DEFAULT_NODE: &str = "DEFAULT_PATH_FOR_NON_LISTED_NODES";

/// Checks the JSON type of a value.
type TypeCheck = fn(&Value) -> bool;

/// Upstream's helper-pod settings, with the type Go would insist on. They are checked, then
/// ignored: this backend has no helper pods.
const HELPER_POD_KEYS: [(&str, &str, TypeCheck); 3] = [
    ("setupCommand", "a string", Value::is_string),
    ("teardownCommand", "a string", Value::is_string),
    ("cmdTimeoutSeconds", "an integer", is_integer),
];

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

/// Why a `config.json` was refused, or why a class has no configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("config.json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A value has the wrong JSON type.
    #[error("config.json: {at} must be {expected}, found {found}")]
    WrongType {
        /// Where, e.g. `nodePathMap[0].paths[1]`.
        at: String,
        /// The type required.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A path is not usable as a base path.
    #[error("config.json: {at}: {source}")]
    InvalidPath {
        /// Where.
        at: String,
        /// Why.
        source: BasePathError,
    },
    /// A `nodePathMap` entry has no node name.
    #[error("config.json: {at} has an empty node name")]
    EmptyNodeName {
        /// Where.
        at: String,
    },
    /// The same node is listed twice in one `nodePathMap`.
    #[error("config.json: {at}: duplicate node {node}")]
    DuplicateNode {
        /// Where.
        at: String,
        /// The node.
        node: String,
    },
    /// The same path is listed twice for one node.
    #[error("config.json: {at}: duplicate path {path} on node {node}")]
    DuplicatePath {
        /// Where.
        at: String,
        /// The node.
        node: String,
        /// The cleaned path.
        path: String,
    },
    /// Both `nodePathMap` and `sharedFileSystemPath` are set for one class.
    #[error("config.json: {at}: both nodePathMap and sharedFileSystemPath are set; use only one")]
    BothModes {
        /// Where (`the top level` or `storageClassConfigs["name"]`).
        at: String,
    },
    /// Neither `nodePathMap` nor `sharedFileSystemPath` is set for one class.
    #[error("config.json: {at}: neither nodePathMap nor sharedFileSystemPath is set")]
    NoStorage {
        /// Where.
        at: String,
    },
    /// `storageClassConfigs` is used and does not list this class.
    #[error("config.json has no entry for StorageClass {class:?} in storageClassConfigs")]
    UnknownClass {
        /// The class asked for.
        class: String,
    },
}

/// Something in the config that is accepted but worth telling the operator about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A key this parser does not know; ignored.
    UnknownKey {
        /// Where.
        at: String,
    },
    /// A key matched a known one only case-insensitively (as Go's decoder allows).
    CaseInsensitiveKey {
        /// Where, with the key as written.
        at: String,
        /// The key as documented.
        canonical: &'static str,
    },
    /// A known key that has no effect here.
    Ignored {
        /// Where.
        at: String,
        /// Why it has no effect.
        reason: &'static str,
    },
    /// One base path of a node lies inside another; their volumes share a filesystem and
    /// volume directories of the outer one may collide with the inner one.
    NestedPaths {
        /// Where.
        at: String,
        /// The outer path.
        outer: String,
        /// The inner path.
        inner: String,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownKey { at } => write!(f, "config.json: unknown key {at} ignored"),
            ConfigWarning::CaseInsensitiveKey { at, canonical } => {
                write!(
                    f,
                    "config.json: {at} read as {canonical} (keys are case-insensitive)"
                )
            }
            ConfigWarning::Ignored { at, reason } => {
                write!(f, "config.json: {at} ignored: {reason}")
            }
            ConfigWarning::NestedPaths { at, outer, inner } => {
                write!(
                    f,
                    "config.json: {at}: path {inner} lies inside path {outer}"
                )
            }
        }
    }
}

/// Where one StorageClass's volumes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassStorage {
    /// Node-local disks, per node.
    NodeLocal(NodePathMap),
    /// One filesystem mounted at the same path on every node.
    SharedFileSystem(BasePath),
}

/// A `nodePathMap`: base paths per node, with the default for nodes not listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePathMap {
    listed: BTreeMap<String, Vec<BasePath>>,
    default: Option<Vec<BasePath>>,
}

impl NodePathMap {
    /// The base paths for `node`, in config order: its own entry, else the default entry.
    /// `None` when neither exists; an empty slice when the node is listed with `paths: []`
    /// (or the default is empty).
    pub fn paths_for(&self, node: &str) -> Option<&[BasePath]> {
        self.listed
            .get(node)
            .or(self.default.as_ref())
            .map(Vec::as_slice)
    }

    /// Every base path mentioned, for any node.
    pub fn all_paths(&self) -> impl Iterator<Item = &BasePath> {
        self.listed.values().chain(self.default.iter()).flatten()
    }
}

/// A parsed, validated `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionerConfig {
    layout: Layout,
    warnings: Vec<ConfigWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// No `storageClassConfigs`: every class uses the top-level settings.
    Single(ClassStorage),
    /// `storageClassConfigs`: one entry per class, nothing for other classes.
    PerClass(BTreeMap<String, ClassStorage>),
}

impl ProvisionerConfig {
    /// Parses and validates the text of a `config.json`.
    ///
    /// ```
    /// use backend_hostpath::config::{ClassStorage, ProvisionerConfig};
    ///
    /// let config = ProvisionerConfig::parse(r#"{"nodePathMap":[
    ///     {"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/local-path-provisioner"]},
    ///     {"node":"node-a","paths":["/data1","/data2"]}]}"#).unwrap();
    /// let ClassStorage::NodeLocal(map) = config.storage_for_class("local-path").unwrap() else {
    ///     panic!("node-local config expected");
    /// };
    /// assert_eq!(map.paths_for("node-a").unwrap().len(), 2);
    /// assert_eq!(map.paths_for("node-z").unwrap()[0].to_string(), "/opt/local-path-provisioner");
    /// ```
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text)?;
        let root = as_object(&value, "the top level")?;
        let mut warnings = Vec::new();
        let mut fields = Fields::new(root, "", &mut warnings);
        let node_path_map = fields.take("nodePathMap");
        let shared = fields.take("sharedFileSystemPath");
        let class_configs = fields.take("storageClassConfigs");
        let mut helper_values = Vec::new();
        for (key, expected, type_ok) in HELPER_POD_KEYS {
            if let Some((at, value)) = fields.take(key) {
                helper_values.push((at, value, expected, type_ok));
            }
        }
        fields.finish();

        for (at, value, expected, type_ok) in helper_values {
            if !type_ok(value) {
                return Err(wrong_type(&at, expected, value));
            }
            warnings.push(ConfigWarning::Ignored {
                at,
                reason: "volumes are created in-process, there are no helper pods",
            });
        }

        let no_classes = Map::new();
        let classes = match &class_configs {
            Some((at, value)) if !value.is_null() => as_object(value, at)?,
            _ => &no_classes,
        };
        let layout = if classes.is_empty() {
            Layout::Single(parse_class_storage(
                node_path_map,
                shared,
                "the top level",
                &mut warnings,
            )?)
        } else {
            for (at, value) in [node_path_map, shared].into_iter().flatten() {
                if !is_unset(value) {
                    warnings.push(ConfigWarning::Ignored {
                        at,
                        reason: "storageClassConfigs is set, so only its entries are used",
                    });
                }
            }
            let mut per_class = BTreeMap::new();
            for (class, value) in classes {
                let at = format!("storageClassConfigs[{class:?}]");
                let storage = match value {
                    Value::Null => None,
                    other => Some(as_object(other, &at)?),
                };
                let empty = Map::new();
                let mut fields = Fields::new(storage.unwrap_or(&empty), &at, &mut warnings);
                let node_path_map = fields.take("nodePathMap");
                let shared = fields.take("sharedFileSystemPath");
                fields.finish();
                let storage = parse_class_storage(node_path_map, shared, &at, &mut warnings)?;
                per_class.insert(class.clone(), storage);
            }
            Layout::PerClass(per_class)
        };
        Ok(Self { layout, warnings })
    }

    /// Where volumes of StorageClass `class` go.
    pub fn storage_for_class(&self, class: &str) -> Result<&ClassStorage, ConfigError> {
        match &self.layout {
            Layout::Single(storage) => Ok(storage),
            Layout::PerClass(classes) => {
                classes.get(class).ok_or_else(|| ConfigError::UnknownClass {
                    class: class.to_owned(),
                })
            }
        }
    }

    /// Every base path that any class may use on `node`: its node-local paths and every
    /// shared filesystem. Used to split an adopted volume's path into base and directory.
    pub fn base_paths_on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a BasePath> {
        let storages: Vec<&ClassStorage> = match &self.layout {
            Layout::Single(storage) => vec![storage],
            Layout::PerClass(classes) => classes.values().collect(),
        };
        storages.into_iter().flat_map(move |storage| match storage {
            ClassStorage::NodeLocal(map) => map.paths_for(node).unwrap_or_default().iter(),
            ClassStorage::SharedFileSystem(path) => std::slice::from_ref(path).iter(),
        })
    }

    /// Every base path of every class and node, in config order (possibly repeated).
    pub fn all_base_paths(&self) -> impl Iterator<Item = &BasePath> {
        let storages: Vec<&ClassStorage> = match &self.layout {
            Layout::Single(storage) => vec![storage],
            Layout::PerClass(classes) => classes.values().collect(),
        };
        storages
            .into_iter()
            .flat_map(|storage| -> Box<dyn Iterator<Item = &BasePath> + '_> {
                match storage {
                    ClassStorage::NodeLocal(map) => Box::new(map.all_paths()),
                    ClassStorage::SharedFileSystem(path) => Box::new(std::iter::once(path)),
                }
            })
    }

    /// What was accepted but deserves the operator's attention.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }
}

/// Looks up the known keys of one JSON object the way Go's decoder does, and reports the rest.
struct Fields<'a, 'w> {
    object: &'a Map<String, Value>,
    prefix: String,
    used: Vec<&'a str>,
    warnings: &'w mut Vec<ConfigWarning>,
}

impl<'a, 'w> Fields<'a, 'w> {
    fn new(
        object: &'a Map<String, Value>,
        prefix: &str,
        warnings: &'w mut Vec<ConfigWarning>,
    ) -> Self {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}.")
        };
        Self {
            object,
            prefix,
            used: Vec::new(),
            warnings,
        }
    }

    /// The value of `key` (exact match first, else case-insensitive) with its location,
    /// or `None` when absent.
    fn take(&mut self, key: &'static str) -> Option<(String, &'a Value)> {
        let (found, value) = match self.object.get_key_value(key) {
            Some(hit) => hit,
            None => {
                let hit = self
                    .object
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))?;
                self.warnings.push(ConfigWarning::CaseInsensitiveKey {
                    at: format!("{}{}", self.prefix, hit.0),
                    canonical: key,
                });
                hit
            }
        };
        self.used.push(found.as_str());
        Some((format!("{}{}", self.prefix, key), value))
    }

    /// Warns about every key that was not taken.
    fn finish(self) {
        for key in self.object.keys() {
            if !self.used.contains(&key.as_str()) {
                self.warnings.push(ConfigWarning::UnknownKey {
                    at: format!("{}{key}", self.prefix),
                });
            }
        }
    }
}

fn parse_class_storage(
    node_path_map: Option<(String, &Value)>,
    shared: Option<(String, &Value)>,
    at: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ClassStorage, ConfigError> {
    let node_path_map = match node_path_map {
        Some((at, value)) if !is_unset(value) => Some(parse_node_path_map(value, &at, warnings)?),
        _ => None,
    };
    let shared = match shared {
        Some((at, value)) if !is_unset(value) => {
            let raw = value
                .as_str()
                .ok_or_else(|| wrong_type(&at, "a string", value))?;
            Some(BasePath::parse(raw).map_err(|source| ConfigError::InvalidPath { at, source })?)
        }
        _ => None,
    };
    match (node_path_map, shared) {
        (Some(_), Some(_)) => Err(ConfigError::BothModes { at: at.to_owned() }),
        (Some(map), None) => Ok(ClassStorage::NodeLocal(map)),
        (None, Some(path)) => Ok(ClassStorage::SharedFileSystem(path)),
        (None, None) => Err(ConfigError::NoStorage { at: at.to_owned() }),
    }
}

/// Upstream treats `null`, `""` and `[]` as "not configured".
fn is_unset(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn parse_node_path_map(
    value: &Value,
    at: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<NodePathMap, ConfigError> {
    let entries = value
        .as_array()
        .ok_or_else(|| wrong_type(at, "an array", value))?;
    let mut map = NodePathMap::default();
    for (index, entry) in entries.iter().enumerate() {
        let entry_at = format!("{at}[{index}]");
        let object = as_object(entry, &entry_at)?;
        let mut fields = Fields::new(object, &entry_at, warnings);
        let node = fields.take("node");
        let paths = fields.take("paths");
        fields.finish();

        let node = match node {
            Some((node_at, value)) if !value.is_null() => value
                .as_str()
                .ok_or_else(|| wrong_type(&node_at, "a string", value))?,
            _ => "",
        };
        if node.is_empty() {
            return Err(ConfigError::EmptyNodeName { at: entry_at });
        }
        let mut cleaned: Vec<BasePath> = Vec::new();
        if let Some((paths_at, value)) = paths
            && !value.is_null()
        {
            let items = value
                .as_array()
                .ok_or_else(|| wrong_type(&paths_at, "an array", value))?;
            for (i, item) in items.iter().enumerate() {
                let item_at = format!("{paths_at}[{i}]");
                let raw = item
                    .as_str()
                    .ok_or_else(|| wrong_type(&item_at, "a string", item))?;
                let path = BasePath::parse(raw).map_err(|source| ConfigError::InvalidPath {
                    at: item_at.clone(),
                    source,
                })?;
                if cleaned.contains(&path) {
                    return Err(ConfigError::DuplicatePath {
                        at: item_at,
                        node: node.to_owned(),
                        path: path.to_string(),
                    });
                }
                cleaned.push(path);
            }
        }
        for outer in &cleaned {
            for inner in cleaned.iter().filter(|inner| outer.contains(inner)) {
                warnings.push(ConfigWarning::NestedPaths {
                    at: entry_at.clone(),
                    outer: outer.to_string(),
                    inner: inner.to_string(),
                });
            }
        }
        let slot = if node == DEFAULT_NODE {
            map.default.is_some()
        } else {
            map.listed.contains_key(node)
        };
        if slot {
            return Err(ConfigError::DuplicateNode {
                at: entry_at,
                node: node.to_owned(),
            });
        }
        if node == DEFAULT_NODE {
            map.default = Some(cleaned);
        } else {
            map.listed.insert(node.to_owned(), cleaned);
        }
    }
    Ok(map)
}

fn as_object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(at, "an object", value))
}

fn wrong_type(at: &str, expected: &'static str, found: &Value) -> ConfigError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ConfigError::WrongType {
        at: at.to_owned(),
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_local(config: &ProvisionerConfig, class: &str) -> NodePathMap {
        match config.storage_for_class(class).unwrap() {
            ClassStorage::NodeLocal(map) => map.clone(),
            other => panic!("expected node-local storage, got {other:?}"),
        }
    }

    fn paths(map: &NodePathMap, node: &str) -> Option<Vec<String>> {
        map.paths_for(node)
            .map(|p| p.iter().map(ToString::to_string).collect())
    }

    /// The ConfigMap of upstream's README.
    const README: &str = r#"{
        "nodePathMap":[
        {"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/local-path-provisioner"]},
        {"node":"yasker-lp-dev1","paths":["/opt/local-path-provisioner", "/data1"]},
        {"node":"yasker-lp-dev3","paths":[]}
        ]
    }"#;

    #[test]
    fn upstream_readme_config() {
        let config = ProvisionerConfig::parse(README).unwrap();
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        let map = node_local(&config, "any-class");
        assert_eq!(
            paths(&map, "yasker-lp-dev1").unwrap(),
            ["/opt/local-path-provisioner", "/data1"]
        );
        assert_eq!(paths(&map, "yasker-lp-dev3").unwrap(), Vec::<String>::new());
        assert_eq!(
            paths(&map, "other").unwrap(),
            ["/opt/local-path-provisioner"]
        );
    }

    #[test]
    fn a_node_without_entry_and_without_default_has_no_paths() {
        let config = ProvisionerConfig::parse(r#"{"nodePathMap":[{"node":"a","paths":["/d"]}]}"#);
        assert_eq!(paths(&node_local(&config.unwrap(), "c"), "b"), None);
    }

    #[test]
    fn shared_filesystem_and_case_insensitive_keys() {
        let config =
            ProvisionerConfig::parse(r#"{"nodePathMap":[],"sharedFilesystemPath":"/mnt/shared/"}"#)
                .unwrap();
        assert_eq!(
            config.storage_for_class("x").unwrap(),
            &ClassStorage::SharedFileSystem(BasePath::parse("/mnt/shared").unwrap())
        );
        assert_eq!(
            config.warnings(),
            [ConfigWarning::CaseInsensitiveKey {
                at: "sharedFilesystemPath".into(),
                canonical: "sharedFileSystemPath"
            }]
        );
    }

    #[test]
    fn storage_class_configs_replace_the_top_level() {
        let config = ProvisionerConfig::parse(
            r#"{
            "nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/opt/lpp"]}],
            "storageClassConfigs":{
                "fast":{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["/nvme"]}]},
                "shared":{"sharedFileSystemPath":"/mnt/nfs"}
            }}"#,
        )
        .unwrap();
        assert_eq!(paths(&node_local(&config, "fast"), "n").unwrap(), ["/nvme"]);
        assert!(matches!(
            config.storage_for_class("shared").unwrap(),
            ClassStorage::SharedFileSystem(_)
        ));
        assert!(matches!(
            config.storage_for_class("local-path"),
            Err(ConfigError::UnknownClass { .. })
        ));
        assert!(
            matches!(config.warnings(), [ConfigWarning::Ignored { at, .. }] if at == "nodePathMap")
        );
        let bases: Vec<String> = config
            .base_paths_on_node("n")
            .map(ToString::to_string)
            .collect();
        assert_eq!(bases, ["/nvme", "/mnt/nfs"]);
        let all: Vec<String> = config.all_base_paths().map(ToString::to_string).collect();
        assert_eq!(all, ["/nvme", "/mnt/nfs"]);
    }

    #[test]
    fn helper_pod_settings_and_unknown_keys_are_ignored_with_warnings() {
        let config = ProvisionerConfig::parse(
            r#"{"nodePathMap":[{"node":"n","paths":["/d"],"extra":1}],
                "setupCommand":"/setup","cmdTimeoutSeconds":60,"minSize":"1Gi"}"#,
        )
        .unwrap();
        let rendered: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(rendered.len(), 4, "{rendered:?}");
        assert!(rendered.iter().any(|w| w.contains("nodePathMap[0].extra")));
        assert!(rendered.iter().any(|w| w.contains("minSize")));
        assert!(rendered.iter().any(|w| w.contains("setupCommand ignored")));
        assert!(
            rendered
                .iter()
                .any(|w| w.contains("cmdTimeoutSeconds ignored"))
        );
    }

    #[test]
    fn paths_are_cleaned_and_nested_paths_warned() {
        let config = ProvisionerConfig::parse(
            r#"{"nodePathMap":[{"node":"n","paths":["/data/","/data/./fast"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            paths(&node_local(&config, "c"), "n").unwrap(),
            ["/data", "/data/fast"]
        );
        assert!(matches!(
            config.warnings(),
            [ConfigWarning::NestedPaths { .. }]
        ));
    }

    #[test]
    fn upstream_validation_rules() {
        let err = |text: &str| ProvisionerConfig::parse(text).unwrap_err();
        assert!(matches!(err("{"), ConfigError::Json(_)));
        assert!(matches!(err("# comment"), ConfigError::Json(_)));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"node":"n","paths":["opt"]}]}"#),
            ConfigError::InvalidPath {
                source: BasePathError::NotAbsolute { .. },
                ..
            }
        ));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"node":"n","paths":["/"]}]}"#),
            ConfigError::InvalidPath {
                source: BasePathError::Root { .. },
                ..
            }
        ));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"node":"n","paths":[""]}]}"#),
            ConfigError::InvalidPath { .. }
        ));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"node":"n","paths":["/d","/d/"]}]}"#),
            ConfigError::DuplicatePath { .. }
        ));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"node":"n","paths":[]},{"node":"n","paths":["/x"]}]}"#),
            ConfigError::DuplicateNode { .. }
        ));
        assert!(matches!(
            err(
                r#"{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES"},{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES"}]}"#
            ),
            ConfigError::DuplicateNode { .. }
        ));
    }

    #[test]
    fn stricter_than_upstream_at_load_time() {
        let err = |text: &str| ProvisionerConfig::parse(text).unwrap_err();
        assert!(matches!(err("{}"), ConfigError::NoStorage { .. }));
        assert!(matches!(
            err(r#"{"nodePathMap":[]}"#),
            ConfigError::NoStorage { .. }
        ));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"node":"n","paths":["/a"]}],"sharedFileSystemPath":"/s"}"#),
            ConfigError::BothModes { .. }
        ));
        assert!(matches!(
            err(r#"{"storageClassConfigs":{"c":{}}}"#),
            ConfigError::NoStorage { at } if at == r#"storageClassConfigs["c"]"#
        ));
        assert!(matches!(
            err(r#"{"nodePathMap":[{"paths":["/a"]}]}"#),
            ConfigError::EmptyNodeName { .. }
        ));
        let wrong = err(r#"{"nodePathMap":[{"node":"n","paths":[null]}]}"#);
        assert_eq!(
            wrong.to_string(),
            "config.json: nodePathMap[0].paths[0] must be a string, found null"
        );
        assert!(matches!(
            err(r#"{"nodePathMap":{}}"#),
            ConfigError::WrongType { .. }
        ));
        assert!(matches!(
            err(r#"{"sharedFileSystemPath":"/s","cmdTimeoutSeconds":"60"}"#),
            ConfigError::WrongType { .. }
        ));
    }

    #[test]
    fn null_counts_as_absent_like_go() {
        let config = ProvisionerConfig::parse(
            r#"{"nodePathMap":[{"node":"n","paths":null}],"sharedFileSystemPath":null,"storageClassConfigs":null}"#,
        )
        .unwrap();
        assert_eq!(
            paths(&node_local(&config, "c"), "n").unwrap(),
            Vec::<String>::new()
        );
    }
}
