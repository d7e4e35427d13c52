"""Stand-ins for the tools scripts/cluster.sh runs (kubectl, helm, kind, k3d, docker, nerdctl,
rdctl, ...), for tests on a machine with no container engine and no cluster.

`python stand_in_tools.py TOOL ARGS...` logs "TOOL ARGS" to $FAKE_LOG and answers from a
model of the laptop kept as JSON in $FAKE_STATE: the engines, the clusters by kube context,
and in each cluster the objects cluster.sh reads or writes. What an apply creates is read
from upstream's own files (spin-operator's samples at the pinned version), and what a
cluster starts with follows how upstream sets it up (see test_cluster_sh.py's layouts).
$FAKE_SPIN_OPERATOR is spin-operator's source at the pinned version (deploy_helpers)."""

import json
import os
import sys
from pathlib import Path

import yaml

# What k3s's own manifests/runtimes.yaml defines: one RuntimeClass per runtime it may detect,
# each named after its handler, `spin` among them.
K3S_RUNTIME_CLASSES = ["nvidia", "nvidia-experimental", "crun", "lunatic", "slight", "spin", "wws",
                       "wasmedge", "wasmer", "wasmtime"]


def new_cluster(runtime, runtime_classes=()):
    return {"answers": True, "runtime": runtime, "crds": [], "runtime_classes": {n: n for n in runtime_classes},
            "executors": {}, "installed": [], "config_maps": {}, "pods": {}, "webhook_refusals": 0}


def spin_operator_yaml(*files):
    source = Path(os.environ["FAKE_SPIN_OPERATOR"])
    return [doc for f in files for path in sorted(source.glob(f)) for doc in yaml.safe_load_all(path.read_text())]


