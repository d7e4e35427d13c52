"""The control-plane part of the cluster's save-to-serve, on the simulated cluster: from saving a
new greeting under `tilt up` until a new ReplicaSet, with the new image reference, has a Ready
pod. That covers the cargo rebuild, Tilt's image step and apply, spin-operator's update of the
Deployment, the ReplicaSet, the scheduler, Dapr's injector on the new pod, and kwok marking it
Ready. Not covered (no node): the image pull, the shim compiling the component, daprd's start,
the probes; their costs are measured or estimated elsewhere (README, "What happens on save").

    python3 bench/sim_rollout.py [--saves N]

Runs `scripts/cluster.sh up --sim` in a temporary folder (its own kubeconfig) and `tilt up` in
a copy of the repo, so neither the user's cluster nor src/ is touched. Needs the pinned tools
(`scripts/tools.sh all`, then `eval "$(scripts/tools.sh env)"`)."""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/deploy"))
from sim_cluster import SimCluster, TiltUp, app_image, copy_repo, save_to_rollout  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        sim = SimCluster(home)
        p, up_seconds = sim.up()
        try:
            if p.returncode != 0:
                sys.exit(f"up --sim failed:\n{p.stdout}\n{p.stderr}")
            print(f"up --sim: {up_seconds:.1f} s", flush=True)
            crate = Path(home) / "repo"
            copy_repo(crate)
            tilt = TiltUp(sim, crate, Path(home) / "tilt.log")
            try:
                started = time.monotonic()
                sim.wait("tilt up's first deploy", lambda: app_image_or_none(sim), timeout=600)
                sim.wait("the first pod", lambda: sim.ready_pods("core.spinkube.dev/app-name=dapr-spin-hello"), timeout=300)
                print(f"tilt up to the first Ready pod: {time.monotonic() - started:.1f} s", flush=True)
                times, rollouts = [], []
                for i in range(1, args.saves + 1):
                    time.sleep(3)  # let the previous rollout and Tilt's file watcher settle
                    seconds, rollout, image = save_to_rollout(sim, crate, f"Hello from Dapr Spin! (save {i})")
                    times.append(seconds)
                    rollouts.append(rollout)
                    print(f"    save {i}: {seconds:.2f} s, of which the rollout {rollout:.2f} s ({image})", flush=True)
            finally:
                tilt.stop()
        finally:
            sim.down()
    for what, values in (("save to a Ready pod of the new ReplicaSet", times),
                         ("of which the new reference in the SpinApp to that pod", rollouts)):
        print(f"{what}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}; n={len(values)})")


def app_image_or_none(sim):
    p = sim.kubectl("get", "spinapp", "dapr-spin-hello", check=False)
    return p.returncode == 0 and app_image(sim).startswith("dapr-spin-hello:sim-")


if __name__ == "__main__":
    main()
