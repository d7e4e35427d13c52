"""(a) The Tiltfile, evaluated by the real Tilt binary: resources, image builds, port forward,
dependencies and labels, on the Rancher Desktop, kind, k3d and simulated-cluster paths and in
local mode."""

import json
import shlex

import pytest

from deploy_helpers import REPO, spin_sources

IMAGE_CONTEXT = str(REPO / "target/image")
DOCKERFILE = (REPO / "kubernetes/image/Dockerfile").read_text()
CLUSTER_RESOURCES = {"wasm", "redis", "dapr-components", "dapr-spin-hello-dapr", "dapr-spin-hello", "dapr-dashboard"}
LOCAL_RESOURCES = {"wasm", "redis", "daprd", "app", "smoke"}


def image_target(result):
    targets = result.manifests["dapr-spin-hello"]["ImageTargets"]
    assert len(targets) == 1, targets
    return targets[0]


def assert_cluster_resources(result, context):
    assert set(result.manifests) == CLUSTER_RESOURCES

    app = result.deploy("dapr-spin-hello")
    # The SpinApp is the workload, and Tilt writes its image into .spec.image.
    assert "kind: SpinApp" in app["yaml"]
    assert app["imageMaps"] == ["dapr-spin-hello"]
    [locator] = app["imageLocators"]
    assert locator["path"] == "{.spec.image}"
    assert locator["objectSelector"]["kindRegexp"] == "(?i)SpinApp"
    assert app["PodReadinessMode"] == "wait"
    # The course's curls go to localhost:8000; Spin listens on 80 in the pod.
    assert app["portForwardTemplateSpec"]["forwards"] == [
        {"localPort": 8000, "containerPort": 80, "host": "localhost"}
    ]
    assert {link["URL"]["Host"] for link in app["Links"]} == {"localhost:8000", "localhost:8080"}
    assert result.deps("dapr-spin-hello") == {"wasm", "redis", "dapr-components"}

    # Redis and the components are resources of their own, ready before the app.
    assert "kind: Deployment" in result.deploy("redis")["yaml"]
    components = result.deploy("dapr-components")["yaml"]
    assert all(f"name: {name}" in components for name in ("statestore", "pubsub"))
    assert "kind: Resiliency" in components
    # The app's daprd in a pod of its own, which the app does not wait for (it turns ready only
    # once it reaches the app).
    assert "kind: Deployment" in result.deploy("dapr-spin-hello-dapr")["yaml"]
    assert result.deps("dapr-spin-hello-dapr") == {"redis", "dapr-components"}

    # The build stages the image context after cargo, on every change to the sources.
    wasm = result.deploy("wasm")
    build = wasm["UpdateCmdSpec"]["args"][-1]
    assert build.startswith("cargo build --target wasm32-wasip2 --release && ")
    assert set(wasm["Deps"]) == {str(REPO / p) for p in ("src", "Cargo.toml", "Cargo.lock", "spin.toml")}

    dashboard = result.deploy("dapr-dashboard")["ServeCmd"]["Argv"]
    assert dashboard[:3] == ["kubectl", "--context", context or ""]
    assert dashboard[-2:] == ["svc/dapr-dashboard", "8080:8080"]

    assert result.labels("dapr-spin-hello") == {"app"}
    assert result.labels("wasm") == {"build"}
    assert result.labels("redis") == {"infra"}
    assert result.labels("dapr-components") == {"dapr"}
    assert result.labels("dapr-spin-hello-dapr") == {"dapr"}
    assert result.labels("dapr-dashboard") == {"dapr"}


def assert_docker_build(result):
    target = image_target(result)
    details = target["BuildDetails"]
    assert target["DockerImageName"].startswith("dapr-spin-hello"), target
    assert details["context"] == IMAGE_CONTEXT
    assert details["dockerfileContents"] == DOCKERFILE


def assert_nerdctl_build(result):
    target = image_target(result)
    details = target["BuildDetails"]
    assert target["DockerImageName"] == "" and target["CmdImageName"].startswith("dapr-spin-hello"), target
    # Built into containerd by nerdctl; the cluster reads it there, so nothing is pushed.
    assert details["outputMode"] == "remote"
    assert details["Deps"] == [IMAGE_CONTEXT]
    command = shlex.split(details["args"][-1])
    assert command[:4] == ["nerdctl", "--namespace", "k8s.io", "build"]
    assert command[command.index("-f") + 1] == "kubernetes/image/Dockerfile"
    assert str(REPO / command[-1]) == IMAGE_CONTEXT


# kind-dapr-spin-hello and k3d-dapr-spin-hello are scripts/cluster.sh's; kind-kind is kind's
# default cluster; docker-desktop is another local cluster Tilt knows.
@pytest.mark.parametrize("context", ["kind-dapr-spin-hello", "kind-kind", "k3d-dapr-spin-hello", "docker-desktop"])
def test_docker_clusters_build_with_docker(tiltfile, context):
    result = tiltfile(context=context)
    assert_cluster_resources(result, context)
    assert_docker_build(result)


def test_rancher_desktop_builds_with_nerdctl(tiltfile):
    result = tiltfile(context="rancher-desktop")
    assert_cluster_resources(result, "rancher-desktop")
    assert_nerdctl_build(result)


