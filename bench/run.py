#!/usr/bin/env python3
"""The benchmark of issue 5: the Spin component under `wasmtime serve` against the course's
FastAPI original (bench/reference/), each beside its own daprd, on one Redis.

    python3 bench/run.py           # full: writes bench/RESULTS.md (about 7 minutes on 2 cores)
    python3 bench/run.py --quick   # CI: short runs, writes bench/out/quick.md

It installs what it needs first: the pinned tools through scripts/tools.sh (cached; a no-op
once there) and wrk from Debian (`apt-get install -y wrk`) when missing. Standard library
only; the reference runs in the tools' Python venv.

Measured:
- request path: wrk at a fixed concurrency on GET /, on POST /messages (the course's curl),
  and on POST and GET /messages/{user} alternating, for the Spin app and the reference (as
  the course wrote it, and with one shared httpx client) in one run;
- artifact (full only): the .wasm size, the clean release build, and the rebuild after a
  one-line change (the greeting), in a copy of the repo, never in src/;
- save-to-serve (full only): `tilt up -- --local --host=wasmtime` in that copy, time from
  saving a new greeting until GET / returns it. Tilt's local mode uses the fixed ports
  8000, 3500, 6379, 50001 and 9090, which must be free.

The targets are benchmarks, not tests: a missed target does not fail the run. A process that
does not start, or a request that errors, does (exit status 1). Logs: bench/out/logs/.
"""
import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
OUT = BENCH / "out"
LOGS = OUT / "logs"
WASM = "target/wasm32-wasip2/release/dapr_spin_hello.wasm"
BUILD = ["cargo", "build", "--target", "wasm32-wasip2", "--release"]
GREETING = "Hello from Dapr Spin!"
GREETING_LINE = re.compile(r'(pub const GREETING: &str = )"[^"]*";')
SEED_USERS = 64  # bench/wrk/scenario.lua reads these users in its mix
WASM_APP_ID, REFERENCE_APP_ID = "dapr-spin-hello", "hello-dapr-fastapi"
TILT_PORTS = {"app": 8000, "daprd HTTP": 3500, "redis": 6379, "daprd gRPC": 50001, "daprd metrics": 9090}
SCENARIOS = {
    "get": "GET /",
    "post": "POST /messages",
    "mix": "POST /messages + GET /messages/{user}",
}


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
    """Started processes, each in its own process group with a log in bench/out/logs/, so
    that stop_all() ends them and whatever they started, also when the run fails."""

    def __init__(self):
        self.started = []

    def start(self, name, cmd, env=None, cwd=REPO):
        log = LOGS / f"{name}.log"
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def set_greeting(crate, text):
    source = crate / "src/routes.rs"
    code, n = GREETING_LINE.subn(rf'\g<1>"{text}";', source.read_text())
    if n != 1:
        raise StartError(f"{source}: no `pub const GREETING` line to edit")
    source.write_text(code)


def copy_repo(dest):
    """The repo without target/, .git/ and bench/out/: what a fresh clone builds from."""
    shutil.copytree(REPO, dest, ignore=lambda d, names: [n for n in names if (Path(d) / n).relative_to(REPO).as_posix()
                                                         in ("target", ".git", "bench/out", ".pytest_cache")])


def measure_builds(crate, edits, env):
    """Clean release build in the copy, then `edits` rebuilds after changing the greeting."""
    print("==> artifact: clean release build in a copy of the repo", flush=True)
    log = LOGS / "cargo-copy.log"
    other = OtherLoad()
    clean = run(BUILD, cwd=crate, env=env, log=log)
    size = (crate / WASM).stat().st_size
    print(f"    clean build {clean:.1f} s, {size} bytes", flush=True)
    rebuilds = []
    for i in range(1, edits + 1):
        set_greeting(crate, f"{GREETING} (rebuild {i})")
        rebuilds.append(run(BUILD, cwd=crate, env=env, log=log))
        print(f"    rebuild {i}: {rebuilds[-1]:.2f} s", flush=True)
    set_greeting(crate, GREETING)
    run(BUILD, cwd=crate, env=env, log=log)  # leave the copy built, as Tilt will start from it
    return {"clean_s": clean, "size": size, "rebuilds_s": rebuilds, "other_cores": other.cores()}


