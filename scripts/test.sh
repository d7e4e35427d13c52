#!/usr/bin/env bash
# The one test command (CI runs it: .ci/run):
#
#   scripts/test.sh          the whole suite: the gates (below), unit tests, the wasm build and
#                            its WIT world, the real-stack suites (wasmtime serve + daprd + Redis),
#                            the deployment checks (Tilt, manifests, image, and `tilt ci` through a
#                            simulated cluster's real API server, spin-operator and Dapr injector),
#                            the local Tilt loop run once by `tilt ci`, and the benchmark harness
#                            in quick mode
#   scripts/test.sh --fast   the loop while changing the component: the gates, the unit tests,
#                            the component's world (tests/component.rs) and the real-stack suite
#                            (tests/real_stack.rs); under 3 minutes warm (bench/RESULTS.md)
#
# The gates come first, each stopping the run: cargo fmt --check, clippy (host and
# wasm32-wasip2) with warnings as errors, ruff (ruff.toml) and shellcheck (.shellcheckrc).
# Installs missing tools first (scripts/tools.sh; a no-op once they are cached); --fast only
# those it runs, so it never builds the cluster's tools.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=false
case ${1:-} in
  "") ;;
  --fast) fast=true ;;
  *) echo "usage: scripts/test.sh [--fast]" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "usage: scripts/test.sh [--fast]" >&2; exit 2; }
if $fast; then scripts/tools.sh rust redis python wasmtime daprd; else scripts/tools.sh all; fi
eval "$(scripts/tools.sh env)"

# The shell lint, shellcheck, comes from apt, as tools.sh installs Redis; ruff is in the
# tools' Python venv (scripts/requirements.txt).
if ! command -v shellcheck >/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "==> apt-get install shellcheck (Debian, Ubuntu)"
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
  else
    echo "test.sh: shellcheck is not installed, and this system has no apt-get: install it with its package manager (brew install shellcheck, dnf install ShellCheck)" >&2
    exit 1
  fi
fi

# gate NAME FIX COMMAND...: runs COMMAND; on a failure stops the run, saying what to do.
gate() {
  local name=$1 fix=$2
  shift 2
  echo "==> gate: $name ($*)"
  "$@" || { echo "test.sh: the $name gate failed: $fix" >&2; exit 1; }
}
# The component's crate, and the two small components beside it: the adapter that gives
# `wasmtime serve` Spin's variables (tests, local mode) and the benchmark's empty ceiling.
# All three build in target/ (compose.sh builds the adapter there too).
crates=(Cargo.toml scripts/wasmtime-adapter/Cargo.toml bench/ceiling/Cargo.toml)
# each_crate cargo SUBCOMMAND ARG...: runs it on each, --manifest-path after the subcommand.
each_crate() {
  local crate
  for crate in "${crates[@]}"; do
    CARGO_TARGET_DIR=target "$1" "$2" --manifest-path "$crate" "${@:3}" || return
  done
}
gate rustfmt "run cargo fmt (rustfmt.toml) in that crate, then look at the diff" each_crate cargo fmt --check
gate "clippy, host" "fix what clippy says above" cargo clippy --quiet --all-targets -- -D warnings
# The libs are the wasm components; the tests under tests/ are host programs that drive them.
gate "clippy, wasm32-wasip2" "fix what clippy says above" \
  each_crate cargo clippy --quiet --target wasm32-wasip2 --lib -- -D warnings
