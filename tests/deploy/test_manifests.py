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

from deploy_helpers import REPO, dapr_source, spin_operator_source

# The Kubernetes minor whose published schemas the core kinds must satisfy (k3s in the
# containerd-shim-spin k3d image and current Rancher Desktop are at or above it).
KUBERNETES_VERSION = "1.33"
DAPR_ANNOTATIONS = {
    "dapr.io/enabled": "true",
    "dapr.io/app-id": "dapr-spin-hello",
    "dapr.io/app-port": "80",
    "dapr.io/enable-api-logging": "true",
    "dapr.io/config": "dapr-spin-hello",
    "dapr.io/graceful-shutdown-seconds": "1",
}
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


def test_manifests_exist():
    kinds = sorted(doc["kind"] for _, doc in DOCS)
    assert kinds == ["Component", "Component", "Component", "Configuration", "Deployment", "Resiliency", "Service", "SpinApp"]


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
    typo["spec"]["podAnnotation"] = typo["spec"].pop("podAnnotations")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, strict(CRDS[("core.spinkube.dev/v1alpha1", "SpinApp")]))


def test_spinapp_pods_get_the_dapr_sidecar():
    [spinapp] = by_kind("SpinApp")
    spec = spinapp["spec"]
    # Only podAnnotations reach the pods; annotations on the SpinApp itself do not.
    assert spec["podAnnotations"] == DAPR_ANNOTATIONS
    [config] = by_kind("Configuration")
    assert config["metadata"]["name"] == DAPR_ANNOTATIONS["dapr.io/config"]
    assert not any(k.startswith("dapr.io/") for k in spinapp["metadata"].get("annotations", {}))
    assert spec["checks"]["liveness"]["httpGet"]["path"] == "/healthz"
    assert spec["checks"]["readiness"]["httpGet"]["path"] == "/readyz"
    assert spec["resources"]["limits"] and spec["resources"]["requests"]


def test_spinapp_uses_the_upstream_shim_executor():
    # The release's spin-operator.shim-executor.yaml, which cluster.sh applies, is this sample.
    executor = yaml.safe_load((spin_operator_source() / "config/samples/spin-shim-executor.yaml").read_text())
    [spinapp] = by_kind("SpinApp")
    assert spinapp["spec"]["executor"] == executor["metadata"]["name"]


def test_spinapp_image_is_the_name_tilt_substitutes():
    # The image is the bare name Tilt substitutes (or production replaces); no tag, registry,
    # pull policy or Tilt marker is baked in.
    [spinapp] = by_kind("SpinApp")
    assert spinapp["spec"]["image"] == "dapr-spin-hello"
    assert "tilt" not in yaml.safe_dump(spinapp).lower()


def test_components_point_at_the_redis_service():
    components = {c["metadata"]["name"]: c for c in by_kind("Component")}
    assert {name: c["spec"]["type"] for name, c in components.items()} == {
        "statestore": "state.redis",
        "pubsub": "pubsub.redis",
        "outbox": "pubsub.redis",
    }
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    [redis] = by_kind("Deployment")
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    for component in components.values():
        assert component["scopes"] == [DAPR_ANNOTATIONS["dapr.io/app-id"]]
        metadata = {m["name"]: m["value"] for m in component["spec"]["metadata"]}
        host, port = metadata["redisHost"].rsplit(":", 1)
        service = services[host]
        assert int(port) in [p["port"] for p in service["spec"]["ports"]]
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_the_state_stores_outbox_publishes_where_the_app_subscribes():
    components = {c["metadata"]["name"]: c for c in by_kind("Component")}
    outbox = {m["name"]: m["value"] for m in components["statestore"]["spec"]["metadata"] if m["name"].startswith("outbox")}
    # The app's defaults (PUBSUB_NAME, PUBSUB_TOPIC) subscribe to pubsub / message-updated.
    assert outbox == {"outboxPublishPubsub": "pubsub", "outboxPublishTopic": "message-updated", "outboxPubsub": "outbox"}


def test_redis_is_the_official_image_pinned():
    [redis] = by_kind("Deployment")
    [container] = redis["spec"]["template"]["spec"]["containers"]
    name, _, tag = container["image"].partition(":")
    assert name == "redis" and tag and tag != "latest"
    assert 6379 in [p["containerPort"] for p in container["ports"]]
