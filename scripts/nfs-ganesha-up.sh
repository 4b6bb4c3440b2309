#!/usr/bin/env bash
# Starts NFS-Ganesha (VFS backend) on 127.0.0.1, exporting local directories over NFSv3
# (and v4) on non-standard ports, for tests and the demo. Needs root: rpcbind binds port
# 111 and Ganesha's VFS backend uses open_by_handle_at.
#
# Usage:
#   scripts/nfs-ganesha-up.sh [options] EXPORT_DIR[=CLIENT_PATH]...
#
#   EXPORT_DIR   a directory to export (created if missing). With the VFS backend the
#                directory's content IS the share's content, so a test can check what a
#                client did by reading it, and the provisioner's "mounted" mode can work
#                on it directly.
#   CLIENT_PATH  the absolute path clients mount it as, over NFSv4 (pseudo path) and
#                NFSv3 (MOUNT, via Mount_Path_Pseudo); default: EXPORT_DIR's absolute
#                path. Example: `/tmp/x/export=/shared` serves /tmp/x/export as
#                `127.0.0.1:/shared`, the path a real server's clients would be given.
#
# Options:
#   --state DIR      where ganesha.conf, ganesha.log and ganesha.pid go (default: mktemp -d)
#   --squash MODE    `none` (default): No_Root_Squash, so root can chown and chmod;
#                    `root`: Root_Squash (root acts as nobody), to test how clients
#                    report permission errors under root_squash
#   --foreground     exec Ganesha in the foreground instead of starting it and exiting;
#                    the caller's child process then IS the server (testenv::nfs uses this)
#
# Environment: NFS_PORT (default 20490) and MNT_PORT (default 20048) pick the ports;
# INSTALL_DEPS=0 forbids installing missing packages with scripts/install-test-deps.sh.
#
# Background mode prints "NFS_PORT MNT_PORT PID STATE_DIR" on stdout once the server
# answers; stop it with `kill PID`.
#
# Several servers at once: rpcbind is one system daemon on port 111, shared by every
# instance (started here once, under a lock, and left running). Each Ganesha instance
# needs its own NFS_PORT, MNT_PORT and state directory; one instance can serve several
# EXPORT_DIRs. Clients must use the explicit ports: the portmapper only remembers the
# instance that registered last.
set -euo pipefail

say() { printf '[nfs-ganesha] %s\n' "$*" >&2; }
die() { printf '[nfs-ganesha] error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }

FOREGROUND=0
SQUASH=No_Root_Squash
STATE=
while [ $# -gt 0 ]; do
  case "$1" in
    --foreground) FOREGROUND=1; shift ;;
    --state) [ $# -ge 2 ] || die "--state needs a directory"; STATE=$2; shift 2 ;;
    --squash)
      case "${2:-}" in
        none) SQUASH=No_Root_Squash ;;
        root) SQUASH=Root_Squash ;;
        *) die "--squash takes 'root' or 'none', got '${2:-}'" ;;
      esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { usage; die "at least one EXPORT_DIR is required"; }

NFS_PORT=${NFS_PORT:-20490}
MNT_PORT=${MNT_PORT:-20048}
[ "$(id -u)" -eq 0 ] || die "must run as root (rpcbind needs port 111; Ganesha's VFS backend needs CAP_DAC_READ_SEARCH)."

have_packages() {
  command -v ganesha.nfsd >/dev/null 2>&1 && command -v rpcbind >/dev/null 2>&1 \
    && compgen -G '/usr/lib/*/ganesha/libfsalvfs.so' >/dev/null
}
if ! have_packages; then
  [ "${INSTALL_DEPS:-1}" = 1 ] || die "nfs-ganesha, nfs-ganesha-vfs or rpcbind is missing (INSTALL_DEPS=0 forbids installing them)."
  say "nfs-ganesha, nfs-ganesha-vfs or rpcbind is missing; installing them"
  "$(dirname "${BASH_SOURCE[0]}")/install-test-deps.sh" >&2
  have_packages || die "the packages are still missing after installing them"
fi

