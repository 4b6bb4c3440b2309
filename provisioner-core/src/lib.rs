//! Kubernetes dynamic volume provisioning.
//!
//! `provisioner-core` holds what every provisioner shares. Backend authors start with
//! [`provisioner::Provisioner`] and run it with [`controller::ProvisionController`].
//!
//! - [`provisioner`]: the backend trait, its requests, results and errors;
//! - [`controller`]: the generic, crash-safe provisioning controller (reflector caches,
//!   kube-runtime appliers), carrying out the pure decisions of [`plan`];
//! - [`plan`]: which claims to provision and which volumes to delete, the PersistentVolume
//!   built, the in-flight record, retries — pure functions, no I/O;
//! - [`events`]: core/v1 Events with the Go provisioner library's reasons;
//! - [`leader`]: leader election on a Lease, with an Endpoints lock for clusters whose RBAC
//!   predates Leases, published as a `watch` channel the binary hands to the controller;
//! - [`metrics`]: Prometheus metrics (the Go library's names, and more) registered into a
//!   registry the binary owns;
//! - [`volume_path`]: relative directory paths that provably stay inside their root, for
//!   backends that render names from user input;
//! - [`quantity`]: exact `resource.Quantity` parsing and comparison;
//! - [`binding`]: the PVC→PV matching and binding rules, exactly as kube-controller-manager's
//!   PV controller and kube-scheduler's volume-binding plugin decide them. Pure functions
//!   over plain data, no I/O.
//!
//! The modules that talk to the API server sit around this pure core, never inside it.

pub mod binding;
pub mod controller;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod provisioner;
pub mod quantity;
pub mod volume_path;