class Laptop:
    def __init__(self, state):
        self.s = state

    def cluster(self, context):
        c = self.s["clusters"].get(context)
        if c is None or not c["answers"]:
            fail(f"The connection to the server for context {context} was refused")
        return c

    # ---- kubectl
    def kubectl(self, args):
        if args[:2] == ["config", "current-context"]:
            if not self.s.get("context"):
                fail("error: current-context is not set")
            return print(self.s["context"])
        if args[:2] == ["config", "use-context"]:
            self.cluster(args[2])
            self.s["context"] = args[2]
            return print(f'Switched to context "{args[2]}".')
        if args[:2] == ["version", "--client"]:
            return print("Client Version: v1.33.0")
        assert args[0] == "--context", args
        c = self.cluster(args[1])
        args = args[2:]
        verb = args[0]
        if verb == "get":
            return self.kubectl_get(c, args[1:])
        if verb == "apply":
            return self.kubectl_apply(c, args[1:])
        if verb == "wait":
            return None
        fail(f"stand-in kubectl: unmodelled {args}")

    def kubectl_get(self, c, args):
        what = args[0]
        if what == "--raw":
            return print("ok")
        if what == "nodes":
            return print(c["runtime"] if "-o" in args and "containerRuntimeVersion" in args[-1] else "node Ready")
        if what == "crd":
            if args[1] not in c["crds"]:
                fail(f'customresourcedefinitions "{args[1]}" not found')
            return print(args[1])
        if what == "runtimeclass":
            if len(args) == 1:
                return print("\n".join(c["runtime_classes"]))
            if args[1] not in c["runtime_classes"]:
                fail(f'runtimeclasses.node.k8s.io "{args[1]}" not found')
            return print(c["runtime_classes"][args[1]], end="")
        if what in ("spinappexecutor", "spinappexecutors"):
            if "spinappexecutors.core.spinkube.dev" not in c["crds"]:
                fail(f'the server doesn\'t have a resource type "{what}"')
            if len(args) == 1:
                return print("\n".join(c["executors"]))
            if args[1] not in c["executors"]:
                fail(f'spinappexecutors.core.spinkube.dev "{args[1]}" not found')
            return print(c["executors"][args[1]], end="")
        if what == "endpointslices":
            return print("true" if "dapr" in c["installed"] else "", end="")
        if what == "pods":
            if "-l" in args:
                return print("".join(f"{name} {' '.join(containers)} \n" for name, containers in c["pods"].items()), end="")
            return print("pods")
        fail(f"stand-in kubectl: unmodelled get {args}")

    def kubectl_apply(self, c, args):
        dry_run = "--dry-run=server" in args
        source = args[args.index("-f") + 1]
        if source == "-":
            docs = list(yaml.safe_load_all(sys.stdin.read()))
        elif source.startswith("https://"):
            docs = self.release_asset(source)
        else:
            docs = list(yaml.safe_load_all(Path(source).read_text()))
        for doc in docs:
            kind = doc["kind"]
            if kind in ("SpinApp", "SpinAppExecutor"):
                self.spin_operator_webhook(c, doc)
        if dry_run:
            return None
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "CustomResourceDefinition":
                c["crds"].append(name)
            elif kind == "RuntimeClass":
                c["runtime_classes"][name] = doc["handler"]
            elif kind == "SpinAppExecutor":
                c["executors"][name] = doc["spec"]["deploymentConfig"]["runtimeClassName"]
            elif kind == "ConfigMap":
                c["config_maps"][f"{doc['metadata']['namespace']}/{name}"] = doc["data"]
            elif kind == "CertManager":
                c["installed"].append("cert-manager")

    def release_asset(self, url):
        """The documents a release URL serves: spin-operator's from the module (its Makefile's
        `dist` copies these very files), cert-manager's as a marker."""
        name = url.rsplit("/", 1)[-1]
        if name == "cert-manager.yaml":
            return [{"kind": "CertManager", "metadata": {"name": "cert-manager"}}]
        return spin_operator_yaml({"spin-operator.crds.yaml": "config/crd/bases/*.yaml",
                                   "spin-operator.runtime-class.yaml": "config/samples/spin-runtime-class.yaml",
                                   "spin-operator.shim-executor.yaml": "config/samples/spin-shim-executor.yaml"}[name])

    def spin_operator_webhook(self, c, doc):
        """spin-operator's webhooks (failurePolicy Fail): no answer until the operator runs, and
        a SpinApp naming an executor that is not there is refused."""
        if "spin-operator" not in c["installed"] or c["webhook_refusals"] > 0:
            c["webhook_refusals"] = max(0, c["webhook_refusals"] - 1)
            fail('Internal error occurred: failed calling webhook "vspinapp.kb.io": connection refused')
        if doc["kind"] == "SpinApp" and doc["spec"]["executor"] not in c["executors"]:
            fail("spec.executor: Invalid value: executor does not exist in namespace")

    # ---- helm
    def helm(self, args):
        if args == ["version", "--short"]:
            return print("v3.19.0")
        assert args[0] == "--kube-context", args
        c = self.cluster(args[1])
        args = args[2:]
        if args[:2] == ["upgrade", "--install"]:
            c["installed"].append(args[2])
            return print(f'Release "{args[2]}" has been upgraded. Happy Helming!')
        if args[0] == "list":
            return print("\n".join(c["installed"]))
        fail(f"stand-in helm: unmodelled {args}")

    # ---- engines and cluster tools
    def docker_up(self):
        if not self.s["engines"]["docker"]:
            fail("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")

    def docker(self, args):
        if args == ["--version"]:
            return print("Docker version 28.2.2, build e6534b4")
        if args[0] == "info":
            self.docker_up()
            return print("28.2.2")
        self.docker_up()
        containers = self.s["containers"]
        if args[0] == "inspect":
            name = args[-1]
            if name not in containers:
                fail(f"Error: No such object: {name}")
            if "-f" in args:
                return print("null" if "kind" not in containers[name] else '{"NetworkID":"kind"}')
            return print("[{}]")
        if args[0] == "run":
            containers[args[args.index("--name") + 1]] = ["bridge"]
            return print("0123456789ab")
        if args[0] == "start":
            return print(args[1])
        if args[:2] == ["network", "connect"]:
            containers[args[3]].append(args[2])
            return None
        if args[0] == "exec":
            sys.stdin.read() if "-i" in args else None
            return None
        if args[:2] == ["rm", "-f"]:
            containers.pop(args[2], None)
            return None
        fail(f"stand-in docker: unmodelled {args}")

    def kind(self, args):
        if args == ["version"]:
            return print("kind v0.31.0 go1.25.5 linux/amd64")
        self.docker_up()
        clusters = self.s["kind_clusters"]
        if args == ["get", "clusters"]:
            return print("\n".join(clusters)) if clusters else sys.stderr.write("No kind clusters found.\n")
        name = args[args.index("--name") + 1]
        if args[:2] == ["get", "nodes"]:
            return print(f"{name}-control-plane")
        if args[:2] == ["create", "cluster"]:
            # A kind node has no RuntimeClass; its containerd gets runtimes only from --config.
            return self.add_cluster("kind", name, new_cluster("containerd://2.2.0"))
        if args[:2] == ["delete", "cluster"]:
            return self.remove_cluster("kind", name)
        fail(f"stand-in kind: unmodelled {args}")

    def k3d(self, args):
        if args == ["version"]:
            return print("k3d version v5.8.3")
        self.docker_up()
        clusters = self.s["k3d_clusters"]
        name = args[2]
        if args[:2] == ["cluster", "get"]:
            return print(name) if name in clusters else fail(f"No nodes found for given cluster {name}")
        if args[:2] == ["cluster", "create"]:
            # k3s applies its runtimes manifest; --registry-create announces the registry.
            c = new_cluster("containerd://2.1.5-k3s1", K3S_RUNTIME_CLASSES)
            c["config_maps"]["kube-public/local-registry-hosting"] = {"localRegistryHosting.v1": "host: localhost:5111"}
            return self.add_cluster("k3d", name, c)
        if args[:2] == ["cluster", "start"]:
            self.s["clusters"][f"k3d-{name}"]["answers"] = True
            return None
        if args[:2] == ["cluster", "delete"]:
            return self.remove_cluster("k3d", name)
        fail(f"stand-in k3d: unmodelled {args}")

    # kind and k3d name a cluster's kube context <tool>-<name>.
    def add_cluster(self, tool, name, cluster):
        self.s[f"{tool}_clusters"].append(name)
        self.s["clusters"][f"{tool}-{name}"] = cluster

    def remove_cluster(self, tool, name):
        self.s[f"{tool}_clusters"].remove(name)
        del self.s["clusters"][f"{tool}-{name}"]

    def nerdctl(self, args):
        if args == ["--version"]:
            return print("nerdctl version 2.1.3")
        if args == ["--namespace", "k8s.io", "info"]:
            if not self.s["engines"]["containerd"]:
                fail("time=... level=fatal msg=\"cannot access containerd socket\"")
            return print("Server: containerd")
        fail(f"stand-in nerdctl: unmodelled {args}")

    def rdctl(self, args):
        if args == ["version"] and self.s.get("rdctl"):
            return print(self.s["rdctl"])
        fail("Error: could not reach Rancher Desktop")

    def other(self, tool, args):
        if tool == "rustup":
            return print("wasm32-wasip2")
        if args in (["--version"], ["version"]):
            return print(f"{tool} stand-in 9.9")
        fail(f"stand-in {tool}: unmodelled {args}")


def fail(message):
    raise SystemExit(message)


def main():
    tool, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(" ".join([tool, *args]) + "\n")
    state_file = Path(os.environ["FAKE_STATE"])
    laptop = Laptop(json.loads(state_file.read_text()))
    try:
        handler = getattr(laptop, tool, None)
        handler(args) if handler else laptop.other(tool, args)
    finally:
        state_file.write_text(json.dumps(laptop.s, indent=1))


if __name__ == "__main__":
    main()
