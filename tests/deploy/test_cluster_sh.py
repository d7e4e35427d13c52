"""scripts/cluster.sh against stand-in tools (stand_in_tools.py): kubectl, helm, kind, k3d,
docker, nerdctl and rdctl answer from a model of the laptop and its cluster, and log what they
were asked. No engine or cluster exists on the test machine, so this checks what the script
runs (commands, pinned versions, order), what it checks and what it refuses; that those
commands work against real clusters is only known from running it on one (README).

Each cluster starts as upstream sets it up:
- Rancher Desktop >= 1.17 with WebAssembly and "Install Spin Operator": one RuntimeClass per
  shim, named after it (`spin`, handler spin), k3s's own RuntimeClasses skipped, and its
  SpinAppExecutor containerd-shim-spin naming `spin` (rancher-desktop's backendHelper.ts
  configureRuntimeClasses and assets/scripts/spin-operator.yaml). Before 1.17 its
  spin-operator used the API group core.spinoperator.dev, and rdctl printed 1.1.0 until 1.19.
- k3d: k3s's runtimes manifest (`spin` among others), then what cluster.sh applies: SpinKube's
  RuntimeClass wasmtime-spin-v2 and the executor naming it (spin-operator's samples).
- kind: no RuntimeClass at all, until cluster.sh applies SpinKube's."""

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_helpers import REPO, dapr_source, pinned_versions, spin_operator_source

STAND_IN = Path(__file__).resolve().parent / "stand_in_tools.py"
TOOLS = ["docker", "kind", "k3d", "nerdctl", "rdctl", "kubectl", "helm", "tilt", "cargo", "rustup", "spin"]
# Commands that change something (a server-side dry run does not); after a failed preflight
# none may have run.
CHANGES = re.compile(r"^(kubectl \S+ \S+ (apply(?! --dry-run=server)|wait)|helm .* upgrade|k3d cluster (create|start|delete)"
                     r"|kind (create|delete)|docker (run|start|exec|network|rm))\b")
SHELL_ERRORS = re.compile(r"command not found|line \d+:|unbound variable|syntax error")


def laptop(context=None, clusters=None, docker=True, containerd=True, rdctl=None):
    return {"context": context, "engines": {"docker": docker, "containerd": containerd},
            "clusters": clusters or {}, "kind_clusters": [], "k3d_clusters": [], "containers": {},
            "rdctl": rdctl}


def rancher_desktop(version="1.23.0"):
    """Rancher Desktop as its settings leave it, from 1.17 on."""
    cluster = {"answers": True, "runtime": "containerd://2.1.4", "runtime_classes": {"spin": "spin"},
               "crds": ["spinapps.core.spinkube.dev", "spinappexecutors.core.spinkube.dev"],
               "executors": {"containerd-shim-spin": "spin"}, "installed": ["cert-manager", "spin-operator"],
               "config_maps": {}, "pods": {}, "webhook_refusals": 0}
    return laptop("rancher-desktop", {"rancher-desktop": cluster},
                  rdctl=f"rdctl client version: v{version}, targeting server version: v1")


def rancher_desktop_before_1_17():
    state = rancher_desktop()
    cluster = state["clusters"]["rancher-desktop"]
    cluster["crds"] = ["spinapps.core.spinoperator.dev", "spinappexecutors.core.spinoperator.dev"]
    cluster["executors"] = {}
    state["rdctl"] = "rdctl client version: 1.1.0, targeting server version: v1"
    return state


