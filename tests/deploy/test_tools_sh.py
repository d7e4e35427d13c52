"""scripts/tools.sh and scripts/local.sh on machines that lack things, with stand-ins: a PATH
of bash and the base utilities only, plus small stand-in scripts for go, apt-get, systemctl
and daprd that say what a real one would in that situation. What they model: no Go, an old Go,
a build that fails midway, apt starting a system Redis under systemd, a daprd started twice."""

import os
import re
import shutil
import socket
import subprocess
from contextlib import ExitStack

import pytest

from deploy_helpers import REPO

# What tools.sh and local.sh run besides the tools they look for.
BASE_UTILS = ["bash", "dirname", "basename", "awk", "sed", "grep", "cut", "sort", "paste", "head", "sha256sum",
              "mktemp", "rm", "cp", "mv", "mkdir", "chmod", "cat", "tr", "env", "uname", "ls", "sleep", "id"]


def go_min(tool):
    """The Go version a tools module asks for, as major.minor."""
    version = re.search(r"^go (\S+)", (REPO / f"scripts/tools/{tool}/go.mod").read_text(), re.M).group(1)
    return ".".join(version.split(".")[:2])


class Machine:
    """A HOME, an empty tools cache, a TMPDIR to watch, and a PATH of BASE_UTILS plus stand-ins."""

    def __init__(self, root):
        self.bin = root / "bin"
        self.tmp = root / "tmp"
        self.log = root / "log"
        for d in (self.bin, self.tmp, root / "home"):
            d.mkdir()
        for util in BASE_UTILS:
            (self.bin / util).symlink_to(shutil.which(util))
        self.log.write_text("")
        self.cache = root / "home/.cache/dapr-spin-hello"
        self.env = {"PATH": str(self.bin), "HOME": str(root / "home"), "TMPDIR": str(self.tmp),
                    "DAPR_SPIN_HELLO_CACHE": str(self.cache), "STAND_IN_LOG": str(self.log)}

    def stand_in(self, name, script):
        """A stand-in: a /bin/sh script that logs its arguments, then runs `script`."""
        path = self.bin / name
        path.unlink(missing_ok=True)
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STAND_IN_LOG"\n{script}\n')
        path.chmod(0o755)

    def tools_sh(self, *args, **env):
        return subprocess.run([str(self.bin / "bash"), str(REPO / "scripts/tools.sh"), *args],
                              env={**self.env, **env}, capture_output=True, text=True, timeout=120)

    def commands(self):
        return self.log.read_text().splitlines()


@pytest.fixture
def machine(tmp_path):
    return Machine(tmp_path)


# ---- item: everything a build needs is checked before the first build starts

def go_stand_in(version):
    """A Go that reports `version` and fails anything else, as a build without network would."""
    return f'[ "$1 $2" = "env GOVERSION" ] && {{ echo go{version}; exit 0; }}\necho "go: stand-in: no network" >&2; exit 1'


def assert_nothing_built(machine, p):
    assert "building" not in p.stderr, p.stderr
    assert not os.listdir(machine.tmp), "a temp dir was left behind"
    assert not machine.cache.exists() or not any(machine.cache.iterdir())


def test_dev_on_a_bare_machine_names_all_that_is_missing_before_any_build(machine):
    p = machine.tools_sh("dev", "local")
    assert p.returncode == 1 and p.stdout == "", p.stdout + p.stderr
    assert "nothing was built" in p.stderr
    for line in [
        "rust: rustup (https://rustup.rs)",
        f"tilt: must be built from source, which needs Go {go_min('tilt')} or newer (https://go.dev/dl/); or, instead, install Tilt: curl -fsSL https://raw.githubusercontent.com/tilt-dev/tilt/master/scripts/install.sh | bash",
        "wasmtime: must be built from source, which needs Rust's cargo (https://rustup.rs); or, instead, install Spin",
        f"daprd: must be built from source, which needs Go {go_min('daprd')} or newer (https://go.dev/dl/); or, instead, install the Dapr CLI",
    ]:
        assert line in p.stderr, p.stderr
    assert "then run dapr init" in p.stderr
    assert "WSL" not in p.stderr
    assert_nothing_built(machine, p)


def test_dev_cluster_needs_only_tilt(machine):
    p = machine.tools_sh("dev", "cluster")
    assert p.returncode == 1
    assert "tilt: must be built from source" in p.stderr
    assert not re.search(r"^  (rust|wasmtime|daprd):", p.stderr, re.M), p.stderr
    assert_nothing_built(machine, p)


def test_an_old_go_is_named_with_its_version(machine):
    machine.stand_in("go", go_stand_in("1.22.1"))
    p = machine.tools_sh("dev", "cluster")
    assert p.returncode == 1
    assert f"needs Go {go_min('tilt')} or newer, not 1.22.1 (https://go.dev/dl/)" in p.stderr, p.stderr
    assert_nothing_built(machine, p)


