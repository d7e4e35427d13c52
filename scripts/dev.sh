#!/usr/bin/env bash
# The hot-reload loop in one command.
#
#   scripts/dev.sh              local mode, no cluster: Redis, daprd and the component as
#                               processes under Tilt; every save under src/ rebuilds and restarts
#   scripts/dev.sh --cluster    the SpinKube loop (tilt up against the cluster that
#                               scripts/cluster.sh up made once first: k3d by default, or
#                               --kind, --rancher)
#
# It uses the tools already installed (Spin, Tilt, the Dapr CLI's ~/.dapr/bin/daprd, a Redis
# already on REDIS_PORT such as dapr init's dapr_redis) and builds only what is missing, once
# (scripts/tools.sh: one line per tool says which it picked). Ports: scripts/local.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/wsl.sh
. scripts/lib/wsl.sh
windows_drive_warning "$(pwd -P)"

mode=local
case ${1:-} in
  "") ;;
  --cluster) mode=cluster ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac

host='' tilt_up=()   # set by scripts/tools.sh dev
if [ "$mode" = cluster ]; then
  tools=$(scripts/tools.sh dev cluster)
  eval "$tools"
  scripts/cluster.sh doctor
  exec "${tilt_up[@]}"
fi

# Ports first: a taken one stops here, before any tool is looked for.
scripts/local.sh check
tools=$(scripts/tools.sh dev local)   # sets host (spin or wasmtime) and tilt_up
eval "$tools"
echo "Starting the local loop (host: $host). Try: curl http://localhost:${APP_PORT:-8000}/"
exec "${tilt_up[@]}" -- --local --host="$host"
