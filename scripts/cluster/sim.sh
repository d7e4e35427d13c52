# shellcheck shell=bash
# ctx, repo, CLUSTER, step, ok, die, retry and k come from cluster.sh, which sources this file.
# shellcheck disable=SC2154
#
# The simulated cluster (scripts/cluster.sh up --sim): a real Kubernetes cluster of one node,
# every piece a pinned upstream build (scripts/tools.sh sim) run as a local process: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler; the node's containerd, kubelet,
# kube-proxy and CoreDNS (scripts/cluster/node.sh), in network and mount namespaces of their
# own; spin-operator with its webhooks; Dapr's control plane from its chart, as pods
# (scripts/cluster/sim-operators.sh). Manifests (CRDs, RuntimeClass, executor, webhook
# configurations, Dapr's chart) come from the same modules' source.
#
# State: $DAPR_SPIN_HELLO_SIM_DIR (default ~/.local/state/dapr-spin-hello/sim): pki/, the
# processes' kubeconfig, etcd's data, the node's folders, ports.env, pids/ and
# logs/<process>.log. `down --sim` stops every process and removes all of it but logs/.

SIM_DIR=${DAPR_SPIN_HELLO_SIM_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/$CLUSTER/sim}
# spin-operator has no flag for its webhook port: controller-runtime's default.
SIM_OPERATOR_WEBHOOK_PORT=9443
# The order they start in; they stop in the reverse order.
SIM_PROCESSES="etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns spin-operator"

# shellcheck source-path=SCRIPTDIR source=node.sh
. "$repo/scripts/cluster/node.sh"
# shellcheck source-path=SCRIPTDIR source=sim-operators.sh
. "$repo/scripts/cluster/sim-operators.sh"

# Sets sim_bin_<process> for each binary, and puts the pinned kubectl first on PATH (the
# same version as the API server), whether or not the binaries are built yet.
sim_paths() {
  local name path
  while read -r name path; do printf -v "sim_bin_${name//-/_}" %s "$path"; done < <("$repo/scripts/tools.sh" sim-paths)
  PATH=$(dirname "$sim_bin_kubectl"):$(dirname "$sim_bin_helm"):$PATH
}

sim_tools() { "$repo/scripts/tools.sh" sim; }

# The source of a pinned Go module (in Go's module cache): CRDs, samples and Dapr's chart.
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
  ( exec setsid "$@" >>"$SIM_DIR/logs/$name.log" 2>&1 </dev/null ) &
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
    local names=(ETCD ETCD_PEER APISERVER CONTROLLER_MANAGER SCHEDULER OPERATOR_PROBE KUBELET KUBELET_HEALTHZ
      KUBE_PROXY_HEALTHZ KUBE_PROXY_METRICS COREDNS_HEALTH COREDNS_READY)
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
  sim_cert apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$NODE_IP,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default.svc
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

# On every address of the namespace: the processes call 127.0.0.1, the pods the `kubernetes`
# Service, whose endpoint is the node's IP. It reaches the kubelet (logs, exec, port-forward)
# at the node's IP, since no DNS knows the node's name.
sim_apiserver() {
  local pki=$SIM_DIR/pki
  sim_start kube-apiserver "$sim_bin_kube_apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 0.0.0.0 --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC --allow-privileged=true --profiling=false \
    --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
    --kubelet-preferred-address-types InternalIP
  sim_wait kube-apiserver 120 context_answers
}

# --use-service-account-credentials: each controller calls the API server as its own service
# account, as on kubeadm, kind and k3s clusters; Dapr's injector injects only for requests from
# allowed ones (the ReplicaSet controller's among them) or from system:masters.
sim_controllers() {
  local pki=$SIM_DIR/pki
  sim_start kube-controller-manager "$sim_bin_kube_controller_manager" --kubeconfig "$SIM_DIR/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" --leader-elect=false --allocate-node-cidrs=false \
    --use-service-account-credentials=true --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt"
  sim_start kube-scheduler "$sim_bin_kube_scheduler" --kubeconfig "$SIM_DIR/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
  sim_wait kube-controller-manager 60 http_ok "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
  sim_wait kube-scheduler 60 http_ok "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  # The ServiceAccount admission plugin refuses pods until the default service account exists.
  retry 60 "the controller manager creating the default service account" k get serviceaccount default
}

# up --sim, outside the namespaces: the binaries (built the first time), the namespaces, then
# this script again inside them, which starts the cluster. A failure stops what it started.
sim_up() {
  step "simulated cluster $ctx: a real control plane and node as local processes, state in $SIM_DIR"
  sim_tools
  mkdir -p "$SIM_DIR/logs" "$SIM_DIR/pids"
  node_namespaces
  if ! node_run "$repo/scripts/cluster.sh" up --sim; then
    echo "cluster.sh: up --sim failed: stopping the simulated cluster (logs stay in $SIM_DIR/logs)" >&2
    sim_remove >&2
    exit 1
  fi
}

# up --sim, inside the namespaces: the control plane and the node, started unless they run.
sim_cluster() {
  sim_ports
  sim_pki
  sim_kubeconfig
  sim_etcd
  sim_apiserver
  sim_controllers
  sim_node
}

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

# Every process, then what is left in the namespaces, the namespaces and the cgroups.
sim_remove() {
  sim_stop
  node_remove
}

# down --sim: every process stopped, the namespaces and the node's cgroups gone, the
# cluster's state and its kube context removed; the logs stay for reading.
sim_down() {
  step "stop the simulated cluster $ctx ($SIM_DIR)"
  if [ -d "$SIM_DIR" ]; then
    sim_remove
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
  check gcc 1 "missing: install gcc and libc6-dev (the node's pause image is built static)" gcc --version
  local shim
  if shim=$(node_shim); then
    found "Spin shim" "$shim ($("$shim" -v 2>/dev/null | sed -n 's/^ *Version: *//p' | head -1))"
  else
    problem "Spin shim" 1 "missing: the node runs SpinApps with containerd-shim-spin-v2 (SpinKube's releases); set CONTAINERD_SHIM_SPIN=<its path> or put it on PATH"
  fi
  if [ "$(uname -s)" != Linux ]; then
    problem "Linux" 1 "up --sim runs a node in Linux namespaces: on macOS use k3d or kind (scripts/cluster.sh up --k3d)"
  elif ! unshare --net --mount true 2>/dev/null; then
    problem "namespaces" 1 "unshare --net --mount failed: up --sim needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) to make the node's namespaces"
  fi
}
