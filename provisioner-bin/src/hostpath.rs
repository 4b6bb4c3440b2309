//! The `hostpath-provisioner` binary's own settings, and the node-side pieces the backend
//! needs from the cluster.
//!
//! One instance runs on every node (a DaemonSet, `NODE_NAME` from the downward API). Each
//! provisions the claims the scheduler placed on its node and deletes the volumes on its
//! node; one of them, elected with a Lease, also does the work that belongs to no node
//! ([`duties`]).
//!
//! - [`HostPathArgs`] → [`HostPathSettings`]: every setting a flag and an environment
//!   variable, checked by the pure [`HostPathArgs::resolve`]; an error names both.
//! - [`reserve::ReservedSpace`], a
//!   [`VolumeFilesystem`](backend_hostpath::fs::VolumeFilesystem) that keeps some space free
//!   on every disk, so placement (and *reschedule* when nothing fits) counts it as taken.
//! - [`nodes`]: this node's labels (node-affinity values for `nodeAffinityKey`), and
//!   whether a volume's node still exists (for the node-gone policy), from a watch of Node
//!   metadata.
//! - [`duties`]: the cluster-wide duties (claims without a node, shared-filesystem
//!   volumes, volumes of vanished nodes) and the controller that serves them while the
//!   Lease is held.
//! - [`run`]: the wiring, around the shared [`runtime`](crate::runtime) pieces.
//!
//! # Provisioner name
//!
//! The default name is [`DEFAULT_PROVISIONER_NAME`] (`provisioner-rs.io/hostpath`), with
//! `rancher.io/local-path` as an alias by default: StorageClasses of
//! local-path-provisioner keep working unchanged, and the volumes it provisioned (with
//! `pv.kubernetes.io/provisioned-by: rancher.io/local-path`) are adopted and deleted
//! correctly. `--alias ''` (or `PROVISIONER_ALIASES=`) turns the alias off. The
//! `local-path` StorageClass of `deploy/hostpath/` keeps upstream's
//! `provisioner: rancher.io/local-path` (the field is immutable), so the manifests apply over
//! an existing local-path installation.
//!
//! ```
//! use clap::Parser;
//! use provisioner_bin::hostpath::HostPathArgs;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     hostpath: HostPathArgs,
//! }
//!
//! let cli = Cli::parse_from(["hostpath-provisioner", "--node-name=node-a"]);
//! let settings = cli.hostpath.resolve()?;
//! assert_eq!(settings.node_name, "node-a");
//! assert_eq!(settings.provisioner_name, "provisioner-rs.io/hostpath");
//! assert_eq!(settings.aliases, ["rancher.io/local-path"]);
//! # Ok::<(), provisioner_bin::hostpath::HostPathArgsError>(())
//! ```

pub mod duties;
pub mod nodes;
pub mod reserve;
pub mod run;

use std::path::PathBuf;
use std::time::Duration;

use backend_hostpath::ownership::NodeGonePolicy;
use backend_hostpath::volume::LOCAL_PATH_PROVISIONER_NAME;
use provisioner_core::quantity::Quantity;

use crate::runtime::args::parse_duration;

/// The provisioner name used when none is given.
pub const DEFAULT_PROVISIONER_NAME: &str = "provisioner-rs.io/hostpath";
/// Where the config is read by default: where local-path-provisioner's Deployment mounts
/// its ConfigMap.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/config/config.json";

/// `NODE_NAME`: the node this instance serves (downward API `spec.nodeName`).
pub const NODE_NAME: &str = "NODE_NAME";
/// `CONFIG_PATH`: local-path's `config.json`.
pub const CONFIG_PATH: &str = "CONFIG_PATH";
/// `CONFIG_POLL_INTERVAL`: how often the config file is checked for changes.
pub const CONFIG_POLL_INTERVAL: &str = "CONFIG_POLL_INTERVAL";
/// `PROVISIONER_NAME`: the StorageClass `provisioner` this instance serves.
pub const PROVISIONER_NAME: &str = "PROVISIONER_NAME";
/// `PROVISIONER_ALIASES`: other names it also answers to (comma-separated).
pub const PROVISIONER_ALIASES: &str = "PROVISIONER_ALIASES";
/// `NODE_GONE_POLICY`: what deleting a volume of a vanished node does.
pub const NODE_GONE_POLICY: &str = "NODE_GONE_POLICY";
/// `RESERVED_SPACE`: space kept free on every disk.
pub const RESERVED_SPACE: &str = "RESERVED_SPACE";
/// `FS_TIMEOUT`: time limit of one filesystem call.
pub const FS_TIMEOUT: &str = "FS_TIMEOUT";

/// The hostPath settings of `hostpath-provisioner`, as given: every one a flag and an
/// environment variable. Values stay text until [`resolve`](Self::resolve), so a wrong one
/// is reported with both of its names.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "hostPath")]
pub struct HostPathArgs {
    /// The node this instance serves: the Node object's name, from the downward API
    /// (`fieldRef: spec.nodeName`). Required.
    #[arg(long, env = NODE_NAME, value_name = "NODE")]
    pub node_name: Option<String>,

