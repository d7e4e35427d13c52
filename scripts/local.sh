#!/usr/bin/env bash
# The service without Kubernetes: Redis, a Dapr sidecar and the component on this machine,
# with the same component names as in the cluster. Each subcommand runs one process in the
# foreground (Tilt's local mode runs them as serve_cmds; or use one terminal each).
#
#   scripts/local.sh check               the ports below are free, or stop naming who holds one
#   scripts/local.sh redis               redis-server on 127.0.0.1:$REDIS_PORT, in memory; or, when a
#                                        Redis already answers there (dapr init's dapr_redis), that one
#   scripts/local.sh daprd               daprd on $DAPR_HTTP_PORT, for the app on $APP_PORT, scripts/dapr/
#   scripts/local.sh app [spin|wasmtime] the built .wasm on 127.0.0.1:$APP_PORT (default: spin)
#   scripts/local.sh smoke               the course's curls against 127.0.0.1:$APP_PORT
#   scripts/local.sh command redis [DATA_DIR] | daprd RESOURCES [CONFIG] | app HOST FILE [HOST_OPTION...]
#                                        the command line of a process, one argument a line (below)
#
# Every port moves with its variable, here and in the Tiltfile (APP_PORT=8001 scripts/dev.sh):
# APP_PORT 8000, DAPR_HTTP_PORT 3500, DAPR_GRPC_PORT 50001, DAPR_METRICS_PORT 9090, REDIS_PORT 6379.
# The command lines also read APP_ID (dapr-spin-hello), WASMTIME_INSTANCE_REUSE (128) and
# DAPR_INTERNAL_GRPC_PORT (unset: daprd picks one).
# The app's settings are Spin variables, SPIN_VARIABLE_<NAME>, under either host (README); the
# tokens also go to daprd: SPIN_VARIABLE_DAPR_API_TOKEN as its DAPR_API_TOKEN, and
# SPIN_VARIABLE_APP_API_TOKEN as its APP_API_TOKEN.
# The tools are the local loop's (scripts/tools.sh path): installed ones first, then the cached.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=lib/ports.sh
. scripts/lib/ports.sh

APP_PORT=${APP_PORT:-8000}
DAPR_HTTP_PORT=${DAPR_HTTP_PORT:-3500}
DAPR_GRPC_PORT=${DAPR_GRPC_PORT:-50001}
DAPR_METRICS_PORT=${DAPR_METRICS_PORT:-9090}
REDIS_PORT=${REDIS_PORT:-6379}
APP_ID=${APP_ID:-dapr-spin-hello}
# Requests each wasmtime instance serves (empty: a fresh instance for each).
WASMTIME_INSTANCE_REUSE=${WASMTIME_INSTANCE_REUSE-128}
wasm=target/wasm32-wasip2/release/dapr_spin_hello.wasm

tool() { scripts/tools.sh path "$1" || exit 127; }

need_wasm() {
  [ -f "$wasm" ] || { echo "local.sh: $wasm is missing: run 'spin build' (or cargo build --target wasm32-wasip2 --release)" >&2; exit 1; }
}

# require_free VARIABLE WHAT ...: each port free, else one message per taken port, then exit.
require_free() {
  local failed=0
  while [ $# -gt 0 ]; do
    require_free_port "$1" "$2" || failed=1
    shift 2
  done
  [ "$failed" = 0 ] || exit 1
}

# The Redis port may hold a Redis already: then local mode uses it. Anything else there is an error.
redis_port_status() {
  valid_port REDIS_PORT || exit 2
  local reply; reply=$(redis_reply "$REDIS_PORT")
  case $reply in
    +PONG) echo existing ;;
    "") if port_listening "$REDIS_PORT"; then port_taken "$REDIS_PORT" REDIS_PORT "Redis: it does not answer PING"; exit 1; fi
        echo free ;;
    *) echo "local.sh: port $REDIS_PORT (Redis) answers PING with '$reply' (a Redis with a password?): the components use none. Move ours: REDIS_PORT=<free port>." >&2
       exit 1 ;;
  esac
}

