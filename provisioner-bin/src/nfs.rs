//! The `nfs-provisioner` binary's own settings, and how they become an [`NfsConfig`].
//!
//! Every setting is a flag and an environment variable. The variables of
//! nfs-subdir-external-provisioner's image keep their names and meaning (`PROVISIONER_NAME`,
//! `NFS_SERVER`, `NFS_PATH`, with the export mounted at `/persistentvolumes`), so its
//! Deployment runs this binary unchanged; the rest are new and optional.
//!
//! Pure: [`NfsArgs::resolve`] checks the raw values and either returns [`NfsSettings`] or
//! an [`NfsArgsError`] naming the variable and the flag to set, and [`export_readiness`]
//! turns export probes into a `/readyz` verdict. Nothing here touches the network or the
//! file system; [`run`] does, wiring the settings to [`crate::runtime`].
//!
//! ```
//! use clap::Parser;
//! use provisioner_bin::nfs::NfsArgs;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     nfs: NfsArgs,
//! }
//!
//! let cli = Cli::parse_from([
//!     "nfs-provisioner",
//!     "--provisioner-name=nfs-test",
//!     "--nfs-server=10.0.0.5",
//!     "--nfs-path=/shared",
//! ]);
//! let settings = cli.nfs.resolve()?;
//! assert_eq!(settings.provisioner_name, "nfs-test");
//! assert_eq!(settings.config.share, "/shared");
//! # Ok::<(), provisioner_bin::nfs::NfsArgsError>(())
//! ```

pub mod run;

use std::path::PathBuf;

use backend_nfs::NfsConfig;
use backend_nfs::export::{DEFAULT_OPERATION_TIMEOUT, ExportError, FsStats};
use backend_nfs::parameters::{DeletePolicy, normalize_share, parse_go_bool};
use backend_nfs::provisioner::{DEFAULT_MOUNT_ROOT, DirectOptions};

use crate::runtime::args::parse_duration;

/// `PROVISIONER_NAME`: the StorageClass `provisioner` this instance serves.
pub const PROVISIONER_NAME: &str = "PROVISIONER_NAME";
/// `PROVISIONER_ALIASES`: other names it also answers to (comma-separated).
pub const PROVISIONER_ALIASES: &str = "PROVISIONER_ALIASES";
/// `NFS_SERVER`: the server written into PersistentVolumes.
pub const NFS_SERVER: &str = "NFS_SERVER";
/// `NFS_PATH`: the exported path on that server.
pub const NFS_PATH: &str = "NFS_PATH";
/// `NFS_ACCESS`: `mounted` or `direct`.
pub const NFS_ACCESS: &str = "NFS_ACCESS";
/// `NFS_MOUNT_ROOT`: where the export is mounted (mounted access).
pub const NFS_MOUNT_ROOT: &str = "NFS_MOUNT_ROOT";
/// `NFS_PORT`: the server's NFS port (direct access; else from the portmapper).
pub const NFS_PORT: &str = "NFS_PORT";
/// `NFS_MOUNT_PORT`: the server's MOUNT port (direct access; else from the portmapper).
pub const NFS_MOUNT_PORT: &str = "NFS_MOUNT_PORT";
/// `NFS_PORTMAPPER_PORT`: the portmapper's port (direct access).
pub const NFS_PORTMAPPER_PORT: &str = "NFS_PORTMAPPER_PORT";
/// `NFS_UNPRIVILEGED_SOURCE_PORT`: connect from a port above 1023 (direct access).
pub const NFS_UNPRIVILEGED_SOURCE_PORT: &str = "NFS_UNPRIVILEGED_SOURCE_PORT";
/// `NFS_UID`: user id presented to the server (direct access).
pub const NFS_UID: &str = "NFS_UID";
/// `NFS_GID`: group id presented to the server (direct access).
pub const NFS_GID: &str = "NFS_GID";
/// `NFS_OPERATION_TIMEOUT`: time limit of one operation on the export.
pub const NFS_OPERATION_TIMEOUT: &str = "NFS_OPERATION_TIMEOUT";
/// `LEGACY_DELETE_POLICY`: what deleting a volume of the Go provisioners does.
pub const LEGACY_DELETE_POLICY: &str = "LEGACY_DELETE_POLICY";

