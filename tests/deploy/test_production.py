"""kubernetes/production/, the overlay for `kubectl apply -k`: it renders with kustomize (the
version kubectl 1.35 builds in, so `kubectl apply -k` renders the same), every object it renders
validates against the upstream schemas as in test_manifests.py, and it is what production needs:
two replicas, the dev-loop settings set back, the API tokens on both ways from one Secret, under
the key and the annotations Dapr's injector reads (checked in Dapr's source at the pinned
version), into the Spin variables the component reads (spin.toml)."""

import re
import subprocess
import tempfile
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_helpers import REPO, dapr_source
from test_manifests import CRDS, KUBERNETES_VERSION, documents, strict

# kubectl v1.35's own kustomize (k8s.io/kubernetes 1.35 requires this version). The first run
# builds it with Go (about a minute and a half of CPU on 2 cores), later runs take it from Go's
# build cache.
KUSTOMIZE = "sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"
SECRET = "dapr-spin-hello-api-token"
SIDECAR = "dapr-spin-hello-dapr"
# What kubernetes/base marks "dev loop", and what production sets back.
DEV_LOOP_ANNOTATIONS = ["dapr.io/enable-api-logging"]
DEV_LOOP_READINESS = ["initialDelaySeconds", "periodSeconds"]


def kustomize_build(path):
    # Outside any module, so that nothing nearby changes what `go run` resolves.
    with tempfile.TemporaryDirectory() as empty:
        p = subprocess.run(["go", "run", KUSTOMIZE, "build", str(path)], cwd=empty, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"kustomize build {path} failed:\n{p.stderr}"
    return [doc for doc in yaml.safe_load_all(p.stdout) if doc]


@pytest.fixture(scope="module")
def rendered():
    return kustomize_build(REPO / "kubernetes/production")


@pytest.fixture(scope="module")
def spinapp(rendered):
    [app] = [doc for doc in rendered if doc["kind"] == "SpinApp"]
    return app["spec"]


@pytest.fixture(scope="module")
def sidecar(rendered):
    """The app's daprd Deployment (kubernetes/base/dapr-sidecar.yaml), as rendered."""
    [deployment] = [doc for doc in rendered if doc["kind"] == "Deployment" and doc["metadata"]["name"] == SIDECAR]
    return deployment["spec"]


def base_sidecar():
    [deployment] = [doc for _, doc in documents() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == SIDECAR]
    return deployment["spec"]


def injector_source(name):
    return (dapr_source() / "pkg/injector" / name).read_text()


def test_overlay_renders_every_base_object_and_adds_none(rendered):
    def names(docs):
        return sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs)

    assert names(rendered) == names(doc for _, doc in documents())


def test_the_base_renders_as_tilt_applies_it():
    # kubernetes/base/kustomization.yaml lists every manifest Tilt applies, unchanged.
    base = kustomize_build(REPO / "kubernetes/base")
    assert sorted(map(yaml.safe_dump, base)) == sorted(yaml.safe_dump(doc) for _, doc in documents())


def test_rendered_objects_validate(rendered):
    for doc in rendered:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRDS:
            jsonschema.validate(doc, strict(CRDS[key]))
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_two_replicas_and_the_dev_loop_settings_set_back(spinapp, sidecar):
    assert spinapp["replicas"] >= 2 and sidecar["replicas"] >= 2
    annotations = sidecar["template"]["metadata"]["annotations"]
    for annotation in DEV_LOOP_ANNOTATIONS:
        assert annotation not in annotations, annotation
    readiness = spinapp["checks"]["readiness"]
    assert readiness["httpGet"]["path"] == "/readyz"
    for setting in DEV_LOOP_READINESS:
        assert setting not in readiness, setting
    # The rest of the sidecar's settings stay.
    base = base_sidecar()["template"]["metadata"]["annotations"]
    kept = {k: v for k, v in base.items() if k not in DEV_LOOP_ANNOTATIONS}
    assert kept.items() <= annotations.items()


def dev_loop_marks(path):
    """The settings under a manifest's "Dev loop" comments."""
    marked, pending = [], False
    for line in (REPO / path).read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            pending = pending or "Dev loop" in line
        elif pending:
            marked.append(line.split(":")[0])
            pending = False
    return marked


def test_the_dev_loop_marks_are_the_ones_set_back():
    assert dev_loop_marks("kubernetes/base/spinapp.yaml") == ["readiness"]
    assert dev_loop_marks("kubernetes/base/dapr-sidecar.yaml") == DEV_LOOP_ANNOTATIONS


def test_the_image_is_a_registry_reference(spinapp):
    image = spinapp["image"]
    assert image != "dapr-spin-hello" and "/" in image and ":" in image.rsplit("/", 1)[1], image


def test_daprd_takes_both_tokens_from_the_secret(sidecar):
    annotations = injector_source("annotations/annotations.go")
    for constant in ("KeyAPITokenSecret", "KeyAppTokenSecret"):
        name = re.search(rf'{constant}\s*=\s*"([^"]+)"', annotations).group(1)
        assert sidecar["template"]["metadata"]["annotations"][name] == SECRET, name


def test_the_app_takes_the_same_tokens_as_spin_variables(spinapp):
    # The injector reads each token under the key "token"; the app's variables read the same.
    sidecar = injector_source("patcher/sidecar_container.go")
    keys = set(re.findall(r'SecretKeyRef: &corev1\.SecretKeySelector\{\s*Key:\s*"([^"]+)"', sidecar))
    assert keys == {"token"}, keys
    manifest = tomllib.loads((REPO / "spin.toml").read_text())
    secret_variables = {name for name, v in manifest["variables"].items() if v.get("secret")}
    variables = {v["name"]: v for v in spinapp["variables"] if v["name"] != "dapr_http_host"}
    assert set(variables) == secret_variables == {"dapr_api_token", "app_api_token"}
    for variable in variables.values():
        assert "value" not in variable, variable
        assert variable["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": "token"}}


def test_the_overlay_keeps_the_sidecars_address(spinapp):
    # A patch replaces the SpinApp's whole variables list, so the overlay names the address too.
    [base] = [doc["spec"] for _, doc in documents() if doc["kind"] == "SpinApp"]
    assert [v for v in spinapp["variables"] if v["name"] == "dapr_http_host"] == base["variables"]


def test_the_dev_loop_runs_without_tokens():
    [base] = [doc["spec"] for _, doc in documents() if doc["kind"] == "SpinApp"]
    assert [v["name"] for v in base["variables"]] == ["dapr_http_host"]
    assert not any("token" in k for k in base_sidecar()["template"]["metadata"]["annotations"])
