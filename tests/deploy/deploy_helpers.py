"""Helpers for the deployment tests: the repo's paths, what spin.toml and Cargo.toml say, and
the pieces of a hermetic `tilt alpha tiltfile-result` run (see conftest.py)."""

import json
import re
import shutil
import subprocess
import tempfile
import tomllib
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def spin_sources():
    """Every component `source` in spin.toml, as paths relative to the repo."""
    manifest = tomllib.loads((REPO / "spin.toml").read_text())
    return [c["source"] for c in manifest["component"].values()]


def cargo_wasm_path():
    """Where `cargo build --target wasm32-wasip2 --release` writes the component: the lib name
    (Cargo.toml [lib] name, else the package name with - as _) under the target's release dir."""
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    name = cargo.get("lib", {}).get("name") or cargo["package"]["name"].replace("-", "_")
    return f"target/wasm32-wasip2/release/{name}.wasm"


def pinned_versions():
    """scripts/versions.env as a dict, plus the versions the tools modules pin (the ones
    cluster.sh installs), without their leading v: DAPR (and its COMPONENTS_CONTRIB) and
    SPIN_OPERATOR_VERSION."""
    versions = dict(line.split("=", 1) for line in (REPO / "scripts/versions.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    go_mod = (REPO / "scripts/tools/daprd/go.mod").read_text()
    versions["DAPR"] = re.search(r"^\s*github\.com/dapr/dapr v(\S+)", go_mod, re.M).group(1)
    versions["COMPONENTS_CONTRIB"] = re.search(r"^\s*github\.com/dapr/components-contrib v(\S+)", go_mod, re.M).group(1)
    operator = (REPO / "scripts/tools/spin-operator/go.mod").read_text()
    versions["SPIN_OPERATOR_VERSION"] = re.search(r"^\s*github\.com/spinkube/spin-operator v(\S+)", operator, re.M).group(1)
    return versions


@cache
def go_module(path, version):
    """The source of a Go module at a version, from the Go module proxy (or Go's module cache):
    the upstream files the tests compare against, with nothing copied into this repo."""
    if shutil.which("go") is None:
        raise RuntimeError("go is not on PATH: the deployment tests read upstream CRDs through `go mod download`")
    # Outside any module, so no go.mod nearby can pull in other requirements.
    with tempfile.TemporaryDirectory() as empty:
        p = subprocess.run(["go", "mod", "download", "-json", f"{path}@{version}"], cwd=empty,
                           capture_output=True, text=True, timeout=600)
    info = json.loads(p.stdout) if p.stdout.strip() else {}
    if p.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {path}@{version} failed: {info.get('Error') or p.stderr}")
    return Path(info["Dir"])


def spin_operator_source():
    """spin-operator at the pinned version. The proxy serves it under its original module path,
    github.com/spinkube/spin-operator (the repository now lives at spinframework/spin-operator,
    but its go.mod keeps that path, and the proxy refuses the new one)."""
    return go_module("github.com/spinkube/spin-operator", "v" + pinned_versions()["SPIN_OPERATOR_VERSION"])


def dapr_source():
    """dapr/dapr at the version the cluster and the tests' daprd run."""
    return go_module("github.com/dapr/dapr", "v" + pinned_versions()["DAPR"])


def components_contrib_source():
    """dapr/components-contrib at the version built into that daprd: each component's
    metadata.yaml lists the settings it reads."""
    return go_module("github.com/dapr/components-contrib", "v" + pinned_versions()["COMPONENTS_CONTRIB"])


def kubeconfig(path, context):
    """A kubeconfig whose current context is `context`, on a cluster of the same name (Tilt
    tells dev clusters apart by that name). No server answers: evaluation never connects."""
    if context is None:
        path.write_text("")
        return path
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {context}\n  cluster: {{server: 'https://127.0.0.1:9'}}\n"
        f"contexts:\n- name: {context}\n  context: {{cluster: {context}, user: {context}}}\n"
        f"users:\n- name: {context}\n  user: {{}}\n"
        f"current-context: {context}\n"
    )
    return path


def extension_checkout(data_home):
    """Tilt fetches ext:// extensions by cloning github.com/tilt-dev/tilt-extensions into
    $XDG_DATA_HOME/tilt-dev/tilt_modules, and falls back to an existing checkout when the fetch
    fails (as it does offline). Seed that checkout with our test double of the nerdctl extension."""
    repo = data_home / "tilt-dev/tilt_modules/github.com/tilt-dev/tilt-extensions"
    shutil.copytree(FIXTURES / "tilt-extensions", repo)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "test double"]):
        subprocess.run(git + args, check=True)


class TiltResult:
    def __init__(self, data):
        self.data = data
        self.manifests = {m["Name"]: m for m in data["Manifests"]}

    def deploy(self, name):
        return self.manifests[name]["DeployTarget"]

    def deps(self, name):
        return set(self.manifests[name]["ResourceDependencies"] or [])

    def labels(self, name):
        return set(self.manifests[name]["Labels"] or {})


