"""The cluster path on a real control plane: `scripts/cluster.sh up --sim` runs kube-apiserver,
the controller manager and the scheduler, kwok's fake node, spin-operator (webhooks on) and
Dapr's sentry and sidecar injector as local processes, all pinned upstream builds. The app is
deployed by `tilt ci` through them: real admission, the real operator, the real injector.

There is no node: kwok marks each scheduled pod Running and Ready, and nothing runs in it.
So these tests end where the kubelet would start: the shim, the image pull and Spin's start-up
are not exercised here (README, "The simulated cluster").

The cluster runs in a temporary folder with its own kubeconfig, and is stopped at the end
(the last test checks that `down --sim` leaves nothing running)."""

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from deploy_helpers import REPO, pinned_versions, spin_operator_source
from sim_cluster import APP, APP_SELECTOR, CONTEXT, SimCluster, TiltUp, app_image, copy_repo, save_to_rollout

DAPR_ARGS = {"--app-id": APP, "--app-port": "80", "--config": APP, "--dapr-graceful-shutdown-seconds": "1",
             "--enable-api-logging": "true"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cluster = SimCluster(tmp_path_factory.mktemp("sim"))
    p, seconds = cluster.up()
    try:
        assert p.returncode == 0, f"up --sim failed:\n{p.stdout}\n{p.stderr}"
        print(f"up --sim: {seconds:.1f} s")
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def deployed(sim):
    """The app as `tilt ci` deploys it (cluster mode; the context picks the sim path)."""
    p = subprocess.run(["tilt", "ci", "--port=0"], cwd=REPO, env=sim.env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"tilt ci on the simulated cluster failed:\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}"
    return sim


def alive(pid):
    """Running: an exited process not yet reaped (a zombie) is not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def app_pod(sim):
    pods = sim.wait("a Ready pod of the app", lambda: sim.ready_pods(APP_SELECTOR))
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def containers(pod):
    return {c["name"]: c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])}


def flag_values(args):
    """daprd's command line as {flag: value} (the injector writes `--flag value` and `--flag=value`)."""
    values, i = {}, 0
    while i < len(args):
        if args[i].startswith("--") and "=" in args[i]:
            flag, value = args[i].split("=", 1)
            values[flag] = value
            i += 1
        elif args[i].startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            values[args[i]] = args[i + 1]
            i += 2
        else:
            values[args[i]] = ""
            i += 1
    return values


def test_the_sim_runs_the_spin_operator_the_clusters_install():
    go_mod = (REPO / "scripts/tools/spin-operator/go.mod").read_text()
    built = re.search(r"^\s*github\.com/spinkube/spin-operator v(\S+)", go_mod, re.M).group(1)
    assert built == pinned_versions()["SPIN_OPERATOR_VERSION"]


def test_up_refuses_when_the_operators_port_is_taken(tmp_path):
    # spin-operator's webhook port is fixed (9443): up --sim says so and starts nothing. Runs
    # before the module's cluster starts.
    cluster = SimCluster(tmp_path)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):  # already taken: the same refusal is expected
        holder.bind(("127.0.0.1", 9443))
        holder.listen()
    try:
        p, _ = cluster.up()
    finally:
        holder.close()
    assert p.returncode != 0
    assert "port 9443         taken" in p.stdout and "nothing was changed" in p.stderr, p.stdout + p.stderr
    assert not cluster.state.exists()


def test_up_leaves_the_sim_context_current(sim):
    p = sim.kubectl("config", "current-context")
    assert p.stdout.strip() == CONTEXT
    assert sim.get("nodes")["items"][0]["metadata"]["name"] == "sim-node"
    version = json.loads(sim.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert version.startswith("v1.35."), version


def test_manifests_pass_real_admission_and_webhooks(sim):
    p = sim.kubectl("apply", "--dry-run=server", "-f", str(REPO / "kubernetes/base/spinapp.yaml"),
                    "-f", str(REPO / "kubernetes/base/dapr-components.yaml"), "-f", str(REPO / "kubernetes/base/redis.yaml"))
    assert "spinapp.core.spinkube.dev/dapr-spin-hello created (server dry run)" in p.stdout, p.stdout


def test_operator_webhook_refuses_an_unknown_executor(sim):
    # The same SpinApp with an executor that does not exist: spin-operator's validating webhook
    # (failurePolicy Fail) refuses it, so the dry run above went through a live webhook.
    spinapp = yaml.safe_load((REPO / "kubernetes/base/spinapp.yaml").read_text())
    spinapp["spec"]["executor"] = "no-such-executor"
    p = sim.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(spinapp), check=False)
    assert p.returncode != 0
    assert 'spec.executor: Invalid value: "no-such-executor": executor does not exist' in p.stderr, p.stderr


def test_tilt_ci_deploys_the_app_with_a_content_addressed_reference(deployed):
    image = app_image(deployed)
    assert image.startswith("dapr-spin-hello:sim-"), image
    deployment = deployed.get("deployment", APP)
    owners = [(o["kind"], o["name"]) for o in deployment["metadata"]["ownerReferences"]]
    assert owners == [("SpinApp", APP)]
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [image]


def test_operator_creates_the_service(deployed):
    service = deployed.get("service", APP)
    assert [(o["kind"], o["name"]) for o in service["metadata"]["ownerReferences"]] == [("SpinApp", APP)]
    assert [p["port"] for p in service["spec"]["ports"]] == [80]


def test_pod_runs_on_the_executors_runtime_class(deployed):
    executor = deployed.get("spinappexecutor", "containerd-shim-spin")
    runtime_class = executor["spec"]["deploymentConfig"]["runtimeClassName"]
    assert runtime_class == "wasmtime-spin-v2"
    assert deployed.get("runtimeclass", runtime_class)["handler"] == "spin"
    assert app_pod(deployed)["spec"]["runtimeClassName"] == runtime_class


def test_daprd_is_injected_with_the_annotations_settings(deployed):
    daprd = containers(app_pod(deployed)).get("daprd")
    assert daprd is not None, "no daprd container in the app's pod"
    flags = flag_values(daprd["args"])
    for flag, value in DAPR_ARGS.items():
        assert flags.get(flag) == value, (flag, flags.get(flag), daprd["args"])


def test_pod_has_our_probes_resources_and_shutdown(deployed):
    spinapp = yaml.safe_load((REPO / "kubernetes/base/spinapp.yaml").read_text())["spec"]
    app = containers(app_pod(deployed))[APP]
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["readinessProbe"]["periodSeconds"] == spinapp["checks"]["readiness"]["periodSeconds"]
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert app["resources"] == spinapp["resources"]
    # The sidecar gets the shorter grace period; the pod's own is Kubernetes' default.
    assert flag_values(containers(app_pod(deployed))["daprd"]["args"])["--dapr-graceful-shutdown-seconds"] == "1"


def test_a_spinapp_from_elsewhere_gets_daprd(deployed):
    # Written the way a SpinKube user would, outside this repo: only the executor and the
    # Dapr annotations in common with ours.
    other = {
        "apiVersion": "core.spinkube.dev/v1alpha1", "kind": "SpinApp",
        "metadata": {"name": "hello-elsewhere"},
        "spec": {"image": "ghcr.io/spinkube/containerd-shim-spin/examples/spin-rust-hello:v0.13.0",
                 "executor": "containerd-shim-spin", "replicas": 1,
                 "podAnnotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "hello-elsewhere",
                                    "dapr.io/app-port": "80"}},
    }
    deployed.kubectl("apply", "-f", "-", stdin=json.dumps(other))
    try:
        pods = deployed.wait("a Ready pod of hello-elsewhere",
                             lambda: deployed.ready_pods("core.spinkube.dev/app-name=hello-elsewhere"))
        daprd = containers(pods[0]).get("daprd")
        assert daprd is not None, "no daprd in hello-elsewhere's pod"
        assert flag_values(daprd["args"])["--app-id"] == "hello-elsewhere"
        assert pods[0]["spec"]["runtimeClassName"] == "wasmtime-spin-v2"
    finally:
        deployed.kubectl("delete", "spinapp", "hello-elsewhere", "--wait=false", check=False)


