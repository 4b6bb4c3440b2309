//! Kubernetes dynamic volume provisioning.
//!
//! `provisioner-core` holds what every provisioner shares:
//!
//! - [`quantity`]: exact `resource.Quantity` parsing and comparison;
//! - [`binding`]: the PVC→PV matching and binding rules, exactly as kube-controller-manager's
//!   PV controller and kube-scheduler's volume-binding plugin decide them. Pure functions
//!   over plain data, no I/O.
//!
//! The modules that talk to the API server sit around this pure core, never inside it.

pub mod binding;
pub mod quantity;
