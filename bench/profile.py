#!/usr/bin/env python3
"""Where GET / spends its instructions under `wasmtime serve`: the service beside the empty
component (bench/ceiling/), each under valgrind's callgrind, which counts instructions
(repeatable on a busy machine, unlike time). Counts user-space instructions only: the
kernel's share (sockets, page faults) is not in them.

    python3 bench/profile.py [--requests 500]

Per request, after a warm-up: all instructions; those in the guest's compiled wasm, in
wasmtime itself and in libc; and, across those, all that instantiating the component takes. Needs valgrind (`apt-get install valgrind`); builds both
components first. The pooling allocator is left out: its address-space reservation is more
than valgrind can map.
"""
import argparse
import collections
import http.client
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builds import BUILD, WASM, ceiling_build
from harness import LOGS, OUT, REPO, Processes, app_cmd, free_port, install_tools, port_busy, run, wasmtime_component

PARTS = {"guest (wasm)": r"\[\?\?\?\]$", "wasmtime": r"/wasmtime\]?$", "libc": r"libc\.so"}
INSTANTIATION = "instantiation"


def requests(port, count):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"GET / answered {response.status}")


def profile(name, wasm, count, env, procs, out_dir):
    """Instructions per request of `count` GET / after 50, by part."""
    port, out = free_port(), out_dir / f"callgrind.{name}"
    proc = procs.start(f"callgrind-{name}", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                             *app_cmd("wasmtime", wasm, port)], env=env)
    procs.wait_for(f"{name} under valgrind", lambda: port_busy(port), timeout=300)
    requests(port, 50)
    run(["callgrind_control", "--zero", str(proc.pid)], env=env, log=LOGS / "callgrind_control.log")
    requests(port, count)
    run(["callgrind_control", "--dump", str(proc.pid)], env=env, log=LOGS / "callgrind_control.log")
    dump = Path(f"{out}.1")
    table = subprocess.run(["callgrind_annotate", "--threshold=100", str(dump)], capture_output=True, text=True, check=True).stdout
    parts = collections.Counter()
    for line in table.splitlines():
        match = re.match(r"\s*([\d,]+) +\(.*?\)\s+(.*)$", line)
        if match and "PROGRAM TOTALS" not in line:
            ir = int(match.group(1).replace(",", ""))
            parts["all"] += ir
            for part, pattern in PARTS.items():
                if re.search(pattern, match.group(2)):
                    parts[part] += ir
    # Inclusive: everything instantiating the component for a request costs, host and guest.
    inclusive = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
                               capture_output=True, text=True, check=True).stdout
    parts[INSTANTIATION] = max((int(m.group(1).replace(",", "")) for m in re.finditer(
        r"^\s*([\d,]+) .*InstancePre<T>::instantiate_async::\{\{closure\}\} ", inclusive, re.M)), default=0)
    return {part: ir / count for part, ir in parts.items()}


def instructions_per_get(wasms, env, count=500):
    """{name: {part: instructions per request}} for each .wasm in `wasms`, profiled side by side
    (instruction counts do not mind sharing the CPU)."""
    procs = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp, ThreadPoolExecutor(len(wasms)) as pool:
            futures = {name: pool.submit(profile, re.sub(r"\W+", "-", name), wasm, count, env, procs, Path(tmp))
                       for name, wasm in wasms.items()}
            return {name: future.result() for name, future in futures.items()}
    finally:
        procs.stop_all()


def table(results, count):
    """The profile as Markdown."""
    columns = ["all", *PARTS, INSTANTIATION]
    return [f"| instructions per GET / ({count} after 50) | " + " | ".join(columns) + " |",
            "| --- |" + " --- |" * len(columns)] + [
        f"| {name} | " + " | ".join(f"{parts.get(column, 0):,.0f}" for column in columns) + " |" for name, parts in results.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    env = install_tools(full=False)
    run(BUILD, env=env, log=LOGS / "cargo-repo.log")
    results = instructions_per_get({"empty component": ceiling_build(env), "this service": wasmtime_component(REPO / WASM, env)},
                                   env, args.requests)
    print("\n".join(table(results, args.requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