def component_files(dest, redis_port, redis_db):
    """The repo's self-hosted Dapr components, on this run's Redis and database."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("statestore.yaml", "pubsub.yaml", "outbox.yaml"):
        text = (REPO / "scripts/dapr" / name).read_text().replace("localhost:6379", f"127.0.0.1:{redis_port}")
        (dest / name).write_text(text.rstrip("\n") + f'\n    - name: redisDB\n      value: "{redis_db}"\n')


def start_app_and_sidecar(procs, app, components, env):
    app["pids"] = [procs.start(app["name"], app["cmd"], env={**env, **app["env"], "DAPR_HTTP_PORT": str(app["dapr"])}).pid]
    procs.wait_for(f"{app['name']} (GET /)", lambda: http("GET", f"http://127.0.0.1:{app['port']}/")[0] == 200)
    # Started after its app, as in tests/support: daprd asks the app for subscriptions at start.
    app["pids"].append(procs.start(f"daprd-{app['name']}", [
        "daprd", "--app-id", app["app_id"], "--app-port", str(app["port"]), "--app-channel-address", "127.0.0.1",
        "--dapr-http-port", str(app["dapr"]), "--dapr-grpc-port", str(free_port()),
        "--dapr-internal-grpc-port", str(free_port()), "--metrics-port", str(free_port()),
        "--dapr-listen-addresses", "127.0.0.1", "--resources-path", str(components), "--log-level", "info",
    ], env=env).pid)
    procs.wait_for(f"daprd for {app['name']}", lambda: http("GET", f"http://127.0.0.1:{app['dapr']}/v1.0/healthz")[0] == 204)


def the_apps(wasm):
    """The Spin component, the course's FastAPI code, and that code with one shared httpx
    client (see bench/reference/main.py). Each has its own daprd and Redis database, so that
    each subscriber gets only its own app's events (Redis streams are per database)."""
    # No access log: wasmtime serve logs nothing per request either.
    uvicorn = ["uvicorn", "main:app", "--app-dir", str(BENCH / "reference"), "--host", "127.0.0.1",
               "--workers", "1", "--no-access-log", "--port"]
    apps = [
        {"name": "wasm", "label": "Spin (wasmtime serve)", "app_id": WASM_APP_ID, "ok": 201, "env": {}},
        {"name": "reference", "label": "FastAPI, course code", "app_id": REFERENCE_APP_ID, "ok": 200, "env": {}},
        {"name": "shared", "label": "FastAPI, shared client", "app_id": REFERENCE_APP_ID + "-shared", "ok": 200,
         "env": {"REFERENCE_SHARED_CLIENT": "1"}},
    ]
    for db, app in enumerate(apps):
        app.update(db=db, port=free_port(), dapr=free_port())
        app["cmd"] = (["wasmtime", "serve", "-Scli", "--addr", f"127.0.0.1:{app['port']}",
                       "--env", f"DAPR_HTTP_PORT={app['dapr']}", str(wasm)] if app["name"] == "wasm"
                      else uvicorn + [str(app["port"])])
    return apps


def received_events(name):
    return (LOGS / f"{name}.log").read_text(errors="replace").count("Received event")


def settle_events(name, timeout=120):
    """Waits until the app's subscriber has stopped receiving (Dapr delivers asynchronously),
    so one measurement's event backlog does not load the next."""
    last, still_since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline and time.monotonic() - still_since < 1.5:
        count = received_events(name)
        if count != last:
            last, still_since = count, time.monotonic()
        time.sleep(0.25)


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


