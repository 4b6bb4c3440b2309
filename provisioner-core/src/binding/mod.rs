//! PVC→PV matching and binding, exactly as Kubernetes decides it.
//!
//! Everything here is pure: plain Kubernetes objects in, decisions out, no I/O.
//!
//! - [`predicates`]: the primitive checks (class, claimRef, volume mode, access modes, sizes).
//! - [`access_modes`], [`labels`], [`label_selector`], [`node_affinity`]: the building
//!   blocks the searches evaluate.
//! - [`find`]: the searches, in Kubernetes' forms (PV controller, scheduler), with an
//!   explanation of every volume passed over.
//! - [`index`]: the same searches over an incrementally maintained index, for scale.

pub mod access_modes;
pub mod find;
pub mod index;
pub mod label_selector;
pub mod labels;
pub mod node_affinity;
pub mod predicates;
pub mod sync;