gate ruff "fix what ruff says above (ruff.toml: which checks, which files)" ruff check --quiet .
gate shellcheck "fix what shellcheck says above (a finding kept on purpose gets a disable comment saying why)" \
  shellcheck scripts/*.sh scripts/lib/*.sh scripts/cluster/*.sh scripts/wasmtime-adapter/*.sh bench/*.sh .ci/run

echo "==> building the component with spin.toml's build command"
build_command=$(sed -n 's/^command = "\(.*\)"$/\1/p' spin.toml)
[ -n "$build_command" ] || { echo "no build command in spin.toml" >&2; exit 1; }
echo "    $build_command"
$build_command

# Each runner's output is kept too, for the closing total.
log=$(mktemp)
delivery_log=$(mktemp)
sim_log=$(mktemp)
trap 'rm -f "$log" "$delivery_log" "$sim_log"' EXIT
# Every step stops the script on a failure, so reaching the total means none failed.
total() {
  passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{n += $1} END {print n + 0}')
  echo "total: $passed passed, 0 failed"
}

if $fast; then
  echo "==> fast tier: the unit tests, the component's world (tests/component.rs), the real-stack suite (tests/real_stack.rs)"
  cargo test --quiet --lib --test component --test real_stack 2>&1 | tee -a "$log"
  total
  exit 0
fi

echo "==> compiling the tests (cargo test --no-run)"
cargo test --quiet --no-run

# wasmtime serve can reuse an instance for many requests, as hosts that pool instances do: the
# component must keep nothing from one request that the next could see (tests/support/mod.rs).
# So the real-stack suites below run twice, the second time with E2E_INSTANCE_REUSE=128.

# Two suites spend most of their minutes waiting, so they run in the background beside the
# suites below, and their output follows them: tests/delivery.rs and tests/chaos.rs on Dapr's
# redelivery timers (60 s after a killed daprd), one after the other, without and then with
# instance reuse; and the simulated cluster's node tests (tests/deploy/test_sim.py) on pods.
echo "==> delivery (tests/delivery.rs), then delivery under faults (tests/chaos.rs), each without and with instance reuse, in the background"
(cargo test --quiet --test delivery && cargo test --quiet --test chaos -- --nocapture &&
  E2E_INSTANCE_REUSE=128 cargo test --quiet --test delivery && E2E_INSTANCE_REUSE=128 cargo test --quiet --test chaos -- --nocapture) >"$delivery_log" 2>&1 &
delivery=$!
echo "==> the simulated cluster's real node (tests/deploy/test_sim.py), in the background"
python -m pytest -q -rs tests/deploy/test_sim.py >"$sim_log" 2>&1 &
sim=$!

echo "==> cargo test: unit tests, then the real-stack suites in tests/ but delivery.rs and chaos.rs"
suites=(--lib)
for suite in tests/*.rs; do
  suite=$(basename "$suite" .rs)
  case $suite in delivery|chaos) ;; *) suites+=(--test "$suite") ;; esac
done
cargo test --quiet "${suites[@]}" 2>&1 | tee -a "$log"
echo "==> the real-stack suite again, with instance reuse (E2E_INSTANCE_REUSE=128)"
E2E_INSTANCE_REUSE=128 cargo test --quiet --test real_stack 2>&1 | tee -a "$log"

echo "==> schema-driven fuzzing of /openapi.json against the real stack (tests/fuzz.rs: schemathesis, fixed seed)"
cargo test --quiet --test fuzz -- --ignored --nocapture 2>&1 | tee -a "$log"

echo "==> deployment checks: Tiltfile under the real tilt, manifests against upstream schemas, image, a course laptop faked (tests/deploy but test_sim.py)"
python -m pytest -q -rs tests/deploy --ignore=tests/deploy/test_sim.py 2>&1 | tee -a "$log"

# background NAME PID LOG: waits for a background suite, then shows its output; stops on a failure.
background() {
  local status=0
  echo "==> $1: its output"
  wait "$2" || status=$?
  tee -a "$log" <"$3"
  [ "$status" = 0 ] || { echo "test.sh: $1 failed (exit $status)" >&2; exit 1; }
}
background "the simulated cluster's node (tests/deploy/test_sim.py)" "$sim" "$sim_log"
background "delivery and delivery under faults (tests/delivery.rs, tests/chaos.rs, without and with reuse)" "$delivery" "$delivery_log"

echo "==> the local Tilt loop once: tilt ci -- --local --host=wasmtime (redis, daprd, app, smoke test), on free ports"
# Free ports, not the defaults: something else on a CI machine may hold 8000, 3500 or 6379.
read -r APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT < <(scripts/lib/free_ports.py 5)
(export APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT; tilt ci --port 0 -- --local --host=wasmtime) 2>&1 | tee -a "$log"
echo "1 passed (tilt ci)" >> "$log"

echo "==> the benchmark harness in quick mode, so it cannot rot (bench/run.py --quick)"
python3 bench/run.py --quick 2>&1 | tee -a "$log"

total
