//! StorageClass parameters of the NFS backend, parsed and validated up front.
//!
//! Pure: [`NfsParameters::parse`] takes the class's `parameters` map and either returns
//! typed values or a [`ParameterError`] that names the parameter and quotes the value.
//!
//! | parameter | values | default |
//! |---|---|---|
//! | `onDelete` | `delete`, `retain`, `archive` | see below |
//! | `archiveOnDelete` | a Go boolean (`true`, `false`, `1`, `0`, `t`, `f`, …) | archive |
//! | `pathPattern` | a [`PathPattern`] | `<namespace>-<claim>-<pv name>` |
//! | `mode` | octal, `0` to `7777` (`0777`, `2770`, `0o750`) | `0777` |
//! | `uid`, `gid` | decimal id | unchanged (the provisioner's own) |
//! | `server`, `share` | NFS server and absolute export path | the provisioner's |
//! | `allowSharedDirectory` | a Go boolean | `false` |
//!
//! **Delete policy**, as nfs-subdir-external-provisioner decides it: `onDelete` wins when
//! set; otherwise `archiveOnDelete: "false"` deletes, and `true` or absent archives. One
//! deliberate difference: nfs-subdir does not know `onDelete: archive` and falls through to
//! `archiveOnDelete`, so `archive` + `archiveOnDelete: "false"` deleted the data there; here
//! the policy written out (`archive`) wins and the data is kept. nfs-subdir silently ignored
//! an unknown `onDelete` value and failed every *delete* on an unparsable `archiveOnDelete`
//! (leaving volumes stuck); here both are refused when a claim is *provisioned*, with the
//! value in the error.
//!
//! **Mode.** The default stays nfs-subdir's world-writable `0777` for compatibility (pods
//! running as any user can write). Classes should set `mode` with `uid`/`gid` (for example
//! `mode: "2770"`, `gid: "2000"` with a matching `fsGroup`) for anything shared.
//!
//! **Sharing.** Two live volumes never get the same (or nested) directory unless the class
//! sets `allowSharedDirectory: "true"`; see [`crate::conflict`].

use std::collections::BTreeMap;
use std::fmt;

use provisioner_core::provisioner::ParameterError;

use crate::path_pattern::PathPattern;

/// `onDelete`: what deleting a volume does to its directory.
pub const ON_DELETE: &str = "onDelete";
/// `archiveOnDelete`: nfs-subdir's older switch between archive and delete.
pub const ARCHIVE_ON_DELETE: &str = "archiveOnDelete";
/// `pathPattern`: the directory template.
pub const PATH_PATTERN: &str = "pathPattern";
/// `mode`: the directory's permission bits, in octal.
pub const MODE: &str = "mode";
/// `uid`: the directory's owner.
pub const UID: &str = "uid";
/// `gid`: the directory's group.
pub const GID: &str = "gid";
/// `server`: the NFS server (direct access only).
pub const SERVER: &str = "server";
/// `share`: the exported path on `server` (direct access only).
pub const SHARE: &str = "share";
/// `allowSharedDirectory`: lets several live volumes use one directory.
pub const ALLOW_SHARED_DIRECTORY: &str = "allowSharedDirectory";

/// Every parameter this backend reads; anything else is refused as a likely typo.
pub const KNOWN_PARAMETERS: [&str; 9] = [
    ON_DELETE,
    ARCHIVE_ON_DELETE,
    PATH_PATTERN,
    MODE,
    UID,
    GID,
    SERVER,
    SHARE,
    ALLOW_SHARED_DIRECTORY,
];

/// The directory mode when the class sets none: nfs-subdir's `0777`.
pub const DEFAULT_MODE: u32 = 0o777;

/// What deleting a volume does to its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeletePolicy {
    /// Remove the directory and everything in it.
    Delete,
    /// Leave the directory as it is.
    Retain,
    /// Rename the directory to `archived-<name>` next to where it was.
    Archive,
}

impl DeletePolicy {
    /// The parameter value for this policy (`delete`, `retain`, `archive`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Retain => "retain",
            Self::Archive => "archive",
        }
    }

    /// Parses `delete`, `retain` or `archive` (exactly, as nfs-subdir matches them).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "delete" => Some(Self::Delete),
            "retain" => Some(Self::Retain),
            "archive" => Some(Self::Archive),
            _ => None,
        }
    }

    /// nfs-subdir's precedence: `onDelete` when set, else `archiveOnDelete` (absent means
    /// archive).
    pub fn resolve(on_delete: Option<Self>, archive_on_delete: Option<bool>) -> Self {
        match (on_delete, archive_on_delete) {
            (Some(policy), _) => policy,
            (None, Some(false)) => Self::Delete,
            (None, Some(true) | None) => Self::Archive,
        }
    }
}