def wrk(url, mode, tag, seconds, connections):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "-s", str(BENCH / "wrk/scenario.lua"), url, "--", mode, tag]
    text = output(cmd)
    match = re.search(r"^BENCH_JSON (.*)$", text, re.M)
    if not match:
        raise StartError(f"wrk printed no result:\n{text}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["error_count"] = sum(result["errors"].values())
    return result


def request_path(wasm, env, args, checks):
    procs = Processes()
    apps = the_apps(wasm)
    try:
        print("==> request path: redis, the apps, a daprd for each", flush=True)
        redis_port = free_port()
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(LOGS)], env=env)
        procs.wait_for("redis", lambda: port_busy(redis_port), timeout=20)
        for app in apps:
            components = LOGS / f"components-{app['name']}"
            component_files(components, redis_port, app["db"])
            if app["name"] != "wasm":
                shutil.copy(BENCH / "reference/subscription.yaml", components)
            start_app_and_sidecar(procs, app, components, env)
        spin = f"http://127.0.0.1:{apps[0]['port']}"
        procs.wait_for("the Spin app to be ready (GET /readyz)", lambda: http("GET", spin + "/readyz")[0] == 200)
        checks.check("started redis, wasmtime serve, two uvicorn and three daprd", True)

        for app in apps:
            name, base = app["name"], f"http://127.0.0.1:{app['port']}"
            status, body = http("GET", base + "/")
            checks.check(f"{name}: GET / answers its greeting", status == 200 and "Hello" in body, f"{status} {body[:80]}")
            answers = [http("POST", f"{base}/messages?user_id=seed-{i}&message=seed%20{i}", {"Content-Type": "application/json"})[0]
                       for i in range(SEED_USERS)]
            checks.check(f"{name}: the course's curl stores {SEED_USERS} users", answers == [app["ok"]] * SEED_USERS,
                         f"statuses {sorted(set(map(str, answers)))}")
            status, body = http("GET", f"{base}/messages/seed-7")
            checks.check(f"{name}: GET /messages/seed-7 returns it", status == 200 and "seed 7" in body, f"{status} {body[:80]}")
            procs.wait_for(f"{name}'s subscriber to log {SEED_USERS} events", lambda: received_events(name) >= SEED_USERS, timeout=30)
            checks.check(f"{name}: Dapr delivered the {SEED_USERS} events to the subscriber", True)

        results = {}
        for mode, title in SCENARIOS.items():
            for app in apps:
                name, url = app["name"], f"http://127.0.0.1:{app['port']}"
                print(f"==> {title} on {name}: {args.warmup} s warm-up, {args.duration} s measured", flush=True)
                wrk(url, mode, f"warm-{mode}", args.warmup, args.connections)
                settle_events(name)
                cpu_before, other = [cpu_seconds(pid) for pid in app["pids"]], OtherLoad(procs)
                result = results[(mode, name)] = wrk(url, mode, mode, args.duration, args.connections)
                settle_events(name)  # the events of these requests are part of their cost
                used = [[now - then for now, then in zip(cpu_seconds(pid), before)] for pid, before in zip(app["pids"], cpu_before)]
                result["cpu_ms"] = [sum(u) * 1000 / result["requests"] for u in used]
                result["app_sys_share"] = used[0][1] / max(sum(used[0]), 1e-9)
                result["other_cores"] = other.cores()
                checks.check(f"{name} {title}: {result['requests']} requests, {result['rps']:.0f}/s, "
                             f"p99 {result['p99_us'] / 1000:.1f} ms, no errors",
                             result["requests"] > 0 and result["error_count"] == 0, json.dumps(result["errors"]))
        return {"results": results, "apps": apps,
                "daprd_errors": {app["name"]: dapr_log_errors(f"daprd-{app['name']}") for app in apps},
                "dropped": (LOGS / "wasm.log").read_text(errors="replace").count("Dropped event")}
    finally:
        procs.stop_all()


def dapr_log_errors(name):
    """daprd's error lines, each message once with its count."""
    counts = {}
    for line in (LOGS / f"{name}.log").read_text(errors="replace").splitlines():
        if "level=error" in line:
            msg = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
            key = (msg.group(1) if msg else line)[:160]
            counts[key] = counts.get(key, 0) + 1
    return counts


