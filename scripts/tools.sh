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
# shellcheck source=lib/tools_table.sh
. "$repo/scripts/lib/tools_table.sh"
# shellcheck source=lib/wsl.sh
. "$repo/scripts/lib/wsl.sh"

short_hash() { if have sha256sum; then sha256sum; else shasum -a 256; fi | cut -c1-"$1"; }

# Each tool's pin, minimum version, builder, cache folder and install hint: the table in
# scripts/lib/tools_table.sh. What follows here are the lists its cache keys name (a change
# to one gives a new folder), the recipes (build_TOOL DIR VERSION) and the targets.

# Only what `wasmtime serve` needs (plus the compile cache, the pooling allocator Spin uses,
# and perf maps for profiling). `serve` alone does not compile: it needs `run` and
# `component-model-async` too, and without clap/default its --help and errors say nothing.
WASMTIME_FEATURES=run,serve,component-model-async,cranelift,cache,pooling-allocator,parallel-compilation,profiling,clap/default
# The simulated cluster (scripts/cluster.sh up --sim): etcd, Kubernetes, containerd, CoreDNS,
# Helm and spin-operator by their tools modules, Dapr's control plane by the daprd module (the
# same Dapr as daprd). runc and the CNI plugins come from the system's packages (node_packages).
SIM_TOOLS="etcd kube containerd coredns helm spin-operator dapr-control-plane"
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

# The tools built from source, in the order `all` builds them: the table's.
PINNED_TOOLS=''
for tool in $TOOLS; do [ "$(tool_field "$tool" build)" = - ] || PINNED_TOOLS="$PINNED_TOOLS $tool"; done

# tool_dir TOOL: TOOL's cache folder: TOOL-PIN, plus the hash of what its key column names.
tool_dir() {
  local key dir
  key=$(tool_field "$1" key) || return
  dir=$cache/$1-$(tool_pin "$1")
  case $key in
    -) ;;
    '<'*) dir=$dir-$(short_hash 8 <"$repo/${key#<}") ;;
    *) dir=$dir-$(echo "${!key}" | short_hash 8) ;;
  esac
  echo "$dir"
}

# cached_path TOOL: the binary that says TOOL's build is complete ("" for a tool never built here).
cached_path() { if [ "$(tool_field "$1" build)" != - ]; then echo "$(tool_dir "$1")/$(tool_field "$1" binary)"; fi; }

# pinned_version TOOL: the pin as tools.sh's lines show it (1.18.1, not v1.18.1).
pinned_version() { local pin; pin=$(tool_pin "$1"); echo "${pin#v}"; }

# Keyed by the requirements' hash, so a change gets a new venv and never breaks one in use.
# (Not in the table: a venv has no pin of its own.)
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
# shellcheck disable=SC2064  # $work expands now, on purpose: the trap removes this one
scratch_dir() { work=$(mktemp -d); trap "rm -rf '$work'" EXIT; }

# ---- before any build: can this machine build what is missing? ----

# The Go a tools module asks for (its go directive), as major.minor.
go_min() { awk '$1 == "go" {print $2; exit}' "$repo/scripts/tools/$1/go.mod" | cut -d. -f1,2; }

# build_needs TOOL: what building TOOL from source needs and this machine lacks (nothing if none).
build_needs() {
  local min version
  case $(tool_field "$1" build) in
    cargo) have cargo || echo "Rust's cargo (https://rustup.rs)" ;;
    go)
      min=$(go_min "$(tool_go_mod_dir "$1")")
      if ! have go; then echo "Go $min or newer (https://go.dev/dl/)"; return; fi
      version=$(go env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p' || true)
      [ -n "$version" ] && version_at_least "$version" "$min" || echo "Go $min or newer, not ${version:-an older one} (https://go.dev/dl/)" ;;
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
    [ "$mode" = pinned ] || instead="; or, instead, $(tool_hint "$tool")"
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
    echo "  Install Redis $(tool_min redis-server) or newer with its package manager (dnf install redis, pacman -S redis, apk add redis," >&2
    echo "  zypper install redis; macOS: https://brew.sh then brew install redis), or for the local loop only," >&2
    echo "  start one on 6379: 'dapr init' (the container dapr_redis) or docker run -d -p 6379:6379 redis." >&2
    return 1
  fi
}

