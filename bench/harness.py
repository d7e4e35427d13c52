"""Processes and tools: starting and stopping what the benchmark runs, its checks, the tools
it installs, and the CPU accounting behind every "CPU per request" and "other load" figure.
Shared by bench/run.py and bench/designs.py."""
import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from fairness import pinned

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
OUT = BENCH / "out"
LOGS = OUT / "logs"


class StartError(Exception):
    """A process did not start or did not become ready."""

class Checks:
    """What can fail a run: processes starting, requests answering without error."""

    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, name, ok, detail=""):
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""), flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{name}: {detail}")
        return ok

class Processes:
    """Started processes, each in its own process group with a log in `logs`, so
    that stop_all() ends them and whatever they started, also when the run fails."""

    def __init__(self, logs=LOGS):
        self.logs, self.started = Path(logs), []

    def start(self, name, cmd, env=None, cwd=REPO):
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((name, proc, log))
        return proc

    def wait_for(self, what, ready, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for name, proc, log in self.started:
                if proc.poll() is not None:
                    raise StartError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{tail(log)}")
            time.sleep(0.1)
        raise StartError(f"timed out after {timeout} s waiting for {what}")

    def stop_all(self, sig=signal.SIGTERM):
        """sig to each group, then SIGKILL to what is left of it (also once its leader is gone)."""
        for _, proc, _ in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        for _, proc, _ in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.started.clear()

def tail(path, lines=30):
    text = Path(path).read_text(errors="replace") if Path(path).exists() else ""
    return "\n".join(text.splitlines()[-lines:])

def free_port():
    return int(subprocess.check_output([str(REPO / "scripts/lib/free_ports.py"), "1"], text=True))

def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

def http(method, url, headers=None, timeout=10):
    """(status, body) of one request, or (None, reason) when nothing answered."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)

def run(cmd, cwd=REPO, env=None, log=None):
    """Runs cmd to completion; returns its wall time in seconds. Output goes to log, or to
    this terminal without one (a first tools.sh run builds for minutes and says so)."""
    start = time.monotonic()
    with open(log, "ab") if log else contextlib.nullcontext() as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if log else None)
    if done.returncode != 0:
        raise StartError(f"{' '.join(map(str, cmd))} failed ({done.returncode})" + (f":\n{tail(log)}" if log else ""))
    return time.monotonic() - start

def output(cmd, **kwargs):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kwargs).stdout.strip()
    except OSError as e:
        return f"({e})"

def install_tools(full):
    """The pinned tools (scripts/tools.sh skips what is cached) and wrk; returns the
    environment with the cached tools on PATH."""
    print("==> tools (scripts/tools.sh; apt-get install wrk if missing)", flush=True)
    run(["scripts/tools.sh", "rust", "redis", "python", "wasmtime", "daprd"] + (["tilt"] if full else []))
    if not shutil.which("wrk"):
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", "wrk"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = output(["bash", "-c", 'eval "$(scripts/tools.sh env)" && printf %s "$PATH"'], cwd=REPO)
    env = {**os.environ, "PATH": path}
    env.pop("CARGO_TARGET_DIR", None)  # builds must land in target/ of the tree being built
    return env

def wasmtime_component(wasm, env):
    """The service's `wasm` as `wasmtime serve` runs it: composed with the adapter that answers
    its Spin variables from SPIN_VARIABLE_* (scripts/wasmtime-adapter/compose.sh), written beside
    it. Spin runs `wasm` itself."""
    done = subprocess.run([str(REPO / "scripts/wasmtime-adapter/compose.sh"), str(wasm)], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise StartError(f"scripts/wasmtime-adapter/compose.sh {wasm} failed ({done.returncode}):\n{done.stderr}")
    return Path(done.stdout.strip())

def cpu_seconds(pid):
    """(user, system) CPU time of a process and of its reaped children (such as Tilt's builds)
    so far: /proc/PID/stat, fields 14 to 17."""
    fields = [int(f) / os.sysconf("SC_CLK_TCK") for f in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
    return fields[0] + fields[2], fields[1] + fields[3]

class OtherLoad:
    """How many cores processes that this run did not start kept busy since it was made: a
    busy machine skews every number, so the report says how busy it was."""

    def __init__(self, procs=None):
        self.procs = procs
        self.start = self.sample()

    def sample(self):
        cpu = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(cpu) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))  # this script, and what it ran to the end (cargo, wrk)
        own += sum(sum(cpu_seconds(proc.pid)) for _, proc, _ in (self.procs.started if self.procs else []))
        return time.monotonic(), busy, own

    def cores(self):
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self.sample()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)

def machine(env):
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    mem_kb = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
    os_name = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
    venv_versions = output(["python", "-c", "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' "
                            "for p in ('fastapi', 'uvicorn', 'httpx', 'uvloop', 'httptools')))"], env=env)
    return {
        "cpus": os.cpu_count(),
        "cpu": model.group(1) if model else platform.processor(),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{os_name.group(1) if os_name else platform.system()}, Linux {platform.release()}",
        "tools": {name: version(cmd, env) for name, cmd in (
            ("wasmtime", ["wasmtime", "--version"]),
            ("daprd (built from source: its cache folder names the version)", ["daprd", "--version"]),
            ("redis", ["redis-server", "--version"]),
            ("wrk", ["wrk", "-v"]),
            ("rustc", ["rustc", "--version"]),
            ("tilt", ["tilt", "version"]),
            ("python", ["python", "--version"]),
        )} | {"python packages": venv_versions},
    }

def version(cmd, env):
    """The first line a tool prints about itself, and which binary that was."""
    first = (output(cmd, env=env).splitlines() or ["?"])[0]
    return f"{first} ({shutil.which(cmd[0], path=env['PATH'])})"

def load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def stack_command(name, *args, **settings):
    """The command line `scripts/local.sh NAME` runs (redis, daprd, app), for args and these
    settings of local.sh's variables (REDIS_PORT=..., SPIN_VARIABLE_...=...), and for no
    others: none leak in from this environment."""
    done = subprocess.run([str(REPO / "scripts/local.sh"), "command", name, *map(str, args)], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **{k: str(v) for k, v in settings.items()}}, check=False)
    if done.returncode != 0:
        raise StartError(f"scripts/local.sh command {name} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.split("\n")[:-1]


def app_cmd(host, file, port, variables=None, reuse=None, options=(), cores=None):
    """The app under `host` (spin: `file` is its manifest; wasmtime: the component) on port, with
    `variables` (SPIN_VARIABLE_*) named for wasmtime to pass on: run it with them in its
    environment. Each wasmtime instance serves `reuse` requests, or one."""
    return pinned(cores, stack_command("app", host, file, *options, APP_PORT=port, WASMTIME_INSTANCE_REUSE=reuse or "",
                                       **(variables or {})))


def daprd_cmd(app_id, app_port, dapr_port, resources, cores=None):
    """A daprd for the app on app_port, its HTTP API on dapr_port, other ports free ones."""
    return pinned(cores, stack_command("daprd", resources, APP_ID=app_id, APP_PORT=app_port, DAPR_HTTP_PORT=dapr_port,
                                       DAPR_GRPC_PORT=free_port(), DAPR_INTERNAL_GRPC_PORT=free_port(),
                                       DAPR_METRICS_PORT=free_port()))


def start_redis(procs, port, cores=None, env=None):
    """An in-memory redis-server on port, ready when this returns; its process."""
    proc = procs.start(f"redis-{port}", pinned(cores, stack_command("redis", REDIS_PORT=port)), env=env)
    procs.wait_for(f"redis on port {port}", lambda: port_busy(port), timeout=20)
    return proc
