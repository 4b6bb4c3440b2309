#!/usr/bin/env bash
# Runs every check and test of the project, as CI does: formatting, lints, docs, unit and
# property tests, and the integration tests against a real local control plane (built from
# Go modules on first use, then cached) and a real NFS server on loopback.
#
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) and retry."
command -v go >/dev/null 2>&1 || die "go not found: install Go >= 1.26 (needed to build the local Kubernetes control plane)."

if [ -x scripts/install-test-deps.sh ]; then
  say "test dependencies (NFS server packages)"
  scripts/install-test-deps.sh
fi

say "local Kubernetes control plane binaries"
PROVISIONER_TESTBIN_DIR=$(scripts/build-control-plane.sh | tail -n 1)
export PROVISIONER_TESTBIN_DIR
echo "binaries: $PROVISIONER_TESTBIN_DIR"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

say "cargo test (then check that no control-plane process or directory outlived it)"
testenv/scripts/check-no-orphans.sh cargo test --workspace --locked