def save_to_serve(crate, edits, env, checks):
    """`tilt up -- --local --host=wasmtime` in the copy; per edit, the time from saving a new
    greeting in src/routes.rs until GET / on the app answers it."""
    busy = [f"{what} {port}" for what, port in TILT_PORTS.items() if port_busy(port)]
    if not checks.check("tilt local mode: its ports are free", not busy, ", ".join(busy)):
        return None
    print("==> save-to-serve: tilt up -- --local --host=wasmtime, in the copy", flush=True)
    procs = Processes()
    app = f"http://127.0.0.1:{TILT_PORTS['app']}"
    try:
        procs.start("tilt", ["tilt", "up", "--stream", "--web-mode=prod", f"--port={free_port()}",
                             "--", "--local", "--host=wasmtime"], env=env, cwd=crate)
        procs.wait_for("tilt's app to serve the greeting and be ready",
                       lambda: GREETING in http("GET", app + "/")[1] and http("GET", app + "/readyz")[0] == 200, timeout=600)
        checks.check("tilt up -- --local --host=wasmtime serves the app", True)
        times, other = [], OtherLoad(procs)
        for i in range(1, edits + 1):
            time.sleep(3)  # let the previous restart and Tilt's file watcher settle
            text = f"{GREETING} (save {i})"
            set_greeting(crate, text)
            saved = time.monotonic()
            procs.wait_for(f"GET / to answer {text!r}", lambda: text in http("GET", app + "/", timeout=2)[1], timeout=300)
            times.append(time.monotonic() - saved)
            print(f"    save {i}: {times[-1]:.2f} s", flush=True)
        # Tilt's log has cargo's own time for each rebuild: the share of the build in each save.
        builds = re.findall(r"Finished `release` profile .* in ([\d.]+)s", (LOGS / "tilt.log").read_text())
        return {"times": times, "builds": [float(b) for b in builds[-edits:]], "other_cores": other.cores()}
    finally:
        procs.stop_all(signal.SIGINT)  # Tilt ends its serve_cmds on Ctrl-C
        kill_left_in(crate)


