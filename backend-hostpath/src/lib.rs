//! Node-local hostPath backend: one directory per claim on a node disk.
