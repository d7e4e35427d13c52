#!/usr/bin/env bash
# The laptop cluster that `tilt up` deploys to: SpinKube (cert-manager, spin-operator and the
# Spin shim), Dapr and the Dapr dashboard.
#
#   scripts/cluster.sh up [--kind|--k3d|--rancher|--sim]
#       kind, k3d: create the cluster dapr-spin-hello (its node image has the Spin shim) and a
#       local registry, then install everything. rancher: check what Rancher Desktop's own
#       settings installed, then add Dapr. sim: the real control plane, spin-operator and
#       Dapr's injector as local processes, with a fake node (scripts/cluster/sim.sh). Returns
#       once spin-operator's webhook and Dapr's sidecar injector answer, with the cluster's
#       context as the current kube context.
#   scripts/cluster.sh down [--kind|--k3d|--sim]     delete that cluster (and its registry)
#   scripts/cluster.sh status [...]            what is installed where
#   scripts/cluster.sh doctor [...]            tools, engines and the cluster, each found or not
#
# Without a flag the current kube context decides: rancher-desktop, kind-dapr-spin-hello,
# k3d-dapr-spin-hello or sim-dapr-spin-hello; any other context means k3d, the default here
# as in the Tiltfile and dev.sh: its node image's shim (Spin 3.6.3) is the one the tests run.
# `up` first runs the same preflight as `doctor` for its cluster and changes nothing when it
# fails. Every later step is a create-if-missing, `kubectl apply` or `helm upgrade --install`,
# so `up` can run again. Versions: scripts/versions.env; Dapr's and spin-operator's: their
# modules under scripts/tools/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$repo/scripts/versions.env"
# shellcheck source-path=SCRIPTDIR source=lib/tools_table.sh
. "$repo/scripts/lib/tools_table.sh"
# The same Dapr as the tests' daprd, and the same spin-operator as the simulated cluster's,
# from their tools modules; the Helm charts' versions drop the leading v.
DAPR_VERSION=$(tool_pin daprd)
DAPR_VERSION=${DAPR_VERSION#v}
SPIN_OPERATOR_VERSION=$(tool_pin spin-operator)
SPIN_OPERATOR_VERSION=${SPIN_OPERATOR_VERSION#v}

CLUSTER=dapr-spin-hello
RANCHER_CONTEXT=rancher-desktop
# The registries Tilt pushes to; each cluster announces its own in the local-registry-hosting
# ConfigMap (k3d --registry-create writes it; for kind this script does, as kind's docs do).
K3D_REGISTRY=$CLUSTER-registry:127.0.0.1:5111
KIND_REGISTRY=$CLUSTER-kind-registry
KIND_REGISTRY_PORT=5112
SPIN_OPERATOR_RELEASE=https://github.com/spinframework/spin-operator/releases/download/v$SPIN_OPERATOR_VERSION
DAPR_CHARTS=https://dapr.github.io/helm-charts/
# The label of the app's daprd pods (kubernetes/base/dapr-sidecar.yaml).
SIDECAR_SELECTOR=app.kubernetes.io/name=dapr-spin-hello-dapr

step() { current_step=$*; printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }

# Installed by `up` once its preflight has passed: a step that fails (often with the raw error
# of kubectl, helm or kind) is named, with what to do next. Every step is create-if-missing,
# `kubectl apply` or `helm upgrade --install`, so running `up` again is safe.
on_failed_step() {
  local status=$?
  [ "$status" = 0 ] || printf '\ncluster.sh: up stopped at the step "%s" (exit %s). Running it again is safe and resumes there: scripts/cluster.sh up --%s (what is installed: scripts/cluster.sh status --%s)\n' \
    "$current_step" "$status" "$target" "$target" >&2
}

# preflight, doctor and the checks they share.
# shellcheck source-path=SCRIPTDIR source=cluster/checks.sh
. "$repo/scripts/cluster/checks.sh"
# shellcheck source-path=SCRIPTDIR source=cluster/sim.sh
. "$repo/scripts/cluster/sim.sh"

current_context() { if have kubectl; then kubectl config current-context 2>/dev/null || true; fi; }

# Every kubectl and helm call names its context, so a context switch mid-run changes nothing.
k() { kubectl --context "$ctx" "$@"; }
h() { helm --kube-context "$ctx" "$@"; }

# Sets target (kind|k3d|rancher|sim) and ctx, the kube context every call below uses.
pick_target() {
  case ${1:-} in
    --kind) target=kind ;;
    --k3d) target=k3d ;;
    --rancher) target=rancher ;;
    --sim) target=sim ;;
    "")
      case $(current_context) in
        "$RANCHER_CONTEXT") target=rancher ;;
        "kind-$CLUSTER") target=kind ;;
        "k3d-$CLUSTER") target=k3d ;;
        "sim-$CLUSTER") target=sim ;;
        *) target=k3d ;;
      esac ;;
    *) die "unknown option '$1' (use --kind, --k3d, --rancher or --sim)" ;;
  esac
  case $target in
    rancher) ctx=$RANCHER_CONTEXT ;;
    *) ctx=$target-$CLUSTER ;;
  esac
  [ "$target" != sim ] || sim_paths
}

