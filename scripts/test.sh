#!/usr/bin/env bash
# The one test command: unit tests, the wasm build and its WIT world, the real-stack
# suite (wasmtime serve + daprd + Redis), the deployment checks (Tilt, manifests, image),
# and the local Tilt loop run once by `tilt ci`.
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

echo "==> cargo test (unit tests, then the real-stack suite in tests/)"
cargo test --quiet

echo "==> deployment checks: Tiltfile under the real tilt, manifests against upstream schemas, image (tests/deploy)"
python -m pytest -q tests/deploy

echo "==> the local Tilt loop once: tilt ci -- --local --host=wasmtime (redis, daprd, app, smoke test)"
tilt ci --port 0 -- --local --host=wasmtime