    /// local-path-provisioner's `config.json` (`nodePathMap`, `sharedFileSystemPath`,
    /// `storageClassConfigs`). It is re-read when it changes; an invalid new version keeps
    /// the last good one in effect.
    #[arg(long, env = CONFIG_PATH, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// How often the config file is checked for changes (`10s`, `1m`).
    #[arg(long, env = CONFIG_POLL_INTERVAL, value_name = "DURATION", default_value = "10s")]
    pub config_poll_interval: String,

    /// Provisioner name: StorageClasses with this `provisioner` are served.
    #[arg(long, env = PROVISIONER_NAME, value_name = "NAME",
          default_value = DEFAULT_PROVISIONER_NAME)]
    pub provisioner_name: String,

    /// Another provisioner name to answer to, so the classes and volumes of the provisioner
    /// this one replaces keep working. Repeat the flag, or separate names with commas; an
    /// empty value turns aliases off.
    #[arg(
        long = "alias",
        env = PROVISIONER_ALIASES,
        value_name = "NAME",
        value_delimiter = ',',
        default_value = LOCAL_PATH_PROVISIONER_NAME
    )]
    pub aliases: Vec<String>,

    /// Deleting a volume whose node no longer exists: `forget` keeps the data (the disk is
    /// gone with its node) and deletes the PersistentVolume, with a warning, as
    /// local-path-provisioner does; `wait` keeps the PersistentVolume Released until the
    /// node returns, then deletes the directory.
    #[arg(long, env = NODE_GONE_POLICY, value_name = "POLICY", default_value = "forget")]
    pub node_gone_policy: String,

    /// Space to keep free on every disk (a quantity: `10Gi`, `500M`). A volume that would
    /// eat into it goes to another path, or another node.
    #[arg(long, env = RESERVED_SPACE, value_name = "QUANTITY", default_value = "0")]
    pub reserved_space: String,

    /// Time limit of one filesystem call (`30s`): a hung disk fails that call instead of
    /// stalling the provisioner.
    #[arg(long, env = FS_TIMEOUT, value_name = "DURATION", default_value = "30s")]
    pub fs_timeout: String,
}

/// The hostPath settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathSettings {
    /// The node this instance serves.
    pub node_name: String,
    /// The config file.
    pub config: PathBuf,
    /// How often the config file is checked.
    pub config_poll_interval: Duration,
    /// The provisioner name.
    pub provisioner_name: String,
    /// Other names it answers to, without duplicates or the name itself.
    pub aliases: Vec<String>,
    /// What deleting a volume of a vanished node does.
    pub node_gone_policy: NodeGonePolicy,
    /// Bytes kept free on every disk.
    pub reserved_bytes: u64,
    /// Time limit of one filesystem call.
    pub fs_timeout: Duration,
}

/// A missing or invalid setting. The message names the environment variable and the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPathArgsError {
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

impl HostPathArgs {
    /// Checks every value.
    pub fn resolve(&self) -> Result<HostPathSettings, HostPathArgsError> {
        let node_name = self
            .node_name
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .ok_or(HostPathArgsError::Missing {
                env: NODE_NAME,
                flag: "--node-name",
                what: "the Node this instance serves; in a DaemonSet, set it from the downward \
                       API with `valueFrom: {fieldRef: {fieldPath: spec.nodeName}}`",
            })?;
        if !is_object_name(node_name) {
            return Err(invalid(
                NODE_NAME,
                "--node-name",
                node_name,
                "expected a Node name (lowercase letters, digits, '-' and '.')",
            ));
        }
        let config_poll_interval = positive_duration(
            &self.config_poll_interval,
            CONFIG_POLL_INTERVAL,
            "--config-poll-interval",
        )?;
        let provisioner_name = self.provisioner_name.trim();
        if provisioner_name.is_empty() {
            return Err(HostPathArgsError::Missing {
                env: PROVISIONER_NAME,
                flag: "--provisioner-name",
                what: "the `provisioner` of the StorageClasses to serve",
            });
        }
        let node_gone_policy = match self.node_gone_policy.trim() {
            "forget" => NodeGonePolicy::ForgetVolume,
            "wait" => NodeGonePolicy::KeepVolume,
            other => {
                return Err(invalid(
                    NODE_GONE_POLICY,
                    "--node-gone-policy",
                    other,
                    "expected `forget` (delete the PersistentVolume, keep the data) or `wait` \
                     (keep the PersistentVolume until the node returns)",
                ));
            }
        };
        let reserved_bytes = parse_bytes(&self.reserved_space).ok_or_else(|| {
            invalid(
                RESERVED_SPACE,
                "--reserved-space",
                &self.reserved_space,
                "expected a non-negative quantity such as 0, 10Gi or 500M",
            )
        })?;
        let fs_timeout = positive_duration(&self.fs_timeout, FS_TIMEOUT, "--fs-timeout")?;

        let mut aliases: Vec<String> = Vec::new();
        for alias in self.aliases.iter().map(|alias| alias.trim()) {
            if !alias.is_empty() && alias != provisioner_name && !aliases.iter().any(|a| a == alias)
            {
                aliases.push(alias.to_owned());
            }
        }
        Ok(HostPathSettings {
            node_name: node_name.to_owned(),
            config: self.config.clone(),
            config_poll_interval,
            provisioner_name: provisioner_name.to_owned(),
            aliases,
            node_gone_policy,
            reserved_bytes,
            fs_timeout,
        })
    }
}