# retry SECONDS WHAT COMMAND...: runs COMMAND every 2 s until it succeeds; dies naming WHAT,
# with the command's last output, when it has not within SECONDS.
retry() {
  local seconds=$1 what=$2 output deadline; shift 2
  deadline=$((SECONDS + seconds))
  until output=$("$@" 2>&1); do
    [ "$SECONDS" -lt "$deadline" ] || die "$what: not within ${seconds}s. Last answer: $output"
    sleep 2
  done
}

# A cluster just started (or one whose node container Docker restarted) takes a moment to answer.
wait_for_api_server() {
  retry 120 "the API server of $ctx answering (is its node container running? docker ps -a)" context_answers
}

k3d_cluster() {
  step "k3d cluster $CLUSTER (node image $SHIM_K3D_IMAGE)"
  if k3d cluster get "$CLUSTER" >/dev/null 2>&1; then
    k3d cluster start "$CLUSTER"
    ok "exists, started"
  else
    # One server node; its containerd already has the Spin shim. The registry is created with
    # the cluster and deleted with it.
    k3d cluster create "$CLUSTER" --image "$SHIM_K3D_IMAGE" --agents 0 --registry-create "$K3D_REGISTRY"
    ok "created"
  fi
  wait_for_api_server
}

kind_cluster() {
  step "kind cluster $CLUSTER (node image $SHIM_KIND_IMAGE)"
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    # kind has no start command: after a reboot or `docker stop` the node containers are
    # stopped, and starting them starts the cluster (as `k3d cluster start` does for k3d).
    local node
    for node in $(kind get nodes --name "$CLUSTER"); do docker start "$node" >/dev/null; done
    ok "exists, started"
  else
    kind create cluster --name "$CLUSTER" --image "$SHIM_KIND_IMAGE" --config "$repo/scripts/cluster/kind.yaml" --wait 2m
    ok "created"
  fi
  wait_for_api_server
  kind_registry
}

# kind's local-registry guide: a registry container on 127.0.0.1:PORT, the nodes told to pull
# localhost:PORT from it, and the local-registry-hosting ConfigMap that tells Tilt to push there.
kind_registry() {
  step "local registry localhost:$KIND_REGISTRY_PORT ($KIND_REGISTRY_IMAGE)"
  if docker inspect "$KIND_REGISTRY" >/dev/null 2>&1; then
    docker start "$KIND_REGISTRY" >/dev/null
  else
    docker run -d --restart=always -p "127.0.0.1:$KIND_REGISTRY_PORT:5000" --network bridge \
      --name "$KIND_REGISTRY" "$KIND_REGISTRY_IMAGE" >/dev/null
  fi
  # On a node, localhost is the node itself: alias localhost:PORT to the registry container.
  local node hosts_dir=/etc/containerd/certs.d/localhost:$KIND_REGISTRY_PORT
  for node in $(kind get nodes --name "$CLUSTER"); do
    docker exec "$node" mkdir -p "$hosts_dir"
    printf '[host."http://%s:5000"]\n' "$KIND_REGISTRY" | docker exec -i "$node" cp /dev/stdin "$hosts_dir/hosts.toml"
  done
  if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$KIND_REGISTRY")" = null ]; then
    docker network connect kind "$KIND_REGISTRY"
  fi
  k apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:$KIND_REGISTRY_PORT"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF
}

cert_manager() {
  step "cert-manager $CERT_MANAGER_VERSION (spin-operator's webhook certificates)"
  k apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
  k wait --for=condition=Available --timeout=300s --namespace cert-manager deployment --all
  # Available is not ready: until cainjector has put the CA bundle into cert-manager's webhook
  # configurations, the API server cannot call its webhook, and spin-operator's chart (which
  # creates a Certificate) fails with x509 or webhook errors. cert-manager's docs say to retry,
  # or to wait with `cmctl check api --wait`, which makes the same dry-run Certificate as this.
  retry 180 "cert-manager's webhook answering (cainjector injecting its CA bundle)" cert_manager_api
  ok "cert-manager's webhook accepts a Certificate (server-side dry run)"
}

