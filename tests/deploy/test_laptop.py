"""A DACA course learner's laptop, faked: what `dapr init` leaves (daprd in ~/.dapr/bin, a Redis
already answering on the Redis port), Tilt and Spin on PATH, an empty tools cache.
`scripts/dev.sh` must build nothing, pick the installed tools, and run the local loop (on ports
moved off the defaults) against that Redis without restarting or flushing it.

Every tool is the real one except Spin, which no package registry ships: `spin` here is a
stand-in script that runs the same .wasm under `wasmtime serve`, composed with the Spin
variables adapter (scripts/wasmtime-adapter) and given the SPIN_VARIABLE_* environment as Spin
reads it (the real Spin also enforces spin.toml's allowed_outbound_hosts, which the stand-in
only mimics by requiring the variable that sets it)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from deploy_helpers import REPO, spin_sources

PORT_VARIABLES = ["APP_PORT", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_METRICS_PORT", "REDIS_PORT", "TILT_PORT"]
APP_ID = "dapr-spin-hello"
TOPIC = "message-updated"
# tools.sh's line for a tool it builds from source ("tools: daprd 1.18.1 building from source ...").
SOURCE_BUILD = re.compile(r"^tools: \S+ +\S+ +(building|built) ", re.M)

SPIN_STAND_IN = """#!/usr/bin/env bash
# A stand-in for Spin (not installable here): `spin up` serves the same .wasm with wasmtime,
# its Spin variables answered from SPIN_VARIABLE_* by the adapter, as Spin's env provider does.
set -euo pipefail
case ${{1:-}} in
  --version) echo "spin 3.6.3 (stand-in: wasmtime serve)" ;;
  up)
    shift
    args=()
    while [ $# -gt 0 ]; do
      case $1 in
        --listen) args+=(--addr "$2") ;;
        --from) [ -f "$2" ] || {{ echo "spin stand-in: no manifest $2" >&2; exit 1; }} ;;
        *) echo "spin stand-in: unexpected argument $1" >&2; exit 2 ;;
      esac
      shift 2
    done
    # Spin lets the component reach only the sidecar port that spin.toml's variable names.
    [ -n "${{SPIN_VARIABLE_DAPR_HTTP_PORT:-}}" ] || {{ echo "spin stand-in: SPIN_VARIABLE_DAPR_HTTP_PORT is not set" >&2; exit 1; }}
    for name in $(compgen -e); do
      case $name in SPIN_VARIABLE_*) args+=(--env "$name") ;; esac
    done
    composed=$(PATH={wasm_tools_dir}:$PATH {repo}/scripts/wasmtime-adapter/compose.sh {wasm})
    exec {wasmtime} serve -Scli "${{args[@]}}" "$composed"
    ;;
  *) echo "spin stand-in: only --version and up" >&2; exit 2 ;;
esac
"""


def free_ports(n):
    return [int(port) for port in subprocess.check_output([str(REPO / "scripts/lib/free_ports.py"), str(n)], text=True).split()]


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True).stdout.strip()


def redis_info(port):
    lines = redis_cli(port, "INFO", "server").splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


@pytest.fixture
def laptop(tmp_path):
    """The environment of a learner's shell: HOME with ~/.dapr/bin/daprd, PATH with tilt and
    spin (and cargo, the system's tools), free ports for everything, an empty tools cache."""
    for tool in ("tilt", "wasmtime", "wasm-tools", "redis-server", "redis-cli", "cargo"):
        assert shutil.which(tool), f'{tool} is not on PATH: run scripts/tools.sh all, then eval "$(scripts/tools.sh env)"'
    assert os.environ.get("DAPRD"), 'DAPRD is not set: eval "$(scripts/tools.sh env)"'
    home = tmp_path / "home"
    (home / ".dapr/bin").mkdir(parents=True)
    (home / ".dapr/bin/daprd").symlink_to(os.environ["DAPRD"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tilt").symlink_to(shutil.which("tilt"))
    spin = bin_dir / "spin"
    spin.write_text(SPIN_STAND_IN.format(wasmtime=shutil.which("wasmtime"), wasm=spin_sources()[0], repo=REPO,
                                         wasm_tools_dir=os.path.dirname(shutil.which("wasm-tools"))))
    spin.chmod(0o755)
    cargo_bin = os.path.dirname(shutil.which("cargo"))
    env = {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(bin_dir), cargo_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
        "CARGO_HOME": os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")),
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup")),
        "DAPR_SPIN_HELLO_CACHE": str(home / ".cache/dapr-spin-hello"),
        "TILT_DISABLE_ANALYTICS": "1",
        "LANG": "C.UTF-8",
    }
    env.update(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES)))))
    return env


