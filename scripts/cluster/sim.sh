# shellcheck shell=bash
# ctx, repo, CLUSTER, step, ok, die, retry and k come from cluster.sh, which sources this file.
# shellcheck disable=SC2154
#
# The simulated cluster (scripts/cluster.sh up --sim): the real control plane as local
# processes, no node. etcd, kube-apiserver, kube-controller-manager and kube-scheduler; kwok,
# which keeps one fake node and marks the pods scheduled to it Running and Ready (no container
# runs); spin-operator with its webhooks; Dapr's sentry and sidecar injector. All of them are
# the pinned upstream builds (scripts/tools.sh sim), and their manifests (CRDs, RuntimeClass,
# executor, webhook configurations, kwok's stages) come from the same modules' source.
#
# State: $DAPR_SPIN_HELLO_SIM_DIR (default ~/.local/state/dapr-spin-hello/sim): pki/, the
# processes' kubeconfig, etcd's data, ports.env, pids/ and logs/<process>.log. `down --sim`
# stops every process and removes all of it but logs/.
#
# spin-operator and Dapr's control plane, and their webhooks: scripts/cluster/sim-operators.sh.

SIM_DIR=${DAPR_SPIN_HELLO_SIM_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/$CLUSTER/sim}
SIM_NODE=sim-node
# spin-operator has no flag for its webhook port: controller-runtime's default.
SIM_OPERATOR_WEBHOOK_PORT=9443
# The order they start in; they stop in the reverse order.
SIM_PROCESSES="etcd kube-apiserver kube-controller-manager kube-scheduler kwok spin-operator sentry injector"

# shellcheck source-path=SCRIPTDIR source=sim-operators.sh
. "$repo/scripts/cluster/sim-operators.sh"

# Sets sim_bin_<process> for each binary, and puts the pinned kubectl first on PATH (the
# same version as the API server), whether or not the binaries are built yet.
sim_paths() {
  local name path
  while read -r name path; do printf -v "sim_bin_${name//-/_}" %s "$path"; done < <("$repo/scripts/tools.sh" sim-paths)
  PATH=$(dirname "$sim_bin_kubectl"):$PATH
}

sim_tools() { "$repo/scripts/tools.sh" sim; }

# The source of a pinned Go module (in Go's module cache): CRDs, samples and kwok's stages.
go_module_dir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

sim_pid() { cat "$SIM_DIR/pids/$1" 2>/dev/null || true; }
# A process that has exited but was not reaped (a zombie: its parent, after cluster.sh, is
# whatever adopts orphans) counts as stopped.
alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }
sim_running() { local pid; pid=$(sim_pid "$1"); [ -n "$pid" ] && alive "$pid"; }

# sim_start NAME COMMAND...: runs COMMAND in the background, its output in logs/NAME.log,
# unless NAME is already running.
sim_start() {
  local name=$1; shift
  if sim_running "$name"; then ok "$name already running (pid $(sim_pid "$name"))"; return; fi
  ( exec nohup "$@" >>"$SIM_DIR/logs/$name.log" 2>&1 </dev/null ) &
  echo $! >"$SIM_DIR/pids/$name"
}

# sim_wait NAME SECONDS CHECK...: until CHECK succeeds; dies with the end of NAME's log when
# NAME exits or CHECK has not succeeded in time.
sim_wait() {
  local name=$1 seconds=$2 deadline; shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! sim_running "$name" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "    $name is not ready$(sim_running "$name" || echo " (it exited)"); the end of $SIM_DIR/logs/$name.log:" >&2
      tail -n 20 "$SIM_DIR/logs/$name.log" >&2 || true
      die "$name did not become ready within ${seconds}s"
    fi
    sleep 1
  done
  ok "$name ready (pid $(sim_pid "$name"), log $SIM_DIR/logs/$name.log)"
}

http_ok() { curl -fsk --max-time 2 "$1" >/dev/null; }

