#!/usr/bin/env bash
# The hot-reload loop in one command.
#
#   scripts/dev.sh              local mode, no cluster: Redis, daprd and the component as
#                               processes under Tilt; every save under src/ rebuilds and restarts
#   scripts/dev.sh --cluster    the SpinKube loop (tilt up against Rancher Desktop or k3d;
#                               run scripts/cluster.sh up once first)
#
# It installs what it can (the wasm32-wasip2 target, Redis, wasmtime, daprd, a Tilt built
# from source) and names what it cannot, with the one-line install.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=local
case ${1:-} in
  "") ;;
  --cluster) mode=cluster ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac

spin_install='curl -fsSL https://spinframework.dev/downloads/install.sh | bash && sudo mv spin /usr/local/bin/'
tilt_install='curl -fsSL https://raw.githubusercontent.com/tilt-dev/tilt/master/scripts/install.sh | bash'

# A Tilt the user installed has the web UI; the one built here from Tilt's Go module has
# not, so that one streams its logs to the terminal.
if command -v tilt >/dev/null 2>&1; then
  tilt=("$(command -v tilt)" up)
else
  echo "Tilt is not installed; using one built from source (for the web UI: $tilt_install)"
  scripts/tools.sh tilt
  tilt=(tilt up --stream)
fi
eval "$(scripts/tools.sh env)"

if [ "$mode" = cluster ]; then
  scripts/cluster.sh doctor
  exec "${tilt[@]}"
fi

scripts/tools.sh rust redis wasmtime daprd
host=spin
if ! command -v spin >/dev/null 2>&1; then
  echo "Spin is not installed, so the component runs under wasmtime serve (same .wasm). To use Spin: $spin_install"
  host=wasmtime
fi
echo "Starting the local loop (host: $host). Try: curl http://localhost:8000/"
exec "${tilt[@]}" -- --local --host="$host"
