#!/usr/bin/env bash
# The app for `wasmtime serve`, which has no Spin variables: the built .wasm composed with the
# adapter in this folder (src/lib.rs), which answers Spin's variables interface from the
# SPIN_VARIABLE_* environment, as Spin does. Spin runs the built .wasm itself; the tests,
# `scripts/local.sh app wasmtime` and the benchmark run this composition under wasmtime.
#
#   scripts/wasmtime-adapter/compose.sh [APP.wasm]
#
# APP.wasm defaults to the release build; the composed component is written beside it as
# APP.wasmtime.wasm, and its path printed. The app itself is read, never changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
app=${1:-$repo/target/wasm32-wasip2/release/dapr_spin_hello.wasm}
[ -f "$app" ] || { echo "compose.sh: $app is missing: run 'spin build' (or cargo build --target wasm32-wasip2 --release)" >&2; exit 1; }
out=${app%.wasm}.wasmtime.wasm

# Built in the repo's target dir, where spin-sdk's build has already compiled wit-bindgen.
CARGO_TARGET_DIR=$repo/target cargo build --quiet --locked --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" >&2
# compose names each definition's instance after its file, which must be kebab-case.
adapter=$repo/target/wasm32-wasip2/release/spin-variables-adapter.wasm
cp "$repo/target/wasm32-wasip2/release/spin_variables_adapter.wasm" "$adapter.$$"
mv "$adapter.$$" "$adapter"

# wasm-tools comes with the tests' Python tools (scripts/requirements.txt).
if ! command -v wasm-tools >/dev/null 2>&1; then
  echo "compose.sh: wasm-tools is not on PATH: taking the one in the tests' Python tools (scripts/tools.sh python)" >&2
  "$repo/scripts/tools.sh" python
  eval "$("$repo/scripts/tools.sh" env)"
fi
# Written aside and moved into place, so that a test starting meanwhile never reads half a file.
# `wasm-tools compose` is deprecated in favour of wac, which would be one more tool to build;
# its notice about that is left out of the output.
# shellcheck disable=SC2016  # the backquotes are wasm-tools' own, matched as text
wasm-tools compose "$app" --definitions "$adapter" --output "$out.$$" >/dev/null 2> >(grep -v -e 'has been deprecated' -e 'use `wac` instead' -e 'information about `wac`' -e '^$' >&2)
mv "$out.$$" "$out"
echo "$out"