# The recipes: build_TOOL DIR VERSION builds TOOL's pinned VERSION (as its pin writes it) into
# the cache folder DIR, which holds no complete build yet, and first says so in TOOL's line.

build_wasmtime() {
  local dir=$1 version=$2
  picked wasmtime "$version" building "from source with cargo (first time only: about 10 min on 2 cores) -> $dir"
  with_heartbeat wasmtime cargo install --quiet --locked --root "$dir" wasmtime-cli --version "=$version" \
    --no-default-features --features "$WASMTIME_FEATURES" >&2
}

# daprd from Dapr's own main package, with only the components in DAPRD_COMPONENTS registered:
# Dapr registers each component in a file of its own under cmd/daprd/components, so the build
# uses a copy of the module without the others (a third less to compile). The runtime and
# those components are Dapr's code, unchanged; a component type outside the list fails to load
# with Dapr's own "couldn't find" error, and adding its file under scripts/dapr/ adds it here.
build_daprd() {
  local dir=$1 version=$2
  picked daprd "${version#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $dir"
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
  mkdir -p "$dir"
  # The version stamp makes `daprd --version` answer 1.18.1 instead of "edge"; -s -w leave out
  # the symbol table and DWARF, which nobody debugs here, for a shorter link. The modules it
  # needs download as it builds.
  with_heartbeat daprd quiet_go -C "$work" build -trimpath -tags stablecomponents \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${version#v}" \
    -o "$dir/daprd.partial" github.com/dapr/dapr/cmd/daprd >&2
  mv "$dir/daprd.partial" "$dir/daprd"
  rm -rf "$work"
}

# Tilt's Go module lacks its web UI (built separately with yarn), and without one `tilt up`
# and `tilt ci` refuse to start. So build from a vendored copy with a stub page in the
# UI's embed folder: the tests and the local loop use the terminal, `tilt up --stream`.
build_tilt() {
  local dir=$1 version=$2
  picked tilt "${version#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $dir"
  local work; scratch_dir
  cp "$repo/scripts/tools/tilt/go.mod" "$repo/scripts/tools/tilt/go.sum" "$work/"
  quiet_go -C "$work" mod vendor
  local ui=$work/vendor/github.com/tilt-dev/tilt/pkg/assets/build
  mkdir -p "$ui"
  echo '<!doctype html><title>Tilt</title><p>This Tilt was built from its Go module, which has no web UI: use <code>tilt up --stream</code>, or install Tilt from tilt.dev for the UI.</p>' > "$ui/index.html"
  mkdir -p "$dir"
  with_heartbeat tilt go -C "$work" build -mod=vendor -trimpath -ldflags "-s -w -X main.version=${version#v}" \
    -o "$dir/tilt.partial" github.com/tilt-dev/tilt/cmd/tilt >&2
  mv "$dir/tilt.partial" "$dir/tilt"
  rm -rf "$work"
}

# ---- the simulated cluster's control plane (scripts/cluster.sh up --sim) ----

# KUBE_COMMANDS in one go build from the wrapper module (about 2,600 compile actions; the link
# needs up to 2 GB). The version stamp makes the API server report v1.35.x to kubectl and to
# the operators' clients, and the kubelet its node version.
build_kube() {
  local dir=$1 version=$2
  picked kube "${version#v}" building "$KUBE_COMMANDS from source with go (first time only: about 10 min on 2 cores) -> $dir"
  local minor pkg stamp='' packages=()
  minor=$(echo "$version" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  done
  for pkg in $KUBE_COMMANDS; do packages+=("k8s.io/kubernetes/cmd/$pkg"); done
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  with_heartbeat kube quiet_go -C "$repo/scripts/tools/kube" build -trimpath -ldflags "-s -w$stamp" -o "$dir.partial/" \
    "${packages[@]}" >&2
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

# The replace lines for scripts/tools/kube/go.mod: one per staging module that kubernetes'
# own go.mod replaces with ./staging/..., mapped to that module's release (v0.MINOR.PATCH).
kube_replaces() {
  local mod version
  version=$(tool_pin kube)
  mod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  echo 'replace ('
  awk -v v="v0.${version#v1.}" '/^replace \(/ {r = 1; next} r && /^\)/ {r = 0}
    r && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$mod"
  echo ')'
}

# go_tool NAME DIR PACKAGE: PACKAGE built from scripts/tools/NAME's module into DIR/NAME.
go_tool() {
  local name=$1 dir=$2 package=$3
  mkdir -p "$dir"
  with_heartbeat "$name" quiet_go -C "$repo/scripts/tools/$name" build -trimpath -ldflags "-s -w" \
    -o "$dir/$name.partial" "$package" >&2
  mv "$dir/$name.partial" "$dir/$name"
}

# etcd (its main package is the root of its server module), 3.5.13 or later (its tools module says why).
build_etcd() {
  local dir=$1 version=$2
  picked etcd "${version#v}" building "from source with go (first time only: about 2 min on 2 cores) -> $dir"
  go_tool etcd "$dir" go.etcd.io/etcd/server/v3
}

# containerd, its ctr client (which imports the node's images) and runc's shim. The build tags
# leave out the man-page generator and the btrfs snapshotter (which needs C headers).
build_containerd() {
  local dir=$1 version=$2
  picked containerd "${version#v}" building "containerd, ctr, containerd-shim-runc-v2 from source with go (first time only: about 3 min on 2 cores) -> $dir"
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  local cmd=github.com/containerd/containerd/v2/cmd
  with_heartbeat containerd quiet_go -C "$repo/scripts/tools/containerd" build -trimpath -tags "urfave_cli_no_docs no_btrfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$version" -o "$dir.partial/" \
    "$cmd/containerd" "$cmd/ctr" "$cmd/containerd-shim-runc-v2" >&2
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

# CoreDNS with the plugins the node's Corefile names (scripts/tools/coredns/main.go).
build_coredns() {
  local dir=$1 version=$2
  picked coredns "${version#v}" building "from source with go (first time only: about 4 min on 2 cores) -> $dir"
  go_tool coredns "$dir" dapr-spin-hello/tools/coredns
}

# Helm, which installs Dapr's chart on the simulated cluster as on the others.
build_helm() {
  local dir=$1 version=$2
  picked helm "${version#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $dir"
  mkdir -p "$dir"
  with_heartbeat helm quiet_go -C "$repo/scripts/tools/helm" build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" -o "$dir/helm.partial" helm.sh/helm/v3/cmd/helm >&2
  mv "$dir/helm.partial" "$dir/helm"
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
build_spin_operator() {
  local dir=$1 version=$2
  picked spin-operator "${version#v}" building "from source with go (first time only: about 4 min on 2 cores) -> $dir"
  go_tool spin-operator "$dir" github.com/spinkube/spin-operator/cmd
}

# Dapr's control plane (DAPR_CONTROL_PLANE), from the daprd module: the same Dapr as daprd.
build_dapr_control_plane() {
  local dir=$1 version=$2
  picked dapr-control-plane "${version#v}" building "$DAPR_CONTROL_PLANE from source with go (first time only: about 3 min on 2 cores) -> $dir"
  local packages=() cmd
  for cmd in $DAPR_CONTROL_PLANE; do packages+=("github.com/dapr/dapr/cmd/$cmd"); done
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  with_heartbeat dapr-control-plane quiet_go -C "$repo/scripts/tools/daprd" build -trimpath \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${version#v}" -o "$dir.partial/" \
    "${packages[@]}" >&2
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

# What scripts/cluster/sim.sh starts, in the order it reads them: each binary, and the tool
# whose cache folder holds it.
SIM_BINARIES="etcd:etcd kube-apiserver:kube kube-controller-manager:kube kube-scheduler:kube kubectl:kube
  spin-operator:spin-operator sentry:dapr-control-plane injector:dapr-control-plane operator:dapr-control-plane
  daprd:daprd kubelet:kube kube-proxy:kube containerd:containerd ctr:containerd containerd-shim-runc-v2:containerd
  coredns:coredns helm:helm"

# NAME PATH per line: what scripts/cluster/sim.sh starts.
sim_paths() {
  local binary
  for binary in $SIM_BINARIES; do echo "${binary%%:*} $(tool_dir "${binary#*:}")/${binary%%:*}"; done
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

# install_pinned TOOL: TOOL's pinned build from the cache, built first if it is not there.
install_pinned() {
  local from=cached
  [ -x "$(cached_path "$1")" ] || { from=built; build_pinned "$1"; }
  picked "$1" "$(pinned_version "$1")" "$from" "$(cached_path "$1")"
}

# build_pinned TOOL: TOOL's recipe, build_TOOL DIR VERSION.
build_pinned() { "build_${1//-/_}" "$(tool_dir "$1")" "$(tool_pin "$1")"; }

print_env() {
  echo "export PATH=\"$(tool_dir wasmtime)/bin:$(tool_dir daprd):$(tool_dir tilt):$python_dir/bin:$(tool_dir kube):\$PATH\""
  echo "export DAPRD=\"$(cached_path daprd)\""
}

# ---- the local loop's tools: installed, then cached, then built ----

# Where an installed TOOL may be, in the order tried: for daprd also $DAPRD and dapr init's.
installed_candidates() {
  [ "$1" != daprd ] || { [ -z "${DAPRD:-}" ] || echo "$DAPRD"; echo "$HOME/.dapr/bin/daprd"; }
  command -v "$1" || true
}

# find_tool TOOL: sets found (its path), found_version and found_from (installed or cached),
# or fails. An installed tool of another version is named, with why it is not used. A tool the
# table gives no min is taken from the cache only.
find_tool() {
  local tool=$1 min candidate installed
  min=$(tool_min "$tool" 2>/dev/null) || return 2
  found='' found_version='' found_from=''
  [ "$min" = - ] || while IFS= read -r candidate; do
    { [ -n "$candidate" ] && [ -x "$candidate" ]; } || continue
    case $candidate in "$cache"/*) found=$candidate found_version=pinned found_from=cached; return 0 ;; esac
    if installed_ok "$tool" "$candidate"; then
      found=$candidate found_version=$installed found_from=installed
      return 0
    fi
    echo "tools: not using $tool ${installed:-(no version number)} at $candidate: the local loop needs $min or newer" >&2
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
    build_pinned "$1"
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
    echo "tools: Spin is not installed, so the component runs under wasmtime serve (the same .wasm). To use Spin, $(tool_hint spin)"
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
  local rc=0
  find_tool "$1" || rc=$?
  case $rc in
    0) echo "$found"; return ;;
    2) echo "tools.sh path: no tool '$1' in the table of tools (scripts/lib/tools_table.sh), which has:$TOOLS" >&2; return 2 ;;
  esac
  if [ "$(tool_field "$1" build)" = - ]; then
    local also=''
    [ "$1" != spin ] || also=" (or use wasmtime: scripts/local.sh app wasmtime)"
    echo "tools.sh: no $1 to use: $(tool_hint "$1")$also." >&2
  elif [ "$(tool_min "$1")" = - ]; then
    echo "tools.sh: no $1 in the cache: scripts/tools.sh all builds it." >&2
  else
    echo "tools.sh: no $1 ($(tool_min "$1") or newer) installed or cached: scripts/dev.sh (or scripts/tools.sh $1) builds it once." >&2
  fi
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
  # One build at a time: on 2 cores, running the Go builds or only their downloads beside
  # wasmtime's build (at nice 19 or not) never made the whole faster (bench/RESULTS.md).
  # The simulated cluster's binaries too: the tests start one (tests/deploy/test_sim.py).
  # shellcheck disable=SC2046,SC2086  # word lists
  for t in "${targets[@]}"; do
    case $t in
      env) print_env ;;
      all) require_builders pinned rust $(uncached $PINNED_TOOLS)
        install_rust; install_redis; install_python; install_node_packages
        for tool in $PINNED_TOOLS; do install_pinned "$tool"; done ;;
      rust|redis|python) "install_$t" ;;
      wasmtime|daprd|tilt) require_builders pinned $(uncached "$t"); install_pinned "$t" ;;
      sim) require_builders pinned $(uncached daprd $SIM_TOOLS); install_node_packages
        for tool in daprd $SIM_TOOLS; do install_pinned "$tool"; done ;;
      *) echo "tools.sh: unknown target '$t' (all|rust|redis|wasmtime|daprd|tilt|python|sim|env|dev|path|sim-paths|kube-replaces)" >&2; exit 2 ;;
    esac
  done
}
main "$@"
