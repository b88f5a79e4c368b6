#!/usr/bin/env bash
# Builds the local GPU cluster's binaries from the Go module proxy, each at a pinned version,
# into a cache outside the repository keyed by tool and version:
#
#   $MODELPLANE_CACHE/bin/<tool>-<version>/<binaries>     (default cache: ~/.cache/modelplane)
#
# A tool whose directory is complete is reused, so only the first run on a machine pays.
# Usage: tools/build.sh [kubernetes|etcd|kwok|helm|karpenter|karpenter-kwok|lws ...]
#   (no argument: all but karpenter-kwok, which only the Karpenter test bed needs)
# Prints the cache's bin directory on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${MODELPLANE_CACHE:-$HOME/.cache/modelplane}"
bin="$cache/bin"

log() { printf '[tools/build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[tools/build] ERROR: %s\n' "$*" >&2; exit 1; }
# The first line of a text. Never `... | head -1`: under pipefail, a writer still writing when
# head exits dies of SIGPIPE and fails the whole pipeline.
first_line() { printf '%s\n' "${1%%$'\n'*}"; }

command -v go >/dev/null 2>&1 || die "Go is not installed or not on PATH. Install Go >= ${GO_MIN} (https://go.dev/doc/install, or your distribution's golang package) and run again."
gov="$(go env GOVERSION | sed 's/^go//')"
if [ "$(first_line "$(printf '%s\n%s\n' "$GO_MIN" "$gov" | sort -V)")" != "$GO_MIN" ]; then
  die "Go $gov is too old: Kubernetes v${KUBERNETES_VERSION} and KWOK v${KWOK_VERSION} need Go >= ${GO_MIN}."
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bin"

# Builds in a scratch copy of the wrapper module so the repository's go.mod/go.sum stay untouched.
scratch() {
  local d; d="$(mktemp -d)"
  cp "$here/$1/go.mod" "$d/"; [ -f "$here/$1/go.sum" ] && cp "$here/$1/go.sum" "$d/"
  echo "$d"
}

# done_or_build <tool> <version> <function>: skip when the stamp exists, else build into a temp dir
# and move it into place atomically, so an interrupted build never leaves a half-filled cache.
done_or_build() {
  local tool="$1" version="$2" fn="$3" out="$bin/$1-$2"
  if [ -f "$out/.complete" ]; then log "$tool $version: cached in $out"; return 0; fi
  local tmp="$bin/.$tool-$version.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  local start=$SECONDS
  log "$tool $version: building (cold builds take minutes; go prints each module it downloads)"
  if ! "$fn" "$tmp"; then rm -rf "$tmp"; die "building $tool $version failed (see the go output above)."; fi
  touch "$tmp/.complete"; rm -rf "$out"; mv "$tmp" "$out"
  log "$tool $version: done in $((SECONDS - start))s -> $out"
}

build_kubernetes() {
  local out="$1" d; d="$(scratch kubernetes)"
  local V=k8s.io/component-base/version C=k8s.io/client-go/pkg/version
  local major="${KUBERNETES_VERSION%%.*}" rest="${KUBERNETES_VERSION#*.}"; local minor="${rest%%.*}"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ldf="-s -w"
  for p in $V $C; do
    ldf="$ldf -X $p.gitVersion=v$KUBERNETES_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldf="$ldf -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  ( cd "$d" && for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      log "kubernetes: compiling $cmd"
      go build -v -trimpath -pgo=off -ldflags "$ldf" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd" 2>&1 \
        | awk '/^go: downloading/ { d++; if (d % 50 == 0) { printf "  ... %d modules downloaded\n", d; fflush() } next }
               { n++ } n % 200 == 0 { printf "  ... %s: %d packages compiled (now %s)\n", cmd, n, $0; fflush() }
               /error|cannot|undefined/ { print; fflush() }' cmd="$cmd" >&2
      [ -x "$out/$cmd" ] || return 1
    done )
  "$out/kube-apiserver" --version >&2
}

build_etcd() {
  local out="$1" d; d="$(scratch etcd)"
  ( cd "$d" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3 )
  local v; v="$("$out/etcd" --version)"
  first_line "$v" >&2
}

build_kwok() {
  local out="$1" d; d="$(scratch kwok)"
  ( cd "$d" && go build -trimpath -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok )
  # The standalone controller has no built-in stages: keep the upstream stage files beside it.
  local src; src="$(cd "$d" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  mkdir -p "$out/stages" && cp -r "$src/kustomize/stage/." "$out/stages/" && chmod -R u+w "$out/stages"
}

