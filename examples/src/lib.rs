//! Runnable examples for provisioner-core; see the `examples/` directory of this package.