def kill_left_in(directory):
    """Ends processes still running in the copy (Tilt's serve_cmds run in their own groups)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                continue
            if cwd == directory.resolve() or directory.resolve() in cwd.parents:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)


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


def spread(values, unit="s"):
    return (f"{statistics.median(values):.2f} {unit} median (min {min(values):.2f}, max {max(values):.2f}; "
            f"n={len(values)})")


def ms(us):
    return f"{us / 1000:.2f} ms"


def verdict(ok):
    return "n/a" if ok is None else ("pass" if ok else "miss")


def report(data, args):
    """RESULTS.md: the targets of issue 5, the measurements behind them, the machine."""
    req, builds, saves, m = data["requests"], data.get("builds"), data.get("saves"), data["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"One run of `{data['command']}` on {data['date']}, on the machine described below.",
        "Targets (issue 5) are benchmarks, not tests: a miss does not fail the run.",
        "",
        "| measure | target | measured | result |",
        "| --- | --- | --- | --- |",
    ]
    if builds:
        med = statistics.median(builds["rebuilds_s"])
        lines.append(f"| incremental rebuild after a one-line change | ≤ 2 s median | {spread(builds['rebuilds_s'])} | {verdict(med <= 2)} |")
    if saves:
        med = statistics.median(saves["times"])
        lines.append(f"| save-to-serve, `tilt up -- --local --host=wasmtime` | ≤ 3 s median | {spread(saves['times'])} | {verdict(med <= 3)} |")
    size = builds["size"] if builds else data["wasm_size"]
    lines.append(f"| .wasm size | ≤ 300 KB | {size:,} bytes = {size / 1000:.0f} KB ({size / 1024:.0f} KiB) | {verdict(size <= 300_000)} |")
    if req:
        res = req["results"]
        spin = lambda mode: res[(mode, "wasm")]
        get_ratio = {ref: spin("get")["rps"] / res[("get", ref)]["rps"] for ref in ("reference", "shared")}
        p99 = {ref: spin("post")["p99_us"] / res[("post", ref)]["p99_us"] for ref in ("reference", "shared")}
        lines.append(f"| GET / throughput | ≥ 3× the FastAPI reference | {get_ratio['reference']:.1f}× the course code "
                     f"({spin('get')['rps']:,.0f} vs {res[('get', 'reference')]['rps']:,.0f} req/s); "
                     f"{get_ratio['shared']:.1f}× with a shared client | {verdict(get_ratio['reference'] >= 3)} "
                     f"(shared client: {verdict(get_ratio['shared'] >= 3)}) |")
        lines.append(f"| POST /messages p99 latency | no worse than the reference | {ms(spin('post')['p99_us'])} vs "
                     f"{ms(res[('post', 'reference')]['p99_us'])} for the course code ({p99['reference']:.2f}×); "
                     f"vs {ms(res[('post', 'shared')]['p99_us'])} with a shared client ({p99['shared']:.2f}×) | "
                     f"{verdict(p99['reference'] <= 1)} (shared client: {verdict(p99['shared'] <= 1)}) |")
        lines += [
            "",
            "## Request path",
            "",
            f"wrk, 1 thread, {args.connections} connections, {args.duration} s per measurement after a {args.warmup} s "
            "warm-up. Each app beside its own daprd, all on one redis-server (one database each). "
            "The last two columns compare Spin with that row's app (Spin ÷ app).",
            "",
            "| scenario | app | req/s | p50 | p99 | failed requests | CPU ms per request: app (system share), its daprd | other load, cores | Spin throughput ÷ | Spin p99 ÷ |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode, title in SCENARIOS.items():
            for app in req["apps"]:
                r = res[(mode, app["name"])]
                ratios = "| | |" if app["name"] == "wasm" else f"| {spin(mode)['rps'] / r['rps']:.2f}× | {spin(mode)['p99_us'] / r['p99_us']:.2f}× |"
                lines.append(f"| {title} | {app['label']} | {r['rps']:,.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {r['error_count']} | "
                             f"{r['cpu_ms'][0]:.2f} ({r['app_sys_share']:.0%}), {r['cpu_ms'][1]:.2f} | {r['other_cores']:.2f} {ratios}")
        lines += [
            "",
            "- Failed requests: non-2xx answers, socket errors and time-outs (10 s), as wrk counts them.",
            "- CPU ms per request: the process's user + system CPU time over the measurement (and the delivery of its "
            "events) divided by its requests; in brackets the app's share spent in the kernel. wasmtime serve runs "
            "requests on all cores; uvicorn with 1 worker on one.",
            "- What a request does: Spin's POST reads the user's history with its ETag, writes it back with "
            "first-write concurrency and publishes (three sidecar calls, each on a new connection: wasmtime's "
            "wasi:http client keeps none); the reference saves the latest message and publishes (two calls, no "
            "concurrency control), as the course did. GET /messages is one state read in all three.",
            "- The course code opens a new httpx client per request, which builds an SSL context each time; "
            "\"shared client\" is the same code with one client for the app's life (bench/reference/main.py).",
            "- Every POST's event is delivered by the app's daprd to its own subscriber during the run; the harness "
            "waits for that backlog to drain before the next measurement.",
            "- FastAPI runs under uvicorn with 1 worker, uvloop and httptools (the course's `fastapi[standard]`), "
            "no access log.",
            "- wrk is a closed-loop generator: under saturation its percentiles understate queueing (coordinated omission).",
        ]
        for app in req["apps"]:
            errs = req["daprd_errors"][app["name"]]
            detail = "; ".join(f"{n}× `{msg}`" for msg, n in errs.items()) if errs else "none"
            lines.append(f"- Error lines in the log of {app['label']}'s daprd: {detail}.")
        if req["dropped"]:
            lines.append(f"- Events dropped by the Spin subscriber: {req['dropped']}.")
    if builds:
        lines += [
            "",
            "## Artifact",
            "",
            f"- Clean release build (`{' '.join(BUILD)}` in a copy of the repo with an empty target/): {builds['clean_s']:.1f} s.",
            f"- Rebuilds after changing the greeting in src/routes.rs: {', '.join(f'{t:.2f}' for t in builds['rebuilds_s'])} s.",
            f"- [profile.release] in Cargo.toml at the time: {data['profile'] or 'none (cargo defaults)'}.",
            f"- Other load during the builds: {builds['other_cores']:.2f} cores.",
        ]
    if saves:
        lines += [
            "",
            "## Save-to-serve",
            "",
            "`tilt up -- --local --host=wasmtime` in a copy of the repo; each edit writes a new greeting into "
            "src/routes.rs and times until GET http://127.0.0.1:8000/ answers it (Tilt's rebuild, the app's restart, the first answer).",
            f"- Per edit: {', '.join(f'{t:.2f}' for t in saves['times'])} s.",
            f"- Of which cargo's rebuild, as Tilt's log reports it: {', '.join(f'{t:.2f}' for t in saves['builds'])} s.",
            f"- Other load during the edits: {saves['other_cores']:.2f} cores.",
        ]
    lines += [
        "",
        "## Machine",
        "",
        f"- {m['cpus']} CPUs: {m['cpu']}; {m['memory']} memory; {m['os']}.",
        f"- Load average (1, 5, 15 min): {data['load']['start']} at the start, {data['load']['requests']} before the "
        f"request path, {data['load']['end']} at the end.{' ' + data['note'] if data['note'] else ''}",
        "- Other load, in each section: the cores kept busy meanwhile by processes that this run did not start "
        f"(and by the kernel's own work), out of {m['cpus']}. More than a few tenths means something else ran "
        "and skewed those numbers.",
    ] + [f"- {name}: {version}" for name, version in m["tools"].items()]
    return "\n".join(lines) + "\n"


def release_profile():
    match = re.search(r"^\[profile\.release\]\n((?:[^\[\n].*\n?)*)", (REPO / "Cargo.toml").read_text(), re.M)
    return ", ".join(l.strip() for l in match.group(1).splitlines() if l.strip() and not l.startswith("#")) if match else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI: short runs, no build timings, no Tilt; writes bench/out/quick.md")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, help="seconds per measurement (full 15, quick 2)")
    parser.add_argument("--edits", type=int, default=5, help="rebuilds and save-to-serve edits (full mode)")
    parser.add_argument("--note", default="", help="a remark for RESULTS.md, e.g. what else loaded the machine")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops what was started
    args.duration = args.duration or (2 if args.quick else 15)
    args.warmup = 1 if args.quick else 3
    command = shlex.join(["python3", "bench/run.py", *sys.argv[1:]])

    OUT.mkdir(exist_ok=True)
    lock = open(OUT / ".lock", "w")  # held until exit: two runs would share bench/out/logs and the CPU
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("bench: another bench/run.py is running (it holds bench/out/.lock)", file=sys.stderr)
        return 1
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir()
    checks = Checks()
    data = {"command": command, "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "load": {"start": load()}, "note": args.note, "profile": release_profile(), "requests": None}
    try:
        env = install_tools(full=not args.quick)
        data["machine"] = machine(env)
        print("==> building the component (spin.toml's build command)", flush=True)
        run(BUILD, env=env, log=LOGS / "cargo-repo.log")
        wasm = LOGS / "dapr_spin_hello.wasm"  # a copy: a rebuild of the repo meanwhile cannot change it
        shutil.copy(REPO / WASM, wasm)
        data["wasm_size"] = wasm.stat().st_size
        with tempfile.TemporaryDirectory(prefix="dapr-spin-hello-bench-") as tmp:
            crate = Path(tmp) / "repo"
            if not args.quick:
                copy_repo(crate)
                data["builds"] = measure_builds(crate, args.edits, env)
            data["load"]["requests"] = load()
            data["requests"] = request_path(wasm, env, args, checks)
            if not args.quick:
                data["saves"] = save_to_serve(crate, args.edits, env, checks)
    except StartError as e:
        checks.check("start", False, str(e))
    finally:
        data["load"]["end"] = load()
    if "wasm_size" in data:
        target = OUT / "quick.md" if args.quick else BENCH / "RESULTS.md"
        target.write_text(report(data, args))
        print(f"==> wrote {target.relative_to(REPO)}")
    print(f"bench {'quick' if args.quick else 'full'}: {checks.passed} passed, {len(checks.failed)} failed")
    for failure in checks.failed:
        print(f"  failed: {failure}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