# Free local ports, chosen once per cluster and kept in ports.env, so a restart finds its own:
# below 32768, where no outgoing connection takes one before its process binds it
# (scripts/lib/free_ports.py).
sim_ports() {
  if [ ! -f "$SIM_DIR/ports.env" ]; then
    local names=(ETCD ETCD_PEER APISERVER CONTROLLER_MANAGER SCHEDULER OPERATOR_PROBE SENTRY SENTRY_HEALTHZ SENTRY_METRICS INJECTOR INJECTOR_HEALTHZ INJECTOR_METRICS)
    local ports i
    read -r -a ports <<<"$(python3 "$repo/scripts/lib/free_ports.py" "${#names[@]}")"
    for i in "${!names[@]}"; do echo "${names[i]}_PORT=${ports[i]}"; done >"$SIM_DIR/ports.env"
  fi
  # shellcheck source=/dev/null
  . "$SIM_DIR/ports.env"
}

# sim_cert NAME SUBJECT EXTENSIONS: a key and a certificate signed by the cluster's CA.
sim_cert() {
  local pki=$SIM_DIR/pki
  [ -f "$pki/$1.crt" ] && return
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$1.key" -out "$pki/$1.csr" -subj "$2" 2>/dev/null
  printf '%s\n' "$3" >"$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}

# The CA, the API server's serving certificate, the admin client (group system:masters) that
# every process and kubectl use, the service-account signing key, and spin-operator's webhook.
sim_pki() {
  local pki=$SIM_DIR/pki
  mkdir -p "$pki"
  if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -keyout "$pki/ca.key" -out "$pki/ca.crt" \
      -subj "/CN=$ctx-ca" 2>/dev/null
  fi
  sim_cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
  sim_cert admin "/O=system:masters/CN=$ctx-admin" "extendedKeyUsage=clientAuth"
  sim_cert spin-operator-webhook "/CN=spin-operator-webhook-service.spin-operator.svc" \
    "subjectAltName=DNS:spin-operator-webhook-service.spin-operator.svc
extendedKeyUsage=serverAuth"
  if [ ! -f "$pki/sa.key" ]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
}

# The processes' kubeconfig (the state dir's own) and the user's context $ctx in the user's
# kubeconfig ($KUBECONFIG or ~/.kube/config), as kind and k3d add theirs.
sim_kubeconfig() {
  local pki=$SIM_DIR/pki config
  for config in "$SIM_DIR/kubeconfig" ""; do
    (
      [ -z "$config" ] || export KUBECONFIG=$config
      kubectl config set-cluster "$ctx" --server="https://127.0.0.1:$APISERVER_PORT" \
        --certificate-authority="$pki/ca.crt" --embed-certs=true
      kubectl config set-credentials "$ctx" --client-certificate="$pki/admin.crt" --client-key="$pki/admin.key" --embed-certs=true
      kubectl config set-context "$ctx" --cluster="$ctx" --user="$ctx"
      [ -z "$config" ] || kubectl config use-context "$ctx"
    ) >/dev/null
  done
}

sim_etcd() {
  sim_start etcd "$sim_bin_etcd" --name sim --data-dir "$SIM_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "sim=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls '' --log-level warn
  sim_wait etcd 30 http_ok "http://127.0.0.1:$ETCD_PORT/health"
}

# It listens on 127.0.0.1 only. An Endpoints address may not be a loopback one, so the
# `kubernetes` Service gets none (nothing here reaches the API server through it).
sim_apiserver() {
  local pki=$SIM_DIR/pki
  sim_start kube-apiserver "$sim_bin_kube_apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC --allow-privileged=true --profiling=false \
    --endpoint-reconciler-type none
  sim_wait kube-apiserver 120 context_answers
}

# --use-service-account-credentials: each controller calls the API server as its own service
# account, as on kubeadm, kind and k3s clusters; Dapr's injector injects only for requests from
# allowed ones (the ReplicaSet controller's among them) or from system:masters.
sim_controllers() {
  local pki=$SIM_DIR/pki
  sim_start kube-controller-manager "$sim_bin_kube_controller_manager" --kubeconfig "$SIM_DIR/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --use-service-account-credentials=true --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt"
  sim_start kube-scheduler "$sim_bin_kube_scheduler" --kubeconfig "$SIM_DIR/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
  sim_wait kube-controller-manager 60 http_ok "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
  sim_wait kube-scheduler 60 http_ok "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  # The ServiceAccount admission plugin refuses pods until the default service account exists.
  retry 60 "the controller manager creating the default service account" k get serviceaccount default
}

# One fake node, with kwok's own stages (those kwokctl uses): the node is Ready and keeps its
# lease; a pod bound to it gets an IP and is Running and Ready at once, as if every probe passed.
sim_kwok() {
  local stages
  stages=$(go_module_dir "sigs.k8s.io/kwok@$(sim_version "$sim_bin_kwok")")/kustomize/stage
  sim_start kwok "$sim_bin_kwok" --kubeconfig "$SIM_DIR/kubeconfig" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --cidr 10.244.0.0/16 --node-lease-duration-seconds 40 \
    --config "$stages/node/fast/node-initialize.yaml" --config "$stages/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    --config "$stages/pod/fast/pod-ready.yaml" --config "$stages/pod/fast/pod-complete.yaml" --config "$stages/pod/fast/pod-delete.yaml"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $SIM_NODE
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: $SIM_NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "8", memory: 16Gi, pods: "110"}
  capacity: {cpu: "8", memory: 16Gi, pods: "110"}
EOF
  sim_wait kwok 60 sim_node_ready
}

sim_node_ready() { [ "$(k get node "$SIM_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }

# The version in a cached binary's folder name (…/kwok-v0.8.0/kwok: v0.8.0).
sim_version() { basename "$(dirname "$1")" | sed 's/^.*-v/v/'; }

# up --sim: the control plane (built the first time), started unless it runs. A failure before
# `up` is done stops what it started.
sim_cluster() {
  step "simulated cluster $ctx: the control plane as local processes, state in $SIM_DIR"
  sim_tools
  mkdir -p "$SIM_DIR/logs" "$SIM_DIR/pids"
  trap 'rc=$?; [ "$rc" = 0 ] || { echo "cluster.sh: up --sim failed: stopping the simulated cluster (logs stay in $SIM_DIR/logs)" >&2; sim_stop >&2; }' EXIT
  sim_ports
  sim_pki
  sim_kubeconfig
  sim_etcd
  sim_apiserver
  sim_controllers
  sim_kwok
}

# up --sim is done: a later failure of the script must not stop the cluster.
sim_up_done() { trap - EXIT; }

sim_stop() {
  local names name pid i stopped=()
  read -r -a names <<<"$SIM_PROCESSES"
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    name=${names[i]}
    pid=$(sim_pid "$name")
    [ -n "$pid" ] || continue
    if alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      stopped+=("$name")
    fi
    rm -f "$SIM_DIR/pids/$name"
  done
  ok "stopped: ${stopped[*]:-nothing was running}"
}

# down --sim: every process stopped, the cluster's state and its kube context removed; the
# logs stay for reading.
sim_down() {
  step "stop the simulated cluster $ctx ($SIM_DIR)"
  if [ -d "$SIM_DIR" ]; then
    sim_stop
    find "$SIM_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  else
    ok "no simulated cluster"
  fi
  if have kubectl && kubectl config get-contexts "$ctx" >/dev/null 2>&1; then
    kubectl config delete-context "$ctx" >/dev/null 2>&1
    kubectl config delete-cluster "$ctx" >/dev/null
    kubectl config delete-user "$ctx" >/dev/null
    ok "kube context $ctx removed"
  fi
}

# doctor and status: each process, running or not, and where its log is.
sim_processes() {
  local name
  for name in $SIM_PROCESSES; do
    if sim_running "$name"; then
      found "$name" "running (pid $(sim_pid "$name")), log $SIM_DIR/logs/$name.log"
    else
      problem "$name" 1 "not running: scripts/cluster.sh up --sim (its last log: $SIM_DIR/logs/$name.log)"
    fi
  done
}

# What up --sim needs; the binaries it builds itself (scripts/tools.sh sim).
sim_preflight() {
  check go 1 "missing: https://go.dev/doc/install (up --sim builds the control plane from source once)" go version
  check openssl 1 "missing: install openssl (the cluster's certificates)" openssl version
  check curl 1 "missing: install curl (health checks)" curl --version
  check python3 1 "missing: install python3" python3 --version
  if ! sim_running spin-operator && (exec 3<>"/dev/tcp/127.0.0.1/$SIM_OPERATOR_WEBHOOK_PORT") 2>/dev/null; then
    problem "port $SIM_OPERATOR_WEBHOOK_PORT" 1 "taken: spin-operator's webhook listens there (another simulated cluster? DAPR_SPIN_HELLO_SIM_DIR=<its folder> scripts/cluster.sh down --sim)"
  fi
}
