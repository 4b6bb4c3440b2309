//! Shared pieces of the shipped provisioner binaries (command-line handling, subcommands).