/// The NFS settings of `nfs-provisioner`, as given: every one a flag and an environment
/// variable. Values stay text until [`resolve`](Self::resolve), so a wrong one is reported
/// with both of its names.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "NFS")]
pub struct NfsArgs {
    /// Provisioner name: StorageClasses with this `provisioner` are served. Required.
    #[arg(long, env = PROVISIONER_NAME, value_name = "NAME")]
    pub provisioner_name: Option<String>,

    /// Another provisioner name to answer to, so classes and volumes of the provisioner this
    /// one replaces keep working (e.g. `k8s-sigs.io/nfs-subdir-external-provisioner` or
    /// `fuseim.pri/ifs`). Repeat the flag, or separate names with commas.
    #[arg(
        long = "alias",
        env = PROVISIONER_ALIASES,
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub aliases: Vec<String>,

    /// NFS server written into PersistentVolumes (and contacted with direct access).
    /// Required.
    #[arg(long, env = NFS_SERVER, value_name = "HOST")]
    pub nfs_server: Option<String>,

    /// Exported path on that server, absolute (`/shared`). PersistentVolumes get
    /// `<path>/<directory>`. Required.
    #[arg(long, env = NFS_PATH, value_name = "PATH")]
    pub nfs_path: Option<String>,

    /// How the export is reached: `mounted` (the export is mounted at --mount-root, as
    /// nfs-subdir-external-provisioner requires) or `direct` (a userspace NFSv3 client: no
    /// mount, and StorageClasses may name their own `server` and `share`).
    #[arg(long, env = NFS_ACCESS, value_name = "MODE", default_value = "mounted")]
    pub access: String,

    /// Where the export is mounted (mounted access).
    #[arg(long, env = NFS_MOUNT_ROOT, value_name = "DIR", default_value = DEFAULT_MOUNT_ROOT)]
    pub mount_root: PathBuf,

    /// NFS port of the servers (direct access); asked from their portmapper when unset.
    /// Set it together with --mount-port.
    #[arg(long, env = NFS_PORT, value_name = "PORT")]
    pub nfs_port: Option<String>,

    /// MOUNT port of the servers (direct access); asked from their portmapper when unset.
    #[arg(long, env = NFS_MOUNT_PORT, value_name = "PORT")]
    pub mount_port: Option<String>,

    /// Portmapper port of the servers (direct access).
    #[arg(long, env = NFS_PORTMAPPER_PORT, value_name = "PORT", default_value = "111")]
    pub portmapper_port: String,

    /// Connect from a source port above 1023 (direct access). Exports with the default
    /// `secure` option refuse such clients; the default (a port below 1024) needs root or
    /// CAP_NET_BIND_SERVICE.
    #[arg(long, env = NFS_UNPRIVILEGED_SOURCE_PORT, value_name = "BOOL", default_value = "false",
          num_args = 0..=1, default_missing_value = "true")]
    pub unprivileged_source_port: String,

    /// User id presented to the servers (direct access).
    #[arg(long, env = NFS_UID, value_name = "UID", default_value = "0")]
    pub nfs_uid: String,

    /// Group id presented to the servers (direct access).
    #[arg(long, env = NFS_GID, value_name = "GID", default_value = "0")]
    pub nfs_gid: String,

    /// Time limit of one operation on an export (`30s`, `500ms`, `1m30s`): a hung server
    /// fails that operation with an Event instead of stalling the provisioner.
    #[arg(
        long,
        env = NFS_OPERATION_TIMEOUT,
        value_name = "DURATION",
        default_value_t = default_operation_timeout()
    )]
    pub operation_timeout: String,

    /// What deleting a volume made by nfs-subdir-external-provisioner (no record of its
    /// own) does: `archive` (keep the data as `archived-<name>`), `delete` or `retain`.
    #[arg(long, env = LEGACY_DELETE_POLICY, value_name = "POLICY", default_value = "archive")]
    pub legacy_delete_policy: String,
}

/// The NFS settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsSettings {
    /// The provisioner name.
    pub provisioner_name: String,
    /// Other names it answers to, without duplicates or the name itself.
    pub aliases: Vec<String>,
    /// The backend configuration.
    pub config: NfsConfig,
}