uses_existing_redis() {
  echo "Redis: 127.0.0.1:$REDIS_PORT already answers PING (held by $(port_holder "$REDIS_PORT" | grep . || echo 'another process'); dapr init's dapr_redis is one): local mode uses it and starts no other. It is never flushed; this app's state keys start with '$APP_ID||' (Dapr's app-id prefix), and its events go to the stream of the topic 'message-updated'."
}

# The stack's command lines, defined once: the subcommands below run them, and the tests
# (tests/support/mod.rs) and the bench (bench/harness.py) read them from `local.sh command`
# and start them, with their own ports and folders in these variables. Each fills `cmd`; the
# program is named bare, for `run` to look up as the local loop does and the others on PATH.

# redis_command [DATA_DIR]: in memory, like the cluster's Redis (a restart empties it); with
# DATA_DIR, each write goes to an append-only file there before Redis answers, so a restart
# keeps everything acknowledged (the tests' faults restart it).
# shellcheck disable=SC2120 # only the tests pass DATA_DIR, through `local.sh command`
redis_command() {
  cmd=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "")
  if [ -n "${1:-}" ]; then cmd+=(--appendonly yes --appendfsync always --dir "$1"); else cmd+=(--appendonly no); fi
}

# daprd_command RESOURCES [CONFIG]: daprd with the components in RESOURCES, on loopback only.
# Its internal gRPC port is daprd's pick unless DAPR_INTERNAL_GRPC_PORT names one.
daprd_command() {
  cmd=(daprd --app-id "$APP_ID" --app-port "$APP_PORT" --app-channel-address 127.0.0.1
    --dapr-http-port "$DAPR_HTTP_PORT" --dapr-grpc-port "$DAPR_GRPC_PORT" --metrics-port "$DAPR_METRICS_PORT"
    --dapr-listen-addresses 127.0.0.1 --resources-path "${1:?daprd RESOURCES}" --log-level info)
  [ -z "${DAPR_INTERNAL_GRPC_PORT:-}" ] || cmd+=(--dapr-internal-grpc-port "$DAPR_INTERNAL_GRPC_PORT")
  [ -z "${2:-}" ] || cmd+=(--config "$2")
}

# app_command spin|wasmtime FILE [HOST_OPTION...]: FILE is the manifest for spin, the component
# for wasmtime. Spin reads SPIN_VARIABLE_* itself; wasmtime gets each one that is set passed on
# by name (no value on the command line: the tokens are among them).
app_command() {
  local host=${1:-} file=${2:?app HOST FILE}
  shift 2
  case $host in
    spin) cmd=(spin up --from "$file" --listen "127.0.0.1:$APP_PORT" "$@") ;;
    wasmtime)
      cmd=(wasmtime serve -Scli --addr "127.0.0.1:$APP_PORT")
      # Reuse is about 3x the requests per second (bench/RESULTS.md); the component keeps no
      # state between requests.
      [ -z "$WASMTIME_INSTANCE_REUSE" ] || cmd+=("--max-instance-reuse-count=$WASMTIME_INSTANCE_REUSE")
      for name in $(compgen -e); do
        case $name in SPIN_VARIABLE_*) cmd+=(--env "$name") ;; esac
      done
      cmd+=("$@" "$file")
      ;;
    *) echo "local.sh app: host must be spin or wasmtime, got '$host'" >&2; exit 2 ;;
  esac
}

# Runs `cmd` in this process, its program the local loop's (tools.sh path), and says which.
run() {
  local program
  program=$(tool "${cmd[0]}")
  echo "${cmd[0]}: $program ($("$program" --version))"
  cmd[0]=$program
  exec "${cmd[@]}"
}