@pytest.fixture
def cluster_sh(tmp_path):
    """cluster_sh(*args, state=..., missing=()) runs scripts/cluster.sh with the stand-ins on
    PATH (minus `missing`) on the laptop `state`. Returns (process, commands, state after)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for util in ["bash", "dirname", "awk", "grep", "sed", "sleep"]:
        (bin_dir / util).symlink_to(shutil.which(util))
    log, state_file = tmp_path / "log", tmp_path / "state.json"

    def run(*args, state, missing=()):
        for tool in TOOLS:
            (bin_dir / tool).unlink(missing_ok=True)
            if tool not in missing:
                (bin_dir / tool).write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" {tool} "$@"\n')
                (bin_dir / tool).chmod(0o755)
        log.write_text("")
        state_file.write_text(json.dumps(state))
        env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FAKE_LOG": str(log), "FAKE_STATE": str(state_file),
               "FAKE_SPIN_OPERATOR": str(spin_operator_source())}
        p = subprocess.run([str(bin_dir / "bash"), str(REPO / "scripts/cluster.sh"), *args],
                           env=env, capture_output=True, text=True, timeout=120)
        assert not SHELL_ERRORS.search(p.stdout + p.stderr), p.stdout + p.stderr
        return p, log.read_text().splitlines(), json.loads(state_file.read_text())

    return run


def index_of(commands, pattern):
    matches = [i for i, c in enumerate(commands) if re.search(pattern, c)]
    assert matches, f"no command matches {pattern!r} in:\n" + "\n".join(commands)
    return matches[0]


def assert_in_order(commands, patterns):
    positions = [index_of(commands, p) for p in patterns]
    assert positions == sorted(positions), list(zip(patterns, positions))


def assert_ready(p, context):
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.rstrip().endswith(f"==> ready: context {context}. Next: tilt up"), p.stdout


def spin_operator_steps(ctx):
    v = pinned_versions()
    release = f"https://github.com/spinframework/spin-operator/releases/download/v{v['SPIN_OPERATOR_VERSION']}"
    return [
        rf"^kubectl --context {ctx} apply -f https://github.com/cert-manager/cert-manager/releases/download/{v['CERT_MANAGER_VERSION']}/cert-manager.yaml$",
        rf"^kubectl --context {ctx} wait .*--namespace cert-manager",
        rf"^kubectl --context {ctx} apply --dry-run=server -f -$",  # cert-manager's webhook answers
        rf"^kubectl --context {ctx} apply -f {release}/spin-operator.crds.yaml$",
        rf"^kubectl --context {ctx} apply -f {release}/spin-operator.runtime-class.yaml$",
        rf"^helm --kube-context {ctx} upgrade --install spin-operator oci://ghcr.io/spinframework/charts/spin-operator --version {v['SPIN_OPERATOR_VERSION']} .*--wait",
        rf"^kubectl --context {ctx} apply -f {release}/spin-operator.shim-executor.yaml$",
    ]


def dapr_and_ready_steps(ctx):
    v = pinned_versions()
    return [
        rf"^helm --kube-context {ctx} upgrade --install dapr dapr --repo https://dapr.github.io/helm-charts/ --version {re.escape(v['DAPR'])} --namespace dapr-system .*--set dapr_operator.watchInterval=10s .*--wait",
        rf"^helm --kube-context {ctx} upgrade --install dapr-dashboard dapr-dashboard .*--version {v['DAPR_DASHBOARD_CHART_VERSION']} .*--namespace dapr-system",
        rf"^kubectl --context {ctx} apply --dry-run=server -f {REPO}/kubernetes/base/spinapp.yaml$",
        rf"^kubectl --context {ctx} get endpointslices --namespace dapr-system -l kubernetes.io/service-name=dapr-sidecar-injector ",
    ]


def assert_every_call_names(commands, ctx):
    # The user's current context cannot redirect a call.
    for command in commands:
        if command.startswith("kubectl ") and command not in ("kubectl config current-context", "kubectl version --client",
                                                               f"kubectl config use-context {ctx}"):
            assert command.startswith(f"kubectl --context {ctx} "), command
        if command.startswith("helm ") and command != "helm version --short":
            assert command.startswith(f"helm --kube-context {ctx} "), command


def executor_chain(state, ctx):
    cluster = state["clusters"][ctx]
    runtime_class = cluster["executors"]["containerd-shim-spin"]
    return runtime_class, cluster["runtime_classes"][runtime_class]


# ---- the three clusters, each to its "ready" line

def test_up_kind_creates_the_cluster_registry_and_installs_everything_in_order(cluster_sh):
    p, log, state = cluster_sh("up", "--kind", state=laptop())
    ctx = "kind-dapr-spin-hello"
    assert_ready(p, ctx)
    v = pinned_versions()
    assert_in_order(log, [
        rf"^kind create cluster --name dapr-spin-hello --image {re.escape(v['SHIM_KIND_IMAGE'])} --config {REPO}/scripts/cluster/kind.yaml",
        rf"^docker run -d --restart=always -p 127.0.0.1:5112:5000 .*--name dapr-spin-hello-kind-registry {v['KIND_REGISTRY_IMAGE']}$",
        r"^docker exec -i dapr-spin-hello-control-plane cp /dev/stdin /etc/containerd/certs.d/localhost:5112/hosts.toml$",
        r"^docker network connect kind dapr-spin-hello-kind-registry$",
        rf"^kubectl --context {ctx} apply -f -$",
        *spin_operator_steps(ctx),
        *dapr_and_ready_steps(ctx),
    ])
    assert_every_call_names(log, ctx)
    # Tilt finds the registry where kind's docs announce it (KEP-1755).
    hosting = yaml.safe_load(state["clusters"][ctx]["config_maps"]["kube-public/local-registry-hosting"]["localRegistryHosting.v1"])
    assert hosting["host"] == "localhost:5112"
    assert state["containers"]["dapr-spin-hello-kind-registry"] == ["bridge", "kind"]
    # SpinKube's executor, on SpinKube's RuntimeClass, on the runtime kind.yaml registers.
    assert executor_chain(state, ctx) == ("wasmtime-spin-v2", "spin")
    # kubectl and `tilt up` go to the new cluster.
    assert state["context"] == ctx


def test_kind_config_registers_the_spin_shim_with_containerd():
    # The kind node image only ships the binary; containerd learns of it from this patch
    # (SpinKube's kind quickstart). The handler is what the RuntimeClass names.
    config = yaml.safe_load((REPO / "scripts/cluster/kind.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    [patch] = config["containerdConfigPatches"]
    assert '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.spin]' in patch
    assert 'runtime_type = "io.containerd.spin.v2"' in patch


def test_kind_image_is_the_shims_newest_0_25():
    # From v0.25 the shim's release publishes a kind node image, and no more k3d images.
    assert re.fullmatch(r"ghcr\.io/spinframework/containerd-shim-spin/kind:v0\.25\.\d+", pinned_versions()["SHIM_KIND_IMAGE"])


def test_up_kind_reuses_an_existing_cluster_and_registry(cluster_sh):
    _, _, state = cluster_sh("up", "--kind", state=laptop())
    p, log, _ = cluster_sh("up", "--kind", state=state)
    assert_ready(p, "kind-dapr-spin-hello")
    assert not [c for c in log if c.startswith(("kind create", "docker run", "docker network"))], log
    index_of(log, r"^docker start dapr-spin-hello-kind-registry$")


def test_up_k3d_creates_the_cluster_and_installs_everything_in_order(cluster_sh):
    p, log, state = cluster_sh("up", "--k3d", state=laptop())
    ctx = "k3d-dapr-spin-hello"
    assert_ready(p, ctx)
    assert_in_order(log, [
        rf"^k3d cluster create dapr-spin-hello --image {re.escape(pinned_versions()['SHIM_K3D_IMAGE'])} .*--registry-create \S+",
        *spin_operator_steps(ctx),
        *dapr_and_ready_steps(ctx),
    ])
    assert_every_call_names(log, ctx)
    # k3s's own `spin` stays; the executor uses the applied wasmtime-spin-v2, same handler.
    assert state["clusters"][ctx]["runtime_classes"]["spin"] == "spin"
    assert executor_chain(state, ctx) == ("wasmtime-spin-v2", "spin")
    assert state["context"] == ctx


def test_up_k3d_reuses_an_existing_cluster(cluster_sh):
    _, _, state = cluster_sh("up", "--k3d", state=laptop())
    p, log, _ = cluster_sh("up", "--k3d", state=state)
    assert_ready(p, "k3d-dapr-spin-hello")
    assert not [c for c in log if c.startswith("k3d cluster create")]
    index_of(log, r"^k3d cluster start dapr-spin-hello$")


# ---- one default cluster, k3d: its node image's shim (Spin 3.6.3) is the one the tests run

@pytest.mark.parametrize("context", [None, "docker-desktop", "kind-kind"])
def test_up_without_a_flag_makes_k3d_unless_the_context_is_one_of_its_clusters(cluster_sh, context):
    p, log, _ = cluster_sh("up", state=laptop(context))
    assert_ready(p, "k3d-dapr-spin-hello")
    index_of(log, r"^k3d cluster create dapr-spin-hello ")
    assert not [c for c in log if c.startswith("kind ")], log


def test_up_without_a_flag_keeps_the_kind_cluster_it_made(cluster_sh):
    _, _, state = cluster_sh("up", "--kind", state=laptop())
    p, log, _ = cluster_sh("up", state=state)  # the context is kind-dapr-spin-hello now
    assert_ready(p, "kind-dapr-spin-hello")
    assert not [c for c in log if c.startswith("k3d ")], log


def test_the_tiltfile_and_dev_sh_name_the_same_default():
    # In the Tiltfile kind and k3d build alike, so its default shows only in what it says.
    tiltfile = (REPO / "Tiltfile").read_text()
    assert re.search(r"config\.define_string\('cluster', usage='[^']*; else k3d\)'", tiltfile)
    assert re.search(r"^    else:\n        default_cluster = 'k3d'$", tiltfile, re.M)
    assert "k3d by default" in (REPO / "scripts/dev.sh").read_text()


@pytest.mark.parametrize("version", ["1.23.0", "1.24.0"])
def test_up_on_rancher_desktop_uses_its_own_runtime_class_and_executor(cluster_sh, version):
    state = rancher_desktop(version)
    p, log, after = cluster_sh("up", state=state)  # the current context picks it
    assert_ready(p, "rancher-desktop")
    assert_in_order(log, dapr_and_ready_steps("rancher-desktop"))
    assert_every_call_names(log, "rancher-desktop")
    # Nothing of its own SpinKube is installed a second time, and its wiring is left alone.
    assert not [c for c in log if c.startswith(("k3d ", "kind ")) or "spin-operator" in c or "cert-manager" in c], log
    assert after["clusters"]["rancher-desktop"]["runtime_classes"] == {"spin": "spin"}
    assert executor_chain(after, "rancher-desktop") == ("spin", "spin")
    assert "containerd-shim-spin → RuntimeClass spin → handler spin" in p.stdout


def test_up_waits_for_spin_operators_webhook(cluster_sh):
    # Its webhook (failurePolicy Fail) refuses applies for a while after the operator starts.
    state = rancher_desktop()
    state["clusters"]["rancher-desktop"]["webhook_refusals"] = 1
    p, log, _ = cluster_sh("up", "--rancher", state=state)
    assert_ready(p, "rancher-desktop")
    assert len([c for c in log if "--dry-run=server" in c]) == 2


def test_dapr_watchdog_setting_exists_in_the_pinned_chart():
    # --set dapr_operator.watchInterval=10s must name a real value of the pinned Dapr chart.
    values = yaml.safe_load((dapr_source() / "charts/dapr/charts/dapr_operator/values.yaml").read_text())
    assert values["watchInterval"] == "0"  # off unless set
    assert "--set dapr_operator.watchInterval=10s" in (REPO / "scripts/cluster.sh").read_text()


@pytest.mark.parametrize("flag", ["--kind", "--k3d"])
def test_up_waits_for_cainjector_before_spin_operators_chart(cluster_sh, flag):
    # cert-manager's Deployments are Available before cainjector has injected its webhook's CA
    # bundle; the stand-in helm fails spin-operator's chart (it makes a Certificate) until then.
    state = laptop()
    state["cainjector_lag"] = 3
    p, log, _ = cluster_sh("up", flag, state=state)
    ctx = f"{flag[2:]}-dapr-spin-hello"
    assert_ready(p, ctx)
    checks = [i for i, c in enumerate(log) if c == f"kubectl --context {ctx} apply --dry-run=server -f -"]
    assert len(checks) == 4, log
    [chart] = [i for i, c in enumerate(log) if re.match(rf"helm --kube-context {ctx} upgrade --install spin-operator ", c)]
    assert checks[-1] < chart
    assert "cert-manager's webhook accepts a Certificate" in p.stdout


def test_up_starts_a_stopped_kind_cluster(cluster_sh):
    # After a reboot or `docker stop`, kind lists the cluster but its node container is stopped.
    _, _, state = cluster_sh("up", "--kind", state=laptop())
    state["clusters"]["kind-dapr-spin-hello"]["answers"] = False
    p, log, _ = cluster_sh("up", "--kind", state=state)
    assert_ready(p, "kind-dapr-spin-hello")
    assert_in_order(log, [r"^docker start dapr-spin-hello-control-plane$", r"^kubectl --context kind-dapr-spin-hello get --raw /readyz"])
    assert not [c for c in log if c.startswith("kind create")], log


@pytest.mark.parametrize("flag", ["--kind", "--k3d"])
@pytest.mark.parametrize("command", ["up", "doctor"])
def test_a_cgroup_v1_host_is_refused_before_anything_changes(cluster_sh, command, flag):
    # Kubernetes 1.35 in both node images refuses cgroup v1; kind would say only "failed to create cluster".
    state = laptop()
    state["cgroup"] = "1"
    p, log, after = cluster_sh(command, flag, state=state)
    assert p.returncode != 0
    assert re.search(r"^  cgroup +v1, which the node image's Kubernetes 1.35 refuses", p.stdout, re.M), p.stdout
    assert "systemd.unified_cgroup_hierarchy=1" in p.stdout and "cgroup_no_v1=all" in p.stdout
    assert not [c for c in log if CHANGES.search(c)], log
    assert after == state


def test_a_kind_older_than_the_node_image_is_refused(cluster_sh):
    state = laptop()
    state["kind_version"] = "v0.29.0"
    p, log, after = cluster_sh("up", "--kind", state=state)
    assert p.returncode != 0
    assert re.search(r"^  kind +v0.29.0 too old: the shim's node image \(Kubernetes 1.35\) needs kind 0.31.0 or newer", p.stdout, re.M), p.stdout
    assert not [c for c in log if CHANGES.search(c)], log


@pytest.mark.parametrize("release, namespace, status, remedy", [
    ("spin-operator", "spin-operator", "pending-install", "uninstall spin-operator --namespace spin-operator"),
    ("dapr", "dapr-system", "pending-upgrade", "rollback dapr --namespace dapr-system"),
])
def test_a_helm_release_stuck_pending_is_explained(cluster_sh, release, namespace, status, remedy):
    # An `up` interrupted mid-install leaves the release pending; Helm then refuses it with only
    # "another operation (install/upgrade/rollback) is in progress".
    _, _, state = cluster_sh("up", "--kind", state=laptop())
    state["clusters"]["kind-dapr-spin-hello"]["releases"][release] = status
    p, log, _ = cluster_sh("up", "--kind", state=state)
    assert p.returncode != 0
    assert f"Helm release {release} (namespace {namespace}) is stuck in {status}" in p.stderr, p.stderr
    assert f"helm --kube-context kind-dapr-spin-hello {remedy}" in p.stderr
    assert "another operation" not in p.stderr
    assert not [c for c in log if re.match(rf"helm \S+ \S+ upgrade --install {release} ", c)], log


def test_a_failed_step_is_named_and_rerunning_is_offered(cluster_sh):
    state = laptop()
    state["helm_fails"] = ["dapr"]
    p, _, _ = cluster_sh("up", "--kind", state=state)
    assert p.returncode != 0
    assert "Error: UPGRADE FAILED: release dapr failed" in p.stderr  # the tool's own error, then ours
    assert re.search(r'up stopped at the step "Dapr \S+ \(control plane in dapr-system.*\(exit 1\)\. Running it again is safe', p.stderr), p.stderr
    assert "scripts/cluster.sh up --kind" in p.stderr


# ---- Rancher Desktop: versions and settings

def test_up_refuses_rancher_desktop_before_1_17(cluster_sh):
    state = rancher_desktop_before_1_17()
    p, log, after = cluster_sh("up", "--rancher", state=state)
    assert p.returncode != 0
    assert "Rancher Desktop below 1.17" in p.stdout and "upgrade Rancher Desktop to 1.23 or later" in p.stdout
    assert "older than 1.19" in p.stdout
    assert "nothing was changed" in p.stderr
    assert "stopped at the step" not in p.stderr  # a failed preflight is not a failed step
    assert not [c for c in log if CHANGES.search(c)], log
    assert after == state


@pytest.mark.parametrize("change, advice", [
    (lambda c: c.update(runtime_classes={}), "WebAssembly (Wasm)"),
    (lambda c: c.update(crds=[], executors={}), "Install Spin Operator"),
    (lambda c: c.update(executors={}), "no SpinAppExecutor containerd-shim-spin"),
    (lambda c: c.update(runtime="docker://28.1.1"), "containerd"),
])
def test_up_rancher_names_the_missing_setting_and_changes_nothing(cluster_sh, change, advice):
    state = rancher_desktop()
    change(state["clusters"]["rancher-desktop"])
    p, log, after = cluster_sh("up", "--rancher", state=state)
    assert p.returncode != 0
    assert advice in p.stdout, p.stdout
    assert not [c for c in log if CHANGES.search(c)], log
    assert after == state


@pytest.mark.parametrize("version, expected", [
    ("1.23.1", "1.23.1: containerd-shim-spin 0.24.0, Spin 3.6.3"),
    ("1.24.0", "1.24.0: containerd-shim-spin 0.25.1, Spin 4.0.1"),
    ("1.20.0", "1.20.0: containerd-shim-spin 0.20.0, Spin 3.3.1; 1.23 or later recommended"),
])
def test_doctor_reports_rancher_desktop_shim_and_spin(cluster_sh, version, expected):
    _, _, state = cluster_sh("up", state=rancher_desktop(version))
    p, _, _ = cluster_sh("doctor", state=state)
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(rf"^  rancher-desktop +{re.escape(expected)}", p.stdout, re.M), p.stdout


# ---- the preflight (up) and doctor: missing tools, engines that do not answer

@pytest.mark.parametrize("flag, missing, name", [
    ("--kind", "kind", "kind"),
    ("--kind", "docker", "docker"),
    ("--kind", "helm", "helm"),
    ("--k3d", "k3d", "k3d"),
    ("--k3d", "kubectl", "kubectl"),
    ("--rancher", "nerdctl", "nerdctl"),
])
@pytest.mark.parametrize("command", ["up", "doctor"])
def test_a_missing_tool_is_named_and_nothing_changes(cluster_sh, command, flag, missing, name):
    state = rancher_desktop() if flag == "--rancher" else laptop()
    p, log, after = cluster_sh(command, flag, state=state, missing=(missing,))
    assert p.returncode != 0
    assert re.search(rf"^  {name} +missing: \S", p.stdout, re.M), p.stdout
    assert not [c for c in log if CHANGES.search(c)], log
    assert after == state


@pytest.mark.parametrize("flag, engines, advice", [
    ("--kind", {"docker": False}, "no Docker Engine answers: start Docker Desktop"),
    ("--k3d", {"docker": False}, "no Docker Engine answers: start Docker Desktop"),
    ("--rancher", {"containerd": False}, "containerd does not answer: start Rancher Desktop"),
])
@pytest.mark.parametrize("command", ["up", "doctor"])
def test_an_engine_that_does_not_answer_is_named_and_nothing_changes(cluster_sh, command, flag, engines, advice):
    state = rancher_desktop() if flag == "--rancher" else laptop()
    state["engines"].update(engines)
    p, log, after = cluster_sh(command, flag, state=state)
    assert p.returncode != 0
    assert advice in p.stdout, p.stdout
    assert not [c for c in log if CHANGES.search(c)], log
    assert after == state


@pytest.mark.parametrize("command", ["up", "doctor"])
def test_rancher_desktop_with_kubernetes_stopped(cluster_sh, command):
    state = rancher_desktop()
    state["clusters"]["rancher-desktop"]["answers"] = False
    p, log, after = cluster_sh(command, "--rancher", state=state)
    assert p.returncode != 0
    assert "rancher-desktop does not answer: start Rancher Desktop with Preferences › Kubernetes" in p.stdout
    assert not [c for c in log if CHANGES.search(c)], log
    assert after == state


def test_unknown_option_is_refused(cluster_sh):
    p, log, _ = cluster_sh("up", "kind", state=laptop())
    assert p.returncode != 0 and "unknown option 'kind' (use --kind, --k3d, --rancher or --sim)" in p.stderr
    assert not [c for c in log if CHANGES.search(c)]


# ---- doctor on a cluster that is up

@pytest.mark.parametrize("flag", ["--kind", "--k3d"])
def test_doctor_passes_after_up(cluster_sh, flag):
    _, _, state = cluster_sh("up", flag, state=laptop())
    p, log, _ = cluster_sh("doctor", flag, state=state)
    assert p.returncode == 0, p.stdout + p.stderr
    for line in [r"spin-operator +accepts kubernetes/base/spinapp.yaml", r"Dapr injector +ready endpoint",
                 r"Spin executor +containerd-shim-spin → RuntimeClass wasmtime-spin-v2 → handler spin",
                 r"tilt +tilt stand-in 9.9", r"wasm32-wasip2 +installed", r"app's daprd +none yet"]:
        assert re.search(rf"^  {line}", p.stdout, re.M), p.stdout
    assert not [c for c in log if CHANGES.search(c)], log


def test_doctor_before_up_says_to_run_up(cluster_sh):
    p, _, _ = cluster_sh("doctor", "--kind", state=laptop())
    assert p.returncode != 0
    assert "kind-dapr-spin-hello does not answer: scripts/cluster.sh up --kind" in p.stdout


def test_doctor_says_what_to_do_about_a_pod_without_daprd(cluster_sh):
    _, _, state = cluster_sh("up", state=rancher_desktop())
    state["clusters"]["rancher-desktop"]["pods"] = {"dapr-spin-hello-dapr-6d9f-abcde": ["pause"],
                                                    "dapr-spin-hello-dapr-6d9f-fghij": ["pause", "daprd"]}
    p, _, _ = cluster_sh("doctor", state=state)
    assert p.returncode != 0
    assert "dapr-spin-hello-dapr-6d9f-abcde has no daprd container" in p.stdout
    assert "kubectl --context rancher-desktop delete pod dapr-spin-hello-dapr-6d9f-abcde" in p.stdout
    assert re.search(r"^  app's daprd +dapr-spin-hello-dapr-6d9f-fghij has daprd$", p.stdout, re.M)


def test_doctor_without_rdctl_still_checks_rancher_desktop(cluster_sh):
    _, _, state = cluster_sh("up", state=rancher_desktop())
    p, _, _ = cluster_sh("doctor", state=state, missing=("rdctl",))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "rancher-desktop   (optional) version unknown: rdctl" in p.stdout


@pytest.mark.parametrize("missing, required", [("spin", False), ("tilt", True), ("rustup", True)])
def test_doctor_reports_the_dev_loop_tools(cluster_sh, missing, required):
    _, _, state = cluster_sh("up", state=rancher_desktop())
    p, _, _ = cluster_sh("doctor", state=state, missing=(missing,))
    assert (p.returncode != 0) == required, p.stdout + p.stderr
    name = "wasm32-wasip2" if missing == "rustup" else missing
    assert re.search(rf"^  {name} +{'' if required else '[(]optional[)] '}missing: \S", p.stdout, re.M), p.stdout


def test_doctor_notes_a_tilt_older_than_the_tested_one(cluster_sh):
    # Optional: scripts/dev.sh --cluster builds the tested Tilt and uses it instead.
    _, _, state = cluster_sh("up", state=rancher_desktop())
    state["tilt_version"] = "v0.34.0, built 2025-03-01"
    p, _, _ = cluster_sh("doctor", state=state)
    assert p.returncode == 0, p.stdout + p.stderr
    tested = re.search(r"github\.com/tilt-dev/tilt v(\d+\.\d+)", (REPO / "scripts/tools/tilt/go.mod").read_text()).group(1)
    assert re.search(rf"^  tilt +\(optional\) 0\.34\.0, older than {re.escape(tested)}, the Tilt the Tiltfile is tested with", p.stdout, re.M), p.stdout


# ---- down

@pytest.mark.parametrize("flag", ["--kind", "--k3d"])
def test_down_deletes_only_that_cluster_and_its_registry(cluster_sh, flag):
    _, _, state = cluster_sh("up", flag, state=laptop())
    before = copy.deepcopy(state)
    p, log, after = cluster_sh("down", flag, state=state)
    assert p.returncode == 0, p.stderr
    changes = [c for c in log if CHANGES.search(c)]
    if flag == "--kind":
        assert changes == ["kind delete cluster --name dapr-spin-hello", "docker rm -f dapr-spin-hello-kind-registry"]
        assert after["containers"] == {}
    else:
        assert changes == ["k3d cluster delete dapr-spin-hello"]
    assert set(before["clusters"]) - set(after["clusters"]) == {f"{flag[2:]}-dapr-spin-hello"}
