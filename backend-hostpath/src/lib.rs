//! Node-local hostPath backend: one directory per claim on a node disk, a drop-in for
//! rancher's `local-path-provisioner` without its helper pods.
//!
//! One [`HostPathProvisioner`](provisioner::HostPathProvisioner) runs per node (a DaemonSet
//! with `NODE_NAME` from the downward API). It provisions the claims the scheduler placed on
//! its node and deletes the volumes that live there, in-process and in milliseconds.
//!
//! # Where to start
//!
//! - [`reload::ConfigReloader`] loads local-path's `config.json` ([`config`]) and keeps it
//!   current;
//! - [`provisioner::HostPathProvisioner`] is the
//!   [`Provisioner`](provisioner_core::provisioner::Provisioner) to hand to the controller.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use backend_hostpath::fs::{HostFilesystem, TimedFilesystem};
//! use backend_hostpath::ownership::NodeIdentity;
//! use backend_hostpath::provisioner::HostPathProvisioner;
//! use backend_hostpath::reload::ConfigReloader;
//!
//! let reloader = ConfigReloader::load("/etc/config/config.json", Duration::from_secs(5)).await?;
//! let provisioner = HostPathProvisioner::new(
//!     NodeIdentity::new(std::env::var("NODE_NAME")?),
//!     reloader.subscribe(),
//!     TimedFilesystem::new(HostFilesystem),
//! );
//! tokio::spawn(reloader.run(Duration::from_secs(10), std::future::pending::<()>()));
//! // ... run the provisioning controller with `provisioner` ...
//! # let _ = provisioner; Ok(()) }
//! ```
//!
//! # Modules
//!
//! Pure (plain data in, plain data out, no I/O): [`base_path`], [`config`], [`params`],
//! [`pattern`], [`placement`], [`ownership`], [`volume`]. I/O: [`fs`] (directories, markers
//! and free space, symlink-safe, every call under a timeout), [`reload`] (the config file)
//! and [`provisioner`], which ties them together.
//!
//! # Compatibility with local-path-provisioner
//!
//! Same `config.json` (`nodePathMap` with `DEFAULT_PATH_FOR_NON_LISTED_NODES`,
//! `sharedFileSystemPath`, `storageClassConfigs`), StorageClass parameters (`nodePath`,
//! `pathPattern`, `allowUnsafePathPattern`, `nodeAffinityKey`), annotations
//! (`defaultVolumeType` on the class, `volumeType` on the claim), default directory
//! `<pv>_<namespace>_<claim>`, directory mode `0777`, and PV shape (hostPath
//! `DirectoryOrCreate` or `local`, required node affinity on `kubernetes.io/hostname` or
//! `nodeAffinityKey`, `local.path.provisioner/selected-node`). Its volumes can be adopted
//! and deleted ([`volume`]). Deliberate differences, each refusing what upstream would
//! accept or adding what it lacks:
//!
//! - placement by free space, and *reschedule* when a node has no path or no room
//!   ([`placement`]), instead of a random path and a permanent failure;
//! - `pathPattern` values that are missing, empty or escape the claim's directory are
//!   errors ([`pattern`]); symlinks are never followed below a base path ([`fs`]);
//! - config problems upstream only reports at provisioning time are refused at load time;
//!   unknown StorageClass parameters are refused ([`config`], [`params`]);
//! - `mode`, `uid` and `gid` parameters; `userPattern`/`groupPattern`/`permPattern`,
//!   `setupCommand`/`teardownCommand`/`cmdTimeoutSeconds` have no effect (no helper pods);
//! - the directory is recorded on the PV, so deletes never depend on the class or config.

pub mod base_path;
pub mod config;
pub mod fs;
pub mod ownership;
pub mod params;
pub mod pattern;
pub mod placement;
pub mod provisioner;
pub mod reload;
pub mod volume;
