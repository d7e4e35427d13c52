#!/usr/bin/env bash
# The laptop cluster that `tilt up` deploys to: SpinKube (cert-manager, spin-operator and the
# Spin shim), Dapr and the Dapr dashboard.
#
#   scripts/cluster.sh up [k3d|rancher]   k3d: create the cluster dapr-spin-hello with the shim and
#                                         a registry, then install everything. rancher: check
#                                         Rancher Desktop's settings, then install what is missing.
#   scripts/cluster.sh down               delete the k3d cluster and its registry
#   scripts/cluster.sh status             what is installed where
#   scripts/cluster.sh doctor             the tools this project needs, found or missing
#
# Without k3d|rancher, Rancher Desktop is used when it is the current kube context, else k3d.
# Every step is a `kubectl apply`, `helm upgrade --install` or a check, so `up` can run again.
# Versions: scripts/versions.env; Dapr's comes from scripts/tools/daprd/go.mod.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$repo/scripts/versions.env"
# Same Dapr as the tests' daprd; the Helm chart's version drops the leading v.
DAPR_VERSION=$(awk '$1 == "github.com/dapr/dapr" {sub(/^v/, "", $2); print $2; exit}' "$repo/scripts/tools/daprd/go.mod")

K3D_CLUSTER=dapr-spin-hello
# Tilt pushes to this registry (k3d publishes it in the local-registry-hosting ConfigMap).
K3D_REGISTRY=dapr-spin-hello-registry:127.0.0.1:5111
RANCHER_CONTEXT=rancher-desktop
SPIN_OPERATOR_RELEASE=https://github.com/spinframework/spin-operator/releases/download/v$SPIN_OPERATOR_VERSION
DAPR_CHARTS=https://dapr.github.io/helm-charts/

step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }

current_context() { kubectl config current-context 2>/dev/null || true; }

# Every kubectl and helm call names its context, so a context switch mid-run changes nothing.
k() { kubectl --context "$ctx" "$@"; }
h() { helm --kube-context "$ctx" "$@"; }

# Sets target (k3d|rancher) and ctx, the kube context every call below uses.
pick_target() {
  target=${1:-}
  if [ -z "$target" ]; then
    if [ "$(current_context)" = "$RANCHER_CONTEXT" ]; then target=rancher; else target=k3d; fi
  fi
  case $target in
    k3d) ctx=k3d-$K3D_CLUSTER ;;
    rancher) ctx=$RANCHER_CONTEXT ;;
    *) die "unknown target '$target' (k3d|rancher)" ;;
  esac
}

k3d_cluster() {
  step "k3d cluster $K3D_CLUSTER (node image $SHIM_K3D_IMAGE)"
  if k3d cluster get "$K3D_CLUSTER" >/dev/null 2>&1; then
    k3d cluster start "$K3D_CLUSTER"
    ok "exists, started"
  else
    # One server node; its containerd already has the Spin shim. The registry is created with
    # the cluster and deleted with it.
    k3d cluster create "$K3D_CLUSTER" --image "$SHIM_K3D_IMAGE" --agents 0 \
      --registry-create "$K3D_REGISTRY"
    ok "created"
  fi
}

cert_manager() {
  step "cert-manager $CERT_MANAGER_VERSION (spin-operator's webhook certificates)"
  k apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  k wait --for=condition=Available --timeout=300s --namespace cert-manager deployment --all
}

spin_operator() {
  step "spin-operator $SPIN_OPERATOR_VERSION: CRDs, RuntimeClass, chart, shim executor"
  k apply -f "$SPIN_OPERATOR_RELEASE/spin-operator.crds.yaml"
  k apply -f "$SPIN_OPERATOR_RELEASE/spin-operator.runtime-class.yaml"
  k wait --for=condition=Established --timeout=60s crd/spinapps.core.spinkube.dev crd/spinappexecutors.core.spinkube.dev
  h upgrade --install spin-operator oci://ghcr.io/spinframework/charts/spin-operator \
    --version "$SPIN_OPERATOR_VERSION" --namespace spin-operator --create-namespace --wait --timeout 5m
  shim_executor
}

# The SpinAppExecutor lives in the namespace of the SpinApps (the context's, as for Tilt).
shim_executor() {
  k apply -f "$SPIN_OPERATOR_RELEASE/spin-operator.shim-executor.yaml"
}

dapr() {
  step "Dapr $DAPR_VERSION (control plane in dapr-system) and the Dapr dashboard $DAPR_DASHBOARD_CHART_VERSION"
  h upgrade --install dapr dapr --repo "$DAPR_CHARTS" --version "$DAPR_VERSION" \
    --namespace dapr-system --create-namespace --wait --timeout 5m
  h upgrade --install dapr-dashboard dapr-dashboard --repo "$DAPR_CHARTS" --version "$DAPR_DASHBOARD_CHART_VERSION" \
    --namespace dapr-system --wait --timeout 5m
}