impl fmt::Display for DeletePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a class's volumes live when it names its own server and share (direct access).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportLocation {
    /// The NFS server, as written into PersistentVolumes.
    pub server: String,
    /// The exported path on that server, absolute, without a trailing `/`.
    pub share: String,
}

/// The parsed parameters of one StorageClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsParameters {
    /// What deleting a volume does to its directory.
    pub delete_policy: DeletePolicy,
    /// The directory template; `None` means the default `<namespace>-<claim>-<pv name>`.
    pub path_pattern: Option<PathPattern>,
    /// Exact permission bits for a new volume directory (set after creation, so the umask
    /// does not apply).
    pub mode: u32,
    /// Owner for a new volume directory; `None` leaves the creating user.
    pub uid: Option<u32>,
    /// Group for a new volume directory; `None` leaves the creating user's group.
    pub gid: Option<u32>,
    /// The class's own server and share; `None` uses the provisioner's.
    pub export: Option<ExportLocation>,
    /// Whether several live volumes may use the same directory.
    pub allow_shared_directory: bool,
}

impl Default for NfsParameters {
    fn default() -> Self {
        Self {
            delete_policy: DeletePolicy::Archive,
            path_pattern: None,
            mode: DEFAULT_MODE,
            uid: None,
            gid: None,
            export: None,
            allow_shared_directory: false,
        }
    }
}

impl NfsParameters {
    /// Parses a StorageClass's `parameters`.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use backend_nfs::parameters::{DeletePolicy, NfsParameters};
    ///
    /// let raw = BTreeMap::from([("archiveOnDelete".to_owned(), "false".to_owned())]);
    /// let parameters = NfsParameters::parse(&raw).unwrap();
    /// assert_eq!(parameters.delete_policy, DeletePolicy::Delete);
    /// assert_eq!(parameters.mode, 0o777);
    ///
    /// let bad = BTreeMap::from([("archiveOnDelete".to_owned(), "yes".to_owned())]);
    /// let error = NfsParameters::parse(&bad).unwrap_err();
    /// assert_eq!(error.parameter, "archiveOnDelete");
    /// assert!(error.reason.contains("\"yes\""));
    /// ```
    pub fn parse(raw: &BTreeMap<String, String>) -> Result<Self, ParameterError> {
        ParameterError::reject_unknown(raw, &KNOWN_PARAMETERS)?;
        let get = |key: &str| raw.get(key).map(String::as_str);

        let on_delete = get(ON_DELETE)
            .map(|value| {
                DeletePolicy::parse(value).ok_or_else(|| {
                    invalid(ON_DELETE, value, "expected one of delete, retain, archive")
                })
            })
            .transpose()?;
        let archive_on_delete = get(ARCHIVE_ON_DELETE)
            .map(|value| parse_go_bool(value).ok_or_else(|| invalid_bool(ARCHIVE_ON_DELETE, value)))
            .transpose()?;

        // An empty pattern means "default" (nfs-subdir falls back to the default name).
        let path_pattern = get(PATH_PATTERN)
            .filter(|pattern| !pattern.is_empty())
            .map(|pattern| {
                PathPattern::parse(pattern)
                    .map_err(|error| invalid(PATH_PATTERN, pattern, &error.to_string()))
            })
            .transpose()?;

        let mode = get(MODE)
            .map(parse_mode)
            .transpose()?
            .unwrap_or(DEFAULT_MODE);
        let uid = get(UID).map(|value| parse_id(UID, value)).transpose()?;
        let gid = get(GID).map(|value| parse_id(GID, value)).transpose()?;

        let export = match (get(SERVER), get(SHARE)) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ParameterError::invalid(
                    SHARE,
                    "required when server is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ParameterError::invalid(
                    SERVER,
                    "required when share is set",
                ));
            }
            (Some(server), Some(share)) => Some(ExportLocation {
                server: parse_server(server)?,
                share: parse_share(share)?,
            }),
        };

        let allow_shared_directory = get(ALLOW_SHARED_DIRECTORY)
            .map(|value| {
                parse_go_bool(value).ok_or_else(|| invalid_bool(ALLOW_SHARED_DIRECTORY, value))
            })
            .transpose()?
            .unwrap_or(false);

        Ok(Self {
            delete_policy: DeletePolicy::resolve(on_delete, archive_on_delete),
            path_pattern,
            mode,
            uid,
            gid,
            export,
            allow_shared_directory,
        })
    }
}

