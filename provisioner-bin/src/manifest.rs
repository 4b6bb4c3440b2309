//! Reading Kubernetes objects from manifest files: one object, multi-document YAML, a
//! `v1 List` (or any `*List`), or a JSON array. Errors name the file, the document and the
//! field, because the person reading them is usually looking at that file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A manifest file that could not be turned into the objects asked for.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or JSON.
    #[error("{path}: not valid YAML or JSON: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The file holds no object.
    #[error("{path}: no {expected} found in the file")]
    Empty {
        /// The file.
        path: PathBuf,
        /// The kind that was expected.
        expected: &'static str,
    },
    /// One object was expected and the file holds several.
    #[error("{path}: expected exactly one {expected}, found {found} objects")]
    NotOne {
        /// The file.
        path: PathBuf,
        /// The kind that was expected.
        expected: &'static str,
        /// How many objects the file holds.
        found: usize,
    },
    /// An object of another kind.
    #[error("{at}: expected a {expected}, found {found}")]
    WrongKind {
        /// Where the object is.
        at: Location,
        /// The kind that was expected.
        expected: &'static str,
        /// What the object says it is.
        found: String,
    },
    /// A field of the object has the wrong shape.
    #[error("{at}: field `{field}`: {message}")]
    Field {
        /// Where the object is.
        at: Location,
        /// Dotted path of the field, e.g. `spec.resources.requests.storage`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Where an object sits: file, and document or list position within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// Zero-based position of the object among all objects of the file, after lists are
    /// expanded.
    pub index: usize,
    /// The object's `metadata.name`, when it has one.
    pub name: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (object #{}", self.path.display(), self.index + 1)?;
        if let Some(name) = &self.name {
            write!(f, " \"{name}\"")?;
        }
        f.write_str(")")
    }
}

/// Reads every object of kind `T` from `path`, in file order.
///
/// Lists (`kind: List` or `kind: PersistentVolumeList` and the like) are expanded in place.
/// An object whose `kind` differs from `T`'s is an error, not silently skipped.
pub fn read_all<T>(path: &Path) -> Result<Vec<T>, ManifestError>
where
    T: DeserializeOwned + k8s_openapi::Resource,
{
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_all(path, &text)
}

/// Reads exactly one object of kind `T` from `path`.
pub fn read_one<T>(path: &Path) -> Result<T, ManifestError>
where
    T: DeserializeOwned + k8s_openapi::Resource,
{
    let mut objects = read_all::<T>(path)?;
    match objects.len() {
        0 => Err(ManifestError::Empty {
            path: path.to_owned(),
            expected: T::KIND,
        }),
        1 => Ok(objects.remove(0)),
        found => Err(ManifestError::NotOne {
            path: path.to_owned(),
            expected: T::KIND,
            found,
        }),
    }
}

/// Parses manifest text that was read from `path` (used for error messages only).
pub fn parse_all<T>(path: &Path, text: &str) -> Result<Vec<T>, ManifestError>
where
    T: DeserializeOwned + k8s_openapi::Resource,
{
    let documents = split_documents(path, text)?;
    let mut values = Vec::new();
    for document in documents {
        expand_lists(document, &mut values);
    }
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| typed(path, index, value))
        .collect()
}

fn split_documents(path: &Path, text: &str) -> Result<Vec<Value>, ManifestError> {
    let syntax = |message: String| ManifestError::Syntax {
        path: path.to_owned(),
        message,
    };
    let trimmed = text.trim_start();
    // JSON is YAML too, but the JSON parser's messages are clearer for JSON input.
    let documents = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![serde_json::from_str::<Value>(text).map_err(|e| syntax(e.to_string()))?]
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| syntax(e.to_string()))?
    };
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

fn expand_lists(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.into_iter().for_each(|item| expand_lists(item, out)),
        Value::Object(ref map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Value::Object(mut map) = value
                && let Some(Value::Array(items)) = map.remove("items")
            {
                items.into_iter().for_each(|item| expand_lists(item, out));
            }
        }
        other => out.push(other),
    }
}

fn typed<T>(path: &Path, index: usize, value: Value) -> Result<T, ManifestError>
where
    T: DeserializeOwned + k8s_openapi::Resource,
{
    let at = Location {
        path: path.to_owned(),
        index,
        name: value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let kind = value.get("kind").and_then(Value::as_str);
    match kind {
        Some(kind) if kind == T::KIND => {}
        Some(kind) => {
            return Err(ManifestError::WrongKind {
                at,
                expected: T::KIND,
                found: kind.to_owned(),
            });
        }
        None if !value.is_object() => {
            return Err(ManifestError::WrongKind {
                at,
                expected: T::KIND,
                found: format!("a {} value", json_type(&value)),
            });
        }
        // Objects without `kind` are accepted, as `kubectl create -f` would not be, because
        // people paste `spec` excerpts; any shape error still surfaces below.
        None => {}
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|error| ManifestError::Field {
        at,
        field: error.path().to_string(),
        message: error.inner().to_string(),
    })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

    fn path() -> &'static Path {
        Path::new("volumes.yaml")
    }

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let text = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: a}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: PersistentVolume
  metadata: {name: b}
- apiVersion: v1
  kind: PersistentVolume
  metadata: {name: c}
"#;
        let pvs: Vec<PersistentVolume> = parse_all(path(), text).unwrap();
        let names: Vec<_> = pvs
            .iter()
            .map(|pv| pv.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn reads_a_json_array() {
        let text = r#"[{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"x"}}]"#;
        let pvs: Vec<PersistentVolume> = parse_all(path(), text).unwrap();
        assert_eq!(pvs.len(), 1);
    }

    #[test]
    fn wrong_kind_names_the_object() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n";
        let err = parse_all::<PersistentVolumeClaim>(Path::new("claim.yaml"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "claim.yaml (object #1 \"web\"): expected a PersistentVolumeClaim, found Pod"
        );
    }

    #[test]
    fn bad_field_names_the_field_path() {
        let text = "kind: PersistentVolumeClaim\nmetadata: {name: c}\nspec:\n  accessModes: ReadWriteOnce\n";
        let err = parse_all::<PersistentVolumeClaim>(path(), text).unwrap_err();
        match err {
            ManifestError::Field { field, .. } => assert_eq!(field, "spec.accessModes"),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = parse_all::<PersistentVolume>(path(), "kind: [unclosed\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("volumes.yaml: not valid YAML or JSON"),
            "{err}"
        );
    }

    #[test]
    fn read_one_rejects_several_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("two.yaml");
        std::fs::write(
            &file,
            "kind: PersistentVolumeClaim\nmetadata: {name: a}\n---\nkind: PersistentVolumeClaim\nmetadata: {name: b}\n",
        )
        .unwrap();
        let err = read_one::<PersistentVolumeClaim>(&file).unwrap_err();
        assert!(
            matches!(err, ManifestError::NotOne { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn unreadable_file_is_reported() {
        let err = read_all::<PersistentVolume>(Path::new("/nonexistent/volumes.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/volumes.yaml"),
            "{err}"
        );
    }
}
