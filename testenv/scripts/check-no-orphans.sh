#!/usr/bin/env bash
# Runs a test command (default: `cargo test -p testenv`) with a private TMPDIR, then checks
# that no process of any control plane it started survives and no plane directory is left.
#
# Every plane lives in a `testenv-*` directory under TMPDIR and every one of its processes
# (etcd, kube-*, kwok, the watchdog) names that directory on its command line, so this finds
# leftovers of this run only, even while other control planes run on the same machine.
#
#   testenv/scripts/check-no-orphans.sh [COMMAND...]
set -euo pipefail

scratch=$(mktemp -d "${TMPDIR:-/tmp}/testenv-orphan-check.XXXXXX")
if [ "$#" -eq 0 ]; then
  set -- cargo test -p testenv
fi

echo "[orphan-check] running: $* (TMPDIR=$scratch)" >&2
status=0
TMPDIR="$scratch" "$@" || status=$?

# The pattern is read from a file so that grep's own command line does not match it.
pattern=$(mktemp "${TMPDIR:-/tmp}/orphan-pattern.XXXXXX")
printf '%s/\n' "$scratch" >"$pattern"
survivors() {
  # Zombies have an empty cmdline, so only live processes match.
  grep -l -a -F -f "$pattern" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
}
leftovers() {
  find "$scratch" -mindepth 1 -maxdepth 1 -name 'testenv-*' 2>/dev/null || true
}

# Planes held in statics are stopped by their watchdog just after the test process exits;
# give it a bounded moment.
for _ in $(seq 1 300); do
  if [ -z "$(survivors)" ] && [ -z "$(leftovers)" ]; then
    break
  fi
  sleep 0.1
done

pids=$(survivors)
dirs=$(leftovers)
if [ -n "$pids" ] || [ -n "$dirs" ]; then
  echo "[orphan-check] FAILED: left behind by: $*" >&2
  for pid in $pids; do
    printf '  process %s: %s\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)" >&2
  done
  for dir in $dirs; do
    printf '  directory %s\n' "$dir" >&2
  done
  exit 1
fi
rm -rf "$scratch" "$pattern"
echo "[orphan-check] no control-plane process or directory survived (test command exit status $status)" >&2
exit "$status"
