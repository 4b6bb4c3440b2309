#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by tests, benchmarks and the demo:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok), from the Go module proxy.
# kubectl is a client, not a component: the demo uses it to apply the seed's manifests as
# written, and the tests use `kubectl kustomize` to render deploy/ exactly as users will.
#
# Each program is built from a small tool module of its own, so their dependency graphs
# never mix. Results are cached in a directory keyed by every input that changes the
# output; a finished build is marked by a `.complete` stamp and reused.
#
# Prints the binary directory on its last line of stdout. Progress goes to stderr.
#
# Settings (environment):
#   K8S_VERSION   default v1.37.2    (k8s.io/kubernetes release)
#   ETCD_VERSION  default v3.6.16    (go.etcd.io/etcd/server/v3)
#   KWOK_VERSION  default v0.8.0     (sigs.k8s.io/kwok)
#   PROVISIONER_CACHE_DIR  default ${XDG_CACHE_HOME:-$HOME/.cache}/provisioner-rs
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE_ROOT=${PROVISIONER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/provisioner-rs}
# Bump when the build recipe (flags, stamping, programs) changes, so old caches are not
# reused. r2: kubectl added.
RECIPE=2

say() { printf '[control-plane] %s\n' "$*" >&2; }
die() { printf '[control-plane] error: %s\n' "$*" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1; then
  # Binaries built earlier for these versions (by any Go) still do; Go is only needed to build.
  for dir in "$CACHE_ROOT/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_"*"_r${RECIPE}"; do
    if [ -f "$dir/.complete" ]; then
      say "Go is not on PATH; using cached binaries in $dir"
      echo "$dir"
      exit 0
    fi
  done
  die "Go toolchain not found on PATH, and no binaries for Kubernetes ${K8S_VERSION} are cached.
  Building them needs Go >= 1.26 (https://go.dev/doc/install; Debian bookworm's golang
  package is too old) and access to the Go module proxy. Install it and retry."
fi
GO_VERSION=$(go env GOVERSION)
case "$GO_VERSION" in
  go1.2[6-9]*|go1.[3-9]*) ;;
  *) die "Go $GO_VERSION is too old: Kubernetes ${K8S_VERSION} and kwok ${KWOK_VERSION} need Go >= 1.26." ;;
esac

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-modcacherw -mod=mod"

KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${GO_VERSION}_r${RECIPE}"
BIN="$CACHE_ROOT/bin/$KEY"
MODS="$CACHE_ROOT/toolmods"

if [ -f "$BIN/.complete" ]; then
  say "using cached binaries in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE_ROOT" "$MODS"
# One build at a time per cache (parallel test binaries may all call this script).
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it"
  flock 9
fi
if [ -f "$BIN/.complete" ]; then
  say "using cached binaries in $BIN"
  echo "$BIN"
  exit 0
fi

TMP="$BIN.tmp"
rm -rf "$TMP"
mkdir -p "$TMP"

proxy_hint() {
  die "$1
  The Go module proxy ($(go env GOPROXY)) must be reachable. Check network access to it,
  or point GOPROXY at a mirror, then re-run. Nothing was cached."
}

start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

# ---- kube-apiserver, kube-controller-manager, kube-scheduler -------------------------------
build_kubernetes() {
  local mod="$MODS/kubernetes-$K8S_VERSION" minor staging gomod ldf
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$mod"
  cd "$mod"
  say "kubernetes $K8S_VERSION: resolving modules (staging modules at $staging) [$(elapsed)]"
  [ -f go.mod ] || go mod init provisioner-rs/toolmods/kubernetes >/dev/null 2>&1
  go mod edit -go=1.26.0
  # The staging list comes from k8s.io/kubernetes' own go.mod: every `=> ./staging/...`
  # replace there becomes a replace onto the published v0.Y.Z here.
  gomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" 2>"$mod/download.err" \
    | sed -n 's/.*"GoMod": *"\([^"]*\)".*/\1/p') || true
  [ -n "$gomod" ] && [ -f "$gomod" ] || proxy_hint "could not download k8s.io/kubernetes@${K8S_VERSION}: $(tail -3 "$mod/download.err")"
  local n=0
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@$staging"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "found no staging replaces in $gomod; the k8s.io/kubernetes go.mod layout changed"
  say "kubernetes: $n staging modules replaced"
  go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}" \
    -tool=k8s.io/kubernetes/cmd/kube-apiserver \
    -tool=k8s.io/kubernetes/cmd/kube-controller-manager \
    -tool=k8s.io/kubernetes/cmd/kube-scheduler \
    -tool=k8s.io/kubernetes/cmd/kubectl
  go mod tidy 2>"$mod/tidy.err" || proxy_hint "go mod tidy failed for kubernetes: $(tail -5 "$mod/tidy.err")"
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor} -X $p.gitTreeState=clean"
    ldf+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  say "kubernetes: compiling kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (several minutes on a cold cache) [$(elapsed)]"
  go build -pgo=off -trimpath -ldflags "$ldf" -o "$TMP/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  say "kubernetes: done [$(elapsed)]"
}

# ---- etcd ----------------------------------------------------------------------------------
build_etcd() {
  local mod="$MODS/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  cd "$mod"
  say "etcd $ETCD_VERSION: resolving modules [$(elapsed)]"
  [ -f go.mod ] || go mod init provisioner-rs/toolmods/etcd >/dev/null 2>&1
  # server/v3 requires its sibling modules at the same published version, so no replaces.
  go mod edit -go=1.26.0 -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}" -tool=go.etcd.io/etcd/server/v3
  go mod tidy 2>"$mod/tidy.err" || proxy_hint "go mod tidy failed for etcd: $(tail -5 "$mod/tidy.err")"
  say "etcd: compiling [$(elapsed)]"
  go build -trimpath -ldflags "-s -w" -o "$TMP/etcd" go.etcd.io/etcd/server/v3
  say "etcd: done [$(elapsed)]"
}

# ---- kwok ----------------------------------------------------------------------------------
build_kwok() {
  local mod="$MODS/kwok-$KWOK_VERSION" dir
  mkdir -p "$mod"
  cd "$mod"
  say "kwok $KWOK_VERSION: resolving modules [$(elapsed)]"
  [ -f go.mod ] || go mod init provisioner-rs/toolmods/kwok >/dev/null 2>&1
  go mod edit -go=1.26.0 -require="sigs.k8s.io/kwok@${KWOK_VERSION}" -tool=sigs.k8s.io/kwok/cmd/kwok
  go mod tidy 2>"$mod/tidy.err" || proxy_hint "go mod tidy failed for kwok: $(tail -5 "$mod/tidy.err")"
  say "kwok: compiling [$(elapsed)]"
  go build -trimpath -ldflags "-s -w" -o "$TMP/kwok" sigs.k8s.io/kwok/cmd/kwok
  # kwok refuses to run without Stage objects; ship the stock fast node/pod stages beside it.
  dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$TMP/kwok-stages"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$dir/kustomize/stage/$f" ] || die "kwok stage $f not found in $dir"
    cp "$dir/kustomize/stage/$f" "$TMP/kwok-stages/$(echo "$f" | tr / _)"
  done
  say "kwok: done [$(elapsed)]"
}

build_etcd
build_kwok
build_kubernetes

"$TMP/kube-apiserver" --version >&2
"$TMP/kubectl" version --client >&2
date -u +%FT%TZ >"$TMP/.complete"
rm -rf "$BIN"
mv "$TMP" "$BIN"
say "all binaries built in $(elapsed): $BIN"
echo "$BIN"
