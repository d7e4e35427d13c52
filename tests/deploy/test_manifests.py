"""(b) Every document in kubernetes/base/ (the dev loop's manifests) validates: custom resources against the upstream CRD
schemas (spin-operator's and Dapr's, at the pinned versions, from the Go module proxy), core
kinds against Kubernetes' own schemas. Then the wiring between them: Dapr annotations on the
pods, components on the Redis Service."""

import copy
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_helpers import REPO, components_contrib_source, dapr_source, spin_operator_source

# The Kubernetes minor whose published schemas the core kinds must satisfy (k3s in the
# containerd-shim-spin k3d image and current Rancher Desktop are at or above it).
KUBERNETES_VERSION = "1.33"
DAPR_ANNOTATIONS = {
    "dapr.io/enabled": "true",
    "dapr.io/app-id": "dapr-spin-hello",
    "dapr.io/app-channel-address": "dapr-spin-hello",
    "dapr.io/app-port": "80",
    "dapr.io/sidecar-listen-addresses": "0.0.0.0",
    "dapr.io/enable-api-logging": "true",
    "dapr.io/config": "dapr-spin-hello",
}
SIDECAR = "dapr-spin-hello-dapr"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def crd_files():
    """The CRDs as upstream ships them: spin-operator's config/crd/bases/ (the source of its
    release's spin-operator.crds.yaml) and the Dapr Helm chart's crds/."""
    return [*sorted((spin_operator_source() / "config/crd/bases").glob("*.yaml")),
            *sorted((dapr_source() / "charts/dapr/crds").glob("*.yaml"))]