/// Go's `strconv.ParseBool`, which nfs-subdir uses for `archiveOnDelete`: exactly `1`, `t`,
/// `T`, `TRUE`, `true`, `True` and `0`, `f`, `F`, `FALSE`, `false`, `False`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Normalises an absolute export path: collapses `//`, drops a trailing `/` (except for
/// `/` itself), and refuses relative paths and `.`/`..` segments.
pub fn normalize_share(share: &str) -> Option<String> {
    if !share.starts_with('/') || share.chars().any(char::is_control) {
        return None;
    }
    let mut segments = Vec::new();
    for segment in share.split('/').filter(|segment| !segment.is_empty()) {
        if segment == "." || segment == ".." {
            return None;
        }
        segments.push(segment);
    }
    Some(format!("/{}", segments.join("/")))
}

fn parse_share(value: &str) -> Result<String, ParameterError> {
    normalize_share(value).ok_or_else(|| {
        invalid(
            SHARE,
            value,
            "expected an absolute export path without '.' or '..' segments",
        )
    })
}

fn parse_server(value: &str) -> Result<String, ParameterError> {
    let plausible = !value.is_empty()
        && !value.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/' || c == ',');
    if plausible {
        Ok(value.to_owned())
    } else {
        Err(invalid(SERVER, value, "expected a host name or IP address"))
    }
}

fn parse_mode(value: &str) -> Result<u32, ParameterError> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    let mode = (!digits.is_empty() && digits.len() <= 5)
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .filter(|mode| *mode <= 0o7777);
    mode.ok_or_else(|| invalid(MODE, value, "expected octal permission bits from 0 to 7777"))
}

fn parse_id(parameter: &str, value: &str) -> Result<u32, ParameterError> {
    // u32::MAX is chown's "leave unchanged" sentinel (-1), never a real id.
    let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits_only
        .then(|| value.parse::<u32>().ok())
        .flatten()
        .filter(|id| *id != u32::MAX)
        .ok_or_else(|| {
            invalid(
                parameter,
                value,
                "expected a decimal id from 0 to 4294967294",
            )
        })
}

fn invalid(parameter: &str, value: &str, expected: &str) -> ParameterError {
    ParameterError::invalid(parameter, format!("{value:?}: {expected}"))
}

