//! PVC→PV matching and binding, exactly as Kubernetes decides it.
