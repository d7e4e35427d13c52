# shellcheck shell=bash
# SIM_DIR, sim_start, sim_wait, sim_running, http_ok and the ports come from sim.sh, which
# sources this file; ctx, repo, step, ok, die, retry and k from cluster.sh.
# shellcheck disable=SC2154
#
# The simulated cluster's node: a real kubelet, containerd (runc for Linux containers, the Spin
# shim for SpinApps), kube-proxy and CoreDNS, as a kind node runs them in its container.
#
# The whole cluster, control plane included, lives in a network and a mount namespace of its
# own, held open by one process (the holder). `cluster.sh up --sim` makes them and runs itself
# inside; `cluster.sh exec --sim -- COMMAND` runs any command there (kubectl, tilt, curl).
# - Network: lo, and a veth pair whose end sim-node carries the node's IP; the pods' bridge
#   hangs off it. No route leads out, and the machine's own interfaces, routes and iptables
#   are never touched: kube-proxy's and CNI's rules go to the namespace's own tables.
# - Mounts: a tmpfs on /run (containerd's and the shims' sockets), an overlay on /var (what the
#   kubelet and CNI write under /var/lib and /var/log lands in $SIM_DIR/var), and files over
#   the kernel settings the kubelet sets, so the machine's own values stay as they are.
# - cgroups: the kubelet's cgroup root is a folder of its own under this shell's cgroup, in
#   each hierarchy the machine mounts; the hierarchy itself is left as it is.
# `down --sim` stops every process in the namespaces, which ends them and their mounts and
# rules, and removes the cgroup folders.

NODE_NAME=sim-node
# Inside the namespace only, so any range will do; the pods' and the Services' as kind's.
NODE_IP=10.89.0.2
POD_CIDR=10.244.0.0/24
# shellcheck disable=SC2034  # sim.sh, which sources this file, gives it to the API server
SERVICE_CIDR=10.96.0.0/16
CLUSTER_DNS=$NODE_IP
# The RuntimeClass handler of the Spin shim: spin-operator's RuntimeClass wasmtime-spin-v2 names it.
SHIM_HANDLER=spin

node_holder_pid() { cat "$SIM_DIR/pids/holder" 2>/dev/null || true; }
node_holder_alive() { local pid; pid=$(node_holder_pid); [ -n "$pid" ] && alive "$pid"; }
# This shell runs in the cluster's namespaces.
node_inside() { node_holder_alive && [ "$(readlink /proc/self/ns/net)" = "$(readlink "/proc/$(node_holder_pid)/ns/net")" ]; }

# node_enter COMMAND...: COMMAND in the cluster's namespaces, in this folder.
node_enter() { exec nsenter --target "$(node_holder_pid)" --net --mount --wd="$PWD" -- "$@"; }
node_run() { nsenter --target "$(node_holder_pid)" --net --mount --wd="$PWD" -- "$@"; }
# PID has network and mount namespaces other than this shell's.
node_apart() { [ "$(readlink "/proc/$1/ns/net")" != "$(readlink /proc/self/ns/net)" ] && [ "$(readlink "/proc/$1/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]; }

# The Spin shim: $CONTAINERD_SHIM_SPIN, else containerd-shim-spin-v2 on PATH.
node_shim() {
  if [ -n "${CONTAINERD_SHIM_SPIN:-}" ]; then
    [ -x "$CONTAINERD_SHIM_SPIN" ] && echo "$CONTAINERD_SHIM_SPIN"
  else
    command -v containerd-shim-spin-v2
  fi
}

# The kubelet's cgroup root: under this shell's own cgroup (the memory hierarchy's path), one
# folder per simulated cluster (named by its state folder), so two never share one.
node_cgroup_root() {
  local own
  own=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup | sed 's:/$::')
  echo "$own/$CLUSTER-sim-$(printf %s "$SIM_DIR" | cksum | cut -d' ' -f1)"
}
# Each cgroup hierarchy the machine mounts (v1 controllers, and cgroup2 beside them).
node_cgroup_mounts() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts; }