fn invalid_bool(parameter: &str, value: &str) -> ParameterError {
    invalid(
        parameter,
        value,
        "expected true or false (Go syntax: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<NfsParameters, ParameterError> {
        NfsParameters::parse(&mk_raw(pairs))
    }

    fn policy(pairs: &[(&str, &str)]) -> DeletePolicy {
        parse(pairs).unwrap().delete_policy
    }

    #[test]
    fn empty_class_gets_nfs_subdir_defaults() {
        assert_eq!(parse(&[]).unwrap(), NfsParameters::default());
        assert_eq!(
            NfsParameters::default().delete_policy,
            DeletePolicy::Archive
        );
        assert_eq!(NfsParameters::default().mode, 0o777);
    }

    #[test]
    fn delete_policy_precedence_matches_nfs_subdir() {
        // onDelete alone.
        assert_eq!(policy(&[("onDelete", "delete")]), DeletePolicy::Delete);
        assert_eq!(policy(&[("onDelete", "retain")]), DeletePolicy::Retain);
        assert_eq!(policy(&[("onDelete", "archive")]), DeletePolicy::Archive);
        // archiveOnDelete alone; absent means archive.
        assert_eq!(
            policy(&[("archiveOnDelete", "false")]),
            DeletePolicy::Delete
        );
        assert_eq!(
            policy(&[("archiveOnDelete", "true")]),
            DeletePolicy::Archive
        );
        assert_eq!(policy(&[]), DeletePolicy::Archive);
        // onDelete wins over archiveOnDelete either way.
        assert_eq!(
            policy(&[("onDelete", "delete"), ("archiveOnDelete", "true")]),
            DeletePolicy::Delete
        );
        assert_eq!(
            policy(&[("onDelete", "retain"), ("archiveOnDelete", "false")]),
            DeletePolicy::Retain
        );
        // The documented difference: an explicit archive keeps the data.
        assert_eq!(
            policy(&[("onDelete", "archive"), ("archiveOnDelete", "false")]),
            DeletePolicy::Archive
        );
    }

    #[test]
    fn archive_on_delete_accepts_exactly_go_booleans() {
        for value in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(
                policy(&[("archiveOnDelete", value)]),
                DeletePolicy::Archive,
                "{value}"
            );
        }
        for value in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(
                policy(&[("archiveOnDelete", value)]),
                DeletePolicy::Delete,
                "{value}"
            );
        }
        for value in ["yes", "no", "", " true", "tRUE", "2"] {
            let error = parse(&[("archiveOnDelete", value)]).unwrap_err();
            assert_eq!(error.parameter, "archiveOnDelete");
            assert!(error.reason.contains(&format!("{value:?}")), "{error}");
        }
    }

    #[test]
    fn on_delete_values_are_exact() {
        for value in ["Delete", "DELETE", "remove", ""] {
            let error = parse(&[("onDelete", value)]).unwrap_err();
            assert_eq!(error.parameter, "onDelete");
            assert!(error.to_string().contains(&format!("{value:?}")), "{error}");
        }
    }

    #[test]
    fn mode_is_octal_and_bounded() {
        assert_eq!(parse(&[("mode", "0777")]).unwrap().mode, 0o777);
        assert_eq!(parse(&[("mode", "770")]).unwrap().mode, 0o770);
        assert_eq!(parse(&[("mode", "2775")]).unwrap().mode, 0o2775);
        assert_eq!(parse(&[("mode", "0o750")]).unwrap().mode, 0o750);
        assert_eq!(parse(&[("mode", "0")]).unwrap().mode, 0);
        for value in ["", "8", "0x1ff", "17777", "-1", "rwx", "0o", "000000777"] {
            let error = parse(&[("mode", value)]).unwrap_err();
            assert_eq!(error.parameter, "mode", "{value}");
        }
    }

    #[test]
    fn ids_are_decimal_and_not_the_sentinel() {
        let parameters = parse(&[("uid", "1000"), ("gid", "0")]).unwrap();
        assert_eq!((parameters.uid, parameters.gid), (Some(1000), Some(0)));
        assert_eq!(parse(&[]).unwrap().uid, None);
        for value in ["", "-1", "+5", "4294967295", "4294967296", "1e3", "root"] {
            assert_eq!(
                parse(&[("uid", value)]).unwrap_err().parameter,
                "uid",
                "{value}"
            );
            assert_eq!(
                parse(&[("gid", value)]).unwrap_err().parameter,
                "gid",
                "{value}"
            );
        }
    }

    #[test]
    fn server_and_share_come_together() {
        let parameters = parse(&[("server", "127.0.0.1"), ("share", "/srv//nfs/")]).unwrap();
        assert_eq!(
            parameters.export,
            Some(ExportLocation {
                server: "127.0.0.1".into(),
                share: "/srv/nfs".into()
            })
        );
        assert_eq!(parse(&[("server", "a")]).unwrap_err().parameter, "share");
        assert_eq!(parse(&[("share", "/a")]).unwrap_err().parameter, "server");
        assert_eq!(
            parse(&[("server", "a b"), ("share", "/a")])
                .unwrap_err()
                .parameter,
            "server"
        );
        for share in ["relative", "/a/../b", "/a/./b", ""] {
            let error = parse(&[("server", "nfs"), ("share", share)]).unwrap_err();
            assert_eq!(error.parameter, "share", "{share}");
        }
    }

    #[test]
    fn share_normalisation() {
        assert_eq!(normalize_share("/").as_deref(), Some("/"));
        assert_eq!(
            normalize_share("//shared//x/").as_deref(),
            Some("/shared/x")
        );
        assert_eq!(normalize_share("shared"), None);
    }

    #[test]
    fn sharing_is_opt_in() {
        assert!(!parse(&[]).unwrap().allow_shared_directory);
        assert!(
            parse(&[("allowSharedDirectory", "true")])
                .unwrap()
                .allow_shared_directory
        );
        assert_eq!(
            parse(&[("allowSharedDirectory", "sure")])
                .unwrap_err()
                .parameter,
            "allowSharedDirectory"
        );
    }

    #[test]
    fn path_pattern_is_validated_with_the_class() {
        assert!(
            parse(&[("pathPattern", "${.PVC.namespace}/${.PVC.name}")])
                .unwrap()
                .path_pattern
                .is_some()
        );
        assert_eq!(parse(&[("pathPattern", "")]).unwrap().path_pattern, None);
        let error = parse(&[("pathPattern", "${.PVC.uid}")]).unwrap_err();
        assert_eq!(error.parameter, "pathPattern");
        assert!(error.reason.contains("${.PVC.uid}"), "{error}");
    }

    #[test]
    fn unknown_parameters_are_refused() {
        assert_eq!(
            parse(&[("archiveOnDelte", "false")]).unwrap_err().parameter,
            "archiveOnDelte"
        );
    }
}
