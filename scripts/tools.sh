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

have() { command -v "$1" >/dev/null 2>&1; }
short_hash() { if have sha256sum; then sha256sum; else shasum -a 256; fi | cut -c1-"$1"; }

# Versions. Dapr and Tilt are pinned by their tools modules' go.mod (read here, not repeated).
WASMTIME_VERSION=48.0.8
# Only what `wasmtime serve` needs (plus the compile cache, the pooling allocator Spin uses,
# and perf maps for profiling). `serve` alone does not compile: it needs `run` and
# `component-model-async` too, and without clap/default its --help and errors say nothing.
WASMTIME_FEATURES=run,serve,component-model-async,cranelift,cache,pooling-allocator,parallel-compilation,profiling,clap/default
go_mod_version() { awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) {print ($1 == m ? $2 : $3); exit}' "$repo/scripts/tools/$1/go.mod"; }
DAPR_VERSION=$(go_mod_version daprd github.com/dapr/dapr)
TILT_VERSION=$(go_mod_version tilt github.com/tilt-dev/tilt)
# The simulated cluster (scripts/cluster.sh up --sim): etcd, Kubernetes, kwok and spin-operator
# by their tools modules, Dapr's sentry and injector by the daprd module (the same Dapr as daprd).
ETCD_VERSION=$(go_mod_version etcd go.etcd.io/etcd/server/v3)
KUBE_VERSION=$(go_mod_version kube k8s.io/kubernetes)
KWOK_VERSION=$(go_mod_version kwok sigs.k8s.io/kwok)
SPIN_OPERATOR_VERSION=$(go_mod_version spin-operator github.com/spinkube/spin-operator)
# The Dapr components the built daprd registers: the types in scripts/dapr/ (which the tests,
# local mode and the benchmark load), and mDNS, self-hosted Dapr's name resolution.
DAPRD_COMPONENTS=$( (sed -n 's/^  type: *//p' "$repo"/scripts/dapr/*.yaml; echo nameresolution.mdns) | sort -u | paste -sd, -)

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
kube_dir=$cache/kube-$KUBE_VERSION
etcd_dir=$cache/etcd-$ETCD_VERSION
kwok_dir=$cache/kwok-$KWOK_VERSION
spin_operator_dir=$cache/spin-operator-$SPIN_OPERATOR_VERSION
dapr_control_plane_dir=$cache/dapr-control-plane-$DAPR_VERSION
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
    # The package may start a system-wide Redis on 6379; the tests start their own on free ports.
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
  local work; work=$(mktemp -d)
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
  local work; work=$(mktemp -d)
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

# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl, in one go build from the
# wrapper module (about 2,400 compile actions; the link needs up to 2 GB). The version stamp
# makes the API server report v1.35.x to kubectl and to the operators' clients.
install_kube() {
  if [ -x "$kube_dir/kubectl" ]; then return; fi
  picked kube "${KUBE_VERSION#v}" building "kube-apiserver, kube-controller-manager, kube-scheduler, kubectl from source with go (first time only: about 15 min on 2 cores) -> $kube_dir"
  local minor pkg stamp=''
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  done
  rm -rf "$kube_dir.partial"
  mkdir -p "$kube_dir.partial"
  with_heartbeat kube quiet_go -C "$repo/scripts/tools/kube" build -trimpath -ldflags "-s -w$stamp" -o "$kube_dir.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl >&2
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

# kwok keeps fake nodes and their pods' status (no kubelet, no container runs).
install_kwok() {
  if [ -x "$kwok_dir/kwok" ]; then return; fi
  picked kwok "${KWOK_VERSION#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $kwok_dir"
  go_tool kwok sigs.k8s.io/kwok/cmd/kwok
}

# spin-operator's manager (cmd/main.go).
install_spin_operator() {
  if [ -x "$spin_operator_dir/spin-operator" ]; then return; fi
  picked spin-operator "${SPIN_OPERATOR_VERSION#v}" building "from source with go (first time only: about 3 min on 2 cores) -> $spin_operator_dir"
  go_tool spin-operator github.com/spinkube/spin-operator/cmd
}

# Dapr's sentry and sidecar injector, from the daprd module: the same Dapr as daprd.
install_dapr_control_plane() {
  if [ -x "$dapr_control_plane_dir/injector" ]; then return; fi
  picked dapr-control-plane "${DAPR_VERSION#v}" building "sentry and injector from source with go (first time only: about 4 min on 2 cores) -> $dapr_control_plane_dir"
  rm -rf "$dapr_control_plane_dir.partial"
  mkdir -p "$dapr_control_plane_dir.partial"
  with_heartbeat dapr-control-plane quiet_go -C "$repo/scripts/tools/daprd" build -trimpath \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${DAPR_VERSION#v}" -o "$dapr_control_plane_dir.partial/" \
    github.com/dapr/dapr/cmd/sentry github.com/dapr/dapr/cmd/injector >&2
  rm -rf "$dapr_control_plane_dir"
  mv "$dapr_control_plane_dir.partial" "$dapr_control_plane_dir"
}

SIM_TOOLS="etcd kube kwok spin-operator dapr-control-plane"

# NAME PATH per line: what scripts/cluster/sim.sh starts.
sim_paths() {
  echo "etcd $etcd_dir/etcd"
  echo "kube-apiserver $kube_dir/kube-apiserver"
  echo "kube-controller-manager $kube_dir/kube-controller-manager"
  echo "kube-scheduler $kube_dir/kube-scheduler"
  echo "kubectl $kube_dir/kubectl"
  echo "kwok $kwok_dir/kwok"
  echo "spin-operator $spin_operator_dir/spin-operator"
  echo "sentry $dapr_control_plane_dir/sentry"
  echo "injector $dapr_control_plane_dir/injector"
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
    kube) echo "${KUBE_VERSION#v}" ;; etcd) echo "${ETCD_VERSION#v}" ;; kwok) echo "${KWOK_VERSION#v}" ;; spin-operator) echo "${SPIN_OPERATOR_VERSION#v}" ;;
  esac
}

cached_path() {
  case $1 in
    wasmtime) echo "$wasmtime_dir/bin/wasmtime" ;;
    daprd) echo "$daprd_dir/daprd" ;;
    tilt) echo "$tilt_dir/tilt" ;;
    kube) echo "$kube_dir/kubectl" ;;
    etcd) echo "$etcd_dir/etcd" ;;
    kwok) echo "$kwok_dir/kwok" ;;
    spin-operator) echo "$spin_operator_dir/spin-operator" ;;
    dapr-control-plane) echo "$dapr_control_plane_dir/injector" ;;
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

version_at_least() { # HAVE WANT, each X[.Y[.Z]]
  local i have want
  IFS=. read -r -a have <<<"$1"
  IFS=. read -r -a want <<<"$2"
  for i in 0 1 2; do
    [ "${have[i]:-0}" -gt "${want[i]:-0}" ] && return 0
    [ "${have[i]:-0}" -lt "${want[i]:-0}" ] && return 1
  done
  return 0
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

# find_or_build TOOL: find_tool, else the pinned source build; then its line.
find_or_build() {
  if ! find_tool "$1"; then
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
  find_or_build tilt
  local tilt_up; printf -v tilt_up '%q up' "$found"
  # A Tilt from tilt.dev serves its web UI; the one built here has none, so it streams logs.
  [ "$found_from" = installed ] || tilt_up="$tilt_up --stream"
  echo "tilt_up=($tilt_up)" >&3
  [ "$mode" = local ] || return 0

  install_rust
  local host=wasmtime
  if find_tool spin; then
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
      all) install_rust; install_redis; install_python; for tool in wasmtime daprd tilt $SIM_TOOLS; do install_pinned "$tool"; done ;;
      rust|redis|python) "install_$t" ;;
      wasmtime|daprd|tilt) install_pinned "$t" ;;
      sim) for tool in $SIM_TOOLS; do install_pinned "$tool"; done ;;
      *) echo "tools.sh: unknown target '$t' (all|rust|redis|wasmtime|daprd|tilt|python|sim|env|dev|path|sim-paths|kube-replaces)" >&2; exit 2 ;;
    esac
  done
}
main "$@"