/// Whether `name` can name a Node (an RFC 1123 subdomain).
fn is_object_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A quantity as a whole number of bytes, rounded up; `None` if it is not a quantity or is
/// negative.
fn parse_bytes(text: &str) -> Option<u64> {
    let quantity = Quantity::parse(text.trim()).ok()?;
    if quantity.is_negative() {
        return None;
    }
    Some(u64::try_from(quantity.ceil_value()).unwrap_or(u64::MAX))
}

fn positive_duration(
    text: &str,
    env: &'static str,
    flag: &'static str,
) -> Result<Duration, HostPathArgsError> {
    parse_duration(text)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| {
            invalid(
                env,
                flag,
                text,
                "expected a positive duration such as 30s, 500ms or 2m",
            )
        })
}

fn invalid(
    env: &'static str,
    flag: &'static str,
    value: &str,
    expected: &str,
) -> HostPathArgsError {
    HostPathArgsError::Invalid {
        env,
        flag,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        hostpath: HostPathArgs,
    }

    fn resolve(args: &[&str]) -> Result<HostPathSettings, HostPathArgsError> {
        let argv = std::iter::once("hostpath-provisioner").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().hostpath.resolve()
    }

    #[test]
    fn defaults_are_local_path_compatible() {
        let settings = resolve(&["--node-name", "node-a"]).unwrap();
        assert_eq!(
            settings,
            HostPathSettings {
                node_name: "node-a".to_owned(),
                config: PathBuf::from("/etc/config/config.json"),
                config_poll_interval: Duration::from_secs(10),
                provisioner_name: DEFAULT_PROVISIONER_NAME.to_owned(),
                aliases: vec!["rancher.io/local-path".to_owned()],
                node_gone_policy: NodeGonePolicy::ForgetVolume,
                reserved_bytes: 0,
                fs_timeout: Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn the_node_name_is_required_and_must_name_a_node() {
        let missing = resolve(&[]).unwrap_err();
        assert!(matches!(
            missing,
            HostPathArgsError::Missing { env: NODE_NAME, .. }
        ));
        let message = missing.to_string();
        assert!(
            message.contains("NODE_NAME") && message.contains("spec.nodeName"),
            "{message}"
        );
        for bad in ["Node-A", "node_a", "-node", "a..b", "node/a"] {
            assert!(
                matches!(
                    resolve(&[&format!("--node-name={bad}")]),
                    Err(HostPathArgsError::Invalid { env: NODE_NAME, .. })
                ),
                "{bad}"
            );
        }
        assert!(resolve(&["--node-name", "ip-10-0-0-1.ec2.internal"]).is_ok());
    }

    #[test]
    fn aliases_are_deduplicated_and_can_be_turned_off() {
        let settings = resolve(&[
            "--node-name=n",
            "--provisioner-name=example.com/local",
            "--alias=rancher.io/local-path,example.com/local, rancher.io/local-path",
            "--alias=other",
        ])
        .unwrap();
        assert_eq!(settings.aliases, ["rancher.io/local-path", "other"]);
        assert!(
            resolve(&["--node-name=n", "--alias="])
                .unwrap()
                .aliases
                .is_empty()
        );
    }

    #[test]
    fn node_gone_policy_values() {
        let policy = |value: &str| {
            resolve(&["--node-name=n", "--node-gone-policy", value]).map(|s| s.node_gone_policy)
        };
        assert_eq!(policy("forget"), Ok(NodeGonePolicy::ForgetVolume));
        assert_eq!(policy("wait"), Ok(NodeGonePolicy::KeepVolume));
        let error = policy("delete").unwrap_err();
        assert!(error.to_string().contains("--node-gone-policy"), "{error}");
    }

    #[test]
    fn reserved_space_is_a_quantity_of_bytes() {
        let reserved = |value: &str| {
            resolve(&["--node-name=n", &format!("--reserved-space={value}")])
                .map(|s| s.reserved_bytes)
        };
        assert_eq!(reserved("10Gi"), Ok(10 << 30));
        assert_eq!(reserved("500M"), Ok(500_000_000));
        assert_eq!(reserved("1.5"), Ok(2), "rounded up to whole bytes");
        for bad in ["-1", "10GB", "lots", ""] {
            assert!(
                matches!(
                    reserved(bad),
                    Err(HostPathArgsError::Invalid {
                        env: RESERVED_SPACE,
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_must_be_positive() {
        let settings = resolve(&[
            "--node-name=n",
            "--fs-timeout=500ms",
            "--config-poll-interval=2m",
        ])
        .unwrap();
        assert_eq!(settings.fs_timeout, Duration::from_millis(500));
        assert_eq!(settings.config_poll_interval, Duration::from_secs(120));
        for bad in ["0s", "soon", "5d"] {
            assert!(
                resolve(&["--node-name=n", "--fs-timeout", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
