#!/usr/bin/env bash
# Installs the pinned tools that the tests and the local loop need, into a cache
# outside the repo, and skips whatever is already there. Safe to run again.
#
#   scripts/tools.sh [all|rust|redis|wasmtime|daprd|tilt|wasm-tools|python]...
#   eval "$(scripts/tools.sh env)"   # puts the cached tools on PATH
#
# Cache: $DAPR_SPIN_HELLO_CACHE (default $HOME/.cache/dapr-spin-hello), one folder
# per tool and version, so a version bump builds anew and never reuses a stale binary.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${DAPR_SPIN_HELLO_CACHE:-$HOME/.cache/dapr-spin-hello}

# Versions. Dapr and Tilt are pinned by their tools modules' go.mod (read here, not repeated).
WASMTIME_VERSION=48.0.8
# Only what `wasmtime serve` needs (plus the compile cache, the pooling allocator Spin uses,
# and perf maps for profiling). `serve` alone does not compile: it needs `run` and
# `component-model-async` too, and without clap/default its --help and errors say nothing.
WASMTIME_FEATURES=run,serve,component-model-async,cranelift,cache,pooling-allocator,parallel-compilation,profiling,clap/default
go_mod_version() { awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) {print ($1 == m ? $2 : $3); exit}' "$repo/scripts/tools/$1/go.mod"; }
DAPR_VERSION=$(go_mod_version daprd github.com/dapr/dapr)
TILT_VERSION=$(go_mod_version tilt github.com/tilt-dev/tilt)

wasmtime_dir=$cache/wasmtime-$WASMTIME_VERSION-$(echo "$WASMTIME_FEATURES" | sha256sum | cut -c1-8)
daprd_dir=$cache/daprd-$DAPR_VERSION
tilt_dir=$cache/tilt-$TILT_VERSION
# Keyed by the requirements' hash, so a change gets a new venv and never breaks one in use.
python_dir=$cache/python-venv-$(sha256sum "$repo/scripts/requirements.txt" | cut -c1-12)

step() { printf '\n==> %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo; then sudo "$@"; else echo "need root for: $*" >&2; return 1; fi; }

# A long build prints a line a minute, so a slow first run reads as busy, not hung.
with_heartbeat() {
  local what=$1; shift
  local start=$SECONDS
  ( while sleep 60; do echo "    ... still building $what ($(( (SECONDS - start) / 60 )) min)" >&2; done ) &
  local beat=$!
  local rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  echo "    $what: $(( SECONDS - start )) s" >&2
  return "$rc"
}

install_rust() {
  if rustup target list --installed | grep -qx wasm32-wasip2; then return; fi
  step "rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
}

install_redis() {
  if have redis-server; then return; fi
  step "apt-get install redis-server (Debian)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package starts a system-wide Redis on 6379; the tests start their own on free ports.
}

install_wasmtime() {
  if [ -x "$wasmtime_dir/bin/wasmtime" ]; then return; fi
  step "cargo install wasmtime-cli $WASMTIME_VERSION -> $wasmtime_dir (first time only: ~15-25 min on 2 cores)"
  with_heartbeat wasmtime cargo install --quiet --locked --root "$wasmtime_dir" wasmtime-cli --version "=$WASMTIME_VERSION" \
    --no-default-features --features "$WASMTIME_FEATURES"
}

install_daprd() {
  if [ -x "$daprd_dir/daprd" ]; then return; fi
  step "go build daprd $DAPR_VERSION (-tags stablecomponents) -> $daprd_dir (first time only: ~15-25 min on 2 cores)"
  mkdir -p "$daprd_dir"
  with_heartbeat daprd go -C "$repo/scripts/tools/daprd" build -trimpath -tags stablecomponents \
    -o "$daprd_dir/daprd.partial" github.com/dapr/dapr/cmd/daprd
  mv "$daprd_dir/daprd.partial" "$daprd_dir/daprd"
}

# Tilt's Go module lacks its web UI (built separately with yarn), and without one `tilt up`
# and `tilt ci` refuse to start. So build from a vendored copy with a stub page in the
# UI's embed folder: the tests and the local loop use the terminal, `tilt up --stream`.
install_tilt() {
  if [ -x "$tilt_dir/tilt" ]; then return; fi
  step "go build tilt $TILT_VERSION -> $tilt_dir (first time only: ~5-10 min on 2 cores)"
  local work; work=$(mktemp -d)
  cp "$repo/scripts/tools/tilt/go.mod" "$repo/scripts/tools/tilt/go.sum" "$work/"
  go -C "$work" mod vendor
  local ui=$work/vendor/github.com/tilt-dev/tilt/pkg/assets/build
  mkdir -p "$ui"
  echo '<!doctype html><title>Tilt</title><p>This Tilt was built from its Go module, which has no web UI: use <code>tilt up --stream</code>, or install Tilt from tilt.dev for the UI.</p>' > "$ui/index.html"
  mkdir -p "$tilt_dir"
  with_heartbeat tilt go -C "$work" build -mod=vendor -trimpath -ldflags "-X main.version=${TILT_VERSION#v}" \
    -o "$tilt_dir/tilt.partial" github.com/tilt-dev/tilt/cmd/tilt
  mv "$tilt_dir/tilt.partial" "$tilt_dir/tilt"
  rm -rf "$work"
}

# Python tools for the manifest checks and the benchmark's FastAPI reference.
install_python() {
  if [ -x "$python_dir/bin/python" ] && [ -f "$python_dir/.complete" ]; then return; fi
  step "python venv with scripts/requirements.txt -> $python_dir"
  rm -rf "$python_dir"
  python3 -m venv "$python_dir"
  "$python_dir/bin/pip" install --quiet --disable-pip-version-check -r "$repo/scripts/requirements.txt"
  touch "$python_dir/.complete"
}

print_env() {
  echo "export PATH=\"$wasmtime_dir/bin:$daprd_dir:$tilt_dir:$python_dir/bin:\$PATH\""
}

main() {
  local targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(all)
  for t in "${targets[@]}"; do
    case $t in
      env) print_env ;;
      all) install_rust; install_redis; install_python; install_wasmtime; install_daprd; install_tilt ;;
      rust|redis|wasmtime|daprd|tilt|python) "install_$t" ;;
      *) echo "tools.sh: unknown target '$t' (all|rust|redis|wasmtime|daprd|tilt|python|env)" >&2; exit 2 ;;
    esac
  done
}
main "$@"
