"""scripts/cluster.sh against stand-in tools: each of k3d, kubectl, helm, ... is a small script
that logs its arguments and answers the few queries the script makes. This checks what the
script would run (commands, URLs, pinned versions, order, the Rancher Desktop checks) without a
cluster; that those commands work against real clusters is checked only by running it."""

import re
import shutil
import subprocess

import pytest

from deploy_helpers import REPO

TOOLS = ["docker", "k3d", "nerdctl", "kubectl", "helm", "tilt", "cargo", "rustup", "spin"]
# A stand-in for every tool, answering from environment variables set by the test.
FAKE = r"""#!/bin/bash
name=${0##*/}
echo "$name $*" >> "$FAKE_LOG"
case "$name $*" in
  "kubectl config current-context") [ -n "$FAKE_CONTEXT" ] && echo "$FAKE_CONTEXT" ;;
  *" get nodes -o jsonpath="*) echo "${FAKE_RUNTIME:-containerd://1.7.27-k3s1}" ;;
  *" get runtimeclass wasmtime-spin-v2") [[ $FAKE_ABSENT != *runtimeclass* ]] ;;
  *" get crd spinapps.core.spinkube.dev") [[ $FAKE_ABSENT != *crd* ]] ;;
  *" get spinappexecutor containerd-shim-spin") [[ $FAKE_ABSENT != *executor* ]] ;;
  "k3d cluster get "*) [ -n "$FAKE_K3D_EXISTS" ] ;;
  "rustup target list --installed") echo wasm32-wasip2 ;;
  *" --version"|*" version"*) echo "$name fake 9.9" ;;
esac
"""


@pytest.fixture
def tools(tmp_path):
    """(run, log): run(*args, missing=(), **fake_env) runs cluster.sh with stand-ins on PATH
    (minus the `missing` ones); log() returns the commands they received."""
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    (fakes / "fake").write_text(FAKE)
    (fakes / "fake").chmod(0o755)
    utils = tmp_path / "utils"
    utils.mkdir()
    for util in ["bash", "dirname", "awk", "grep"]:
        (utils / util).symlink_to(shutil.which(util))
    log = tmp_path / "log"
    log.touch()

    def run(*args, missing=(), **fake_env):
        bin_dir = tmp_path / "bin"
        shutil.rmtree(bin_dir, ignore_errors=True)
        bin_dir.mkdir()
        for tool in TOOLS:
            if tool not in missing:
                (bin_dir / tool).symlink_to(fakes / "fake")
        env = {"PATH": f"{bin_dir}:{utils}", "FAKE_LOG": str(log), "HOME": str(tmp_path)}
        env.update({f"FAKE_{k.upper()}": v for k, v in fake_env.items()})
        return subprocess.run([str(utils / "bash"), str(REPO / "scripts/cluster.sh"), *args],
                              env=env, capture_output=True, text=True, timeout=60)

    def commands():
        return log.read_text().splitlines()

    return run, commands


def versions():
    env = dict(line.split("=", 1) for line in (REPO / "scripts/versions.env").read_text().splitlines()
               if line and not line.startswith("#"))
    go_mod = (REPO / "scripts/tools/daprd/go.mod").read_text()
    env["DAPR"] = re.search(r"github\.com/dapr/dapr v(\S+)", go_mod).group(1)
    return env


def index_of(commands, pattern):
    matches = [i for i, c in enumerate(commands) if re.search(pattern, c)]
    assert matches, f"no command matches {pattern!r} in:\n" + "\n".join(commands)
    return matches[0]


