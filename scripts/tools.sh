#!/usr/bin/env bash
# Finds or installs the tools that the tests and the local loop need. Safe to run again.
#
#   scripts/tools.sh [all|rust|redis|wasmtime|daprd|tilt|python|sim]...
#                                    the tests' tools: the pinned versions, built once into a cache
#                                    (sim: the simulated cluster's control plane, cluster.sh up --sim)
#   scripts/tools.sh sim-paths       where each of the simulated cluster's binaries is
#   scripts/tools.sh kube-replaces   the replace block scripts/tools/kube/go.mod needs (for a bump)
#   eval "$(scripts/tools.sh env)"   puts the tests' tools on PATH (and sets DAPRD)
#   eval "$(scripts/tools.sh dev [local|cluster])"
#                                    the local loop's tools, in this order: an installed tool of a
#                                    compatible version, then the cached build, then a source build
#   scripts/tools.sh path TOOL       where the local loop's TOOL is, in that order, building nothing
#
# The tests use the pinned versions only, so that a test result means the same on every machine
# (the real-stack suite is a contract with one known daprd); the local loop takes what the
# learner has installed (`dapr init`'s daprd, Spin, Tilt) when its version is one it works with.
#
# Cache: $DAPR_SPIN_HELLO_CACHE (default $HOME/.cache/dapr-spin-hello), one folder per tool and
# version (and build recipe), so a bump builds anew and never reuses a stale binary.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${DAPR_SPIN_HELLO_CACHE:-$HOME/.cache/dapr-spin-hello}
# shellcheck source=lib/ports.sh
. "$repo/scripts/lib/ports.sh"
# shellcheck source=lib/version.sh
. "$repo/scripts/lib/version.sh"
# shellcheck source=lib/wsl.sh
. "$repo/scripts/lib/wsl.sh"

have() { command -v "$1" >/dev/null 2>&1; }
short_hash() { if have sha256sum; then sha256sum; else shasum -a 256; fi | cut -c1-"$1"; }