def test_production_overlay_takes_the_tokens_from_the_secret(sim):
    # kubernetes/production on the real API server and webhooks, in a namespace of its own (with
    # the shim executor there too: spin-operator looks for it beside the SpinApp), after the one
    # Secret it names. The server-side dry run accepts the overlay; applied, each of its pods
    # takes the token from that Secret: the app's container as its Spin variables
    # (spin-operator's SPIN_VARIABLE_*), daprd as DAPR_API_TOKEN and APP_API_TOKEN (Dapr's
    # injector, from the annotations).
    namespace, secret = "production", "dapr-spin-hello-api-token"
    kubectl = lambda *args, **kw: sim.kubectl("--namespace", namespace, *args, **kw)
    sim.kubectl("create", "namespace", namespace)
    try:
        kubectl("apply", "-f", str(spin_operator_source() / "config/samples/spin-shim-executor.yaml"))
        kubectl("create", "secret", "generic", secret, "--from-literal=token=t0k3n")
        overlay = str(REPO / "kubernetes/production")
        p = kubectl("apply", "--dry-run=server", "-k", overlay)
        assert "spinapp.core.spinkube.dev/dapr-spin-hello created (server dry run)" in p.stdout, p.stdout
        kubectl("apply", "-k", overlay)

        def ready_pods():
            pods = json.loads(kubectl("get", "pods", "-l", APP_SELECTOR, "-o", "json").stdout)["items"]
            return [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in p.get("status", {}).get("conditions", []))]
        pods = sim.wait("the overlay's two Ready pods", lambda: len(ready := ready_pods()) == 2 and ready)
        from_secret = {"secretKeyRef": {"name": secret, "key": "token"}}
        for pod in pods:
            env = {c: {e["name"]: e.get("valueFrom") for e in container.get("env", [])} for c, container in containers(pod).items()}
            assert env[APP]["SPIN_VARIABLE_DAPR_API_TOKEN"] == from_secret, env[APP]
            assert env[APP]["SPIN_VARIABLE_APP_API_TOKEN"] == from_secret, env[APP]
            assert env["daprd"]["DAPR_API_TOKEN"] == from_secret, env["daprd"]
            assert env["daprd"]["APP_API_TOKEN"] == from_secret, env["daprd"]
    finally:
        sim.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_save_rolls_a_new_replica_set(deployed, tmp_path):
    crate = tmp_path / "repo"
    copy_repo(crate)
    tilt = TiltUp(deployed, crate, tmp_path / "tilt.log")
    try:
        deployed.wait("tilt up to settle on the copy's build",
                      lambda: app_image(deployed).startswith("dapr-spin-hello:sim-")
                      and "dapr-spin-hello" in (tmp_path / "tilt.log").read_text(), timeout=300)
        time.sleep(3)
        seconds, rollout, image = save_to_rollout(deployed, crate, "Hello from the simulated cluster!")
        print(f"save to a Ready pod of the new ReplicaSet: {seconds:.1f} s, of which the rollout {rollout:.1f} s")
        pod = app_pod(deployed)
        assert containers(pod)[APP]["image"] == image
        assert "daprd" in containers(pod)
    finally:
        tilt.stop()


