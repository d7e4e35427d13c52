#!/usr/bin/env bash
# The service without Kubernetes: Redis, a Dapr sidecar and the component on this machine,
# with the same component names as in the cluster. Each subcommand runs one process in the
# foreground (Tilt's local mode runs them as serve_cmds; or use three terminals).
#
#   scripts/local.sh redis              # redis-server on 127.0.0.1:6379, in memory
#   scripts/local.sh daprd              # daprd: HTTP API on 3500, app on 8000, scripts/dapr/
#   scripts/local.sh app [spin|wasmtime] # the built .wasm on 127.0.0.1:8000 (default: spin)
#   scripts/local.sh smoke              # the course's curls against 127.0.0.1:8000
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
eval "$(scripts/tools.sh env)"

APP_PORT=${APP_PORT:-8000}
DAPR_HTTP_PORT=${DAPR_HTTP_PORT:-3500}
REDIS_PORT=${REDIS_PORT:-6379}
wasm=target/wasm32-wasip2/release/dapr_spin_hello.wasm

need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "local.sh: '$1' is not installed. $2" >&2
  exit 127
}

need_wasm() {
  [ -f "$wasm" ] || { echo "local.sh: $wasm is missing: run 'spin build' (or cargo build --target wasm32-wasip2 --release)" >&2; exit 1; }
}

case ${1:-} in
  redis)
    need redis-server "Run scripts/tools.sh redis (Debian: apt-get install redis-server)."
    # In memory, like the cluster's Redis: a restart empties the state store.
    exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    ;;
  daprd)
    need daprd "Run scripts/tools.sh daprd (builds Dapr's sidecar once into ~/.cache/dapr-spin-hello)."
    components=scripts/dapr
    if [ "$REDIS_PORT" != 6379 ]; then
      components=$(mktemp -d)
      for f in scripts/dapr/*.yaml; do sed "s/localhost:6379/localhost:$REDIS_PORT/" "$f" > "$components/$(basename "$f")"; done
    fi
    # Spans to Zipkin when one answers on localhost:9411 (`dapr init` runs one there).
    tracing=()
    if (exec 3<>/dev/tcp/127.0.0.1/9411) 2>/dev/null; then tracing=(--config scripts/dapr/tracing.yaml); fi
    exec daprd --app-id dapr-spin-hello --app-port "$APP_PORT" --app-channel-address 127.0.0.1 \
      --dapr-http-port "$DAPR_HTTP_PORT" --dapr-grpc-port "${DAPR_GRPC_PORT:-50001}" \
      --metrics-port "${DAPR_METRICS_PORT:-9090}" --resources-path "$components" \
      --log-level info ${tracing[@]+"${tracing[@]}"}
    ;;
  app)
    need_wasm
    case ${2:-spin} in
      spin)
        need spin "Install Spin: curl -fsSL https://spinframework.dev/downloads/install.sh | bash  (or use: scripts/local.sh app wasmtime)"
        exec spin up --listen "127.0.0.1:$APP_PORT" --env "DAPR_HTTP_PORT=$DAPR_HTTP_PORT"
        ;;
      wasmtime)
        need wasmtime "Run scripts/tools.sh wasmtime (cargo install wasmtime-cli, once)."
        exec wasmtime serve -Scli --addr "127.0.0.1:$APP_PORT" --env "DAPR_HTTP_PORT=$DAPR_HTTP_PORT" "$wasm"
        ;;
      *) echo "local.sh app: host must be spin or wasmtime, got '$2'" >&2; exit 2 ;;
    esac
    ;;
  smoke)
    base=http://127.0.0.1:$APP_PORT
    check() { # name, expected status, curl args...
      local name=$1 want=$2; shift 2
      local got; got=$(curl -s -o /tmp/local-smoke.$$ -w '%{http_code}' "$@")
      printf '%-40s %s %s\n' "$name" "$got" "$(head -c 200 /tmp/local-smoke.$$)"
      rm -f /tmp/local-smoke.$$
      [ "$got" = "$want" ] || { echo "smoke: $name answered $got, expected $want" >&2; exit 1; }
    }
    user=smoke-$(date +%s)
    check "GET /" 200 "$base/"
    check "POST /messages (the course's curl)" 201 -X POST "$base/messages?user_id=$user&message=Hello%20Dapr" -H "Content-Type: application/json"
    check "GET /messages/$user" 200 "$base/messages/$user"
    check "GET /messages/nobody-$user" 404 "$base/messages/nobody-$user"
    check "GET /readyz" 200 "$base/readyz"
    echo "smoke: ok"
    ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
