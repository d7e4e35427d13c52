"""Helpers for the deployment tests: the repo's paths, what spin.toml and Cargo.toml say, and
the pieces of a hermetic `tilt alpha tiltfile-result` run (see conftest.py)."""

import shutil
import subprocess
import tomllib
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


