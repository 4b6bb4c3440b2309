#!/usr/bin/env bash
# Installs the Debian packages that the NFS tests need: NFS-Ganesha with its VFS backend
# (the real NFS server the tests talk to) and rpcbind (Ganesha cannot serve NFSv3 without
# it). Idempotent: packages that are already installed are not touched, and the package
# index is refreshed at most once per run, only when something is missing.
#
# Usage: scripts/install-test-deps.sh        (needs root, or sudo without a password)
# Exit status: 0 when every package is installed afterwards.
set -euo pipefail

PACKAGES=(nfs-ganesha nfs-ganesha-vfs rpcbind)

say() { printf '[test-deps] %s\n' "$*" >&2; }
die() { printf '[test-deps] error: %s\n' "$*" >&2; exit 1; }

is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  say "already installed: ${PACKAGES[*]}"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 \
  || die "missing ${missing[*]} and apt-get is not available; install them with your package manager (Debian/Ubuntu names: ${PACKAGES[*]})."

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  die "missing ${missing[*]}; installing them needs root. Run: sudo $0"
fi

say "installing ${missing[*]} (apt-get update once, then install)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq || die "apt-get update failed; check the package sources and network."
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
  || die "apt-get install ${missing[*]} failed."

for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || die "$pkg is still not installed after apt-get install."
done
say "installed ${missing[*]}"