def test_up_k3d_creates_the_cluster_and_installs_everything_in_order(tools):
    run, commands = tools
    p = run("up", "k3d")
    assert p.returncode == 0, p.stderr
    v = versions()
    log = commands()
    ctx = "--context k3d-dapr-spin-hello"
    steps = [
        rf"^k3d cluster create dapr-spin-hello --image {re.escape(v['SHIM_K3D_IMAGE'])} .*--registry-create \S+",
        rf"^kubectl {ctx} apply -f https://github.com/cert-manager/cert-manager/releases/download/{v['CERT_MANAGER_VERSION']}/cert-manager.yaml$",
        rf"^kubectl {ctx} wait .*--namespace cert-manager",
        rf"^kubectl {ctx} apply -f https://github.com/spinframework/spin-operator/releases/download/v{v['SPIN_OPERATOR_VERSION']}/spin-operator.crds.yaml$",
        rf"^kubectl {ctx} apply -f \S+/v{v['SPIN_OPERATOR_VERSION']}/spin-operator.runtime-class.yaml$",
        rf"^helm --kube-context k3d-dapr-spin-hello upgrade --install spin-operator oci://ghcr.io/spinframework/charts/spin-operator --version {v['SPIN_OPERATOR_VERSION']} .*--wait",
        rf"^kubectl {ctx} apply -f \S+/v{v['SPIN_OPERATOR_VERSION']}/spin-operator.shim-executor.yaml$",
        rf"^helm \S+ \S+ upgrade --install dapr dapr --repo https://dapr.github.io/helm-charts/ --version {re.escape(v['DAPR'])} --namespace dapr-system .*--wait",
        rf"^helm \S+ \S+ upgrade --install dapr-dashboard dapr-dashboard .*--version {v['DAPR_DASHBOARD_CHART_VERSION']} .*--namespace dapr-system",
    ]
    positions = [index_of(log, step) for step in steps]
    assert positions == sorted(positions)
    # Every cluster call names the context, so the user's current context cannot redirect it.
    for command in log:
        if command.startswith("kubectl ") and command != "kubectl config current-context":
            assert command.startswith(f"kubectl {ctx} "), command


def test_up_k3d_reuses_an_existing_cluster(tools):
    run, commands = tools
    assert run("up", "k3d", k3d_exists="1").returncode == 0
    assert not [c for c in commands() if c.startswith("k3d cluster create")]
    index_of(commands(), r"^k3d cluster start dapr-spin-hello$")


def test_up_picks_rancher_desktop_from_the_current_context(tools):
    run, commands = tools
    p = run("up", context="rancher-desktop")
    assert p.returncode == 0, p.stderr
    log = commands()
    # Rancher Desktop brings its own shim and spin-operator: check them, install only Dapr.
    assert not [c for c in log if c.startswith("k3d ")]
    assert not [c for c in log if "spin-operator" in c or "cert-manager" in c]
    index_of(log, r"^kubectl --context rancher-desktop get runtimeclass wasmtime-spin-v2$")
    index_of(log, r"^helm --kube-context rancher-desktop upgrade --install dapr dapr ")


@pytest.mark.parametrize("absent, runtime, advice", [
    ("runtimeclass", None, "Enable Wasm"),
    ("crd", None, "Install Spin Operator"),
    ("", "docker://28.1.1", "containerd"),
])
def test_up_rancher_says_which_setting_is_missing(tools, absent, runtime, advice):
    run, commands = tools
    fake_env = {"absent": absent, **({"runtime": runtime} if runtime else {})}
    p = run("up", "rancher", **fake_env)
    assert p.returncode != 0
    assert "MISSING" in p.stdout and advice in p.stdout
    assert not [c for c in commands() if c.startswith("helm ")]


def test_up_rancher_adds_a_missing_shim_executor(tools):
    run, commands = tools
    assert run("up", "rancher", absent="executor").returncode == 0
    index_of(commands(), r"^kubectl --context rancher-desktop apply -f \S+/spin-operator.shim-executor.yaml$")


def test_doctor_passes_with_every_tool(tools):
    run, _ = tools
    p = run("doctor")
    assert p.returncode == 0, p.stdout + p.stderr
    for tool in ["docker", "k3d", "kubectl", "helm", "tilt", "cargo", "spin"]:
        assert re.search(rf"^  {tool} +{tool} fake 9.9$", p.stdout, re.M), p.stdout
    assert re.search(r"^  wasm32-wasip2 +installed$", p.stdout, re.M)


@pytest.mark.parametrize("missing, context, required", [
    ("helm", None, True),
    ("k3d", None, True),
    ("rustup", None, True),  # and with it the wasm32-wasip2 target
    ("spin", None, False),
    ("nerdctl", None, False),
    ("nerdctl", "rancher-desktop", True),
    ("k3d", "rancher-desktop", False),
])
def test_doctor_reports_missing_tools(tools, missing, context, required):
    run, _ = tools
    p = run("doctor", missing=(missing,), **({"context": context} if context else {}))
    assert (p.returncode != 0) == required, p.stdout + p.stderr
    kind = "required" if required else "optional"
    name = "wasm32-wasip2" if missing == "rustup" else missing
    assert re.search(rf"^  {name} +missing \({kind}\): \S", p.stdout, re.M), p.stdout


def test_down_deletes_only_the_k3d_cluster(tools):
    run, commands = tools
    assert run("down", k3d_exists="1").returncode == 0
    assert [c for c in commands() if not c.startswith("k3d cluster get")] == ["k3d cluster delete dapr-spin-hello"]
