"""The cluster's save-to-serve, on the simulated cluster's real node: from saving a new greeting
under `tilt up` until `curl localhost:8000/` (Tilt's port-forward) answers it, split into:

    build      save → the new .wasm staged (Tilt's file watch and cargo)
    image      → the new reference in the SpinApp (OCI archive, import into the node, apply)
    rollout    → the new pod exists (spin-operator's Deployment, the ReplicaSet, the scheduler)
    start      → Spin serving in the new pod (sandbox, shim, compile of the .wasm, Spin's start),
                 from the container log's own timestamp
    served     → the new greeting through Tilt's port-forward (which moves to the new pod once
                 it runs, before it is Ready)

and, apart, when the new pod turned Ready (its readiness probe, /readyz through daprd)
relative to the greeting.

    python3 bench/sim_rollout.py [--saves N]

The SpinApp's and the pods' changes come from `kubectl --watch` streams (within milliseconds),
Spin's start from its log line's timestamp, the build and the greeting from polling every
0.05 s (plus a curl's own time). Runs `scripts/cluster.sh up
--sim` in a temporary folder (its own kubeconfig) and `tilt up` in a copy of the repo, so
neither the user's cluster nor src/ is touched. Needs the pinned tools (`scripts/tools.sh
all`, then `eval "$(scripts/tools.sh env)"`) and the Spin shim ($CONTAINERD_SHIM_SPIN)."""

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/deploy"))
from sim_cluster import APP, APP_SELECTOR, CONTEXT, SimCluster, TiltUp, app_image, copy_repo, set_greeting  # noqa: E402

STEPS = ["build", "image", "rollout", "start", "served"]
STAGED_WASM = "target/image/target/wasm32-wasip2/release/dapr_spin_hello.wasm"


def poll(condition, timeout=300, period=0.05):
    """The time.time() at which condition() first returned something true, and that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return time.time(), value
        time.sleep(period)
    raise TimeoutError(condition)


class Watch:
    """`kubectl get KIND --watch -o json` in the cluster's namespaces: every version of the
    objects, each with the time.time() it arrived (within milliseconds of the change)."""

    def __init__(self, sim, *args):
        self.events, self.lock = [], threading.Lock()
        self.proc = subprocess.Popen(sim.inside(sim.kubectl_binary, "--context", CONTEXT, "get", *args, "--watch",
                                                "-o", "json"), env=sim.env, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.proc.stdout:
            buffer += line
            while buffer.strip():
                try:
                    obj, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                with self.lock:
                    self.events.append((time.time(), obj))
                buffer = buffer.lstrip()[end:]

    def first(self, after, condition, timeout=300):
        """The time of the first version that arrived after `after` and satisfies condition."""
        def found():
            with self.lock:
                return next((t for t, obj in self.events if t > after and condition(obj)), None)
        return poll(found, timeout)[1]

    def stop(self):
        self.proc.terminate()


def serving_time(sim, pod):
    """When Spin in `pod` logged that it serves, by the container log's timestamp."""
    out = sim.kubectl("logs", pod, "--timestamps").stdout
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        if "Serving" in text:
            return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    raise RuntimeError(f"no 'Serving' line in {pod}'s log:\n{out}")


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def one_save(sim, crate, text, spinapps, pods):
    before_image, before_pods = app_image(sim), {p["metadata"]["name"] for p in sim.get("pods", "-l", APP_SELECTOR)["items"]}
    wasm = crate / STAGED_WASM
    before_wasm = wasm.stat().st_mtime
    expected = json.dumps({"message": text}, separators=(",", ":"))
    set_greeting(crate, text)
    saved = time.time()
    times = {"build": poll(lambda: wasm.stat().st_mtime != before_wasm)[0],
             "served": poll(lambda: sim.curl("http://localhost:8000/")[1] == expected)[0]}
    times["image"] = spinapps.first(saved, lambda o: o["spec"]["image"] != before_image)
    new_pod = lambda o: o["metadata"]["name"] not in before_pods  # noqa: E731
    times["rollout"] = pods.first(saved, new_pod)
    name = next(o["metadata"]["name"] for t, o in pods.events if t > saved and new_pod(o))
    times["start"] = serving_time(sim, name)
    times["ready"] = pods.first(saved, lambda o: o["metadata"]["name"] == name and ready(o))
    steps, previous = {}, saved
    for step in STEPS:
        steps[step] = times[step] - previous
        previous = times[step]
    steps["ready after serving"] = times["ready"] - times["served"]
    steps["total"] = times["served"] - saved
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
            spinapps = pods = None
            try:
                started = time.monotonic()
                sim.wait("the app answering through Tilt's port-forward",
                         lambda: sim.curl("http://localhost:8000/")[0] == 200, timeout=600)
                print(f"tilt up to the app answering: {time.monotonic() - started:.1f} s", flush=True)
                spinapps, pods = Watch(sim, "spinapp", APP), Watch(sim, "pods", "-l", APP_SELECTOR)
                for i in range(1, args.saves + 1):
                    time.sleep(5)  # the previous rollout's old pod gone, Tilt's watcher settled
                    steps = one_save(sim, crate, f"Hello from Dapr Spin! (save {i})", spinapps, pods)
                    rows.append(steps)
                    print(f"    save {i}: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()), flush=True)
            finally:
                for watch in (spinapps, pods):
                    if watch:
                        watch.stop()
                tilt.stop()
        finally:
            sim.down()
    for step in STEPS + ["ready after serving", "total"]:
        values = [r[step] for r in rows]
        print(f"{step:20} median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}; "
              f"n={len(values)})")


if __name__ == "__main__":
    main()
