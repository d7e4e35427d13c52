#!/usr/bin/env bash
# The one test command: unit tests, the wasm build and its WIT world, the real-stack
# suite (wasmtime serve + daprd + Redis), the deployment checks (Tilt, manifests, image, and
# `tilt ci` through a simulated cluster's real API server, spin-operator and Dapr injector),
# the local Tilt loop run once by `tilt ci`, and the benchmark harness in quick mode.
# Installs missing tools first (scripts/tools.sh; a no-op once they are cached).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh all
eval "$(scripts/tools.sh env)"

echo "==> building the component with spin.toml's build command"
build_command=$(sed -n 's/^command = "\(.*\)"$/\1/p' spin.toml)
[ -n "$build_command" ] || { echo "no build command in spin.toml" >&2; exit 1; }
echo "    $build_command"
$build_command

# Each runner's output is kept too, for the closing total.
log=$(mktemp)
delivery_log=$(mktemp)
trap 'rm -f "$log" "$delivery_log"' EXIT

echo "==> compiling the tests (cargo test --no-run)"
cargo test --quiet --no-run

# wasmtime serve can reuse an instance for many requests, as hosts that pool instances do: the
# component must keep nothing from one request that the next could see (tests/support/mod.rs).
# So the real-stack suites below run twice, the second time with E2E_INSTANCE_REUSE=128.

# tests/delivery.rs and tests/chaos.rs spend most of their minutes waiting on Dapr's redelivery
# timers (30 s after a pub/sub outage, 75 s after a killed daprd), so they run in the background,
# one after the other, without and then with instance reuse, beside the suites below; their
# output follows them.
echo "==> stored means published (tests/delivery.rs), then delivery under faults (tests/chaos.rs), each without and with instance reuse, in the background"
(cargo test --quiet --test delivery && cargo test --quiet --test chaos -- --nocapture &&
  E2E_INSTANCE_REUSE=128 cargo test --quiet --test delivery && E2E_INSTANCE_REUSE=128 cargo test --quiet --test chaos -- --nocapture) >"$delivery_log" 2>&1 &
delivery=$!

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

echo "==> deployment checks: Tiltfile under the real tilt, manifests against upstream schemas, image, a course laptop faked, the cluster path on a simulated cluster's real control plane (tests/deploy)"
python -m pytest -q tests/deploy 2>&1 | tee -a "$log"

echo "==> stored means published and delivery under faults (tests/delivery.rs, tests/chaos.rs, without and with reuse): their output"
delivery_status=0
wait "$delivery" || delivery_status=$?
tee -a "$log" <"$delivery_log"
[ "$delivery_status" = 0 ] || { echo "tests/delivery.rs or tests/chaos.rs failed (exit $delivery_status)" >&2; exit 1; }

echo "==> the local Tilt loop once: tilt ci -- --local --host=wasmtime (redis, daprd, app, smoke test), on free ports"
# Free ports, not the defaults: something else on a CI machine may hold 8000, 3500 or 6379.
read -r APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT < <(scripts/lib/free_ports.py 5)
(export APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT; tilt ci --port 0 -- --local --host=wasmtime) 2>&1 | tee -a "$log"
echo "1 passed (tilt ci)" >> "$log"

echo "==> the benchmark harness in quick mode, so it cannot rot (bench/run.py --quick)"
python3 bench/run.py --quick 2>&1 | tee -a "$log"

# Every step above stops the script on a failure, so reaching here means none failed.
passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{n += $1} END {print n + 0}')
echo "total: $passed passed, 0 failed"