/// A missing or invalid setting. The message names the environment variable and the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NfsArgsError {
    /// A required setting is not set (or empty).
    #[error("{env} is not set: set the environment variable {env} or pass {flag} ({what})")]
    Missing {
        /// The environment variable.
        env: &'static str,
        /// The flag.
        flag: &'static str,
        /// What the setting is.
        what: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid {env} / {flag} value {value:?}: {expected}")]
    Invalid {
        /// The environment variable.
        env: &'static str,
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is expected instead.
        expected: String,
    },
}

impl NfsArgs {
    /// Checks every value and builds the backend configuration.
    pub fn resolve(&self) -> Result<NfsSettings, NfsArgsError> {
        let provisioner_name = required(
            self.provisioner_name.as_deref(),
            PROVISIONER_NAME,
            "--provisioner-name",
            "the `provisioner` of the StorageClasses to serve, e.g. nfs-test",
        )?;
        let server = required(
            self.nfs_server.as_deref(),
            NFS_SERVER,
            "--nfs-server",
            "the NFS server's address, written into PersistentVolumes",
        )?;
        if server
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(invalid(
                NFS_SERVER,
                "--nfs-server",
                server,
                "expected a host name or an IP address",
            ));
        }
        let path = required(
            self.nfs_path.as_deref(),
            NFS_PATH,
            "--nfs-path",
            "the exported path on the NFS server, e.g. /shared",
        )?;
        let share = normalize_share(path).ok_or_else(|| {
            invalid(
                NFS_PATH,
                "--nfs-path",
                path,
                "expected an absolute path without '.' or '..' segments, e.g. /shared",
            )
        })?;

        let config = match self.access.as_str() {
            "mounted" => {
                if self.mount_root.as_os_str().is_empty() || !self.mount_root.is_absolute() {
                    return Err(invalid(
                        NFS_MOUNT_ROOT,
                        "--mount-root",
                        &self.mount_root.display().to_string(),
                        "expected an absolute directory",
                    ));
                }
                NfsConfig::mounted(server, share, self.mount_root.clone())
            }
            "direct" => NfsConfig::direct(server, share, self.direct_options()?),
            other => {
                return Err(invalid(
                    NFS_ACCESS,
                    "--access",
                    other,
                    "expected `mounted` or `direct`",
                ));
            }
        };
        let timeout = parse_duration(&self.operation_timeout)
            .ok()
            .filter(|timeout| !timeout.is_zero())
            .ok_or_else(|| {
                invalid(
                    NFS_OPERATION_TIMEOUT,
                    "--operation-timeout",
                    &self.operation_timeout,
                    "expected a positive duration such as 30s, 500ms or 2m",
                )
            })?;
        let legacy = DeletePolicy::parse(&self.legacy_delete_policy).ok_or_else(|| {
            invalid(
                LEGACY_DELETE_POLICY,
                "--legacy-delete-policy",
                &self.legacy_delete_policy,
                "expected archive, delete or retain",
            )
        })?;
        let config = config
            .with_operation_timeout(timeout)
            .with_legacy_delete_policy(legacy);

        let mut aliases: Vec<String> = Vec::new();
        for alias in self.aliases.iter().map(|alias| alias.trim()) {
            if !alias.is_empty() && alias != provisioner_name && !aliases.iter().any(|a| a == alias)
            {
                aliases.push(alias.to_owned());
            }
        }
        Ok(NfsSettings {
            provisioner_name: provisioner_name.to_owned(),
            aliases,
            config,
        })
    }

    fn direct_options(&self) -> Result<DirectOptions, NfsArgsError> {
        let nfs_port = optional_port(self.nfs_port.as_deref(), NFS_PORT, "--nfs-port")?;
        let mount_port = optional_port(self.mount_port.as_deref(), NFS_MOUNT_PORT, "--mount-port")?;
        let portmapper_port = port(
            &self.portmapper_port,
            NFS_PORTMAPPER_PORT,
            "--portmapper-port",
        )?;
        let unprivileged = parse_go_bool(&self.unprivileged_source_port).ok_or_else(|| {
            invalid(
                NFS_UNPRIVILEGED_SOURCE_PORT,
                "--unprivileged-source-port",
                &self.unprivileged_source_port,
                "expected true or false",
            )
        })?;
        let uid = id(&self.nfs_uid, NFS_UID, "--nfs-uid")?;
        let gid = id(&self.nfs_gid, NFS_GID, "--nfs-gid")?;
        let options = DirectOptions::default()
            .with_portmapper_port(portmapper_port)
            .with_privileged_source_port(!unprivileged)
            .with_credentials(uid, gid);
        match (nfs_port, mount_port) {
            (Some(nfs), Some(mount)) => Ok(options.with_ports(nfs, mount)),
            (None, None) => Ok(options),
            (Some(_), None) => Err(NfsArgsError::Missing {
                env: NFS_MOUNT_PORT,
                flag: "--mount-port",
                what: "the MOUNT port, needed with an explicit NFS port",
            }),
            (None, Some(_)) => Err(NfsArgsError::Missing {
                env: NFS_PORT,
                flag: "--nfs-port",
                what: "the NFS port, needed with an explicit MOUNT port",
            }),
        }
    }
}