case ${1:-} in
  check)
    taken=" "
    for var in APP_PORT DAPR_HTTP_PORT DAPR_GRPC_PORT DAPR_METRICS_PORT REDIS_PORT; do
      valid_port "$var" || exit 2
      case $taken in *" ${!var} "*) echo "local.sh: $var is ${!var}, which another of APP_PORT, DAPR_HTTP_PORT, DAPR_GRPC_PORT, DAPR_METRICS_PORT, REDIS_PORT already has." >&2; exit 2 ;; esac
      taken="$taken${!var} "
    done
    redis=$(redis_port_status)
    require_free DAPR_HTTP_PORT "Dapr HTTP API" DAPR_GRPC_PORT "Dapr gRPC API" DAPR_METRICS_PORT "Dapr metrics" APP_PORT "the app"
    echo "ports: app $APP_PORT, Dapr HTTP $DAPR_HTTP_PORT, gRPC $DAPR_GRPC_PORT, metrics $DAPR_METRICS_PORT, Redis $REDIS_PORT"
    if [ "$redis" = existing ]; then uses_existing_redis; else echo "Redis: nothing on $REDIS_PORT yet; local mode starts redis-server there."; fi
    ;;
  redis)
    redis=$(redis_port_status)
    if [ "$redis" = existing ]; then
      uses_existing_redis
      # Stands for that Redis in Tilt while it answers; stopping this stops nothing else.
      while redis_answers "$REDIS_PORT"; do sleep 5; done
      echo "local.sh: the Redis on 127.0.0.1:$REDIS_PORT stopped answering" >&2
      exit 1
    fi
    redis_command
    run
    ;;
  daprd)
    require_free DAPR_HTTP_PORT "Dapr HTTP API" DAPR_GRPC_PORT "Dapr gRPC API" DAPR_METRICS_PORT "Dapr metrics"
    components=scripts/dapr
    if [ "$REDIS_PORT" != 6379 ]; then
      # One folder per port, rewritten on each start (a temp dir would be left behind by each).
      components=target/local-dapr-components-$REDIS_PORT
      mkdir -p "$components"
      rm -f "$components"/*.yaml
      for f in scripts/dapr/*.yaml; do sed "s/localhost:6379/localhost:$REDIS_PORT/" "$f" > "$components/$(basename "$f")"; done
    fi
    # The tokens the app holds as Spin variables: daprd requires the one and sends the other.
    [ -z "${SPIN_VARIABLE_DAPR_API_TOKEN:-}" ] || export DAPR_API_TOKEN=$SPIN_VARIABLE_DAPR_API_TOKEN
    [ -z "${SPIN_VARIABLE_APP_API_TOKEN:-}" ] || export APP_API_TOKEN=$SPIN_VARIABLE_APP_API_TOKEN
    # Spans to Zipkin when one answers on localhost:9411 (`dapr init` runs one there).
    tracing=
    if (exec 3<>/dev/tcp/127.0.0.1/9411) 2>/dev/null; then tracing=scripts/dapr/tracing.yaml; fi
    daprd_command "$components" "$tracing"
    run
    ;;
  app)
    need_wasm
    host=${2:-spin}
    require_free APP_PORT "the app"
    # The sidecar is the daprd above, on DAPR_HTTP_PORT: that is the app's dapr_http_port.
    if [ -n "${SPIN_VARIABLE_DAPR_HTTP_PORT:-}" ] && [ "$SPIN_VARIABLE_DAPR_HTTP_PORT" != "$DAPR_HTTP_PORT" ]; then
      echo "local.sh: SPIN_VARIABLE_DAPR_HTTP_PORT is $SPIN_VARIABLE_DAPR_HTTP_PORT, but daprd listens on DAPR_HTTP_PORT=$DAPR_HTTP_PORT: set DAPR_HTTP_PORT alone, local.sh passes it on." >&2
      exit 2
    fi
    export SPIN_VARIABLE_DAPR_HTTP_PORT=$DAPR_HTTP_PORT
    file=spin.toml
    # wasmtime has no Spin variables: the app runs composed with an adapter that reads them
    # from the SPIN_VARIABLE_* environment.
    if [ "$host" = wasmtime ]; then file=$(scripts/wasmtime-adapter/compose.sh "$wasm"); fi
    app_command "$host" "$file"
    run
    ;;
  command)
    case ${2:-} in redis|daprd|app) ;; *) sed -n '12,13p' "$0" >&2; exit 2 ;; esac
    what=$2
    shift 2
    "${what}_command" "$@"
    printf '%s\n' "${cmd[@]}"
    ;;
  smoke)
    valid_port APP_PORT || exit 2
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
    sed -n '2,22p' "$0" >&2
    exit 2
    ;;
esac