def test_sim_cluster_imports_the_image_into_its_node(tiltfile):
    # scripts/cluster.sh up --sim: no registry and no engine on the node, so the image is an OCI
    # archive imported into the node's containerd, named as the kubelet asks for Tilt's ref.
    result = tiltfile(context="sim-dapr-spin-hello")
    assert set(result.manifests) == CLUSTER_RESOURCES - {"dapr-dashboard"}
    app = result.deploy("dapr-spin-hello")
    assert app["imageMaps"] == ["dapr-spin-hello"]
    assert app["portForwardTemplateSpec"]["forwards"] == [
        {"localPort": 8000, "containerPort": 80, "host": "localhost"}
    ]
    assert {link["URL"]["Host"] for link in app["Links"]} == {"localhost:8000"}
    details = image_target(result)["BuildDetails"]
    assert details["outputMode"] == "remote" and details["Deps"] == [IMAGE_CONTEXT]
    assert details["args"][-1] == ("python3 scripts/cluster/oci_image.py app $EXPECTED_REF target/image "
                                   "target/sim-image.tar && scripts/cluster.sh import --sim target/sim-image.tar")
    assert result.deps("dapr-spin-hello") == {"wasm", "redis", "dapr-components"}


def test_cluster_flag_overrides_the_context(tiltfile):
    assert_docker_build(tiltfile("--cluster=k3d", context="rancher-desktop"))
    assert_docker_build(tiltfile("--cluster=kind", context="rancher-desktop"))
    assert_nerdctl_build(tiltfile("--cluster=rancher", context="k3d-dapr-spin-hello"))
    # With no kube context at all (CI), the flag alone picks the path.
    assert_nerdctl_build(tiltfile("--cluster=rancher"))
    assert_docker_build(tiltfile("--cluster=k3d"))


def test_unknown_cluster_flag_fails(run_tiltfile):
    code, _, err = run_tiltfile("--cluster=minikube", context="k3d-dapr-spin-hello")
    assert code == 5 and "--cluster must be rancher, kind, k3d or sim" in err


def test_non_dev_context_is_refused(run_tiltfile):
    # Tilt deploys only to clusters it knows as local; the Tiltfile must not widen that.
    code, _, err = run_tiltfile(context="gke_prod_europe-west1_main")
    assert code == 5 and "might be production" in err


@pytest.mark.parametrize("args, host", [((), "spin"), (("--host=wasmtime",), "wasmtime")])
def test_local_mode(tiltfile, args, host):
    # A kube context is set, and local mode must still deploy nothing to it.
    result = tiltfile("--local", *args, context="rancher-desktop")
    assert set(result.manifests) == LOCAL_RESOURCES
    assert all(not m["ImageTargets"] for m in result.manifests.values())
    assert all("yaml" not in result.deploy(name) for name in result.manifests)

    def serve(name):
        return result.deploy(name)["ServeCmd"]["Argv"][-1]

    def probe(name):
        return result.deploy(name)["ReadinessProbe"]

    assert serve("redis") == "scripts/local.sh redis"
    assert probe("redis")["tcpSocket"] == {"port": 6379, "host": "127.0.0.1"}

    assert serve("daprd") == "scripts/local.sh daprd"
    assert result.deps("daprd") == {"redis"}
    assert probe("daprd")["httpGet"]["port"] == 3500

    assert serve("app") == f"scripts/local.sh app {host}"
    assert result.deps("app") == {"wasm", "daprd"}
    assert probe("app")["httpGet"] == {"path": "/readyz", "port": 8000, "host": "127.0.0.1"}
    # A rebuild rewrites the component, and that change (or one to spin.toml) restarts the app.
    assert result.deploy("app")["Deps"] == [str(REPO / p) for p in (*spin_sources(), "spin.toml")]

    assert result.deploy("smoke")["UpdateCmdSpec"]["args"][-1] == "scripts/local.sh smoke"
    assert result.deps("smoke") == {"app"}

    assert result.deploy("wasm")["UpdateCmdSpec"]["args"][-1] == "cargo build --target wasm32-wasip2 --release"
    assert result.labels("app") == {"app"}
    assert result.labels("smoke") == {"test"}


def test_docker_prune_is_off_in_local_mode_only(tiltfile):
    # Local mode builds no image, so Tilt prunes none there; the clusters' Docker builds keep
    # Tilt's default pruning. (The pruner's own start-up line where no Docker answers comes
    # before the Tiltfile is read, so this cannot remove it: Tilt 0.37's dockerprune SetUp.)
    assert tiltfile("--local").data["DockerPruneSettings"]["Enabled"] is False
    assert tiltfile(context="kind-dapr-spin-hello").data["DockerPruneSettings"]["Enabled"] is True


def test_local_mode_rejects_unknown_host(run_tiltfile):
    code, _, err = run_tiltfile("--local", "--host=wasmer")
    assert code == 5 and "--host must be spin or wasmtime" in err


def test_no_live_update(tiltfile):
    # The shim refuses `kubectl exec`, so a live_update could never apply; the image swap is the path.
    target = image_target(tiltfile(context="k3d-dapr-spin-hello"))
    assert not target["LiveUpdateSpec"].get("syncs") and not target["LiveUpdateSpec"].get("execs"), json.dumps(target)