EXPORTS=()
CLIENT_PATHS=()
for arg in "$@"; do
  dir=${arg%%=*}
  [ -n "$dir" ] || die "empty EXPORT_DIR in '$arg'"
  mkdir -p "$dir"
  dir=$(realpath "$dir")
  if [ "$arg" = "${arg#*=}" ]; then
    client_path=$dir
  else
    client_path=${arg#*=}
    case "$client_path" in
      /*) ;;
      *) die "CLIENT_PATH must be absolute, got '$client_path' in '$arg'" ;;
    esac
    case "$client_path" in
      *'"'*) die "CLIENT_PATH must not contain a double quote: '$client_path'" ;;
    esac
  fi
  for seen in "${CLIENT_PATHS[@]}"; do
    [ "$seen" != "$client_path" ] || die "two exports share the CLIENT_PATH '$client_path'"
  done
  EXPORTS+=("$dir")
  CLIENT_PATHS+=("$client_path")
done
[ -n "$STATE" ] || STATE=$(mktemp -d "${TMPDIR:-/tmp}/nfs-ganesha.XXXXXX")
mkdir -p "$STATE/recovery"
STATE=$(realpath "$STATE")

rpcbind_up() { rpcinfo -p 127.0.0.1 >/dev/null 2>&1; }
# One rpcbind for the whole machine; the lock keeps parallel test binaries from racing.
exec 8>"${TMPDIR:-/tmp}/nfs-ganesha-rpcbind.lock"
flock 8
if ! rpcbind_up; then
  say "starting rpcbind"
  mkdir -p /run/rpcbind
  rpcbind -w || die "rpcbind failed to start (is port 111 taken by something else?)"
  for _ in $(seq 50); do rpcbind_up && break; sleep 0.1; done
  rpcbind_up || die "rpcbind started but does not answer on 127.0.0.1:111"
fi
flock -u 8
exec 8>&-

{
  cat <<CONF
NFS_CORE_PARAM {
  Bind_addr = 127.0.0.1;
  NFS_Port = $NFS_PORT;
  MNT_Port = $MNT_PORT;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  Protocols = 3, 4;
  # NFSv3 MOUNT resolves the Pseudo path (what CLIENT_PATH sets), not the real Path, so
  # v3 and v4 clients mount the same name.
  Mount_Path_Pseudo = true;
}
NFSV4 {
  # No 90 s grace period at start, and recovery state kept per instance.
  Graceless = true;
  RecoveryRoot = "$STATE/recovery";
}
LOG { Default_Log_Level = EVENT; }
CONF
  for i in "${!EXPORTS[@]}"; do
    cat <<CONF
EXPORT {
  Export_Id = $((i + 1));
  Path = "${EXPORTS[$i]}";
  Pseudo = "${CLIENT_PATHS[$i]}";
  Protocols = 3, 4;
  Transports = TCP;
  Access_Type = RW;
  Squash = $SQUASH;
  SecType = sys;
  FSAL { Name = VFS; }
}
CONF
  done
} > "$STATE/ganesha.conf"
: > "$STATE/ganesha.log"

GANESHA=(ganesha.nfsd -F -f "$STATE/ganesha.conf" -L "$STATE/ganesha.log" -p "$STATE/ganesha.pid")
if [ "$FOREGROUND" = 1 ]; then
  exec "${GANESHA[@]}"
fi

"${GANESHA[@]}" >/dev/null 2>&1 &
PID=$!
for _ in $(seq 100); do
  if grep -q "NFS SERVER INITIALIZED" "$STATE/ganesha.log" 2>/dev/null \
     && (exec 3<>"/dev/tcp/127.0.0.1/$NFS_PORT") 2>/dev/null; then
    echo "$NFS_PORT $MNT_PORT $PID $STATE"
    exit 0
  fi
  kill -0 "$PID" 2>/dev/null || { say "ganesha died; last log lines:"; tail -20 "$STATE/ganesha.log" >&2; exit 1; }
  sleep 0.1
done
say "ganesha not ready after 10 s; last log lines:"
tail -20 "$STATE/ganesha.log" >&2
kill "$PID"
exit 1