# The namespaces and what is set up in them; the holder's pid in pids/holder.
node_namespaces() {
  if node_holder_alive; then ok "namespaces held by pid $(node_holder_pid)"; return; fi
  mkdir -p "$SIM_DIR/var/upper" "$SIM_DIR/var/work" "$SIM_DIR/node/sysctl"
  node_cgroup_root >"$SIM_DIR/node/cgroup-root"
  # In a session of its own, as every process of the cluster: a signal to the terminal's or
  # the caller's process group (Ctrl-C, a timeout) does not stop the cluster half-way.
  ( exec setsid unshare --net --mount --propagation private sleep infinity ) </dev/null >/dev/null 2>&1 &
  echo $! >"$SIM_DIR/pids/holder"
  disown $!
  local pid=$! setting file
  retry 10 "the namespace holder starting" node_apart "$pid"
  # `down` finds what runs in the namespace by it, also once the holder is gone.
  readlink "/proc/$pid/ns/net" >"$SIM_DIR/node/netns"
  local in=(nsenter --target "$pid" --net --mount --)
  "${in[@]}" ip link set lo up
  "${in[@]}" ip link add sim-node type veth peer name sim-peer
  "${in[@]}" ip addr add "$NODE_IP/24" dev sim-node
  "${in[@]}" ip link set sim-node up
  "${in[@]}" ip link set sim-peer up
  "${in[@]}" ip route add default dev sim-node
  # Per network namespace: pods' traffic is routed, and bridged traffic passes iptables (when
  # the kernel has br_netfilter, as a pod's call to a Service on the same bridge needs).
  "${in[@]}" sysctl -qw net.ipv4.ip_forward=1
  "${in[@]}" sh -c '[ ! -f /proc/sys/net/bridge/bridge-nf-call-iptables ] || echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables'
  "${in[@]}" mount -t tmpfs -o mode=755 sim-run /run
  "${in[@]}" mount -t overlay sim-var -o "lowerdir=/var,upperdir=$SIM_DIR/var/upper,workdir=$SIM_DIR/var/work" /var
  # Names resolve through the cluster's DNS, which knows cluster.local and nothing else.
  printf 'nameserver %s\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n' "$NODE_IP" >"$SIM_DIR/node/resolv.conf"
  "${in[@]}" mount --bind "$SIM_DIR/node/resolv.conf" /etc/resolv.conf
  # The values the kubelet wants (protectKernelDefaults off makes it set them), in files.
  for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    file=$SIM_DIR/node/sysctl/${setting%%=*}
    mkdir -p "$(dirname "$file")"
    echo "${setting#*=}" >"$file"
    "${in[@]}" mount --bind "$file" "/proc/sys/${setting%%=*}"
  done
  node_cgroups
  ok "network and mount namespaces held by pid $pid (node IP $NODE_IP): scripts/cluster.sh exec --sim -- COMMAND runs there"
}

# The kubelet's cgroup root in every hierarchy, each folder made here listed in
# node/cgroups-made for `down`; cpuset needs its CPUs and memory nodes set before anything
# can join it.
node_cgroups() {
  local root mount dir path part
  root=$(cat "$SIM_DIR/node/cgroup-root")
  for mount in $(node_cgroup_mounts); do
    path=$mount
    for part in ${root//\// }; do
      path=$path/$part
      [ -d "$path" ] && continue
      mkdir "$path"
      echo "$path" >>"$SIM_DIR/node/cgroups-made"
      case $mount in */cpuset)
        cat "$(dirname "$path")/cpuset.cpus" >"$path/cpuset.cpus"
        cat "$(dirname "$path")/cpuset.mems" >"$path/cpuset.mems" ;;
      esac
    done
  done
}

# The certificates the node's pieces need: the kubelet's serving one (the API server dials it
# for logs, exec and port-forward).
node_pki() {
  sim_cert kubelet "/CN=$NODE_NAME" "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME
extendedKeyUsage=serverAuth"
}

# containerd with two runtimes: runc (the default) and the Spin shim, handler `spin`.
node_containerd() {
  local dir=$SIM_DIR/containerd shim
  shim=$(node_shim) || die "no Spin shim: set CONTAINERD_SHIM_SPIN or put containerd-shim-spin-v2 on PATH"
  mkdir -p "$dir" "$SIM_DIR/cni/net.d"
  cat >"$SIM_DIR/cni/net.d/10-sim.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "sim", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$SIM_DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  # restrict_oom_score_adj: the kubelet asks for -998 on every sandbox, which needs
  # CAP_SYS_RESOURCE; without it, runc fails every pod ("can't get final child's PID").
  cat >"$dir/config.toml" <<EOF
version = 3
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "registry.k8s.io/pause:3.10"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$sim_bin_cni"]
    conf_dir = "$SIM_DIR/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.$SHIM_HANDLER]
      runtime_type = "io.containerd.spin.v2"
      runtime_path = "$shim"
EOF
  # runc's shim is found next to containerd, on PATH.
  sim_start containerd env PATH="$(dirname "$sim_bin_containerd"):$PATH" "$sim_bin_containerd" --config "$dir/config.toml"
  sim_wait containerd 60 node_ctr version
}

node_ctr() { "$sim_bin_ctr" --address "$SIM_DIR/containerd/containerd.sock" --namespace k8s.io "$@"; }

# An OCI image archive into the node's containerd (ctr warns of cgroup v1 on every call; that
# says nothing about the import).
node_import() {
  node_ctr images import "$1" 2> >(grep -v 'DEPRECATION: The support for cgroup v1' >&2) >/dev/null \
    || die "importing the image archive $1 into the node failed"
}