# Rancher Desktop installs the shim and spin-operator itself, from two settings; this checks
# them and says which to set instead of installing a second copy.
rancher_checks() {
  step "Rancher Desktop prerequisites (context $ctx)"
  k get nodes >/dev/null 2>&1 || die "context $ctx does not answer: start Rancher Desktop with Kubernetes enabled"
  local missing=0 runtime
  runtime=$(k get nodes -o jsonpath='{.items[0].status.nodeInfo.containerRuntimeVersion}')
  if [[ $runtime == containerd://* ]]; then ok "container engine: $runtime"; else
    echo "    MISSING: containerd engine (found $runtime). Set Preferences > Container Engine > containerd."; missing=1; fi
  if k get runtimeclass wasmtime-spin-v2 >/dev/null 2>&1; then ok "RuntimeClass wasmtime-spin-v2"; else
    echo "    MISSING: RuntimeClass wasmtime-spin-v2. Set Preferences > Container Engine > Enable Wasm, and Preferences > Kubernetes > Install Spin Operator."; missing=1; fi
  if k get crd spinapps.core.spinkube.dev >/dev/null 2>&1; then ok "spin-operator CRDs"; else
    echo "    MISSING: spin-operator. Set Preferences > Kubernetes > Install Spin Operator, then Apply."; missing=1; fi
  [ "$missing" = 0 ] || die "set the Rancher Desktop options above, wait for Kubernetes to restart, and run this again"
  if k get spinappexecutor containerd-shim-spin >/dev/null 2>&1; then ok "SpinAppExecutor containerd-shim-spin"; else
    step "SpinAppExecutor containerd-shim-spin"; shim_executor; fi
}

up() {
  pick_target "${1:-}"
  if [ "$target" = k3d ]; then
    k3d_cluster
    cert_manager
    spin_operator
  else
    rancher_checks
  fi
  dapr
  step "ready: context $ctx. Next: tilt up"
}

down() {
  step "delete k3d cluster $K3D_CLUSTER and its registry"
  if k3d cluster get "$K3D_CLUSTER" >/dev/null 2>&1; then
    k3d cluster delete "$K3D_CLUSTER"
  else
    ok "no such cluster"
  fi
  echo "    (Rancher Desktop is left as it is: run 'tilt down' to remove the app.)"
}

status() {
  pick_target "${1:-}"
  step "context $ctx ($target)"
  k get nodes -o wide || die "context $ctx does not answer (scripts/cluster.sh up)"
  step "RuntimeClasses and Spin executors"
  k get runtimeclass
  k get spinappexecutors || true
  step "Helm releases"
  h list --all-namespaces
  step "pods: cert-manager, spin-operator, dapr-system"
  for ns in cert-manager spin-operator dapr-system; do k get pods --namespace "$ns" 2>/dev/null || true; done
}

# One line per tool: its version, or "missing" and how to get it. Exits 1 only when a tool
# that the chosen cluster path needs is missing.
doctor() {
  local k3d_path=1 failed=0
  [ "$(current_context)" = "$RANCHER_CONTEXT" ] && k3d_path=0
  step "tools for the $([ $k3d_path = 1 ] && echo k3d || echo 'Rancher Desktop') path"
  check docker $k3d_path "Docker Engine or Docker Desktop: https://docs.docker.com/get-docker/" docker --version
  check k3d $k3d_path "https://k3d.io/stable/#installation" k3d version
  check nerdctl $((1 - k3d_path)) "ships with Rancher Desktop (Preferences > Container Engine > containerd)" nerdctl --version
  check kubectl 1 "https://kubernetes.io/docs/tasks/tools/" kubectl version --client
  check helm 1 "https://helm.sh/docs/intro/install/" helm version --short
  check tilt 1 "https://docs.tilt.dev/install.html, or scripts/tools.sh tilt" tilt version
  check cargo 1 "https://rustup.rs" cargo --version
  check wasm32-wasip2 1 "rustup target add wasm32-wasip2" wasip2_target
  check spin 0 "for local mode and 'spin registry push': https://spinframework.dev/v3/install" spin --version
  [ "$failed" = 0 ] || die "required tools are missing (see above)"
  echo "    all required tools found"
}

# check NAME REQUIRED(1|0) HINT COMMAND...: found when COMMAND succeeds and prints something.
check() {
  local name=$1 required=$2 hint=$3 version; shift 3
  if version=$("$@" 2>/dev/null) && [ -n "$version" ]; then
    printf '  %-14s %s\n' "$name" "${version%%$'\n'*}"
  elif [ "$required" = 1 ]; then
    printf '  %-14s missing (required): %s\n' "$name" "$hint"
    failed=1
  else
    printf '  %-14s missing (optional): %s\n' "$name" "$hint"
  fi
}

wasip2_target() { rustup target list --installed | grep -qx wasm32-wasip2 && echo installed; }

case ${1:-} in
  up) up "${2:-}" ;;
  down) down ;;
  status) status "${2:-}" ;;
  doctor) doctor ;;
  *) echo "usage: scripts/cluster.sh up [k3d|rancher] | down | status [k3d|rancher] | doctor" >&2; exit 2 ;;
esac