/// Whether the provisioner can do its work, from
/// [`NfsProvisioner::check_exports`](backend_nfs::NfsProvisioner::check_exports): ready
/// when every export answers, otherwise the reason naming each export that does not.
///
/// ```
/// use provisioner_bin::nfs::export_readiness;
///
/// assert_eq!(export_readiness(&[]), Ok(()));
/// ```
pub fn export_readiness(results: &[(String, Result<FsStats, ExportError>)]) -> Result<(), String> {
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(location, result)| {
            result
                .as_ref()
                .err()
                .map(|error| format!("export {location}: {error}"))
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The default operation timeout, as `--operation-timeout` accepts it.
pub fn default_operation_timeout() -> String {
    format!("{}s", DEFAULT_OPERATION_TIMEOUT.as_secs())
}

fn required<'a>(
    value: Option<&'a str>,
    env: &'static str,
    flag: &'static str,
    what: &'static str,
) -> Result<&'a str, NfsArgsError> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or(NfsArgsError::Missing { env, flag, what })
}

fn invalid(env: &'static str, flag: &'static str, value: &str, expected: &str) -> NfsArgsError {
    NfsArgsError::Invalid {
        env,
        flag,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

fn port(value: &str, env: &'static str, flag: &'static str) -> Result<u16, NfsArgsError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| invalid(env, flag, value, "expected a port number from 1 to 65535"))
}

fn optional_port(
    value: Option<&str>,
    env: &'static str,
    flag: &'static str,
) -> Result<Option<u16>, NfsArgsError> {
    match value.map(str::trim).filter(|value| !value.is_empty()) {
        Some(value) => port(value, env, flag).map(Some),
        None => Ok(None),
    }
}

