#!/usr/bin/env python3
"""POST /messages through the real component: latency and sidecar calls per POST (issue 19).

    python3 bench/post_path.py before=/path/to/old.wasm after=target/wasm32-wasip2/release/dapr_spin_hello.wasm

For each .wasm: redis-server, daprd with the repo's components, and `wasmtime serve` with the
component (composed with the Spin variables adapter, so a .wasm that reads Spin variables),
whose calls to the sidecar pass through a proxy here that counts them. The app subscribes to
another topic (the `pubsub_topic` variable), so that the count holds the POST path's calls
only. Per .wasm: 200 POSTs one after another for one user (p50, p99, calls per POST), then 50
at once for another (wall time, calls per POST). Pinned as bench/fairness.py says: the
component on its core, the rest on the other. daprd, redis-server and wasmtime from PATH
(`eval "$(scripts/tools.sh env)"`).
"""
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fairness import SERVER_CORES, SIDECAR_CORES
from harness import REPO, Processes, app_cmd, daprd_cmd, free_port, http, start_redis, wasmtime_component

SEQUENTIAL, CONCURRENT = 200, 50


class CountingProxy:
    """A TCP proxy in front of daprd that counts the HTTP requests passing through it."""

    def __init__(self, target_port):
        self.target, self.requests, self.lock = target_port, 0, threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.server.accept()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # daprd not listening yet: the caller sees a refused call
                client.close()
                continue
            threading.Thread(target=self.pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(upstream, client, False), daemon=True).start()

    def pipe(self, source, sink, count):
        try:
            while data := source.recv(65536):
                if count:
                    # A request line starts each request; bodies are JSON and never hold one.
                    with self.lock:
                        self.requests += sum(data.count(m) for m in (b"GET /v1.0", b"POST /v1.0", b"PUT /v1.0", b"DELETE /v1.0"))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def post(port, user, text):
    start = time.perf_counter()
    status, body = http("POST", f"http://127.0.0.1:{port}/messages?user_id={user}&message={text}", timeout=30)
    return status, (time.perf_counter() - start) * 1000


def measure(label, wasm):
    procs, work = Processes(Path(tempfile.mkdtemp(prefix=f"post-path-{label}-"))), None
    try:
        work = procs.logs
        redis_port, dapr_port, app_port = free_port(), free_port(), free_port()
        components = work / "components"
        components.mkdir()
        for name in ("statestore.yaml", "pubsub.yaml", "resiliency.yaml"):
            (components / name).write_text((REPO / "scripts/dapr" / name).read_text().replace("localhost:6379", f"127.0.0.1:{redis_port}"))
        start_redis(procs, redis_port, SIDECAR_CORES)
        proxy = CountingProxy(dapr_port)
        variables = {"SPIN_VARIABLE_DAPR_HTTP_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
                     "SPIN_VARIABLE_PUBSUB_TOPIC": "not-message-updated"}
        procs.start("wasmtime", app_cmd("wasmtime", wasmtime_component(wasm, os.environ), app_port, variables, cores=SERVER_CORES),
                    env={**os.environ, **variables})
        procs.wait_for("the component", lambda: http("GET", f"http://127.0.0.1:{app_port}/healthz")[0] == 200)
        procs.start("daprd", daprd_cmd("post-path", app_port, dapr_port, components, SIDECAR_CORES))
        procs.wait_for("the component to be ready", lambda: http("GET", f"http://127.0.0.1:{app_port}/readyz")[0] == 200)

        assert post(app_port, "seq", "first")[0] == 201 and post(app_port, "storm", "first")[0] == 201
        before = proxy.requests
        timed = [post(app_port, "seq", f"m{n}") for n in range(SEQUENTIAL)]
        assert all(status == 201 for status, _ in timed), [s for s, _ in timed if s != 201]
        seq_calls = (proxy.requests - before) / SEQUENTIAL
        latencies = sorted(ms for _, ms in timed)

        before, start = proxy.requests, time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            statuses = list(pool.map(lambda n: post(app_port, "storm", f"c{n}")[0], range(CONCURRENT)))
        wall = time.perf_counter() - start
        storm_calls = (proxy.requests - before) / CONCURRENT
        return {"label": label, "p50": statistics.median(latencies), "p99": latencies[int(0.99 * len(latencies)) - 1],
                "calls": seq_calls, "storm_s": wall, "storm_calls": storm_calls,
                "storm_failed": sum(s != 201 for s in statuses)}
    finally:
        procs.stop_all()


def main():
    runs = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not runs or any(len(r) != 2 for r in runs):
        sys.exit(__doc__)
    print(f"| build | POST p50 | POST p99 | sidecar calls per POST | {CONCURRENT} at once | their calls per POST | failed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, wasm in runs:
        r = measure(label, Path(wasm).resolve())
        print(f"| {r['label']} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | {r['calls']:.2f} | {r['storm_s']:.2f} s | "
              f"{r['storm_calls']:.2f} | {r['storm_failed']} |", flush=True)


if __name__ == "__main__":
    main()