cert_manager_api() {
  k apply --dry-run=server -f - <<EOF
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: dapr-spin-hello-api-check
  namespace: cert-manager
spec:
  secretName: dapr-spin-hello-api-check
  dnsNames: [api-check.invalid]
  issuerRef:
    name: api-check
EOF
}

# release_not_stuck RELEASE NAMESPACE: Helm refuses to touch a release whose last install or
# upgrade never finished (an `up` stopped mid-install, say), with only "another operation
# (install/upgrade/rollback) is in progress". Name it, and the command that frees it.
release_not_stuck() {
  local status
  status=$(h status "$1" --namespace "$2" 2>/dev/null | sed -n 's/^STATUS: //p' || true)
  case $status in
    pending-install) die "Helm release $1 (namespace $2) is stuck in pending-install: an earlier install of it was interrupted, and Helm refuses to touch it again. Remove it (nothing of it finished installing): helm --kube-context $ctx uninstall $1 --namespace $2; then run this again." ;;
    pending-*) die "Helm release $1 (namespace $2) is stuck in $status: an earlier change to it was interrupted, and Helm refuses to touch it again. Roll it back to its last good revision: helm --kube-context $ctx rollback $1 --namespace $2; then run this again." ;;
  esac
}

# SpinKube's quickstart: CRDs, the RuntimeClass wasmtime-spin-v2 (handler spin), the chart, and
# the executor containerd-shim-spin that names that RuntimeClass. The executor goes to the
# context's namespace, where Tilt deploys the SpinApp.
spin_operator() {
  step "spin-operator $SPIN_OPERATOR_VERSION: CRDs, RuntimeClass, chart, shim executor"
  k apply -f "$SPIN_OPERATOR_RELEASE/spin-operator.crds.yaml"
  k apply -f "$SPIN_OPERATOR_RELEASE/spin-operator.runtime-class.yaml"
  k wait --for=condition=Established --timeout=60s crd/spinapps.core.spinkube.dev crd/spinappexecutors.core.spinkube.dev
  release_not_stuck spin-operator spin-operator
  h upgrade --install spin-operator oci://ghcr.io/spinframework/charts/spin-operator \
    --version "$SPIN_OPERATOR_VERSION" --namespace spin-operator --create-namespace --wait --timeout 5m
  # The executor passes spin-operator's webhook (failurePolicy Fail), which can lag the
  # Deployment's readiness by a few seconds while its certificate is injected.
  retry 120 "spin-operator's webhook accepting the executor" \
    k apply -f "$SPIN_OPERATOR_RELEASE/spin-operator.shim-executor.yaml"
}

# The operator's watchdog (off in the chart) deletes any pod with dapr.io/enabled that came up
# without daprd, e.g. one created while the injector was still starting after a cluster
# restart (the injector's webhook has failurePolicy Ignore); its Deployment recreates it with
# the sidecar.
dapr() {
  dapr_chart dapr --repo "$DAPR_CHARTS" --version "$DAPR_VERSION"
  step "the Dapr dashboard $DAPR_DASHBOARD_CHART_VERSION"
  release_not_stuck dapr-dashboard dapr-system
  h upgrade --install dapr-dashboard dapr-dashboard --repo "$DAPR_CHARTS" --version "$DAPR_DASHBOARD_CHART_VERSION" \
    --namespace dapr-system --wait --timeout 5m
}

# dapr_chart CHART HELM_ARGS...: Dapr's chart as release dapr in dapr-system.
dapr_chart() {
  step "Dapr $DAPR_VERSION (control plane in dapr-system, operator watchdog every 10s)"
  release_not_stuck dapr dapr-system
  h upgrade --install dapr "$@" --namespace dapr-system --create-namespace --set dapr_operator.watchInterval=10s \
    --wait --timeout 5m
}

# The two webhooks the app's first deploy goes through; `up` returns only once both answer.
wait_for_webhooks() {
  step "waiting for spin-operator's webhook and Dapr's sidecar injector"
  retry 120 "spin-operator's webhook accepting kubernetes/base/spinapp.yaml (server-side dry run)" spin_operator_webhook
  ok "spin-operator's webhook accepts the SpinApp"
  retry 120 "Dapr's sidecar injector having a ready endpoint" dapr_injector
  ok "Dapr's sidecar injector is ready"
}

