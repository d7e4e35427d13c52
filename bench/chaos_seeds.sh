#!/usr/bin/env bash
# tests/chaos.rs over many seeds, each without and then with instance reuse (E2E_INSTANCE_REUSE=128),
# one after the other: a table row per run, with its answers, its five counts (each must be 0)
# and daprd's CPU at rest after it. Every run's whole output goes to bench/out/chaos-seeds.log;
# the table to bench/out/chaos-seeds.md. About 2 minutes per run on 2 cores.
#   bench/chaos_seeds.sh [FIRST_SEED] [LAST_SEED]     (default 1 20)
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-1}
last=${2:-20}
eval "$(scripts/tools.sh env)"
cargo build --quiet --target wasm32-wasip2 --release
cargo test --quiet --no-run --test chaos
mkdir -p bench/out
log=bench/out/chaos-seeds.log table=bench/out/chaos-seeds.md
: >"$log"
{
  echo "| seed | reuse | POSTs | answers | stored | 201 not stored once | stored twice | not acted on once | phantoms acted on | failed but stored | daprd at rest | result |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >"$table"
cat "$table"
failed=0
for seed in $(seq "$first" "$last"); do
  for reuse in "" 128; do
    out=$(mktemp)
    if env CHAOS_SEED="$seed" E2E_INSTANCE_REUSE="$reuse" cargo test --quiet --test chaos -- --nocapture >"$out" 2>&1; then
      result=pass
    else
      result=FAIL failed=$((failed + 1))
    fi
    cat "$out" >>"$log"
    # The test's two summary lines: "N POSTs in ... answers {...}" and "... counts: ... at rest: X% of a core".
    summary=$(grep "^chaos: seed $seed: " "$out" | tr '\n' ' ')
    posts=$(sed -n 's/.*: \([0-9]*\) POSTs in.*/\1/p' <<<"$summary")
    answers=$(sed -n 's/.*answers {\([^}]*\)}.*/\1/p' <<<"$summary" | tr -d '"')
    stored=$(sed -n 's/.*: \([0-9]*\) stored, .*/\1/p' <<<"$summary")
    counts=$(sed -n 's/.*once \([0-9]*\), stored twice \([0-9]*\), not acted on once \([0-9]*\), phantoms acted on \([0-9]*\), failed but stored \([0-9]*\);.*/\1 | \2 | \3 | \4 | \5/p' <<<"$summary")
    rest=$(sed -n 's/.*at rest after the run: \([0-9.]*%\).*/\1/p' <<<"$summary")
    row="| $seed | ${reuse:-no} | ${posts:-?} | ${answers:-?} | ${stored:-?} | ${counts:-? | ? | ? | ? | ?} | ${rest:-?} | $result |"
    echo "$row" | tee -a "$table"
    rm -f "$out"
  done
done
echo "chaos_seeds: $failed failed run(s); table in $table, output in $log"
[ "$failed" = 0 ]