@pytest.fixture
def course_redis(laptop, tmp_path):
    """The Redis that was there before (dapr init's dapr_redis), with another app's key in it."""
    port = laptop["REDIS_PORT"]
    redis = subprocess.Popen(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", port, "PING"], capture_output=True, text=True).stdout.strip() != "PONG":
        assert time.monotonic() < deadline and redis.poll() is None, "the course's Redis did not start"
        time.sleep(0.1)
    redis_cli(port, "SET", "course-app||junaid", "kept")
    yield port
    redis.terminate()
    redis.wait(10)


class DevLoop:
    """scripts/dev.sh in the background, its output collected line by line."""

    def __init__(self, env):
        self.lines = []
        self.proc = subprocess.Popen(["scripts/dev.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_until(self, what, ready, timeout):
        deadline = time.monotonic() + timeout
        while not ready():
            # A source build takes minutes: fail on its announcement instead of waiting it out.
            assert not SOURCE_BUILD.search(self.output), f"a source build started:\n{self.output}"
            assert self.proc.poll() is None, f"dev.sh exited {self.proc.returncode} before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.output}"
            time.sleep(0.1)
        return time.monotonic()

    def printed(self, text):
        return lambda: any(text in line for line in self.lines)

    def stop(self):
        # dev.sh execs Tilt; on SIGINT Tilt stops the processes it started (redis watcher, daprd, app).
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def tool_line(output, tool):
    [line] = [line for line in output.splitlines() if line.startswith(f"tools: {tool} ")]
    return line.split()


def answers_get_root(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(port))) == 0


def test_course_laptop_builds_nothing_and_keeps_its_redis(laptop, course_redis):
    before = redis_info(course_redis)
    started = time.monotonic()
    loop = DevLoop(laptop)
    try:
        answered = loop.wait_until("answer to GET /", lambda: answers_get_root(laptop["APP_PORT"]), timeout=300)
        print(f"dev.sh on a course laptop: start to the first GET / answer in {answered - started:.1f} s")
        loop.wait_until("'smoke: ok'", loop.printed("smoke: ok"), timeout=120)
        keys = redis_cli(course_redis, "--scan").splitlines()
    finally:
        loop.stop()
    out = loop.output

    # The installed tools were picked, nothing was built, and the tools cache stayed empty.
    home, bin_dir = laptop["HOME"], laptop["PATH"].split(os.pathsep)[0]
    daprd_version = subprocess.run([os.environ["DAPRD"], "--version"], capture_output=True, text=True).stdout.strip()
    assert tool_line(out, "tilt")[3:] == ["installed", f"{bin_dir}/tilt"]
    assert tool_line(out, "spin")[2:] == ["3.6.3", "installed", f"{bin_dir}/spin"]
    assert tool_line(out, "daprd")[2:] == [daprd_version, "installed", f"{home}/.dapr/bin/daprd"]
    assert tool_line(out, "wasmtime")[2:4] == ["-", "not"]
    assert tool_line(out, "redis")[2:4] == ["-", "running"]
    assert not SOURCE_BUILD.search(out)
    assert not os.path.exists(laptop["DAPR_SPIN_HELLO_CACHE"]) or not os.listdir(laptop["DAPR_SPIN_HELLO_CACHE"])
    assert "local mode uses it and starts no other" in out

    # The smoke test wrote through daprd into the Redis that was there, under the app-id prefix
    # (its history, and the subscriber's claim of its event); the other app's key is untouched.
    # The only other keys are the topic's stream and its dead-letter topic's (created empty when
    # Dapr subscribes).
    ours = [k for k in keys if k.startswith(f"{APP_ID}||")]
    assert any(k.startswith(f"{APP_ID}||smoke-") for k in ours), keys
    assert set(keys) - set(ours) == {"course-app||junaid", TOPIC, f"{TOPIC}-dead-letter"}, keys
    assert redis_cli(course_redis, "GET", "course-app||junaid") == "kept"

    # Neither restarted nor flushed: the same server (run_id), still up after the loop stopped.
    after = redis_info(course_redis)
    assert after["run_id"] == before["run_id"]
    assert int(after["uptime_in_seconds"]) >= int(before["uptime_in_seconds"])
    # And Tilt stopped what it started.
    for variable in ("APP_PORT", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_METRICS_PORT"):
        assert not listening(laptop[variable]), f"{variable} {laptop[variable]} still answers after the loop stopped"


@pytest.mark.parametrize("variable, what", [
    ("APP_PORT", "the app"), ("DAPR_HTTP_PORT", "Dapr HTTP API"), ("DAPR_GRPC_PORT", "Dapr gRPC API"),
    ("DAPR_METRICS_PORT", "Dapr metrics"), ("REDIS_PORT", "Redis: it does not answer PING"),
])
def test_a_taken_port_stops_dev_sh_with_its_holder_and_variable(laptop, variable, what):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(laptop[variable])))
        squatter.listen()
        p = subprocess.run(["scripts/dev.sh"], cwd=REPO, env=laptop, capture_output=True, text=True, timeout=60)
    port = laptop[variable]
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"port {port} ({what}) is taken by " in p.stderr
    assert f"(pid {os.getpid()})" in p.stderr  # this test holds it
    assert f"{variable}=<free port>" in p.stderr
    # It stopped before looking for tools or starting anything.
    assert "tools:" not in p.stdout + p.stderr


def test_daprd_older_than_dapr_supports_is_passed_over(laptop):
    # A stand-in daprd of an old version: only its --version answer matters here.
    old = os.path.join(laptop["HOME"], ".dapr/bin/daprd")
    os.unlink(old)
    with open(old, "w") as f:
        f.write("#!/bin/sh\necho 1.14.4\n")
    os.chmod(old, 0o755)
    path = ["scripts/tools.sh", "path", "daprd"]
    p = subprocess.run(path, cwd=REPO, env=laptop, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and f"not using daprd 1.14.4 at {old}: the local loop needs " in p.stderr, p.stderr
    # $DAPRD comes first in the order: the built daprd there is taken.
    p = subprocess.run(path, cwd=REPO, env=dict(laptop, DAPRD=os.environ["DAPRD"]), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == os.environ["DAPRD"], p.stderr


def test_a_bad_port_value_is_refused(laptop):
    p = subprocess.run(["scripts/dev.sh"], cwd=REPO, env=dict(laptop, APP_PORT="80a"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "APP_PORT must be a port number (1-65535), not '80a'" in p.stderr


def test_the_tiltfile_refuses_a_bad_port_value(run_tiltfile, monkeypatch):
    monkeypatch.setenv("DAPR_HTTP_PORT", "70000")
    code, _, err = run_tiltfile("--local")
    assert code == 5 and "DAPR_HTTP_PORT must be a port number (1-65535), not '70000'" in err
