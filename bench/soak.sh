#!/usr/bin/env bash
# The long run of tests/chaos.rs: load and faults for SECONDS (default 300), then the same
# five counts, each asserted 0. Pinned as bench/fairness.py pins a benchmark on a 2-core
# machine: the test (its clients, daprd and Redis, which it starts) on core 0, the wasm
# host alone on core 1. Its output (seed, answers, counts) goes to bench/out/soak.log.
#   bench/soak.sh [SECONDS] [extra env, e.g. E2E_INSTANCE_REUSE=128]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
eval "$(scripts/tools.sh env)"
cargo build --quiet --target wasm32-wasip2 --release
cargo test --quiet --no-run --test chaos
mkdir -p bench/out
env CHAOS_SECONDS="$seconds" E2E_HOST_CORES=1 "$@" taskset -c 0 cargo test --quiet --test chaos -- --nocapture 2>&1 | tee bench/out/soak.log