up() {
  pick_target "${1:-}"
  # The simulated cluster's processes run in its own namespaces: this script goes on there.
  if [ "$target" = sim ] && ! node_inside; then
    preflight || die "preflight failed (see above); nothing was changed"
    sim_up
    return
  fi
  [ "$target" = sim ] || preflight || die "preflight failed (see above); nothing was changed"
  trap on_failed_step EXIT
  case $target in
    kind) kind_cluster; cert_manager; spin_operator ;;
    k3d) k3d_cluster; cert_manager; spin_operator ;;
    # Rancher Desktop installs the shim, cert-manager and spin-operator from its own settings,
    # which the preflight checked; a second copy would fight its k3s manifests.
    rancher) ;;
    sim) sim_cluster; sim_spin_operator; sim_dapr ;;
  esac
  [ "$target" = sim ] || dapr
  wait_for_webhooks
  use_context
  if [ "$target" = sim ]; then
    step "ready: context $ctx, in the cluster's namespaces. Next: scripts/cluster.sh exec --sim -- tilt up"
  else
    step "ready: context $ctx. Next: tilt up"
  fi
}

# `up` leaves its cluster's context current, so kubectl and `tilt up` go to it.
use_context() {
  kubectl config use-context "$ctx" >/dev/null
  ok "current kube context: $ctx"
}

down() {
  pick_target "${1:-}"
  case $target in
    k3d)
      have k3d || die "k3d is not installed, so there is no k3d cluster to delete"
      step "delete k3d cluster $CLUSTER and its registry"
      if k3d cluster get "$CLUSTER" >/dev/null 2>&1; then k3d cluster delete "$CLUSTER"; else ok "no such cluster"; fi ;;
    kind)
      { have kind && have docker; } || die "kind and docker are needed to delete the kind cluster"
      step "delete kind cluster $CLUSTER and its registry"
      if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then kind delete cluster --name "$CLUSTER"; else ok "no such cluster"; fi
      if docker inspect "$KIND_REGISTRY" >/dev/null 2>&1; then docker rm -f "$KIND_REGISTRY" >/dev/null; ok "registry removed"; fi ;;
    rancher)
      echo "    Rancher Desktop is left as it is: run 'tilt down' to remove the app." ;;
    sim) sim_down ;;
  esac
}

# COMMAND in the simulated cluster's namespaces, where its API server and pods are.
exec_in() {
  if [ "${1:-}" != --sim ] || [ "${2:-}" != -- ] || [ $# -le 2 ]; then
    die "usage: scripts/cluster.sh exec --sim -- COMMAND [ARGS...]"
  fi
  shift 2
  pick_target --sim
  node_holder_alive || die "no simulated cluster runs ($SIM_DIR): scripts/cluster.sh up --sim"
  node_inside || node_enter "$@"
  exec "$@"
}

# An OCI image archive into the simulated node's containerd (the Tiltfile's image builds).
import_image() {
  if [ "${1:-}" != --sim ] || [ ! -f "${2:-}" ]; then die "usage: scripts/cluster.sh import --sim ARCHIVE.tar"; fi
  pick_target --sim
  node_holder_alive || die "no simulated cluster runs ($SIM_DIR): scripts/cluster.sh up --sim"
  node_inside || node_enter "$repo/scripts/cluster.sh" import "$@"
  node_import "$2"
}

status() {
  pick_target "${1:-}"
  if [ "$target" = sim ] && ! node_inside; then
    node_holder_alive || die "no simulated cluster runs ($SIM_DIR): scripts/cluster.sh up --sim"
    node_enter "$repo/scripts/cluster.sh" status --sim
  fi
  { have kubectl && { have helm || [ "$target" = sim ]; }; } || die "kubectl and helm are needed (scripts/cluster.sh doctor)"
  step "context $ctx ($target)"
  k get nodes -o wide || die "context $ctx does not answer (scripts/cluster.sh up --$target)"
  step "RuntimeClasses and Spin executors"
  k get runtimeclass
  k get spinappexecutors || true
  if [ "$target" = sim ]; then
    step "processes (the simulated cluster's control plane, node and spin-operator)"
    sim_processes
    step "pods: dapr-system"
    k get pods --namespace dapr-system
    return
  fi
  step "Helm releases"
  h list --all-namespaces
  step "pods: cert-manager, spin-operator, dapr-system"
  for ns in cert-manager spin-operator dapr-system; do k get pods --namespace "$ns" 2>/dev/null || true; done
}

usage="usage: scripts/cluster.sh up|down|status|doctor [--kind|--k3d|--rancher|--sim]
       scripts/cluster.sh exec --sim -- COMMAND [ARGS...]"
case ${1:-} in
  exec) shift; exec_in "$@" ;;
  import) shift; import_image "$@"; exit ;;
esac
[ $# -le 2 ] || die "$usage"
case ${1:-} in
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  status) status "${2:-}" ;;
  doctor) doctor "${2:-}" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
