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


# ---- item: one table of tools (scripts/lib/tools_table.sh), read by tools.sh and the doctor

TABLE = REPO / "scripts/lib/tools_table.sh"


def table_rows():
    """{tool: [tool, pin, min, build, key, binary, hint]} as the table writes them."""
    body = TABLE.read_text().split("<<'EOF'", 1)[1].split("\nEOF\n", 1)[0]
    return {row[0]: row for row in (line.split(None, 6) for line in body.splitlines()[1:])
            if row and not row[0].startswith("#")}


def table(*calls):
    """What each shell call prints in a bash that sourced the table (with -u, as tools.sh runs)."""
    script = "set -euo pipefail; repo=$PWD; . scripts/lib/tools_table.sh; " + "; ".join(calls)
    p = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    return p.stdout.splitlines()


def go_mod_pin(directory, module):
    return re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (\S+)", (REPO / f"scripts/tools/{directory}/go.mod").read_text(), re.M).group(1)


def test_every_tool_built_from_source_has_one_recipe_and_every_recipe_a_line():
    rows = table_rows()
    built = {tool.replace("-", "_") for tool, row in rows.items() if row[3] != "-"}
    # build_needs and build_pinned are tools.sh's own, not recipes.
    recipes = set(re.findall(r"^build_(\w+)\(\) \{", (REPO / "scripts/tools.sh").read_text(), re.M)) - {"needs", "pinned"}
    assert sorted(recipes) == sorted(built)
    assert {row[3] for row in rows.values()} == {"cargo", "go", "-"}


def test_the_pins_are_the_tools_modules_and_name_the_cache_folders():
    rows = table_rows()
    from_go_mod = {tool: go_mod_pin(*row[1].split(":", 1)) for tool, row in rows.items() if ":" in row[1]}
    assert set(from_go_mod) == {"daprd", "tilt", "etcd", "kube", "containerd", "coredns", "helm", "spin-operator",
                                "dapr-control-plane"}
    assert table(*(f"tool_pin {tool}" for tool in from_go_mod)) == list(from_go_mod.values())
    # Dapr's control plane is the same Dapr as daprd.
    assert from_go_mod["dapr-control-plane"] == from_go_mod["daprd"]
    # Each binary the simulated cluster starts is in its tool's folder, TOOL-PIN[-HASH].
    out = subprocess.run(["scripts/tools.sh", "sim-paths"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folders = {os.path.basename(os.path.dirname(path)) for name, path in (line.split() for line in out.splitlines()) if name != "cni"}
    for tool in set(from_go_mod) - {"tilt"}:
        assert [f for f in folders if re.fullmatch(rf"{re.escape(tool)}-{re.escape(from_go_mod[tool])}(-[0-9a-f]{{8}})?", f)], (tool, folders)


def test_the_minimum_versions_follow_the_pins():
    dapr = go_mod_pin("daprd", "github.com/dapr/dapr").lstrip("v").split(".")
    tilt = go_mod_pin("tilt", "github.com/tilt-dev/tilt").lstrip("v").split(".")
    wasmtime = table_rows()["wasmtime"][1].split(".")
    expected = {"daprd": f"{dapr[0]}.{int(dapr[1]) - 2}",  # Dapr supports its newest three minor versions
                "tilt": ".".join(tilt[:2]), "wasmtime": wasmtime[0], "spin": "3.6", "redis-server": "5", "etcd": "-"}
    assert table(*(f"tool_min {tool}" for tool in expected)) == list(expected.values())


def test_wasmtimes_hint_is_spins_with_its_minimum():
    [wasmtime, spin] = table("tool_hint wasmtime", "tool_hint spin")
    assert wasmtime == spin and spin.startswith("install Spin 3.6 or newer: curl -fsSL https://spinframework.dev/")


@pytest.mark.parametrize("minor_offset, taken", [(0, True), (-1, False)], ids=["the tested minor", "one older"])
def test_an_installed_tilt_is_taken_from_the_tested_minor_on(machine, minor_offset, taken):
    major, minor = table("tool_min tilt")[0].split(".")
    version = f"{major}.{int(minor) + minor_offset}.0"
    machine.stand_in("tilt", f'echo "v{version}, built 2026-01-01"')
    p = machine.tools_sh("path", "tilt")
    if taken:
        assert p.returncode == 0 and p.stdout == f"{machine.bin}/tilt\n", p.stderr
    else:
        assert p.returncode == 1 and p.stdout == "", p.stdout
        assert f"not using tilt {version} at {machine.bin}/tilt: the local loop needs {major}.{minor} or newer" in p.stderr


def test_path_of_a_tool_not_in_the_table_names_the_table(machine):
    p = machine.tools_sh("path", "kubectl")
    assert p.returncode == 2 and "no tool 'kubectl' in the table of tools" in p.stderr and " daprd " in p.stderr, p.stderr


def test_one_have_and_the_pins_read_only_through_the_table():
    files = subprocess.run(["git", "ls-files", "scripts"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    texts = {f: (REPO / f).read_text(errors="replace") for f in files if f.endswith(".sh")}
    assert [f for f, text in texts.items() if re.search(r"^\s*have\(\)", text, re.M)] == ["scripts/lib/tools_table.sh"]
    # go_mod_version is defined in lib/version.sh; only the table's tool_pin calls it.
    assert [f for f, text in texts.items() if re.search(r"\bgo_mod_version +[\"$]", text)] == ["scripts/lib/tools_table.sh"]