def load_crd_schemas():
    """{(apiVersion, kind): openAPIV3Schema} for every upstream CRD."""
    schemas = {}
    for path in crd_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def strict(schema):
    """The API server drops (or, with kubectl's default strict validation, rejects) fields a
    structural schema does not declare; JSON Schema would accept them. Close every object that
    lists its properties, so a misspelt field fails here too."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def documents():
    """The dev-loop manifests, as Tilt applies them: kubernetes/base/*.yaml but kustomize's own
    file (the production overlay is checked rendered, test_production.py)."""
    docs = []
    for path in sorted((REPO / "kubernetes/base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.relative_to(REPO), doc))
    return docs


DOCS = documents()
CRDS = load_crd_schemas()


def by_kind(kind):
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def named(kind, name):
    return [doc for doc in by_kind(kind) if doc["metadata"]["name"] == name]


def test_manifests_exist():
    kinds = sorted(doc["kind"] for _, doc in DOCS)
    assert kinds == ["Component", "Component", "Configuration", "Deployment", "Deployment", "Resiliency", "Service",
                     "Service", "SpinApp"]


@pytest.mark.parametrize("path, doc", DOCS, ids=[f"{p}:{d['kind']}/{d['metadata']['name']}" for p, d in DOCS])
def test_document_validates(path, doc):
    assert DNS_SUBDOMAIN.match(doc["metadata"]["name"]), doc["metadata"]
    key = (doc["apiVersion"], doc["kind"])
    if key in CRDS:
        jsonschema.validate(doc, strict(CRDS[key]))
    else:
        # Raises SchemaNotFoundError for a kind that is neither upstream CRD nor core.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_schema_catches_a_misspelt_field():
    [spinapp] = by_kind("SpinApp")
    typo = copy.deepcopy(spinapp)
    typo["spec"]["check"] = typo["spec"].pop("checks")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, strict(CRDS[("core.spinkube.dev/v1alpha1", "SpinApp")]))


def test_the_apps_daprd_runs_in_a_pod_of_its_own():
    # A shim pod's Linux containers get no env (runwasi PR #668), so no manifest asks for a
    # sidecar in the SpinApp's pods: its daprd is injected into a Deployment of its own, which
    # reaches the app through the SpinApp's Service, and which the app reaches through its own.
    [spinapp] = by_kind("SpinApp")
    spec = spinapp["spec"]
    assert not any(k.startswith("dapr.io/") for k in spec.get("podAnnotations", {}))
    assert not any(k.startswith("dapr.io/") for k in spinapp["metadata"].get("annotations", {}))
    [sidecar] = named("Deployment", SIDECAR)
    template = sidecar["spec"]["template"]
    assert template["metadata"]["annotations"] == DAPR_ANNOTATIONS
    assert DAPR_ANNOTATIONS["dapr.io/app-channel-address"] == spinapp["metadata"]["name"]
    assert template["metadata"]["labels"] == sidecar["spec"]["selector"]["matchLabels"]
    assert [c["image"] for c in template["spec"]["containers"]] == ["registry.k8s.io/pause:3.10"]
    [service] = named("Service", SIDECAR)
    assert service["spec"]["selector"] == template["metadata"]["labels"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [3500]
    assert {v["name"]: v["value"] for v in spec["variables"]} == {"dapr_http_host": SIDECAR}
    [config] = by_kind("Configuration")
    assert config["metadata"]["name"] == DAPR_ANNOTATIONS["dapr.io/config"]
    assert spec["checks"]["liveness"]["httpGet"]["path"] == "/healthz"
    assert spec["checks"]["readiness"]["httpGet"]["path"] == "/readyz"
    assert spec["resources"]["limits"] and spec["resources"]["requests"]


def test_spinapp_uses_the_upstream_shim_executor():
    # The release's spin-operator.shim-executor.yaml, which cluster.sh applies, is this sample.
    executor = yaml.safe_load((spin_operator_source() / "config/samples/spin-shim-executor.yaml").read_text())
    [spinapp] = by_kind("SpinApp")
    assert spinapp["spec"]["executor"] == executor["metadata"]["name"]


def test_spinapp_image_is_the_name_tilt_substitutes():
    # The name Tilt substitutes (or production replaces), with a tag, so that a hand-applied
    # base does not get :latest's pull policy Always; no registry or Tilt marker is baked in.
    [spinapp] = by_kind("SpinApp")
    assert spinapp["spec"]["image"] == "dapr-spin-hello:dev"
    assert "tilt" not in yaml.safe_dump(spinapp).lower()


def test_components_point_at_the_redis_service():
    components = {c["metadata"]["name"]: c for c in by_kind("Component")}
    assert {name: c["spec"]["type"] for name, c in components.items()} == {
        "statestore": "state.redis",
        "pubsub": "pubsub.redis",
    }
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    [redis] = named("Deployment", "redis")
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    for component in components.values():
        assert component["scopes"] == [DAPR_ANNOTATIONS["dapr.io/app-id"]]
        metadata = {m["name"]: m["value"] for m in component["spec"]["metadata"]}
        host, port = metadata["redisHost"].rsplit(":", 1)
        service = services[host]
        assert int(port) in [p["port"] for p in service["spec"]["ports"]]
        assert service["spec"]["selector"].items() <= pod_labels.items()


def local_components():
    """The components of local runs and the real-stack tests (scripts/dapr/), by name."""
    docs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "scripts/dapr").glob("*.yaml"))]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Component"}


def settings(component):
    return {m["name"]: m["value"] for m in component["spec"]["metadata"]}


def every_dapr_document():
    """Each YAML document in scripts/dapr/ and kubernetes/ (the production overlay's patches too)."""
    paths = [*sorted((REPO / "scripts/dapr").glob("*.yaml")), *sorted((REPO / "kubernetes").rglob("*.yaml"))]
    return [(path.relative_to(REPO), doc) for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_no_state_store_has_an_outbox():
    # The app publishes each event itself (README, "Delivery"): a state store with outbox
    # settings would publish each of its transactions as a second event.
    components = [(path, doc) for path, doc in every_dapr_document() if doc.get("kind") == "Component"]
    assert {path.parts[0] for path, _ in components} == {"scripts", "kubernetes"}
    assert not [(str(path), doc["metadata"]["name"]) for path, doc in components if doc["metadata"]["name"] == "outbox"]
    outboxed = {(str(path), doc["metadata"]["name"]): sorted(k for k in settings(doc) if k.lower().startswith("outbox"))
                for path, doc in components if doc["spec"]["type"].startswith("state.")}
    assert outboxed and not any(outboxed.values()), outboxed


def app_defaults():
    """The names the app uses when its variables are empty: {variable: name} from src/config.rs."""
    found = dict(re.findall(r'name_or\("(\w+)", "([^"]+)"\)', (REPO / "src/config.rs").read_text()))
    assert found.keys() == {"statestore_name", "pubsub_name", "pubsub_topic"}, found
    return found


@pytest.mark.parametrize("where", ["scripts/dapr", "kubernetes/base", "tests/fixtures/course"])
def test_the_apps_default_names_are_the_components(where):
    """Local runs, the cluster and the course's own components: the app's defaults name a state
    store and a pub/sub there, and the event retries apply to that pub/sub."""
    docs = [doc for path in sorted((REPO / where).glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    types = {d["metadata"]["name"]: d["spec"]["type"] for d in docs if d["kind"] == "Component"}
    names = app_defaults()
    assert types.get(names["statestore_name"], "").startswith("state."), types
    assert types.get(names["pubsub_name"], "").startswith("pubsub."), types
    for resiliency in (d for d in docs if d["kind"] == "Resiliency"):
        assert list(resiliency["spec"]["targets"]["components"]) == [names["pubsub_name"]]


def test_every_component_setting_is_one_its_component_reads():
    """A misspelt setting (say maxLenAprox) is ignored by Dapr without a word: check each
    name against the component's metadata.yaml in the components-contrib that daprd is built with."""
    for component in [*by_kind("Component"), *local_components().values()]:
        kind, _, name = component["spec"]["type"].partition(".")
        spec = yaml.safe_load((components_contrib_source() / kind / name / "metadata.yaml").read_text())
        profiles = [p for group in ("authenticationProfiles", "builtinAuthenticationProfiles") for p in spec.get(group, [])]
        known = {m["name"] for m in spec.get("metadata", []) + [m for p in profiles for m in p.get("metadata", [])]}
        assert settings(component).keys() <= known, (component["metadata"]["name"], settings(component).keys() - known)


def test_every_pubsub_bounds_its_streams_the_same_locally_and_in_the_cluster():
    """Local runs and the cluster differ only in where Redis is."""
    where = {"redisHost", "redisPassword"}
    local = local_components()
    for component in by_kind("Component"):
        name = component["metadata"]["name"]
        cluster_settings = {k: v for k, v in settings(component).items() if k not in where}
        assert cluster_settings == {k: v for k, v in settings(local[name]).items() if k not in where}, name
        if component["spec"]["type"] == "pubsub.redis":
            assert int(cluster_settings["maxLenApprox"]) > 0, name


def test_redis_refuses_writes_rather_than_evict_or_outgrow_its_limit():
    [redis] = named("Deployment", "redis")
    [container] = redis["spec"]["template"]["spec"]["containers"]
    args = dict(zip(container["args"][::2], container["args"][1::2]))
    assert args["--maxmemory-policy"] == "noeviction"
    mebibytes = {"mb": 1, "gb": 1024}
    maxmemory = int(args["--maxmemory"][:-2]) * mebibytes[args["--maxmemory"][-2:]]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and maxmemory < int(limit[:-2]), (maxmemory, limit)


def test_redis_is_the_official_image_pinned():
    [redis] = named("Deployment", "redis")
    [container] = redis["spec"]["template"]["spec"]["containers"]
    name, _, tag = container["image"].partition(":")
    assert name == "redis" and tag and tag != "latest"
    assert 6379 in [p["containerPort"] for p in container["ports"]]
