# shellcheck shell=bash
# SIM_DIR, SIM_OPERATOR_WEBHOOK_PORT, the sim_* process helpers and the ports come from sim.sh,
# which sources this file; ctx, repo, step, ok, die, retry, k, dapr_chart and DAPR_VERSION from
# cluster.sh.
# shellcheck disable=SC2154
#
# What runs beside Kubernetes on the simulated cluster: spin-operator as a local process, and
# Dapr's control plane from its chart, each from its pinned module.
#
# spin-operator's webhooks reach the local process the way they reach a pod: its webhook
# configurations name a Service, and the API server resolves that Service. Here it is an
# ExternalName Service for localhost, so the API server dials localhost:PORT and checks the
# certificate for <service>.<namespace>.svc, the name openssl put in the serving certificate.
# (spin-operator's chart needs cert-manager for that certificate, which has no Go module.)

# An ExternalName Service for localhost: where the webhook configuration that names it sends
# the API server.
sim_webhook_service() {
  k create namespace "$1" --dry-run=client -o yaml | k apply -f - >/dev/null
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: $2
  namespace: $1
spec:
  type: ExternalName
  externalName: localhost
EOF
}

# spin-operator's CRDs (config/crd/bases: what its release's spin-operator.crds.yaml holds), its
# RuntimeClass and shim executor samples (the release's runtime-class and shim-executor files),
# its webhook configurations (config/webhook) pointed at the local process, and the process.
sim_spin_operator() {
  local source ca
  source=$(go_module_dir "github.com/spinkube/spin-operator@v$SPIN_OPERATOR_VERSION")
  step "spin-operator $SPIN_OPERATOR_VERSION: CRDs, RuntimeClass, webhooks, the operator, shim executor"
  k apply -f "$source/config/crd/bases" >/dev/null
  k apply -f "$source/config/samples/spin-runtime-class.yaml" >/dev/null
  k wait --for=condition=Established --timeout=60s crd/spinapps.core.spinkube.dev crd/spinappexecutors.core.spinkube.dev >/dev/null
  sim_webhook_service spin-operator spin-operator-webhook-service
  ca=$(base64 <"$SIM_DIR/pki/ca.crt" | tr -d '\n')
  # The names kustomize gives them in the release (prefix spin-operator-, namespace spin-operator).
  awk -v ca="$ca" -v port="$SIM_OPERATOR_WEBHOOK_PORT" '
    { sub(/name: mutating-webhook-configuration$/, "name: spin-operator-mutating-webhook-configuration")
      sub(/name: validating-webhook-configuration$/, "name: spin-operator-validating-webhook-configuration")
      sub(/name: webhook-service$/, "name: spin-operator-webhook-service")
      sub(/namespace: system$/, "namespace: spin-operator"); print }
    /^  clientConfig:$/ { print "    caBundle: " ca }
    /^      path: / { print "      port: " port }' "$source/config/webhook/manifests.yaml" | k apply -f - >/dev/null
  local certs=$SIM_DIR/spin-operator/k8s-webhook-server/serving-certs
  mkdir -p "$certs"
  cp "$SIM_DIR/pki/spin-operator-webhook.crt" "$certs/tls.crt"
  cp "$SIM_DIR/pki/spin-operator-webhook.key" "$certs/tls.key"
  # controller-runtime reads the serving certificate from $TMPDIR/k8s-webhook-server/serving-certs.
  sim_start spin-operator env TMPDIR="$SIM_DIR/spin-operator" KUBECONFIG="$SIM_DIR/kubeconfig" "$sim_bin_spin_operator" \
    --enable-webhooks --leader-elect=false --metrics-bind-address 0 --health-probe-bind-address "127.0.0.1:$OPERATOR_PROBE_PORT"
  sim_wait spin-operator 60 http_ok "http://127.0.0.1:$OPERATOR_PROBE_PORT/readyz"
  retry 60 "spin-operator's webhook accepting the executor" k apply -f "$source/config/samples/spin-shim-executor.yaml"
}

# Dapr's control plane from the chart in the pinned Dapr module (the chart Dapr releases), with
# the values `up` uses on every cluster, as pods on the node: its images are the node's own
# (scripts/cluster/oci_image.py: ghcr.io/dapr/dapr and ghcr.io/dapr/daprd at the pinned
# version), and its pull policy is the chart's IfNotPresent. The scheduler and placement are
# off (the chart's global.scheduler.enabled and global.actors.enabled): this app schedules no
# jobs and hosts no actors, and Dapr's scheduler cannot be built from the Go module proxy.
sim_dapr() {
  local chart
  chart=$(go_module_dir "github.com/dapr/dapr@v$DAPR_VERSION")/charts/dapr
  dapr_chart "$chart" --set global.tag="$DAPR_VERSION" --set global.scheduler.enabled=false --set global.actors.enabled=false
}
