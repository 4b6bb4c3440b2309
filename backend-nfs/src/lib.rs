//! NFS subdirectory backend: one directory per claim on an NFS export.