fn id(value: &str, env: &'static str, flag: &'static str) -> Result<u32, NfsArgsError> {
    value
        .trim()
        .parse::<u32>()
        .map_err(|_| invalid(env, flag, value, "expected a numeric id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use backend_nfs::export::{ErrorContext, Operation};
    use backend_nfs::provisioner::Access;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        nfs: NfsArgs,
    }

    /// Parses flags only: the tests must not depend on the environment they run in.
    fn mk_args(flags: &[&str]) -> NfsArgs {
        let mut argv = vec!["nfs-provisioner"];
        argv.extend_from_slice(flags);
        let mut args = Cli::parse_from(argv).nfs;
        // `env = ...` may have picked up variables of the test process: only flags count.
        for (value, flag) in [
            (&mut args.provisioner_name, "--provisioner-name"),
            (&mut args.nfs_server, "--nfs-server"),
            (&mut args.nfs_path, "--nfs-path"),
            (&mut args.nfs_port, "--nfs-port"),
            (&mut args.mount_port, "--mount-port"),
        ] {
            if !flags.iter().any(|f| f.starts_with(flag)) {
                *value = None;
            }
        }
        if !flags.iter().any(|f| f.starts_with("--alias")) {
            args.aliases.clear();
        }
        args
    }

    const SEED: [&str; 3] = [
        "--provisioner-name=nfs-test",
        "--nfs-server=127.0.0.1",
        "--nfs-path=/shared",
    ];

    fn with_seed(extra: &[&str]) -> NfsArgs {
        let mut flags = SEED.to_vec();
        flags.extend_from_slice(extra);
        mk_args(&flags)
    }

    #[test]
    fn the_go_images_settings_give_a_mounted_export_at_persistentvolumes() {
        let settings = with_seed(&[]).resolve().unwrap();
        assert_eq!(settings.provisioner_name, "nfs-test");
        assert!(settings.aliases.is_empty());
        assert_eq!(settings.config.server, "127.0.0.1");
        assert_eq!(settings.config.share, "/shared");
        assert_eq!(
            settings.config.access,
            Access::Mounted {
                root: PathBuf::from("/persistentvolumes")
            }
        );
        assert_eq!(settings.config.operation_timeout, Duration::from_secs(30));
        assert_eq!(settings.config.legacy_delete_policy, DeletePolicy::Archive);
    }

    #[test]
    fn each_missing_setting_names_its_variable_and_flag() {
        for (missing, env, flag) in [
            (0, PROVISIONER_NAME, "--provisioner-name"),
            (1, NFS_SERVER, "--nfs-server"),
            (2, NFS_PATH, "--nfs-path"),
        ] {
            let mut flags = SEED.to_vec();
            flags.remove(missing);
            let error = mk_args(&flags).resolve().unwrap_err();
            assert!(
                matches!(error, NfsArgsError::Missing { env: e, flag: f, .. } if e == env && f == flag),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(env) && message.contains(flag), "{message}");
        }
    }

    #[test]
    fn an_empty_value_counts_as_missing_like_in_the_go_image() {
        let error = mk_args(&["--provisioner-name=", "--nfs-server=a", "--nfs-path=/x"])
            .resolve()
            .unwrap_err();
        assert!(matches!(
            error,
            NfsArgsError::Missing {
                env: PROVISIONER_NAME,
                ..
            }
        ));
    }

    #[test]
    fn relative_or_dotted_paths_are_refused_and_trailing_slashes_dropped() {
        for bad in ["shared", "/shared/../etc", "/a/./b"] {
            let error = mk_args(&[
                "--provisioner-name=p",
                "--nfs-server=s",
                &format!("--nfs-path={bad}"),
            ])
            .resolve()
            .unwrap_err();
            assert!(
                matches!(&error, NfsArgsError::Invalid { env: NFS_PATH, value, .. } if value == bad),
                "{error:?}"
            );
        }
        let settings = mk_args(&[
            "--provisioner-name=p",
            "--nfs-server=s",
            "--nfs-path=//shared//",
        ])
        .resolve()
        .unwrap();
        assert_eq!(settings.config.share, "/shared");
    }

    #[test]
    fn the_mount_root_moves_with_its_flag() {
        let settings = with_seed(&["--mount-root=/srv/export"]).resolve().unwrap();
        assert_eq!(
            settings.config.access,
            Access::Mounted {
                root: PathBuf::from("/srv/export")
            }
        );
        let error = with_seed(&["--mount-root=relative"]).resolve().unwrap_err();
        assert!(matches!(
            error,
            NfsArgsError::Invalid {
                env: NFS_MOUNT_ROOT,
                ..
            }
        ));
    }

    #[test]
    fn direct_access_takes_ports_credentials_and_source_port_choice() {
        let settings = with_seed(&[
            "--access=direct",
            "--nfs-port=2049",
            "--mount-port=20048",
            "--unprivileged-source-port",
            "--nfs-uid=1000",
            "--nfs-gid=2000",
        ])
        .resolve()
        .unwrap();
        let expected = DirectOptions::default()
            .with_ports(2049, 20048)
            .with_privileged_source_port(false)
            .with_credentials(1000, 2000);
        assert_eq!(settings.config.access, Access::Direct(expected));

        let defaults = with_seed(&["--access=direct"]).resolve().unwrap();
        assert_eq!(
            defaults.config.access,
            Access::Direct(DirectOptions::default())
        );
    }

    #[test]
    fn one_explicit_port_without_the_other_is_refused() {
        let error = with_seed(&["--access=direct", "--nfs-port=2049"])
            .resolve()
            .unwrap_err();
        assert!(matches!(
            error,
            NfsArgsError::Missing {
                env: NFS_MOUNT_PORT,
                ..
            }
        ));
        let error = with_seed(&["--access=direct", "--mount-port=1"])
            .resolve()
            .unwrap_err();
        assert!(matches!(error, NfsArgsError::Missing { env: NFS_PORT, .. }));
    }

    #[test]
    fn invalid_values_name_the_setting_and_quote_the_value() {
        for (flag, env) in [
            ("--access=nfs4", NFS_ACCESS),
            ("--operation-timeout=soon", NFS_OPERATION_TIMEOUT),
            ("--operation-timeout=0s", NFS_OPERATION_TIMEOUT),
            ("--legacy-delete-policy=Delete", LEGACY_DELETE_POLICY),
        ] {
            let error = with_seed(&[flag]).resolve().unwrap_err();
            let value = flag.split_once('=').unwrap().1;
            assert!(
                matches!(&error, NfsArgsError::Invalid { env: e, value: v, .. } if *e == env && v == value),
                "{flag}: {error:?}"
            );
        }
        for (flag, env) in [
            ("--nfs-port=0", NFS_PORT),
            ("--portmapper-port=70000", NFS_PORTMAPPER_PORT),
            ("--nfs-uid=-1", NFS_UID),
            (
                "--unprivileged-source-port=yes",
                NFS_UNPRIVILEGED_SOURCE_PORT,
            ),
        ] {
            let error = with_seed(&["--access=direct", "--mount-port=1", flag])
                .resolve()
                .unwrap_err();
            assert!(
                matches!(&error, NfsArgsError::Invalid { env: e, .. } if *e == env),
                "{flag}: {error:?}"
            );
        }
    }

    #[test]
    fn aliases_come_from_repeated_flags_or_commas_without_duplicates() {
        let settings = with_seed(&[
            "--alias=fuseim.pri/ifs,k8s-sigs.io/nfs-subdir-external-provisioner",
            "--alias=fuseim.pri/ifs",
            "--alias=nfs-test",
            "--alias= ",
        ])
        .resolve()
        .unwrap();
        assert_eq!(
            settings.aliases,
            [
                "fuseim.pri/ifs",
                "k8s-sigs.io/nfs-subdir-external-provisioner"
            ]
        );
    }

    #[test]
    fn legacy_delete_policy_and_timeout_reach_the_config() {
        let settings = with_seed(&[
            "--legacy-delete-policy=retain",
            "--operation-timeout=1500ms",
        ])
        .resolve()
        .unwrap();
        assert_eq!(settings.config.legacy_delete_policy, DeletePolicy::Retain);
        assert_eq!(
            settings.config.operation_timeout,
            Duration::from_millis(1500)
        );
    }

    fn mk_unreachable(location: &str) -> ExportError {
        ExportError::Unreachable {
            context: ErrorContext {
                export: location.to_owned(),
                operation: Operation::FsStat,
                path: String::new(),
            },
            reason: "connection refused".to_owned(),
        }
    }

    fn mk_stats() -> FsStats {
        FsStats {
            total_bytes: 10,
            free_bytes: 5,
            available_bytes: 5,
        }
    }

    #[test]
    fn readiness_fails_naming_every_export_that_does_not_answer() {
        let healthy = ("127.0.0.1:/a (direct)".to_owned(), Ok(mk_stats()));
        assert_eq!(export_readiness(std::slice::from_ref(&healthy)), Ok(()));
        let results = [
            healthy,
            (
                "127.0.0.1:/b (direct)".to_owned(),
                Err(mk_unreachable("127.0.0.1:/b (direct)")),
            ),
            (
                "127.0.0.1:/c (direct)".to_owned(),
                Err(mk_unreachable("127.0.0.1:/c (direct)")),
            ),
        ];
        let reason = export_readiness(&results).unwrap_err();
        assert!(!reason.contains("/a"), "{reason}");
        assert!(reason.contains("export 127.0.0.1:/b (direct)"), "{reason}");
        assert!(reason.contains("export 127.0.0.1:/c (direct)"), "{reason}");
        assert!(reason.contains("connection refused"), "{reason}");
    }

    #[test]
    fn the_default_timeout_is_the_backends() {
        let settings = with_seed(&[]).resolve().unwrap();
        assert_eq!(settings.config.operation_timeout, DEFAULT_OPERATION_TIMEOUT);
    }
}
