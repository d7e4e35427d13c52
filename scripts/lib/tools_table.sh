# shellcheck shell=bash
# Sourced by scripts/tools.sh and scripts/cluster/checks.sh (with repo set): the table of tools,
# one line per tool, and the functions that read it. Also the one `have`, and the one check of
# an installed tool's version (the local loop's and the doctor's Tilt check are the same).
# Plain bash 3.2 (macOS's /bin/bash): the table is parsed once into tool_<column>_<tool>.

# shellcheck disable=SC2154  # repo: set by the script that sources this
# shellcheck source-path=SCRIPTDIR source=version.sh
. "$repo/scripts/lib/version.sh"

have() { command -v "$1" >/dev/null 2>&1; }

# Columns:
#   tool    the name tools.sh's targets and callers use
#   pin     the version the tests use: a constant, or DIR:MODULE, the version of MODULE that
#           scripts/tools/DIR/go.mod requires (read there, never repeated)
#   min     what the local loop takes from an installed tool: a version; x or x.y, the pin's
#           major or major.minor; x.y-2, two minor versions before the pin's; -: the pin only
#   build   what builds the pin from source (cargo or go), with scripts/tools.sh's build_TOOL;
#           -: never built here
#   key     the cache folder is TOOL-PIN, plus -HASH (8 hex) of this variable's value (a
#           list set in tools.sh) or of this <file; -: nothing more
#   binary  the file in that folder whose presence says the build is complete
#   hint    what to install instead of building it (the rest of the line; {min} is min), or
#           another tool's name: installing that one instead
# Why each min: Spin, SpinKube's shim runs Spin 3.6.3, which spin.toml is checked with. Tilt, the
# version the tests evaluate the Tiltfile with. daprd, Dapr supports its newest three minor
# versions (the HTTP API, flags and components used here are the same in all three). wasmtime
# (only without Spin), the tests' major version: serve's --addr, -S, --env. redis-server, Redis
# 5 brought the streams pubsub.redis uses.
read -r -d '' TOOLS_TABLE <<'EOF' || true
# tool             pin                                              min    build  key                            binary        hint
wasmtime           48.0.8                                           x      cargo  WASMTIME_FEATURES              bin/wasmtime  spin
daprd              daprd:github.com/dapr/dapr                       x.y-2  go     DAPRD_COMPONENTS               daprd         install the Dapr CLI (https://docs.dapr.io/getting-started/install-dapr-cli/), then run dapr init
tilt               tilt:github.com/tilt-dev/tilt                    x.y    go     -                              tilt          install Tilt: curl -fsSL https://raw.githubusercontent.com/tilt-dev/tilt/master/scripts/install.sh | bash
etcd               etcd:go.etcd.io/etcd/server/v3                   -      go     -                              etcd          -
kube               kube:k8s.io/kubernetes                           -      go     KUBE_COMMANDS                  kubectl       -
containerd         containerd:github.com/containerd/containerd/v2   -      go     -                              containerd    -
coredns            coredns:github.com/coredns/coredns               -      go     <scripts/tools/coredns/main.go coredns       -
helm               helm:helm.sh/helm/v3                             -      go     -                              helm          -
spin-operator      spin-operator:github.com/spinkube/spin-operator  -      go     -                              spin-operator -
dapr-control-plane daprd:github.com/dapr/dapr                       -      go     DAPR_CONTROL_PLANE             operator      -
spin               -                                                3.6    -      -                              -             install Spin {min} or newer: curl -fsSL https://spinframework.dev/downloads/install.sh | bash && sudo mv spin /usr/local/bin/
redis-server       -                                                5      -      -                              -             install Redis {min} or newer: scripts/tools.sh redis does (apt-get or brew), or say which Redis to use with REDIS_PORT
EOF

# The tools in the table's order, and tool_<column>_<tool> for each (tool's - as _).
TOOLS=''
while read -r _tool _pin _min _build _key _binary _hint; do
  case $_tool in '#'*|'') continue ;; esac
  TOOLS="$TOOLS $_tool"
  for _column in pin min build key binary hint; do
    _value=_$_column
    printf -v "tool_${_column}_${_tool//-/_}" %s "${!_value}"
  done
done <<<"$TOOLS_TABLE"
unset _tool _pin _min _build _key _binary _hint _column _value

# tool_field TOOL COLUMN: TOOL's COLUMN as the table writes it; fails for a tool not in the table.
tool_field() {
  local var=tool_${2}_${1//-/_}
  [ -n "${!var+set}" ] || { echo "tools: '$1' is not in the table of tools (scripts/lib/tools_table.sh)" >&2; return 1; }
  echo "${!var}"
}

# tool_pin TOOL: the pinned version as its source writes it (v1.18.1 from a go.mod), - if none.
tool_pin() {
  local pin; pin=$(tool_field "$1" pin) || return
  case $pin in
    *:*) go_mod_version "${pin%%:*}" "${pin#*:}" ;;
    *) echo "$pin" ;;
  esac
}

# tool_go_mod_dir TOOL: the tools module TOOL is pinned (and built) by, "" for a constant pin.
tool_go_mod_dir() { local pin; pin=$(tool_field "$1" pin) || return; case $pin in *:*) echo "${pin%%:*}" ;; esac; }

# tool_min TOOL: the oldest version the local loop takes installed, - for the pin only.
tool_min() {
  local min pin
  min=$(tool_field "$1" min) || return
  case $min in
    x|x.y|x.y-2) pin=$(tool_pin "$1")
      echo "${pin#v}" | awk -F. -v rule="$min" '{print rule == "x" ? $1 : rule == "x.y" ? $1 "." $2 : $1 "." $2 - 2}' ;;
    *) echo "$min" ;;
  esac
}

# tool_hint TOOL: what to install instead of building TOOL.
tool_hint() {
  local hint min
  hint=$(tool_field "$1" hint) || return
  case $hint in *' '*) ;; -) return ;; *) tool_hint "$hint"; return ;; esac
  min=$(tool_min "$1")
  echo "${hint//'{min}'/$min}"
}

# installed_version TOOL PATH: the version the tool at PATH reports ("" when it names none, like
# an unstamped daprd's "edge").
installed_version() {
  case $1 in
    tilt) "$2" version ;;   # v0.37.1, built 2025-...
    *) "$2" --version ;;    # spin 3.6.3 (...) · 1.18.1 · wasmtime 48.0.8 (...) · Redis server v=7.0.15 ...
  esac 2>/dev/null | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | sed -n 1p || true
}

# installed_ok TOOL PATH: whether the tool at PATH is TOOL's min or newer. Sets installed to the
# version it reports ("" if none).
installed_ok() {
  local min
  installed=$(installed_version "$1" "$2")
  min=$(tool_min "$1")
  [ -n "$installed" ] && [ "$min" != - ] && version_at_least "$installed" "$min"
}