# Versions. Dapr and Tilt are pinned by their tools modules' go.mod (read here, not repeated).
WASMTIME_VERSION=48.0.8
# Only what `wasmtime serve` needs (plus the compile cache, the pooling allocator Spin uses,
# and perf maps for profiling). `serve` alone does not compile: it needs `run` and
# `component-model-async` too, and without clap/default its --help and errors say nothing.
WASMTIME_FEATURES=run,serve,component-model-async,cranelift,cache,pooling-allocator,parallel-compilation,profiling,clap/default
DAPR_VERSION=$(go_mod_version daprd github.com/dapr/dapr)
TILT_VERSION=$(go_mod_version tilt github.com/tilt-dev/tilt)
# The simulated cluster (scripts/cluster.sh up --sim): etcd, Kubernetes, containerd, CoreDNS
# and spin-operator by their tools modules, Dapr's control plane by the daprd module (the same
# Dapr as daprd). runc and the CNI plugins come from the system's packages (node_packages).
ETCD_VERSION=$(go_mod_version etcd go.etcd.io/etcd/server/v3)
KUBE_VERSION=$(go_mod_version kube k8s.io/kubernetes)
CONTAINERD_VERSION=$(go_mod_version containerd github.com/containerd/containerd/v2)
COREDNS_VERSION=$(go_mod_version coredns github.com/coredns/coredns)
SPIN_OPERATOR_VERSION=$(go_mod_version spin-operator github.com/spinkube/spin-operator)
HELM_VERSION=$(go_mod_version helm helm.sh/helm/v3)
# The control plane's own binaries and the node's, from one Kubernetes build.
KUBE_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
# Dapr's control plane as its chart installs it, less the scheduler and placement (off: the
# app uses neither jobs nor actors, and the scheduler cannot be built from the proxy).
DAPR_CONTROL_PLANE="sentry injector operator"
# The Dapr components the built daprd registers: the types in scripts/dapr/ (which the tests,
# local mode and the benchmark load); mDNS, self-hosted Dapr's name resolution; and what daprd
# needs in a pod (the same binary is the sidecar image on the real node): Kubernetes mode
# exits without its secret store, and resolves names through the Kubernetes resolver.
DAPRD_COMPONENTS=$( (sed -n 's/^  type: *//p' "$repo"/scripts/dapr/*.yaml
  printf '%s\n' nameresolution.mdns nameresolution.kubernetes secretstores.kubernetes) | sort -u | paste -sd, -)

# What the local loop accepts from an installed tool, and why.
# Spin: SpinKube's shim runs Spin 3.6.3, the version spin.toml is checked with.
SPIN_MIN=3.6
# Tilt: the version the tests evaluate the Tiltfile with, or newer.
TILT_MIN=$(echo "${TILT_VERSION#v}" | cut -d. -f1,2)
# daprd: Dapr supports its newest three minor versions; the tests' is the newest here (1.18),
# so 1.16 and up. The HTTP API, the flags and the components used here are the same in all three.
DAPRD_MIN=$(echo "${DAPR_VERSION#v}" | awk -F. '{print $1 "." $2 - 2}')
# wasmtime (only without Spin): the tests' major version or newer (serve's --addr, -S, --env).
WASMTIME_MIN=${WASMTIME_VERSION%%.*}
# redis-server: Redis 5 brought the streams that pubsub.redis uses.
REDIS_MIN=5

wasmtime_dir=$cache/wasmtime-$WASMTIME_VERSION-$(echo "$WASMTIME_FEATURES" | short_hash 8)
daprd_dir=$cache/daprd-$DAPR_VERSION-$(echo "$DAPRD_COMPONENTS" | short_hash 8)
tilt_dir=$cache/tilt-$TILT_VERSION
kube_dir=$cache/kube-$KUBE_VERSION-$(echo "$KUBE_COMMANDS" | short_hash 8)
etcd_dir=$cache/etcd-$ETCD_VERSION
containerd_dir=$cache/containerd-$CONTAINERD_VERSION
coredns_dir=$cache/coredns-$COREDNS_VERSION-$(short_hash 8 <"$repo/scripts/tools/coredns/main.go")
spin_operator_dir=$cache/spin-operator-$SPIN_OPERATOR_VERSION
helm_dir=$cache/helm-$HELM_VERSION
dapr_control_plane_dir=$cache/dapr-control-plane-$DAPR_VERSION-$(echo "$DAPR_CONTROL_PLANE" | short_hash 8)
# Keyed by the requirements' hash, so a change gets a new venv and never breaks one in use.
python_dir=$cache/python-venv-$(short_hash 12 < "$repo/scripts/requirements.txt")

step() { printf '\n==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo; then sudo "$@"; else echo "need root for: $*" >&2; return 1; fi; }
# One line per tool: what was picked and where from.
picked() { printf 'tools: %-9s %-8s %-10s %s\n' "$1" "$2" "$3" "$4" >&2; }

# A long build prints a line a minute, so a slow first run reads as busy, not hung.
with_heartbeat() {
  local what=$1; shift
  local start=$SECONDS
  # The sleep is killed with its loop, so it cannot hold a pipe on our output open after us.
  ( trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    while :; do sleep 60 & nap=$!; wait "$nap"; echo "    ... still building $what ($(( (SECONDS - start) / 60 )) min)" >&2; done ) &
  local beat=$!
  local rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  echo "    $what: $(( SECONDS - start )) s" >&2
  return "$rc"
}

# Go names every module it fetches on a line of its own ("go: downloading ...", 340 lines for
# daprd and Tilt); the heartbeat already says the build is busy, so those lines are dropped.
quiet_go() { go "$@" 2> >(grep -v '^go: downloading' >&2); }

# scratch_dir: sets work to a new temp dir, removed when tools.sh exits, after a failed build too.
scratch_dir() { work=$(mktemp -d); trap "rm -rf '$work'" EXIT; }

# ---- before any build: can this machine build what is missing? ----

# The Go a tools module asks for (its go directive), as major.minor.
go_min() { awk '$1 == "go" {print $2; exit}' "$repo/scripts/tools/$1/go.mod" | cut -d. -f1,2; }

# build_needs TOOL: what building TOOL from source needs and this machine lacks (nothing if none).
build_needs() {
  local min version
  case $1 in
    wasmtime) have cargo || echo "Rust's cargo (https://rustup.rs)" ;;
    daprd|tilt|etcd|kube|containerd|coredns|helm|spin-operator|dapr-control-plane)
      # Dapr's sentry and injector build from the daprd module.
      min=$(go_min "${1/dapr-control-plane/daprd}")
      if ! have go; then echo "Go $min or newer (https://go.dev/dl/)"; return; fi
      version=$(go env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p' || true)
      [ -n "$version" ] && version_at_least "$version" "$min" || echo "Go $min or newer, not ${version:-an older one} (https://go.dev/dl/)" ;;
  esac
}

# What saves building TOOL.
instead_of_building() {
  case $1 in
    tilt) echo "install Tilt: curl -fsSL https://raw.githubusercontent.com/tilt-dev/tilt/master/scripts/install.sh | bash" ;;
    daprd) echo "install the Dapr CLI (https://docs.dapr.io/getting-started/install-dapr-cli/), then run dapr init" ;;
    wasmtime) echo "install Spin $SPIN_MIN or newer: curl -fsSL https://spinframework.dev/downloads/install.sh | bash && sudo mv spin /usr/local/bin/" ;;
  esac
}

# require_builders dev|pinned [rust] TOOL...: before the first build starts, checks that
# everything the builds of these TOOLs need is here (and rustup, when asked), else names all
# that is missing and fails. Finding no Go after a 10-minute wasmtime build would waste those
# 10 minutes. For the local loop (dev), an installed tool would do instead of a build.
require_builders() {
  local mode=$1 tool needs missing='' instead=''; shift
  for tool; do
    if [ "$tool" = rust ]; then
      have rustup || missing="$missing  rust: rustup (https://rustup.rs), for the component's wasm32-wasip2 target"$'\n'
      continue
    fi
    needs=$(build_needs "$tool")
    [ "$mode" = pinned ] || instead="; or, instead, $(instead_of_building "$tool")"
    [ -z "$needs" ] || missing="$missing  $tool: must be built from source, which needs $needs$instead"$'\n'
  done
  [ -n "$missing" ] || return 0
  printf 'tools.sh: this machine lacks what these need (nothing was built):\n%s' "$missing" >&2
  if on_wsl; then
    echo "  On WSL, tools installed only on the Windows side (tilt.exe, dapr.exe, go.exe) do not count: install them inside WSL." >&2
  fi
  return 1
}

# ---- the pinned tools, built into the cache ----

install_rust() {
  if ! have rustup; then
    echo "tools.sh: rustup is not installed; the component needs Rust's wasm32-wasip2 target: https://rustup.rs, then rustup target add wasm32-wasip2" >&2
    return 1
  fi
  if rustup target list --installed | grep -qx wasm32-wasip2; then return; fi
  step "rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2 >&2
}

install_redis() {
  if have redis-server; then return; fi
  if have apt-get; then
    step "apt-get install redis-server (Debian, Ubuntu)"
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # Under systemd the package also starts (and enables at boot) a system Redis on 6379, which
    # local mode would take for dapr init's and use, its data kept on disk. The tests and local
    # mode start their own in-memory Redis, so that service is stopped and disabled again.
    if have systemctl && systemctl is-active --quiet redis-server 2>/dev/null; then
      as_root systemctl disable --now --quiet redis-server
      echo "tools.sh: apt started the system service redis-server on 6379; stopped and disabled it, so local mode starts its own in-memory Redis (to keep a system Redis: sudo systemctl enable --now redis-server)" >&2
    fi
  elif [ "$(uname -s)" = Darwin ] && have brew; then
    step "brew install redis (macOS)"
    brew install redis >&2
  else
    echo "tools.sh: redis-server is not installed, and this system has neither apt-get nor Homebrew." >&2
    echo "  Install Redis $REDIS_MIN or newer with its package manager (dnf install redis, pacman -S redis, apk add redis," >&2
    echo "  zypper install redis; macOS: https://brew.sh then brew install redis), or for the local loop only," >&2
    echo "  start one on 6379: 'dapr init' (the container dapr_redis) or docker run -d -p 6379:6379 redis." >&2
    return 1
  fi
}

install_wasmtime() {
  if [ -x "$wasmtime_dir/bin/wasmtime" ]; then return; fi
  picked wasmtime "$WASMTIME_VERSION" building "from source with cargo (first time only: about 10 min on 2 cores) -> $wasmtime_dir"
  with_heartbeat wasmtime cargo install --quiet --locked --root "$wasmtime_dir" wasmtime-cli --version "=$WASMTIME_VERSION" \
    --no-default-features --features "$WASMTIME_FEATURES" >&2
}

# daprd from Dapr's own main package, with only the components in DAPRD_COMPONENTS registered:
# Dapr registers each component in a file of its own under cmd/daprd/components, so the build
# uses a copy of the module without the others (a third less to compile). The runtime and
# those components are Dapr's code, unchanged; a component type outside the list fails to load
# with Dapr's own "couldn't find" error, and adding its file under scripts/dapr/ adds it here.
install_daprd() {
  if [ -x "$daprd_dir/daprd" ]; then return; fi
  picked daprd "${DAPR_VERSION#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $daprd_dir"
  local work; scratch_dir
  cp "$repo/scripts/tools/daprd/go.mod" "$repo/scripts/tools/daprd/go.sum" "$work/"
  quiet_go -C "$work" mod download github.com/dapr/dapr
  cp -R "$(go -C "$work" list -m -f '{{.Dir}}' github.com/dapr/dapr)" "$work/dapr"
  chmod -R u+w "$work/dapr"
  local registrations=$work/dapr/cmd/daprd/components keep=" zz_notag.go " file
  for component in ${DAPRD_COMPONENTS//,/ }; do keep="$keep${component//./_}.go "; done
  for file in "$registrations"/*; do
    case $keep in *" $(basename "$file") "*) ;; *) rm "$file" ;; esac
  done
  go -C "$work" mod edit -replace github.com/dapr/dapr=./dapr
  mkdir -p "$daprd_dir"
  # The version stamp makes `daprd --version` answer 1.18.1 instead of "edge"; -s -w leave out
  # the symbol table and DWARF, which nobody debugs here, for a shorter link. The modules it
  # needs download as it builds.
  with_heartbeat daprd quiet_go -C "$work" build -trimpath -tags stablecomponents \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v}" \
    -o "$daprd_dir/daprd.partial" github.com/dapr/dapr/cmd/daprd >&2
  mv "$daprd_dir/daprd.partial" "$daprd_dir/daprd"
  rm -rf "$work"
}

# Tilt's Go module lacks its web UI (built separately with yarn), and without one `tilt up`
# and `tilt ci` refuse to start. So build from a vendored copy with a stub page in the
# UI's embed folder: the tests and the local loop use the terminal, `tilt up --stream`.
install_tilt() {
  if [ -x "$tilt_dir/tilt" ]; then return; fi
  picked tilt "${TILT_VERSION#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $tilt_dir"
  local work; scratch_dir
  cp "$repo/scripts/tools/tilt/go.mod" "$repo/scripts/tools/tilt/go.sum" "$work/"
  quiet_go -C "$work" mod vendor
  local ui=$work/vendor/github.com/tilt-dev/tilt/pkg/assets/build
  mkdir -p "$ui"
  echo '<!doctype html><title>Tilt</title><p>This Tilt was built from its Go module, which has no web UI: use <code>tilt up --stream</code>, or install Tilt from tilt.dev for the UI.</p>' > "$ui/index.html"
  mkdir -p "$tilt_dir"
  with_heartbeat tilt go -C "$work" build -mod=vendor -trimpath -ldflags "-s -w -X main.version=${TILT_VERSION#v}" \
    -o "$tilt_dir/tilt.partial" github.com/tilt-dev/tilt/cmd/tilt >&2
  mv "$tilt_dir/tilt.partial" "$tilt_dir/tilt"
  rm -rf "$work"
}

# ---- the simulated cluster's control plane (scripts/cluster.sh up --sim) ----

# KUBE_COMMANDS in one go build from the wrapper module (about 2,600 compile actions; the link
# needs up to 2 GB). The version stamp makes the API server report v1.35.x to kubectl and to
# the operators' clients, and the kubelet its node version.
install_kube() {
  if [ -x "$kube_dir/kubectl" ]; then return; fi
  picked kube "${KUBE_VERSION#v}" building "$KUBE_COMMANDS from source with go (first time only: about 10 min on 2 cores) -> $kube_dir"
  local minor pkg stamp='' packages=()
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  done
  for pkg in $KUBE_COMMANDS; do packages+=("k8s.io/kubernetes/cmd/$pkg"); done
  rm -rf "$kube_dir.partial"
  mkdir -p "$kube_dir.partial"
  with_heartbeat kube quiet_go -C "$repo/scripts/tools/kube" build -trimpath -ldflags "-s -w$stamp" -o "$kube_dir.partial/" \
    "${packages[@]}" >&2
  rm -rf "$kube_dir"
  mv "$kube_dir.partial" "$kube_dir"
}

# The replace lines for scripts/tools/kube/go.mod: one per staging module that kubernetes'
# own go.mod replaces with ./staging/..., mapped to that module's release (v0.MINOR.PATCH).
kube_replaces() {
  local mod
  mod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  echo 'replace ('
  awk -v v="v0.${KUBE_VERSION#v1.}" '/^replace \(/ {r = 1; next} r && /^\)/ {r = 0}
    r && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$mod"
  echo ')'
}

# go_tool NAME PACKAGE: PACKAGE built from scripts/tools/NAME's module into its cache folder.
go_tool() {
  local name=$1 package=$2 dir
  dir=$(dirname "$(cached_path "$name")")
  mkdir -p "$dir"
  with_heartbeat "$name" quiet_go -C "$repo/scripts/tools/$name" build -trimpath -ldflags "-s -w" \
    -o "$dir/$name.partial" "$package" >&2
  mv "$dir/$name.partial" "$dir/$name"
}

# etcd (its main package is the root of its server module), 3.5.13 or later (its tools module says why).
install_etcd() {
  if [ -x "$etcd_dir/etcd" ]; then return; fi
  picked etcd "${ETCD_VERSION#v}" building "from source with go (first time only: about 2 min on 2 cores) -> $etcd_dir"
  go_tool etcd go.etcd.io/etcd/server/v3
}

# containerd, its ctr client (which imports the node's images) and runc's shim. The build tags
# leave out the man-page generator and the btrfs snapshotter (which needs C headers).
install_containerd() {
  if [ -x "$containerd_dir/containerd" ]; then return; fi
  picked containerd "${CONTAINERD_VERSION#v}" building "containerd, ctr, containerd-shim-runc-v2 from source with go (first time only: about 3 min on 2 cores) -> $containerd_dir"
  rm -rf "$containerd_dir.partial"
  mkdir -p "$containerd_dir.partial"
  local cmd=github.com/containerd/containerd/v2/cmd
  with_heartbeat containerd quiet_go -C "$repo/scripts/tools/containerd" build -trimpath -tags "urfave_cli_no_docs no_btrfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" -o "$containerd_dir.partial/" \
    "$cmd/containerd" "$cmd/ctr" "$cmd/containerd-shim-runc-v2" >&2
  rm -rf "$containerd_dir"
  mv "$containerd_dir.partial" "$containerd_dir"
}

# CoreDNS with the plugins the node's Corefile names (scripts/tools/coredns/main.go).
install_coredns() {
  if [ -x "$coredns_dir/coredns" ]; then return; fi
  picked coredns "${COREDNS_VERSION#v}" building "from source with go (first time only: about 4 min on 2 cores) -> $coredns_dir"
  go_tool coredns dapr-spin-hello/tools/coredns
}

# Helm, which installs Dapr's chart on the simulated cluster as on the others.
install_helm() {
  if [ -x "$helm_dir/helm" ]; then return; fi
  picked helm "${HELM_VERSION#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $helm_dir"
  mkdir -p "$helm_dir"
  with_heartbeat helm quiet_go -C "$repo/scripts/tools/helm" build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$helm_dir/helm.partial" helm.sh/helm/v3/cmd/helm >&2
  mv "$helm_dir/helm.partial" "$helm_dir/helm"
}

# The node's packages from the system: runc, the CNI plugins (bridge, host-local, portmap,
# loopback), iptables and conntrack for kube-proxy. apt only: the node runs on Linux.
NODE_PACKAGES="runc containernetworking-plugins iptables conntrack"
CNI_BIN_DIR=/usr/lib/cni
install_node_packages() {
  if have runc && have iptables && have conntrack && [ -x "$CNI_BIN_DIR/bridge" ]; then return; fi
  if ! have apt-get; then
    echo "tools.sh: the simulated cluster's node needs runc, the CNI plugins, iptables and conntrack; this system has no apt-get: install them with its package manager (CNI plugins into $CNI_BIN_DIR)" >&2
    return 1
  fi
  step "apt-get install $NODE_PACKAGES (the simulated cluster's node)"
  as_root apt-get update -qq >&2
  # shellcheck disable=SC2086  # a word list
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $NODE_PACKAGES >/dev/null
}

# spin-operator's manager (cmd/main.go).
install_spin_operator() {
  if [ -x "$spin_operator_dir/spin-operator" ]; then return; fi
  picked spin-operator "${SPIN_OPERATOR_VERSION#v}" building "from source with go (first time only: about 4 min on 2 cores) -> $spin_operator_dir"
  go_tool spin-operator github.com/spinkube/spin-operator/cmd
}

# Dapr's control plane (DAPR_CONTROL_PLANE), from the daprd module: the same Dapr as daprd.
install_dapr_control_plane() {
  if [ -x "$dapr_control_plane_dir/operator" ]; then return; fi
  picked dapr-control-plane "${DAPR_VERSION#v}" building "$DAPR_CONTROL_PLANE from source with go (first time only: about 3 min on 2 cores) -> $dapr_control_plane_dir"
  local packages=() cmd
  for cmd in $DAPR_CONTROL_PLANE; do packages+=("github.com/dapr/dapr/cmd/$cmd"); done
  rm -rf "$dapr_control_plane_dir.partial"
  mkdir -p "$dapr_control_plane_dir.partial"
  with_heartbeat dapr-control-plane quiet_go -C "$repo/scripts/tools/daprd" build -trimpath \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v}" -o "$dapr_control_plane_dir.partial/" \
    "${packages[@]}" >&2
  rm -rf "$dapr_control_plane_dir"
  mv "$dapr_control_plane_dir.partial" "$dapr_control_plane_dir"
}

SIM_TOOLS="etcd kube containerd coredns helm spin-operator dapr-control-plane"

# NAME PATH per line: what scripts/cluster/sim.sh starts.
sim_paths() {
  echo "etcd $etcd_dir/etcd"
  echo "kube-apiserver $kube_dir/kube-apiserver"
  echo "kube-controller-manager $kube_dir/kube-controller-manager"
  echo "kube-scheduler $kube_dir/kube-scheduler"
  echo "kubectl $kube_dir/kubectl"
  echo "spin-operator $spin_operator_dir/spin-operator"
  echo "sentry $dapr_control_plane_dir/sentry"
  echo "injector $dapr_control_plane_dir/injector"
  echo "operator $dapr_control_plane_dir/operator"
  echo "daprd $daprd_dir/daprd"
  echo "kubelet $kube_dir/kubelet"
  echo "kube-proxy $kube_dir/kube-proxy"
  echo "containerd $containerd_dir/containerd"
  echo "ctr $containerd_dir/ctr"
  echo "containerd-shim-runc-v2 $containerd_dir/containerd-shim-runc-v2"
  echo "coredns $coredns_dir/coredns"
  echo "helm $helm_dir/helm"
  echo "cni $CNI_BIN_DIR"
}

# Python tools for the manifest checks and the benchmark's FastAPI reference.
install_python() {
  if [ -x "$python_dir/bin/python" ] && [ -f "$python_dir/.complete" ]; then return; fi
  step "python venv with scripts/requirements.txt -> $python_dir"
  rm -rf "$python_dir"
  python3 -m venv "$python_dir"
  "$python_dir/bin/pip" install --quiet --disable-pip-version-check -r "$repo/scripts/requirements.txt" >&2
  touch "$python_dir/.complete"
}

install_pinned() {
  local from=cached
  [ -x "$(cached_path "$1")" ] || from=built
  "install_${1//-/_}"
  picked "$1" "$(pinned_version "$1")" "$from" "$(cached_path "$1")"
}

pinned_version() {
  case $1 in
    wasmtime) echo "$WASMTIME_VERSION" ;; daprd|dapr-control-plane) echo "${DAPR_VERSION#v}" ;; tilt) echo "${TILT_VERSION#v}" ;;
    kube) echo "${KUBE_VERSION#v}" ;; etcd) echo "${ETCD_VERSION#v}" ;; containerd) echo "${CONTAINERD_VERSION#v}" ;; coredns) echo "${COREDNS_VERSION#v}" ;; helm) echo "${HELM_VERSION#v}" ;; spin-operator) echo "${SPIN_OPERATOR_VERSION#v}" ;;
  esac
}

cached_path() {
  case $1 in
    wasmtime) echo "$wasmtime_dir/bin/wasmtime" ;;
    daprd) echo "$daprd_dir/daprd" ;;
    tilt) echo "$tilt_dir/tilt" ;;
    kube) echo "$kube_dir/kubectl" ;;
    etcd) echo "$etcd_dir/etcd" ;;
    containerd) echo "$containerd_dir/containerd" ;;
    coredns) echo "$coredns_dir/coredns" ;;
    helm) echo "$helm_dir/helm" ;;
    spin-operator) echo "$spin_operator_dir/spin-operator" ;;
    dapr-control-plane) echo "$dapr_control_plane_dir/operator" ;;
  esac
}

print_env() {
  echo "export PATH=\"$wasmtime_dir/bin:$daprd_dir:$tilt_dir:$python_dir/bin:$kube_dir:\$PATH\""
  echo "export DAPRD=\"$daprd_dir/daprd\""
}

# ---- the local loop's tools: installed, then cached, then built ----

# The version an installed tool reports ("" when it names none, like an unstamped daprd's "edge").
tool_version() {
  case $1 in
    tilt) "$2" version ;;   # v0.34.0, built 2025-...
    *) "$2" --version ;;    # spin 3.6.3 (...) · 1.18.1 · wasmtime 48.0.8 (...) · Redis server v=7.0.15 ...
  esac 2>/dev/null | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -1 || true
}


min_version() {
  case $1 in spin) echo "$SPIN_MIN" ;; tilt) echo "$TILT_MIN" ;; daprd) echo "$DAPRD_MIN" ;; wasmtime) echo "$WASMTIME_MIN" ;; redis-server) echo "$REDIS_MIN" ;; esac
}

# Where an installed TOOL may be, in the order tried.
installed_candidates() {
  case $1 in
    daprd) [ -z "${DAPRD:-}" ] || echo "$DAPRD"; echo "$HOME/.dapr/bin/daprd"; command -v daprd || true ;;
    *) command -v "$1" || true ;;
  esac
}

# find_tool TOOL: sets found (its path), found_version and found_from (installed or cached),
# or fails. An installed tool of another version is named, with why it is not used.
find_tool() {
  local tool=$1 min candidate version
  min=$(min_version "$tool")
  found='' found_version='' found_from=''
  while IFS= read -r candidate; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    case $candidate in "$cache"/*) found=$candidate found_version=pinned found_from=cached; return 0 ;; esac
    version=$(tool_version "$tool" "$candidate")
    if [ -n "$version" ] && version_at_least "$version" "$min"; then
      found=$candidate found_version=$version found_from=installed
      return 0
    fi
    echo "tools: not using $tool ${version:-(no version number)} at $candidate: the local loop needs $min or newer" >&2
  done < <(installed_candidates "$tool")
  local cached; cached=$(cached_path "$tool")
  if [ -n "$cached" ] && [ -x "$cached" ]; then
    found=$cached found_version=pinned found_from=cached
    return 0
  fi
  return 1
}

# find_or_build TOOL: find_tool, else the pinned source build; then its line. (Why an installed
# TOOL was passed over, dev_tools's check before the builds has already said.)
find_or_build() {
  if ! find_tool "$1" 2>/dev/null; then
    "install_$1"
    found=$(cached_path "$1") found_version=pinned found_from=built
  fi
  [ "$found_version" != pinned ] || found_version=$(pinned_version "$1")
  picked "$1" "$found_version" "$found_from" "$found"
}

# eval "$(tools.sh dev [local|cluster])": picks each tool, builds what is missing, says which it
# took, and prints dev.sh's two settings: host (spin or wasmtime) and tilt_up (its command).
# scripts/local.sh later finds the same tools again with `tools.sh path`.
dev_tools() {
  local mode=${1:-local}
  case $mode in local|cluster) ;; *) echo "tools.sh dev: mode must be local or cluster, not '$mode'" >&2; return 2 ;; esac
  exec 3>&1 1>&2   # everything but the settings goes to the terminal
  # What must be built, checked before any build starts.
  local builds=''
  find_tool tilt || builds=tilt
  if [ "$mode" = local ]; then
    builds="rust $builds"
    find_tool spin || find_tool wasmtime || builds="$builds wasmtime"
    find_tool daprd || builds="$builds daprd"
  fi
  # shellcheck disable=SC2086  # a word list
  require_builders dev $builds || return 1
  find_or_build tilt
  local tilt_up; printf -v tilt_up '%q up' "$found"
  # A Tilt from tilt.dev serves its web UI; the one built here has none, so it streams logs.
  [ "$found_from" = installed ] || tilt_up="$tilt_up --stream"
  echo "tilt_up=($tilt_up)" >&3
  [ "$mode" = local ] || return 0

  install_rust
  local host=wasmtime
  if find_tool spin 2>/dev/null; then
    host=spin
    picked spin "$found_version" installed "$found"
    picked wasmtime - 'not used' 'Spin runs the component'
  else
    echo "tools: Spin ($SPIN_MIN or newer) is not installed, so the component runs under wasmtime serve (the same .wasm). For Spin: curl -fsSL https://spinframework.dev/downloads/install.sh | bash && sudo mv spin /usr/local/bin/"
    find_or_build wasmtime
  fi
  echo "host=$host" >&3

  find_or_build daprd

  REDIS_PORT=${REDIS_PORT:-6379}
  if valid_port REDIS_PORT && redis_answers "$REDIS_PORT"; then
    picked redis - running "127.0.0.1:$REDIS_PORT answers PING: local mode uses that Redis and starts none"
  else
    find_tool redis-server || { install_redis; find_tool redis-server; }
    picked redis "$found_version" installed "$found"
  fi
}

# tools.sh path TOOL: the local loop's TOOL, as dev_tools would pick it, or why there is none.
tool_path() {
  if find_tool "$1"; then echo "$found"; return; fi
  case $1 in
    spin) echo "tools.sh: no Spin $SPIN_MIN or newer. Install it: curl -fsSL https://spinframework.dev/downloads/install.sh | bash && sudo mv spin /usr/local/bin/ (or use wasmtime: scripts/local.sh app wasmtime)" >&2 ;;
    redis-server) echo "tools.sh: no redis-server $REDIS_MIN or newer: scripts/tools.sh redis installs one (apt-get or brew), or say which Redis to use with REDIS_PORT." >&2 ;;
    *) echo "tools.sh: no $1 ($(min_version "$1") or newer) installed or cached: scripts/dev.sh (or scripts/tools.sh $1) builds it once." >&2 ;;
  esac
  return 1
}

# uncached TOOL...: those of the pinned TOOLs that the cache does not have yet.
uncached() { local tool; for tool; do [ -x "$(cached_path "$tool")" ] || echo "$tool"; done; }

main() {
  local targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(all)
  case ${targets[0]} in
    dev) dev_tools "${targets[@]:1}"; return ;;
    path) tool_path "${targets[1]:?tools.sh path TOOL}"; return ;;
    sim-paths) sim_paths; return ;;
    kube-replaces) kube_replaces; return ;;
  esac
  for t in "${targets[@]}"; do
    case $t in
      env) print_env ;;
      # One build at a time: on 2 cores, running the Go builds or only their downloads beside
      # wasmtime's build (at nice 19 or not) never made the whole faster (bench/RESULTS.md).
      # The simulated cluster's binaries too: the tests start one (tests/deploy/test_sim.py).
      # shellcheck disable=SC2046,SC2086  # word lists
      all) require_builders pinned rust $(uncached wasmtime daprd tilt $SIM_TOOLS)
        install_rust; install_redis; install_python; install_node_packages
        for tool in wasmtime daprd tilt $SIM_TOOLS; do install_pinned "$tool"; done ;;
      rust|redis|python) "install_$t" ;;
      # shellcheck disable=SC2046  # a word list
      wasmtime|daprd|tilt) require_builders pinned $(uncached "$t"); install_pinned "$t" ;;
      # shellcheck disable=SC2046,SC2086  # word lists
      sim) require_builders pinned $(uncached daprd $SIM_TOOLS); install_node_packages
        for tool in daprd $SIM_TOOLS; do install_pinned "$tool"; done ;;
      *) echo "tools.sh: unknown target '$t' (all|rust|redis|wasmtime|daprd|tilt|python|sim|env|dev|path|sim-paths|kube-replaces)" >&2; exit 2 ;;
    esac
  done
}
main "$@"
