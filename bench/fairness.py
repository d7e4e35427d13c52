"""The fairness rules of the benchmark, in one place. Every row of the request path runs
under them; bench/RESULTS.md repeats them in words.

- Cores: wrk, the load generator, runs on core 0; the server being measured alone on core 1
  (its whole CPU allowance, the same for every server: a multi-threaded host sees one core,
  as single-threaded uvicorn uses one); the daprd sidecars and Redis on cores 2 and up, or
  beside wrk on core 0 on a 2-core machine. Pinned with `taskset`. On a 1-core machine
  nothing is pinned, and the report says so.
- Load: the same wrk command for every row: 1 thread, the same connections, warm-up and
  measured seconds.
- Each app has its own daprd and Redis database, its events are delivered to its own
  subscriber, and the harness waits for that backlog to drain before the next measurement.
- No access logs: wasmtime serve logs nothing per request, so uvicorn runs with --no-access-log.
- The host: `wasmtime serve` with the wasmtime options Spin itself sets (SPIN_WASMTIME_OPTIONS
  below) for the service and for the ceiling alike; `spin up` when Spin is installed.
"""
import os
import shutil

CORES = os.cpu_count() or 1
PINNED = CORES >= 2 and shutil.which("taskset") is not None
LOAD_CORES = "0"
SERVER_CORES = "1"
SIDECAR_CORES = f"2-{CORES - 1}" if CORES > 2 else "0"

# Spin's engine defaults (spinframework/spin, crates/core/src/lib.rs, `impl Default for Config`
# at commit 181b7d8e): the pooling allocator, sized from 1,000 instances, and epoch
# interruption. Epoch interruption without a deadline traps at once under wasmtime serve;
# Spin pairs it with a deadline, which `-W timeout` gives (and so the same epoch checks in
# the compiled code).
SPIN_WASMTIME_OPTIONS = [f"-O{option}" for option in (
    "pooling-allocator=y",
    "pooling-total-component-instances=1000",
    "pooling-total-memories=1000",
    "pooling-total-tables=2000",
    "pooling-total-stacks=1000",
    "pooling-total-core-instances=4000",
    "pooling-table-elements=100000",
    f"pooling-max-component-instance-size={10 << 20}",
    f"pooling-max-core-instance-size={10 << 20}",
    "pooling-max-core-instances-per-component=200",
    "pooling-max-tables-per-component=64",
    "pooling-max-memories-per-component=32",
    "pooling-max-tables-per-module=2",
    "pooling-max-memories-per-module=2",
    f"pooling-max-memory-size={4 << 30}",
    f"pooling-memory-keep-resident={2 << 20}",
    f"pooling-table-keep-resident={512 << 10}",
)] + ["-Wtimeout=600s"]


def pinned(cores, cmd):
    """cmd, run on `cores` when the machine has cores to spare (and cores are given)."""
    return ["taskset", "-c", cores, *cmd] if PINNED and cores else list(cmd)


def placement():
    """The rule above as the report states it."""
    if not PINNED:
        return f"not pinned: {CORES} core(s) or no taskset"
    return (f"wrk on core {LOAD_CORES}; the server measured alone on core {SERVER_CORES}; "
            f"daprd and Redis on core(s) {SIDECAR_CORES}")
