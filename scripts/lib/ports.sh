# shellcheck shell=bash
# Sourced by scripts/local.sh and scripts/tools.sh: what answers on a local port, and the
# message when a port the local loop needs is taken. Plain bash (/dev/tcp), so it works
# without redis-cli or nc, on Linux, macOS and WSL.

# The first line a server on 127.0.0.1:$1 answers to a Redis PING ("+PONG", "-NOAUTH ..."),
# or nothing when nothing listens or it does not answer within 2 s.
redis_reply() {
  ( exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'PING\r\n' >&3 && IFS= read -r -t 2 line <&3 && printf '%s' "${line%$'\r'}" ) 2>/dev/null || true
}

redis_answers() { [ "$(redis_reply "$1")" = +PONG ]; }

port_listening() { ( exec 3<>"/dev/tcp/127.0.0.1/$1" ) 2>/dev/null; }

# "name (pid N)" of the process listening on port $1, when this user may see it.
port_holder() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 (pid \2)/p' | head -1
  elif command -v lsof >/dev/null 2>&1; then
    # lsof cuts process names to 9 characters (com.docker.backend is com.docke); ps names it whole
    # (on macOS as the executable's path).
    local pid name
    pid=$(lsof -nP -iTCP:"$1" -sTCP:LISTEN -t 2>/dev/null | head -1 || true)
    [ -n "$pid" ] || return 0
    name=$(ps -o comm= -p "$pid" 2>/dev/null || true)
    echo "$(basename "${name:-unknown}") (pid $pid)"
  fi
}

# port_taken PORT VARIABLE WHAT: the message for a port the local loop needs but cannot have.
port_taken() {
  local holder; holder=$(port_holder "$1")
  local by="by a process this user cannot see (sudo ss -ltnp 'sport = :$1', or lsof -iTCP:$1)"
  [ -z "$holder" ] || by="by $holder"
  case $holder in docker*|com.docker*) by="$by: a Docker container's published port (docker ps --filter publish=$1)" ;; esac
  echo "$(basename "$0"): port $1 ($3) is taken $by. Stop it, or move ours: $2=<free port> (e.g. $2=$(( $1 + 10 )))." >&2
}

# valid_port VARIABLE: the variable holds a port number, 1-65535.
valid_port() {
  local port=${!1}
  case $port in ''|*[!0-9]*) ;; *) [ "$port" -ge 1 ] && [ "$port" -le 65535 ] && return 0 ;; esac
  echo "$(basename "$0"): $1 must be a port number (1-65535), not '$port'." >&2
  return 2
}

# require_free_port VARIABLE WHAT: the variable holds a port number that nothing listens on.
require_free_port() {
  valid_port "$1" || return
  if port_listening "${!1}"; then port_taken "${!1}" "$1" "$2"; return 1; fi
}