def test_on_wsl_windows_side_tools_are_named(machine):
    p = machine.tools_sh("dev", "cluster", WSL_DISTRO_NAME="Ubuntu")
    assert p.returncode == 1
    assert "On WSL, tools installed only on the Windows side (tilt.exe, dapr.exe, go.exe) do not count" in p.stderr


def test_tools_all_checks_every_builder_before_the_first_build(machine):
    # CI's path: the pinned builds only, so no "install it instead".
    p = machine.tools_sh("all")
    assert p.returncode == 1
    for tool in ("rust", "wasmtime", "daprd", "tilt"):
        assert re.search(rf"^  {tool}: ", p.stderr, re.M), p.stderr
    assert "instead" not in p.stderr
    assert "redis-server is not installed" not in p.stderr  # stopped before installing anything
    assert_nothing_built(machine, p)


@pytest.mark.parametrize("tool", ["daprd", "tilt"])
def test_a_failed_build_leaves_no_temp_dir(machine, tool):
    machine.stand_in("go", go_stand_in("1.26.8"))
    p = machine.tools_sh(tool)
    assert p.returncode != 0
    assert "go: stand-in: no network" in p.stderr
    assert re.search(rf"^tools: {tool} +\S+ +building ", p.stderr, re.M), p.stderr  # it did start
    assert not os.listdir(machine.tmp), os.listdir(machine.tmp)


# ---- item: apt's redis-server starts a system Redis on 6379 under systemd

REDIS_SERVER = '#!/bin/sh\necho "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=0"\n'


@pytest.fixture
def apt_machine(machine):
    """A Debian machine without redis-server: apt-get install puts one on PATH."""
    machine.stand_in("apt-get", f'case "$*" in *install*) printf \'%s\' \'{REDIS_SERVER}\' > "{machine.bin}/redis-server"; '
                                f'chmod +x "{machine.bin}/redis-server" ;; esac')
    machine.stand_in("id", "echo 0")  # root, so as_root runs the command itself
    return machine


def test_apts_system_redis_is_stopped_and_disabled(apt_machine):
    apt_machine.stand_in("systemctl", '[ "$1" = is-active ] && exit 0; exit 0')  # apt started it
    p = apt_machine.tools_sh("redis")
    assert p.returncode == 0, p.stderr
    commands = apt_machine.commands()
    assert "systemctl disable --now --quiet redis-server" in commands, commands
    assert commands.index("systemctl disable --now --quiet redis-server") > next(
        i for i, c in enumerate(commands) if c.startswith("apt-get install"))
    assert "stopped and disabled it, so local mode starts its own in-memory Redis" in p.stderr


@pytest.mark.parametrize("systemctl", [None, "echo 'System has not been booted with systemd as init system (PID 1).' >&2; exit 1"],
                         ids=["no systemctl", "no systemd (WSL, containers)"])
def test_without_systemd_nothing_is_disabled(apt_machine, systemctl):
    if systemctl:
        apt_machine.stand_in("systemctl", systemctl)
    p = apt_machine.tools_sh("redis")
    assert p.returncode == 0, p.stderr
    assert not [c for c in apt_machine.commands() if c.startswith("systemctl disable")]
    assert "stopped and disabled" not in p.stderr


# ---- item: local.sh daprd on another Redis port makes no temp dir per start

def test_local_daprd_on_another_redis_port_reuses_one_folder(tmp_path):
    record = tmp_path / "daprd-args"
    daprd = tmp_path / "daprd"
    daprd.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo 1.18.1; exit 0; }}\necho "$*" >> "{record}"\n')
    daprd.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(4)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        http, grpc, metrics, redis = (str(s.getsockname()[1]) for s in sockets)
    env = dict(os.environ, DAPRD=str(daprd), TMPDIR=str(tmp), REDIS_PORT=redis, DAPR_HTTP_PORT=http,
               DAPR_GRPC_PORT=grpc, DAPR_METRICS_PORT=metrics, HOME=str(tmp_path))
    folder = REPO / f"target/local-dapr-components-{redis}"
    try:
        for _ in range(2):
            p = subprocess.run(["scripts/local.sh", "daprd"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
        paths = [re.search(r"--resources-path (\S+)", line).group(1) for line in record.read_text().splitlines()]
        assert paths == [str(folder.relative_to(REPO))] * 2
        assert f"localhost:{redis}" in (folder / "statestore.yaml").read_text()
        assert sorted(f.name for f in folder.iterdir()) == sorted(f.name for f in (REPO / "scripts/dapr").glob("*.yaml"))
        assert not os.listdir(tmp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
