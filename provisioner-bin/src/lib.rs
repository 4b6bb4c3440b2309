//! Shared pieces of the shipped provisioner binaries: reading manifests and the subcommands
//! every binary carries (`explain`).

pub mod explain;
pub mod hostpath;
pub mod manifest;
pub mod nfs;
pub mod runtime;
