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

# tests/delivery.rs spends most of its minute waiting on Dapr's redelivery timers (30 s after a
# pub/sub outage), so it runs in the background beside the suites below; its output follows them.
echo "==> stored means published (tests/delivery.rs), in the background"
cargo test --quiet --test delivery >"$delivery_log" 2>&1 &
delivery=$!

echo "==> cargo test: unit tests, then the real-stack suites in tests/ but delivery.rs"
suites=(--lib)
for suite in tests/*.rs; do
  suite=$(basename "$suite" .rs)
  [ "$suite" = delivery ] || suites+=(--test "$suite")
done
cargo test --quiet "${suites[@]}" 2>&1 | tee -a "$log"

echo "==> schema-driven fuzzing of /openapi.json against the real stack (tests/fuzz.rs: schemathesis, fixed seed)"
cargo test --quiet --test fuzz -- --ignored --nocapture 2>&1 | tee -a "$log"

echo "==> deployment checks: Tiltfile under the real tilt, manifests against upstream schemas, image, a course laptop faked, the cluster path on a simulated cluster's real control plane (tests/deploy)"
python -m pytest -q tests/deploy 2>&1 | tee -a "$log"

echo "==> stored means published (tests/delivery.rs): its output"
delivery_status=0
wait "$delivery" || delivery_status=$?
tee -a "$log" <"$delivery_log"
[ "$delivery_status" = 0 ] || { echo "tests/delivery.rs failed (exit $delivery_status)" >&2; exit 1; }

echo "==> the local Tilt loop once: tilt ci -- --local --host=wasmtime (redis, daprd, app, smoke test), on free ports"
# Free ports, not the defaults: something else on a CI machine may hold 8000, 3500 or 6379.
read -r APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT < <(python3 -c '
import socket
sockets = [socket.socket() for _ in range(5)]
for s in sockets: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))')
(export APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT; tilt ci --port 0 -- --local --host=wasmtime) 2>&1 | tee -a "$log"
echo "1 passed (tilt ci)" >> "$log"

echo "==> the benchmark harness in quick mode, so it cannot rot (bench/run.py --quick)"
python3 bench/run.py --quick 2>&1 | tee -a "$log"

# Every step above stops the script on a failure, so reaching here means none failed.
passed=$(grep -oE '[0-9]+ passed' "$log" | awk '{n += $1} END {print n + 0}')
echo "total: $passed passed, 0 failed"
