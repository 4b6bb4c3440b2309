//! NFS subdirectory backend: one directory per claim on an NFS export.
//!
//! A drop-in successor of nfs-subdir-external-provisioner: the same StorageClass
//! parameters, directory names and PersistentVolumes, with the defects its users reported
//! for years fixed (see [`parameters`], [`path_pattern`] and [`provisioner`]).
//!
//! - [`parameters`]: typed StorageClass parameters (pure).
//! - [`path_pattern`]: `pathPattern` rendering that cannot leave the export (pure).
//! - [`naming`]: default, archive and legacy directory names (pure).
//! - [`record`]: what a PersistentVolume records about its directory (pure).
//! - [`conflict`]: which existing volumes a new directory would share data with (pure).
//! - [`export`]: the export, mounted or reached with a userspace NFSv3 client (I/O).
//! - [`provisioner`]: [`NfsProvisioner`], the `Provisioner` implementation.

pub mod conflict;
pub mod export;
pub mod naming;
pub mod parameters;
pub mod path_pattern;
pub mod provisioner;
pub mod record;

pub use provisioner::{NfsConfig, NfsProvisioner};