# The images the node's pods name (scripts/cluster/oci_image.py, which keeps them in the tools
# cache), imported into containerd. Nothing is pulled: every pod's pull policy is IfNotPresent.
node_images() {
  local images=$SIM_DIR/images name
  mkdir -p "$images"
  [ -x "$images/pause" ] || gcc -static -Os -s -o "$images/pause" "$repo/scripts/cluster/pause.c" \
    || die "cannot build the pause image's program: gcc with static glibc (libc6-dev) is needed"
  for name in pause daprd sentry injector operator redis; do
    DAPR_VERSION=$DAPR_VERSION python3 "$repo/scripts/cluster/oci_image.py" "$name" "$images/$name.tar" "$images/pause"
    node_import "$images/$name.tar"
  done
  ok "images imported: $(node_ctr images list -q | grep -v '^sha256:' | paste -sd' ' -)"
}

node_kubelet() {
  local dir=$SIM_DIR/kubelet
  mkdir -p "$dir"
  : >"$SIM_DIR/node/pods-resolv.conf"
  # failCgroupV1: the machine mounts cgroup v1; cgroupfs: no systemd manages it. The kubelet
  # is allowed anything (AlwaysAllow) from anyone holding a certificate of the cluster's CA.
  cat >"$dir/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $(cat "$SIM_DIR/node/cgroup-root")
containerRuntimeEndpoint: unix://$SIM_DIR/containerd/containerd.sock
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $SIM_DIR/pki/kubelet.crt
tlsPrivateKeyFile: $SIM_DIR/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $SIM_DIR/pki/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
resolvConf: $SIM_DIR/node/pods-resolv.conf
failSwapOn: false
serializeImagePulls: true
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
podLogsDir: $SIM_DIR/pod-logs
EOF
  sim_start kubelet "$sim_bin_kubelet" --config "$dir/config.yaml" --kubeconfig "$SIM_DIR/kubeconfig" \
    --root-dir "$dir/root" --cert-dir "$dir/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
  sim_wait kubelet 90 node_ready
}

node_ready() { [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }

# iptables mode; conntrack left as the machine has it (a 0 is "do not set").
node_kube_proxy() {
  cat >"$SIM_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
clientConnection: {kubeconfig: $SIM_DIR/kubeconfig}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  sim_start kube-proxy "$sim_bin_kube_proxy" --config "$SIM_DIR/kube-proxy.yaml"
  sim_wait kube-proxy 60 http_ok "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
}

# The cluster's DNS, on port 53 of the namespace (the node's IP is where the kubelet points
# every pod). It knows only cluster.local: with no upstream, any other name fails at once.
node_coredns() {
  cat >"$SIM_DIR/Corefile" <<EOF
.:53 {
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $SIM_DIR/kubeconfig $ctx
        pods insecure
    }
    cache 30
    loadbalance
}
EOF
  sim_start coredns "$sim_bin_coredns" -conf "$SIM_DIR/Corefile"
  sim_wait coredns 60 http_ok "http://127.0.0.1:$COREDNS_READY_PORT/ready"
}

# The node, in order: the runtime and its images, the kubelet, the Services' rules, DNS.
sim_node() {
  step "node $NODE_NAME: containerd (runc and the Spin shim $(node_shim)), kubelet, kube-proxy, CoreDNS"
  node_pki
  node_containerd
  node_images
  node_kubelet
  node_kube_proxy
  node_coredns
}

# Outside the namespaces, after the processes cluster.sh knows are stopped: whatever else
# still runs in them (containerd's shims, the pods' processes), the holder, then the cgroups.
node_remove() {
  local holder net pid proc root mount
  holder=$(node_holder_pid)
  if [ -f "$SIM_DIR/node/netns" ]; then
    net=$(cat "$SIM_DIR/node/netns")
    for proc in /proc/[0-9]*; do
      pid=${proc#/proc/}
      if [ "$pid" != "$holder" ] && [ "$(readlink "$proc/ns/net" 2>/dev/null)" = "$net" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
  fi
  if [ -f "$SIM_DIR/node/cgroup-root" ]; then
    root=$(cat "$SIM_DIR/node/cgroup-root")
    for mount in $(node_cgroup_mounts); do
      [ -d "$mount$root" ] || continue
      # Pods' processes live in their own network namespaces, but in these cgroups.
      find "$mount$root" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
    done
  fi
  if [ -n "$holder" ]; then
    kill -9 "$holder" 2>/dev/null || true
    for _ in $(seq 50); do alive "$holder" || break; sleep 0.1; done
    rm -f "$SIM_DIR/pids/holder"
  fi
  # The kubelet's folders below those made here, then those, deepest first.
  local made=$SIM_DIR/node/cgroups-made
  if [ -f "$made" ]; then
    for _ in $(seq 50); do
      tac "$made" | while read -r dir; do [ ! -d "$dir" ] || find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
      node_cgroups_left "$made" || break
      sleep 0.1
    done
    local left
    if left=$(node_cgroups_left "$made"); then
      while read -r dir; do echo "    cluster.sh: could not remove the cgroup $dir" >&2; done <<<"$left"
    fi
    rm -f "$made"
  fi
}

# The folders listed in FILE that still exist; fails if none does.
node_cgroups_left() { local dir left=1; while read -r dir; do [ ! -d "$dir" ] || { echo "$dir"; left=0; }; done <"$1"; return "$left"; }
