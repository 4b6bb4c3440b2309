//! A real local Kubernetes control plane for tests, benchmarks and the demo.
