"""The cluster's save-to-serve, on the simulated cluster's real node: from saving a new greeting
under `tilt up` until `curl localhost:8000/` (Tilt's port-forward) answers it, split into:

    build      save → the new .wasm staged (Tilt's file watch and cargo)
    image      → the new reference in the SpinApp (OCI archive, import into the node, apply)
    rollout    → the new pod exists (spin-operator's Deployment, the ReplicaSet, the scheduler)
    start      → Spin serving in the new pod (sandbox, shim, compile of the .wasm, Spin's start),
                 from the container log's own timestamp
    ready      → the new pod Ready (its readiness probe, /readyz through daprd)
    forward    → the new greeting through Tilt's port-forward

    python3 bench/sim_rollout.py [--saves N]

Each step is when this script first saw it, polling every 0.1 s (the start from the log line's
timestamp), so a step's figure carries up to ~0.2 s of polling. Runs `scripts/cluster.sh up
--sim` in a temporary folder (its own kubeconfig) and `tilt up` in a copy of the repo, so
neither the user's cluster nor src/ is touched. Needs the pinned tools (`scripts/tools.sh
all`, then `eval "$(scripts/tools.sh env)"`) and the Spin shim ($CONTAINERD_SHIM_SPIN)."""

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/deploy"))
from sim_cluster import APP_SELECTOR, SimCluster, TiltUp, app_image, copy_repo, set_greeting  # noqa: E402

STEPS = ["build", "image", "rollout", "start", "ready", "forward"]
STAGED_WASM = "target/image/target/wasm32-wasip2/release/dapr_spin_hello.wasm"


def poll(condition, timeout=300, period=0.1):
    """The time.time() at which condition() first returned something true, and that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return time.time(), value
        time.sleep(period)
    raise TimeoutError(condition)


def pod_names(sim):
    return {p["metadata"]["name"]: p for p in sim.get("pods", "-l", APP_SELECTOR)["items"]}


def serving_time(sim, pod):
    """When Spin in `pod` logged that it serves, by the container log's timestamp."""
    out = sim.kubectl("logs", pod, "--timestamps").stdout
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        if "Serving" in text:
            return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    raise RuntimeError(f"no 'Serving' line in {pod}'s log:\n{out}")


def one_save(sim, crate, text):
    before_image, before_pods = app_image(sim), set(pod_names(sim))
    wasm = crate / STAGED_WASM
    before_wasm = wasm.stat().st_mtime
    times = {}
    set_greeting(crate, text)
    saved = time.time()
    results = {}

    def watch(name, condition):
        results[name] = poll(condition)

    watchers = [
        threading.Thread(target=watch, args=("build", lambda: wasm.stat().st_mtime != before_wasm)),
        threading.Thread(target=watch, args=("image", lambda: app_image(sim) != before_image)),
        threading.Thread(target=watch, args=("rollout", lambda: [n for n in pod_names(sim) if n not in before_pods])),
    ]
    for w in watchers:
        w.start()
    for w in watchers:
        w.join()
    new_pod = results["rollout"][1][0]

    def ready():
        pod = pod_names(sim).get(new_pod)
        return pod and any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
    times["ready"] = poll(ready)[0]
    expected = json.dumps({"message": text}, separators=(",", ":"))
    times["forward"] = poll(lambda: sim.curl("http://localhost:8000/")[1] == expected)[0]
    times["start"] = serving_time(sim, new_pod)
    times.update({k: v[0] for k, v in results.items()})
    steps, previous = {}, saved
    for step in STEPS:
        steps[step] = times[step] - previous
        previous = times[step]
    steps["total"] = times["forward"] - saved
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as home:
        sim = SimCluster(home)
        p, up_seconds = sim.up()
        try:
            if p.returncode != 0:
                sys.exit(f"up --sim failed:\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}")
            print(f"up --sim: {up_seconds:.1f} s", flush=True)
            crate = Path(home) / "repo"
            copy_repo(crate)
            tilt = TiltUp(sim, crate, Path(home) / "tilt.log")
            try:
                started = time.monotonic()
                sim.wait("the app answering through Tilt's port-forward",
                         lambda: sim.curl("http://localhost:8000/")[0] == 200, timeout=600)
                print(f"tilt up to the app answering: {time.monotonic() - started:.1f} s", flush=True)
                for i in range(1, args.saves + 1):
                    time.sleep(5)  # the previous rollout's old pod gone, Tilt's watcher settled
                    steps = one_save(sim, crate, f"Hello from Dapr Spin! (save {i})")
                    rows.append(steps)
                    print(f"    save {i}: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()), flush=True)
            finally:
                tilt.stop()
        finally:
            sim.down()
    for step in STEPS + ["total"]:
        values = [r[step] for r in rows]
        print(f"{step:8} median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}; "
              f"n={len(values)})")


if __name__ == "__main__":
    main()
