#!/usr/bin/env bash
# Builds the local GPU cluster's binaries from the Go module proxy, each at a pinned version,
# into a cache outside the repository keyed by tool and version:
#
#   $MODELPLANE_CACHE/bin/<tool>-<version>/<binaries>     (default cache: ~/.cache/modelplane)
#
# A tool whose directory is complete is reused, so only the first run on a machine pays.
# Usage: tools/build.sh [kubernetes|etcd|kwok|helm|karpenter|karpenter-kwok|lws|pulumi ...]
#   (no argument: all but karpenter-kwok, which only the Karpenter test bed needs, and pulumi,
#   which only the infra program's local stack needs)
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

build_pulumi() {
  # The Pulumi CLI (engine, file backend) and the Kubernetes provider plugin, side by side so
  # that one directory on PATH serves both: the engine uses a `pulumi-resource-<name>` found on
  # PATH instead of downloading the plugin. The Python language host is not built: the module
  # proxy does not serve its module; the local stack runs through the Automation API, whose
  # in-process language server the CLI connects to (see docs/localcluster.md).
  local out="$1" d
  d="$(scratch pulumi)"
  ( cd "$d" && go build -trimpath \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
      -o "$out/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi )
  "$out/bin/pulumi" version >&2
  # The provider's main package embeds its schema stamped with the version (`go generate` in the
  # upstream repository writes schema-embed.json); the module holds only schema.json, so the
  # main package is built from a copy next to the two embedded files written here.
  d="$(scratch pulumi-kubernetes)"
  local src; src="$(cd "$d" && go mod download -json \
    "github.com/pulumi/pulumi-kubernetes/provider/v4@$PULUMI_KUBERNETES_MODULE" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/cmd/pulumi-resource-kubernetes"
  mkdir -p "$d/main" && cp "$src/main.go" "$d/main/"
  python3 - "$src" "$d/main" "$PULUMI_KUBERNETES_VERSION" <<'PY'
import json, sys
src, out, version = sys.argv[1:]
with open(f"{src}/schema.json") as f:
    schema = json.load(f)
schema["version"] = version
with open(f"{out}/schema-embed.json", "w") as f:
    json.dump(schema, f, separators=(",", ":"))
with open(f"{src}/terraform-mapping.json") as f, open(f"{out}/terraform-mapping-embed.json", "w") as g:
    json.dump(json.load(f), g, separators=(",", ":"))
PY
  ( cd "$d" && go build -trimpath \
      -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION" \
      -o "$out/bin/pulumi-resource-kubernetes" ./main )
  [ -x "$out/bin/pulumi-resource-kubernetes" ]
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
    pulumi) done_or_build pulumi "$PULUMI_VERSION-k8s$PULUMI_KUBERNETES_VERSION" build_pulumi ;;
    *) die "unknown tool '$t' (known: kubernetes etcd kwok helm karpenter karpenter-kwok lws pulumi)" ;;
  esac
done
echo "$bin"
