# shellcheck shell=bash
# SIM_DIR, SIM_OPERATOR_WEBHOOK_PORT, the sim_* process helpers and the ports come from sim.sh,
# which sources this file; ctx, repo, step, ok, die, retry, k and DAPR_VERSION from cluster.sh.
# shellcheck disable=SC2154
#
# What runs beside Kubernetes on the simulated cluster: spin-operator and Dapr's sentry and
# sidecar injector, as local processes, installed with the manifests of their pinned modules.
#
# The webhooks reach the local processes the way they reach pods: each webhook configuration
# names a Service, and the API server resolves that Service. Here it is an ExternalName Service
# for localhost, so the API server dials localhost:PORT and checks the certificate for
# <service>.<namespace>.svc, the name sentry and openssl put in the serving certificates.

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

# Dapr's CRDs and the injector's MutatingWebhookConfiguration from its Helm chart (the template
# rendered with the chart's defaults, its Service given the local port), then sentry, which
# makes the CA, and the injector, which gets its serving certificate from sentry and patches
# the webhook's caBundle at start.
sim_dapr() {
  local source chart webhook
  source=$(go_module_dir "github.com/dapr/dapr@v$DAPR_VERSION")
  chart=$source/charts/dapr/charts/dapr_sidecar_injector
  step "Dapr $DAPR_VERSION: CRDs, sentry, sidecar injector and its webhook"
  k apply -f "$source/charts/dapr/crds" >/dev/null
  sim_webhook_service dapr-system dapr-sidecar-injector
  webhook=$(sim_render_chart_template "$chart/values.yaml" "$chart/templates/dapr_sidecar_injector_webhook_config.yaml")
  case $webhook in *'{{'*) die "the injector's webhook template in Dapr $DAPR_VERSION's chart has settings this script does not fill in: $chart/templates" ;; esac
  k apply -f - <<<"$webhook" >/dev/null

  local sentry=$SIM_DIR/sentry
  mkdir -p "$sentry/credentials"
  printf 'apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    enabled: true\n' >"$sentry/config.yaml"
  sim_start sentry env NAMESPACE=dapr-system "$sim_bin_sentry" --issuer-credentials "$sentry/credentials" \
    --config "$sentry/config.yaml" --trust-domain cluster.local --listen-address 127.0.0.1 --port "$SENTRY_PORT" \
    --healthz-listen-address 127.0.0.1 --healthz-port "$SENTRY_HEALTHZ_PORT" \
    --metrics-listen-address 127.0.0.1 --metrics-port "$SENTRY_METRICS_PORT"
  sim_wait sentry 60 http_ok "http://127.0.0.1:$SENTRY_HEALTHZ_PORT/healthz"
  sim_injector
}

# The injector's webhook template with the chart's defaults: an `if .Values.X` block is kept
# when the top-level value X is set, a `range` (over labels, none by default) is dropped,
# the release namespace is dapr-system, and the Service gets the injector's local port.
sim_render_chart_template() {
  awk -v port="$INJECTOR_PORT" '
    FNR == NR { if (match($0, /^[A-Za-z]+:/)) { v = substr($0, RLENGTH + 1); gsub(/^ +| +$/, "", v); values[substr($0, 1, RLENGTH - 1)] = v }; next }
    function skipping(  i) { for (i = 1; i <= depth; i++) if (skip[i]) return 1; return 0 }
    /\{\{-? *if \.Values\.[A-Za-z]+ *\}\}/ { match($0, /\.Values\.[A-Za-z]+/); v = values[substr($0, RSTART + 8, RLENGTH - 8)]
      skip[++depth] = (v == "" || v == "{}" || v == "[]" || v == "false"); next }
    /\{\{-? *if / { skip[++depth] = 0; next }
    /\{\{-? *range / { skip[++depth] = 1; next }
    /\{\{-? *end *-?\}\}/ { depth--; next }
    skipping() { next }
    { gsub(/\{\{ \.Release\.Namespace \}\}/, "dapr-system")
      while (match($0, /\{\{ *\.Values\.[A-Za-z]+ *\}\}/)) {
        name = substr($0, RSTART, RLENGTH); gsub(/[{} ]|\.Values\./, "", name)
        $0 = substr($0, 1, RSTART - 1) values[name] substr($0, RSTART + RLENGTH) }
      print }
    /^      path: "\/mutate"/ { print "      port: " port }' "$1" "$2"
}

# The chart's sidecar image; kwok pulls nothing, but the pod spec names what a cluster would run.
# Dapr's control plane refuses to run as root in Kubernetes mode; run by root (as in CI), the
# local process is told that is fine.
sim_injector() {
  sim_start injector env NAMESPACE=dapr-system KUBERNETES_SERVICE_HOST=127.0.0.1 KUBE_CLUSTER_DOMAIN=cluster.local \
    DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true \
    SIDECAR_IMAGE="ghcr.io/dapr/daprd:$DAPR_VERSION" DAPR_TRUST_ANCHORS_FILE="$SIM_DIR/sentry/credentials/ca.crt" \
    DAPR_CONTROL_PLANE_TRUST_DOMAIN=cluster.local DAPR_SENTRY_ADDRESS="127.0.0.1:$SENTRY_PORT" \
    "$sim_bin_injector" --kubeconfig "$SIM_DIR/kubeconfig" --listen-address 127.0.0.1 --port "$INJECTOR_PORT" \
    --healthz-listen-address 127.0.0.1 --healthz-port "$INJECTOR_HEALTHZ_PORT" \
    --metrics-listen-address 127.0.0.1 --metrics-port "$INJECTOR_METRICS_PORT"
  sim_wait injector 60 sim_injector_ready
}

# The injector answers its health check once it serves and has patched its webhook's caBundle.
sim_injector_ready() {
  [ -f "$SIM_DIR/ports.env" ] && . "$SIM_DIR/ports.env" && http_ok "http://127.0.0.1:$INJECTOR_HEALTHZ_PORT/healthz" && echo "answers on 127.0.0.1:$INJECTOR_PORT"
}