build_helm() {
  local out="$1" d; d="$(scratch helm)"
  local major="${KUBERNETES_VERSION%%.*}" rest="${KUBERNETES_VERSION#*.}"; local minor="${rest%%.*}"
  local ldf="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  ldf="$ldf -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldf="$ldf -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  ldf="$ldf -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  ( cd "$d" && go build -trimpath -ldflags "$ldf" -o "$out/helm" helm.sh/helm/v3/cmd/helm )
  "$out/helm" version --short >&2
}

build_karpenter() {
  # Only Karpenter's CRDs are needed (the real karpenter.sh/v1 schema validates our NodePools).
  local out="$1" d; d="$(scratch karpenter)"
  local src; src="$(cd "$d" && go mod download -json "sigs.k8s.io/karpenter@v$KARPENTER_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  mkdir -p "$out/crds" && cp "$src"/pkg/apis/crds/*.yaml "$out/crds/" && chmod -R u+w "$out/crds"
}

build_karpenter_kwok() {
  # Karpenter itself with the KWOK cloud provider it ships for testing (binary `karpenter-kwok`;
  # the package is sigs.k8s.io/karpenter/kwok, whose default name would clash with KWOK's), plus
  # the KWOKNodeClass CRD its NodePools point at. Karpenter's CRDs come from `karpenter`.
  local out="$1" d; d="$(scratch karpenter-kwok)"
  local need; need="$(sed -n 's/^go //p' "$here/karpenter-kwok/go.mod")"
  if [ "$(first_line "$(printf '%s\n%s\n' "$need" "$gov" | sort -V)")" != "$need" ]; then
    die "Go $gov is too old: Karpenter v${KARPENTER_VERSION} needs Go >= ${need}."
  fi
  ( cd "$d" && go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=v$KARPENTER_VERSION" \
      -o "$out/karpenter-kwok" sigs.k8s.io/karpenter/kwok )
  local src; src="$(cd "$d" && go list -m -f '{{.Dir}}' sigs.k8s.io/karpenter)"
  mkdir -p "$out/crds" && cp "$src"/kwok/apis/crds/*.yaml "$out/crds/" && chmod -R u+w "$out/crds"
}

build_lws() {
  # The LeaderWorkerSet controller manager (its main package is sigs.k8s.io/lws/cmd, hence -o) and
  # the manifests `cluster up` installs from: CRDs (config/crd/bases) and the webhook
  # configurations (config/webhook: the generated manifests plus the kustomize patches that
  # narrow the pod webhooks to LWS pods).
  local out="$1" d; d="$(scratch lws)"
  ( cd "$d" && go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/lws/pkg/version.GitVersion=v$LWS_VERSION" \
      -o "$out/lws-controller" sigs.k8s.io/lws/cmd )
  local src; src="$(cd "$d" && go list -m -f '{{.Dir}}' sigs.k8s.io/lws)"
  mkdir -p "$out/crds" "$out/webhook"
  cp "$src"/config/crd/bases/*.yaml "$out/crds/"
  cp "$src"/config/webhook/manifests.yaml "$src"/config/webhook/*-patch.yaml "$out/webhook/"
  chmod -R u+w "$out/crds" "$out/webhook"
}

tools=("$@"); [ ${#tools[@]} -eq 0 ] && tools=(etcd kwok helm karpenter lws kubernetes)
for t in "${tools[@]}"; do
  case "$t" in
    kubernetes) done_or_build kubernetes "$KUBERNETES_VERSION" build_kubernetes ;;
    etcd) done_or_build etcd "$ETCD_VERSION" build_etcd ;;
    kwok) done_or_build kwok "$KWOK_VERSION" build_kwok ;;
    helm) done_or_build helm "$HELM_VERSION" build_helm ;;
    karpenter) done_or_build karpenter "$KARPENTER_VERSION" build_karpenter ;;
    karpenter-kwok) done_or_build karpenter-kwok "$KARPENTER_VERSION" build_karpenter_kwok ;;
    lws) done_or_build lws "$LWS_VERSION" build_lws ;;
    *) die "unknown tool '$t' (known: kubernetes etcd kwok helm karpenter karpenter-kwok lws)" ;;
  esac
done
echo "$bin"
