#!/usr/bin/env bash
# The seed scenario end to end on this machine: the README's main command.
#
# Builds what it needs (the local Kubernetes control plane and kubectl from Go modules,
# cached after the first run; nfs-provisioner and the demo runner with cargo; NFS-Ganesha
# from Debian's packages when missing), then runs provisioner-bin/examples/nfs_demo.rs:
# a local control plane (etcd, kube-apiserver, kube-controller-manager's PV binder) and
# NFS-Ganesha on 127.0.0.1, the seed tutorial's manifests applied as written with kubectl,
# nfs-provisioner running as the tutorial's ServiceAccount, the claim Bound, its
# PersistentVolume and directory, a file round trip through NFS, the claim deleted. Every
# process and temporary directory it starts is removed at the end, on Ctrl-C, and if it
# crashes (testenv's watchdog).
#
# Usage: scripts/demo.sh            (as root: Ganesha and rpcbind need it)
# Environment: CARGO_TARGET_DIR as usual; the control-plane settings of
# scripts/build-control-plane.sh (K8S_VERSION, PROVISIONER_CACHE_DIR, ...).
# Nothing listens or connects outside 127.0.0.0/8, except the builds (Go module proxy,
# crates.io) and apt-get when NFS-Ganesha is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): NFS-Ganesha and rpcbind need it."
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) and retry."

DEMO_PID=
cleanup() {
  status=$?
  trap - EXIT INT TERM
  if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
    # The runner stops the provisioner, the NFS server and the control plane on SIGTERM.
    kill -TERM "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "NFS server packages"
scripts/install-test-deps.sh

say "local Kubernetes control plane and kubectl (first run: ~15 min on 2 cores, then cached)"
PROVISIONER_TESTBIN_DIR=$(scripts/build-control-plane.sh | tail -n 1)
export PROVISIONER_TESTBIN_DIR
[ -x "$PROVISIONER_TESTBIN_DIR/kubectl" ] || die "kubectl missing from $PROVISIONER_TESTBIN_DIR"

say "nfs-provisioner and the demo runner"
cargo build --locked -p provisioner-bin --bin nfs-provisioner --example nfs_demo
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$TARGET_DIR" ] || die "cannot find cargo's target directory"

say "running the seed scenario"
"$TARGET_DIR/debug/examples/nfs_demo" \
  --provisioner "$TARGET_DIR/debug/nfs-provisioner" \
  --seed provisioner-bin/tests/nfs_fixtures/seed &
DEMO_PID=$!
wait "$DEMO_PID"
DEMO_PID=
