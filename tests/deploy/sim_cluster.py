"""The simulated cluster (scripts/cluster.sh up --sim) as the tests and bench/ use it: started in
a folder of its own, with its own kubeconfig, so neither touches the user's cluster or context;
and every command that talks to it runs in its namespaces (`cluster.sh exec --sim --`)."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy_helpers import REPO

CONTEXT = "sim-dapr-spin-hello"
APP = "dapr-spin-hello"
APP_SELECTOR = "core.spinkube.dev/app-name=" + APP
GREETING_LINE = re.compile(r'(pub const GREETING: &str = )"[^"]*";')


def sim_paths():
    """{process: binary} as scripts/tools.sh builds them."""
    out = subprocess.run([str(REPO / "scripts/tools.sh"), "sim-paths"], capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


class SimCluster:
    def __init__(self, home):
        self.home = Path(home)
        self.state = self.home / "state"
        self.kubeconfig = self.home / "kubeconfig"
        self.env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), DAPR_SPIN_HELLO_SIM_DIR=str(self.state),
                        TILT_DISABLE_ANALYTICS="1")
        self.kubectl_binary = sim_paths()["kubectl"]

    def cluster_sh(self, *args, timeout=600):
        return subprocess.run([str(REPO / "scripts/cluster.sh"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def up(self):
        started = time.monotonic()
        p = self.cluster_sh("up", "--sim")
        return p, time.monotonic() - started

    def down(self):
        return self.cluster_sh("down", "--sim", timeout=120)

    def inside(self, *command):
        """`command` as it runs in the cluster's namespaces, where its API server and pods are."""
        return [str(REPO / "scripts/cluster.sh"), "exec", "--sim", "--", *command]

    def kubectl(self, *args, check=True, stdin=None, timeout=120):
        p = subprocess.run(self.inside(self.kubectl_binary, "--context", CONTEXT, *args), env=self.env, input=stdin,
                           capture_output=True, text=True, timeout=timeout)
        if check:
            assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stderr}"
        return p

    def get(self, *args):
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def pids(self):
        """{process: pid} of what the cluster started (its pids/ folder), the namespaces' holder too."""
        pids = self.state / "pids"
        return {p.name: int(p.read_text()) for p in pids.iterdir()} if pids.is_dir() else {}

    def curl(self, url, *args):
        """curl in the cluster's namespaces (where Tilt's port-forward listens): (status, body)."""
        p = subprocess.run(self.inside("curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", *args, url),
                           env=self.env, capture_output=True, text=True, timeout=30)
        body, _, status = p.stdout.rpartition("\n")
        return int(status or 0), body

    def ready_pods(self, selector, namespace="default"):
        pods = self.get("pods", "--namespace", namespace, "-l", selector)["items"]
        return [p for p in pods if p["metadata"].get("deletionTimestamp") is None and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))]

    def wait(self, what, condition, timeout=120):
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
            time.sleep(0.2)
        return result


def copy_repo(dest):
    """The repo without .git/ and target/ but its wasm32-wasip2 build, so the copy's first cargo
    build only rebuilds this crate."""
    def ignore(directory, names):
        rel = Path(directory).relative_to(REPO).as_posix()
        skip = {".git", ".pytest_cache"} if rel == "." else set()
        if rel == "target":
            skip |= {n for n in names if n not in ("wasm32-wasip2", "release")}
        if rel == "bench":
            skip.add("out")
        return skip & set(names)
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def set_greeting(crate, text):
    source = Path(crate) / "src/routes.rs"
    code, n = GREETING_LINE.subn(rf'\g<1>"{text}";', source.read_text())
    assert n == 1, f"{source}: no `pub const GREETING` line to edit"
    source.write_text(code)


def app_image(sim):
    return sim.get("spinapp", APP)["spec"]["image"]


class TiltUp:
    """`tilt up --stream` in `crate` against the simulated cluster, its output in `log`."""

    def __init__(self, sim, crate, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(sim.inside("tilt", "up", "--stream", "--port=0"), cwd=crate, env=sim.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