def test_doctor_shows_the_pods_daprd(deployed):
    p = deployed.cluster_sh("doctor", "--sim")
    assert f"{app_pod(deployed)['metadata']['name']} has daprd" in p.stdout, p.stdout + p.stderr


def test_without_the_injector_a_new_pod_has_no_daprd_and_doctor_says_so(deployed):
    # The injector's webhook has failurePolicy Ignore: while it is down, pods start without
    # daprd. Stop it, recreate the app's pod, and ask doctor.
    injector = deployed.pids()["injector"]
    os.kill(injector, signal.SIGTERM)
    deployed.wait("the injector to exit", lambda: not alive(injector), timeout=30)
    old = app_pod(deployed)["metadata"]["name"]
    deployed.kubectl("delete", "pod", old, "--wait=false")
    pod = deployed.wait("a new Ready pod of the app",
                        lambda: [p for p in deployed.ready_pods(APP_SELECTOR) if p["metadata"]["name"] != old])[0]
    assert "daprd" not in containers(pod), "the pod got daprd although the injector was stopped"
    p = deployed.cluster_sh("doctor", "--sim")
    assert p.returncode != 0
    assert f"{pod['metadata']['name']} has no daprd container" in p.stdout, p.stdout
    assert "the simulated cluster has no Dapr operator" in p.stdout, p.stdout
    assert "injector" in p.stdout and "not running" in p.stdout, p.stdout

    # `up --sim` again starts what is missing; a pod created then has daprd again.
    p, _ = deployed.up()
    assert p.returncode == 0, p.stdout + p.stderr
    deployed.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
    pod = deployed.wait("a new Ready pod with daprd", lambda: [
        p for p in deployed.ready_pods(APP_SELECTOR) if "daprd" in containers(p)])[0]


def test_down_leaves_no_process_and_no_api_server(sim):
    pids = sim.pids()
    port = sim.kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                         "spin-operator", "sentry", "injector"}
    p = sim.down()
    assert p.returncode == 0, p.stdout + p.stderr
    running = [name for name, pid in pids.items() if alive(pid)]
    assert running == [], running
    with pytest.raises(OSError):
        urllib.request.urlopen(port + "/readyz", timeout=2, context=ssl._create_unverified_context())
    contexts = sim.kubectl("config", "get-contexts", "-o", "name", check=False).stdout.split()
    assert CONTEXT not in contexts
