"""The cluster path on a real cluster: `scripts/cluster.sh up --sim` runs kube-apiserver, the
controller manager and the scheduler, a real node (containerd, kubelet, kube-proxy, CoreDNS)
with SpinKube's Spin shim, spin-operator (webhooks on) and Dapr's control plane from its chart,
all pinned upstream builds, in network and mount namespaces of their own. The app is deployed
by Tilt through them, and its pods really run: Redis under runc, the app under the shim, and
its daprd in a pod of its own (kubernetes/base/dapr-sidecar.yaml).

The node needs the Spin shim (containerd-shim-spin-v2): $CONTAINERD_SHIM_SPIN or on PATH.
Without one, every test here is skipped, and says so.

The cluster runs in a temporary folder with its own kubeconfig, and is stopped at the end
(the last test checks that `down --sim` leaves nothing behind)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from deploy_helpers import REPO, spin_operator_source
from sim_cluster import APP, APP_SELECTOR, CONTEXT, SimCluster, TiltUp, app_image, copy_repo, set_greeting

SHIM = os.environ.get("CONTAINERD_SHIM_SPIN") or shutil.which("containerd-shim-spin-v2")
if not SHIM or not os.access(SHIM, os.X_OK):
    pytest.skip("no Spin shim for the simulated cluster's node: set CONTAINERD_SHIM_SPIN to a "
                "containerd-shim-spin-v2 (SpinKube's releases) or put one on PATH", allow_module_level=True)

SIDECAR = "dapr-spin-hello-dapr"
SIDECAR_SELECTOR = "app.kubernetes.io/name=" + SIDECAR
SHIM_RUNTIME_CLASS = "wasmtime-spin-v2"


def host_state():
    """What `down --sim` must leave as it found it: the machine's mounts, iptables and routes."""
    def run(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    mounts = sorted(line.split(" - ")[0].split(" ", 4)[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    iptables = [line for line in run("iptables-save").splitlines() if not line.startswith("#")]
    return {"mounts": mounts, "iptables": iptables, "routes": run("ip", "route"), "links": run("ip", "-o", "link")}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    before = host_state()
    cluster = SimCluster(tmp_path_factory.mktemp("sim"))
    cluster.host_before = before
    p, seconds = cluster.up()
    try:
        assert p.returncode == 0, f"up --sim failed:\n{p.stdout[-6000:]}\n{p.stderr[-3000:]}"
        print(f"up --sim: {seconds:.1f} s")
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def deployed(sim):
    """The app as `tilt ci` deploys it, in the cluster's namespaces (the context picks the sim path)."""
    p = subprocess.run(sim.inside("tilt", "ci", "--port=0"), cwd=REPO, env=sim.env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, f"tilt ci on the simulated cluster failed:\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    return sim


@pytest.fixture(scope="module")
def served(deployed, tmp_path_factory):
    """`tilt up` in a copy of the repo, serving the app on localhost:8000 in the cluster's
    namespaces through Tilt's port-forward, as on a learner's cluster."""
    crate = tmp_path_factory.mktemp("crate") / "repo"
    copy_repo(crate)
    log = crate.parent / "tilt.log"
    before = app_image(deployed)
    tilt = TiltUp(deployed, crate, log)
    try:
        deployed.wait("tilt up deploying the copy's build", lambda: app_image(deployed) != before, timeout=300)
        image = app_image(deployed)

        def only_the_new_pod():
            pods = deployed.ready_pods(APP_SELECTOR)
            return len(pods) == 1 and containers(pods[0])[APP]["image"] == image
        deployed.wait(f"the app's one Ready pod running {image}", only_the_new_pod, timeout=300)
        deployed.wait("the app answering GET / through Tilt's port-forward, three times running",
                      lambda: all(deployed.curl("http://localhost:8000/")[0] == 200 for _ in range(3)), timeout=120)
        deployed.crate, deployed.tilt_log = crate, log
        yield deployed
    finally:
        tilt.stop()


def processes_in(net):
    """The pids of the processes in network namespace `net` (readlink of /proc/PID/ns/net)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "ns/net") == net:
                pids.append(proc.name)
        except OSError:  # exited meanwhile
            pass
    return pids


def containers(pod):
    return {c["name"]: c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])}


def one_ready_pod(sim, selector, namespace="default"):
    pods = sim.wait(f"a Ready pod ({selector})", lambda: sim.ready_pods(selector, namespace))
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def logs(sim, selector, container=None, namespace="default"):
    args = ["logs", "-l", selector, "--namespace", namespace, "--tail=-1", "--prefix"]
    return sim.kubectl(*args, *(["-c", container] if container else [])).stdout


def test_up_starts_a_real_node(sim):
    assert sim.kubectl("config", "current-context").stdout.strip() == CONTEXT
    node = sim.get("node", "sim-node")
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.35."), node["status"]["nodeInfo"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.2."), node["status"]["nodeInfo"]
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"


def test_the_cluster_lives_in_namespaces_of_its_own(sim):
    holder = sim.pids()["holder"]
    for pid in sim.pids().values():
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{holder}/ns/net"), pid
    assert os.readlink(f"/proc/{holder}/ns/net") != os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{holder}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert host_state() == sim.host_before, "up --sim changed the machine's mounts, iptables, routes or links"


def test_dapr_runs_from_its_chart_without_scheduler_or_placement(sim):
    pods = sim.get("pods", "--namespace", "dapr-system")["items"]
    ready = {p["metadata"]["labels"].get("app"): all(c["ready"] for c in p["status"].get("containerStatuses", []))
             for p in pods}
    assert ready == {"dapr-operator": True, "dapr-sentry": True, "dapr-sidecar-injector": True}, ready
    injector = sim.get("deployment", "dapr-sidecar-injector", "--namespace", "dapr-system")
    env = {e["name"]: e.get("value") for e in injector["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SIDECAR_IMAGE_PULL_POLICY"] == "IfNotPresent"


def test_manifests_pass_real_admission_and_webhooks(sim):
    p = sim.kubectl("apply", "--dry-run=server", "-k", str(REPO / "kubernetes/base"))
    assert "spinapp.core.spinkube.dev/dapr-spin-hello created (server dry run)" in p.stdout, p.stdout


def test_operator_webhook_refuses_an_unknown_executor(sim):
    # The same SpinApp with an executor that does not exist: spin-operator's validating webhook
    # (failurePolicy Fail) refuses it, so the dry run above went through a live webhook.
    spinapp = yaml.safe_load((REPO / "kubernetes/base/spinapp.yaml").read_text())
    spinapp["spec"]["executor"] = "no-such-executor"
    p = sim.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(spinapp), check=False)
    assert p.returncode != 0
    assert 'spec.executor: Invalid value: "no-such-executor": executor does not exist' in p.stderr, p.stderr


def test_redis_runs_under_runc(deployed):
    pod = one_ready_pod(deployed, "app.kubernetes.io/name=redis")
    assert pod["spec"].get("runtimeClassName") is None
    assert deployed.kubectl("exec", pod["metadata"]["name"], "--", "redis-cli", "ping").stdout.strip() == "PONG"


def test_the_app_runs_under_the_shim_with_no_sidecar_in_its_pod(deployed):
    pod = one_ready_pod(deployed, APP_SELECTOR)
    assert pod["spec"]["runtimeClassName"] == SHIM_RUNTIME_CLASS
    assert list(containers(pod)) == [APP], "no Dapr sidecar in a shim pod (kubernetes/base/dapr-sidecar.yaml says why)"
    assert deployed.get("runtimeclass", SHIM_RUNTIME_CLASS)["handler"] == "spin"


def test_daprd_runs_in_its_own_pod_with_the_apps_id(deployed):
    pod = one_ready_pod(deployed, SIDECAR_SELECTOR)
    daprd = containers(pod)["daprd"]
    args = " ".join(daprd["args"])
    for flag in ("--app-id dapr-spin-hello", "--app-port 80", "--app-channel-address dapr-spin-hello"):
        assert flag in args, (flag, args)
    assert pod["spec"].get("runtimeClassName") is None


def test_the_course_curls_through_tilts_port_forward(served):
    assert served.curl("http://localhost:8000/") == (200, '{"message":"Hello from Dapr Spin!"}')
    assert served.curl("http://localhost:8000/healthz")[0] == 200
    assert served.curl("http://localhost:8000/readyz")[0] == 200
    status, body = served.curl("http://localhost:8000/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.1")
    user = f"sim-{time.time_ns()}"
    status, body = served.curl(f"http://localhost:8000/messages?user_id={user}&message=Hello%20Dapr",
                               "-X", "POST", "-H", "Content-Type: application/json")
    assert status == 201, body
    status, body = served.curl(f"http://localhost:8000/messages/{user}")
    assert status == 200 and json.loads(body)["message"] == "Hello Dapr", body
    assert served.curl("http://localhost:8000/messages/nobody-here")[0] == 404
    line = f'Received event: user_id="{user}"'
    served.wait("the event's `Received event` line in the app's log",
                lambda: line in logs(served, APP_SELECTOR), timeout=60)
    time.sleep(3)  # a second delivery would show within Dapr's retry window
    assert logs(served, APP_SELECTOR).count(line) == 1


def test_a_shim_pods_linux_container_gets_no_environment(sim, tmp_path):
    # runwasi (since PR #668) passes a pod's env only to wasm: a Linux container in a shim pod
    # starts with none, which is why daprd cannot be the app pod's sidecar. The day a shim
    # hands it over again, this test fails and says so: the sidecar may then move back.
    printenv = tmp_path / "printenv"
    source = tmp_path / "printenv.c"
    source.write_text('#include <stdio.h>\nextern char **environ;\n'
                      'int main(void) { for (char **e = environ; *e; e++) puts(*e); puts("END"); return 0; }\n')
    subprocess.run(["gcc", "-static", "-Os", "-o", str(printenv), str(source)], check=True)
    sys_path = str(REPO / "scripts/cluster")
    subprocess.run(["python3", "-c", f"import sys; sys.path.insert(0, {sys_path!r}); import oci_image; "
                    f"oci_image.write_archive({str(tmp_path / 'env.tar')!r}, 'docker.io/library/printenv:test', "
                    f"{{'/printenv': {str(printenv)!r}}}, entrypoint=['/printenv'])"], check=True)
    assert sim.cluster_sh("import", "--sim", str(tmp_path / "env.tar")).returncode == 0
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "env-in-a-shim-pod"},
           "spec": {"runtimeClassName": SHIM_RUNTIME_CLASS, "restartPolicy": "Never",
                    "containers": [{"name": "linux", "image": "printenv:test", "imagePullPolicy": "IfNotPresent",
                                    "env": [{"name": "GIVEN_BY_THE_SPEC", "value": "yes"}]}]}}
    sim.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    try:
        sim.wait("the Linux container in the shim pod to finish",
                 lambda: sim.get("pod", "env-in-a-shim-pod")["status"].get("phase") in ("Succeeded", "Failed"))
        out = sim.kubectl("logs", "env-in-a-shim-pod").stdout
        assert "END" in out, out
        assert "GIVEN_BY_THE_SPEC=yes" not in out, (
            "the shim now gives a pod's Linux containers their env: the Dapr sidecar could live in the app's pod again "
            "(docs/kubernetes.md)")
    finally:
        sim.kubectl("delete", "pod", "env-in-a-shim-pod", "--wait=false", check=False)


def test_a_spinapp_whose_image_lacks_spin_toml_does_not_run(deployed, tmp_path):
    context = tmp_path / "context"
    wasm = REPO / "target/wasm32-wasip2/release/dapr_spin_hello.wasm"
    (context / wasm.parent.relative_to(REPO)).mkdir(parents=True)
    shutil.copy(wasm, context / wasm.relative_to(REPO))
    archive = tmp_path / "no-manifest.tar"
    subprocess.run(["python3", str(REPO / "scripts/cluster/oci_image.py"), "app", "no-manifest:test", str(context),
                    str(archive)], check=True)
    assert deployed.cluster_sh("import", "--sim", str(archive)).returncode == 0
    spinapp = {"apiVersion": "core.spinkube.dev/v1alpha1", "kind": "SpinApp", "metadata": {"name": "no-manifest"},
               "spec": {"image": "no-manifest:test", "executor": "containerd-shim-spin", "replicas": 1}}
    deployed.kubectl("apply", "-f", "-", stdin=json.dumps(spinapp))
    try:
        def failed():
            for pod in deployed.get("pods", "-l", "core.spinkube.dev/app-name=no-manifest")["items"]:
                for status in pod.get("status", {}).get("containerStatuses", []):
                    state = status.get("state", {})
                    if status.get("restartCount", 0) > 0 or "terminated" in state or \
                            state.get("waiting", {}).get("reason") in ("CrashLoopBackOff", "RunContainerError"):
                        return pod
            return None
        pod = deployed.wait("the pod of a SpinApp without spin.toml to fail", failed, timeout=120)
        assert not any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
    finally:
        deployed.kubectl("delete", "spinapp", "no-manifest", "--wait=false", check=False)


def test_spin_variables_move_the_sidecars_address_under_the_shims_spin(served):
    # A second Service in front of the same daprd, on another port, and a SpinApp of the same
    # image that reaches daprd there only through its Spin variables: /readyz 200 proves that
    # the variables reached the component and that Spin's allowed_outbound_hosts followed them.
    # The same app given the address as dapr_http_endpoint, which spin.toml does not allow,
    # is refused by Spin.
    image = app_image(served)
    alias = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dapr-alias"},
             "spec": {"selector": {"app.kubernetes.io/name": SIDECAR}, "publishNotReadyAddresses": True,
                      "ports": [{"port": 3600, "targetPort": 3500}]}}

    def spinapp(name, variables):
        return {"apiVersion": "core.spinkube.dev/v1alpha1", "kind": "SpinApp", "metadata": {"name": name},
                "spec": {"image": image, "executor": "containerd-shim-spin", "replicas": 1,
                         "variables": [{"name": k, "value": v} for k, v in variables.items()]}}
    objects = [alias, spinapp("moved", {"dapr_http_host": "dapr-alias", "dapr_http_port": "3600"}),
               spinapp("refused", {"dapr_http_endpoint": "http://dapr-alias:3600"})]
    served.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))
    try:
        ips = {}
        for name in ("moved", "refused"):
            ips[name] = served.wait(f"a running pod of {name}", lambda n=name: [
                p["status"]["podIP"] for p in served.get("pods", "-l", f"core.spinkube.dev/app-name={n}")["items"]
                if p["status"].get("podIP") and p["status"].get("phase") == "Running"], timeout=120)[0]
        served.wait("moved's /readyz answering 200", lambda: served.curl(f"http://{ips['moved']}/readyz")[0] == 200,
                    timeout=60)
        served.wait("refused's Spin answering", lambda: served.curl(f"http://{ips['refused']}/")[0] == 200, timeout=60)
        status, body = served.curl(f"http://{ips['refused']}/messages/ann")
        assert status == 500 and "allowed_outbound_hosts" in body, (status, body)
    finally:
        served.kubectl("delete", "spinapp", "moved", "refused", "--wait=false", check=False)
        served.kubectl("delete", "service", "dapr-alias", "--wait=false", check=False)


def test_production_overlay_runs_two_replicas_with_tokens(served):
    # kubernetes/production in a namespace of its own (with the shim executor there too:
    # spin-operator looks for it beside the SpinApp), after the one Secret it names: two app
    # pods and two daprd pods Ready, a POST's event delivered with the app token, and the
    # event route refusing a call without it.
    namespace, secret = "production", "dapr-spin-hello-api-token"
    kubectl = lambda *args, **kw: served.kubectl("--namespace", namespace, *args, **kw)  # noqa: E731
    served.kubectl("create", "namespace", namespace)
    try:
        kubectl("apply", "-f", str(spin_operator_source() / "config/samples/spin-shim-executor.yaml"))
        kubectl("create", "secret", "generic", secret, "--from-literal=token=t0k3n")
        overlay = yaml.safe_load_all(served.kubectl("kustomize", str(REPO / "kubernetes/production")).stdout)
        objects = []
        for o in overlay:
            if o["kind"] == "SpinApp":
                o["spec"]["image"] = app_image(served)  # the image Tilt built, in place of a registry's
            objects.append(o)
        kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))
        for selector in (APP_SELECTOR, SIDECAR_SELECTOR):
            served.wait(f"two Ready pods ({selector})", lambda s=selector: len(served.ready_pods(s, namespace)) == 2,
                        timeout=240)
        from_secret = {"secretKeyRef": {"name": secret, "key": "token"}}
        for pod in served.ready_pods(SIDECAR_SELECTOR, namespace):
            env = {e["name"]: e.get("valueFrom") for e in containers(pod)["daprd"].get("env", [])}
            assert env["DAPR_API_TOKEN"] == from_secret and env["APP_API_TOKEN"] == from_secret, env
        app_pods = served.ready_pods(APP_SELECTOR, namespace)
        ip = app_pods[0]["status"]["podIP"]
        user = f"prod-{time.time_ns()}"
        status, body = served.curl(f"http://{ip}/messages?user_id={user}&message=hi", "-X", "POST")
        assert status == 201, body
        line = f'Received event: user_id="{user}"'
        served.wait("the event delivered with the app token", lambda: line in logs(served, APP_SELECTOR, namespace=namespace),
                    timeout=60)
        status, _ = served.curl(f"http://{ip}/events/message-updated", "-X", "POST", "-H",
                                "Content-Type: application/cloudevents+json", "-d", "{}")
        assert status == 401
    finally:
        served.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_save_under_tilt_up_serves_the_new_greeting(served):
    # Requests keep coming while the new pod replaces the old: each POST is answered 201 by
    # one pod or the other, or fails while Tilt moves its port-forward (Tilt follows the new
    # pod once it runs, before it is Ready), and a retry then succeeds. No other answer.
    text = f"Hello from the node, {time.time_ns()}!"
    expected = json.dumps({"message": text}, separators=(",", ":"))
    set_greeting(served.crate, text)
    saved = time.monotonic()
    answers, user = [], f"switch-{time.time_ns()}"
    deadline = saved + 300
    while served.curl("http://localhost:8000/")[1] != expected:
        assert time.monotonic() < deadline, "no new greeting within 300 s of the save"
        answers.append(served.curl(f"http://localhost:8000/messages?user_id={user}&message=m{len(answers)}",
                                   "-X", "POST")[0])
    print(f"save to the new greeting served: {time.monotonic() - saved:.1f} s; POSTs meanwhile: "
          f"{ {a: answers.count(a) for a in set(answers)} } (0: no answer through the forward)")
    assert set(answers) <= {201, 503, 0}, answers
    assert served.curl(f"http://localhost:8000/messages?user_id={user}&message=after", "-X", "POST")[0] == 201
    # The app's pod was replaced; its daprd's pod was not.
    one_ready_pod(served, SIDECAR_SELECTOR)


def test_doctor_shows_the_sidecars_daprd(deployed):
    p = deployed.cluster_sh("doctor", "--sim")
    pod = one_ready_pod(deployed, SIDECAR_SELECTOR)["metadata"]["name"]
    assert f"{pod} has daprd" in p.stdout, p.stdout + p.stderr


def test_down_leaves_nothing_behind(sim):
    pids = sim.pids()
    assert {"holder", "etcd", "kube-apiserver", "containerd", "kubelet", "kube-proxy", "coredns",
            "spin-operator"} <= set(pids), pids
    net = os.readlink(f"/proc/{pids['holder']}/ns/net")
    cgroup_root = (sim.state / "node/cgroup-root").read_text().strip()
    p = sim.down()
    assert p.returncode == 0, p.stdout + p.stderr
    left = [pid for pid in processes_in(net) if pid != str(os.getpid())]
    assert left == [], f"processes still in the cluster's network namespace: {left}"
    assert [c for c in ("memory", "cpu", "pids", "unified") if Path(f"/sys/fs/cgroup/{c}{cgroup_root}").exists()] == []
    assert host_state() == sim.host_before
    contexts = subprocess.run([sim.kubectl_binary, "config", "get-contexts", "-o", "name"], env=sim.env,
                              capture_output=True, text=True).stdout.split()
    assert CONTEXT not in contexts
    assert sorted(p.name for p in sim.state.iterdir()) == ["logs"]
