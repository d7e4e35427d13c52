"""(c) The image the shim runs: its build context holds only spin.toml and the .wasm, and the
spin.toml inside points at the .wasm path the Dockerfile copies.

The context is what the Tiltfile's wasm build stages. This runs that exact command (taken from
the evaluated Tiltfile) in a scratch copy of the repo, with a stand-in `cargo` that writes the
component where the real one would, then compares the staged files, the Dockerfile's COPY lines,
spin.toml's `source` and the context Tilt hands to the image build."""

import os
import shlex
import shutil
import stat
import subprocess
import tomllib

import pytest

from deploy_helpers import REPO, cargo_wasm_path, spin_sources

BUILD = "build --target wasm32-wasip2 --release"


def dockerfile_copies():
    """[(source, destination)] of kubernetes/image/Dockerfile's COPY lines; checks FROM scratch."""
    lines = [line.strip() for line in (REPO / "kubernetes/image/Dockerfile").read_text().splitlines()]
    instructions = [shlex.split(line) for line in lines if line and not line.startswith("#")]
    assert instructions[0] == ["FROM", "scratch"], instructions
    copies = []
    for instruction in instructions[1:]:
        assert instruction[0] == "COPY" and len(instruction) == 3, instruction
        copies.append((instruction[1], instruction[2]))
    return copies


@pytest.fixture(scope="module")
def staged(tiltfile, tmp_path_factory):
    """Runs the cluster-mode wasm build in a scratch repo; returns (workdir, context, cargo args)."""
    result = tiltfile("--cluster=k3d")
    context = result.manifests["dapr-spin-hello"]["ImageTargets"][0]["BuildDetails"]["context"]
    command = result.deploy("wasm")["UpdateCmdSpec"]

    work = tmp_path_factory.mktemp("repo")
    shutil.copy(REPO / "spin.toml", work / "spin.toml")
    bin_dir = tmp_path_factory.mktemp("bin")
    cargo = bin_dir / "cargo"
    cargo.write_text(
        "#!/bin/sh\n"
        'echo "$@" > cargo-args\n'
        f"mkdir -p $(dirname {cargo_wasm_path()}) && printf '\\0asm' > {cargo_wasm_path()}\n"
    )
    cargo.chmod(cargo.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    subprocess.run(command["args"], cwd=work, env=env, check=True)

    assert command["dir"] == str(REPO)
    return work, work / os.path.relpath(context, REPO), (work / "cargo-args").read_text().strip()


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_build_runs_cargo_for_the_wasm_target(staged):
    _, _, cargo_args = staged
    assert cargo_args == BUILD


def test_context_holds_only_spin_toml_and_the_wasm(staged):
    _, context, _ = staged
    assert files_under(context) == sorted(["spin.toml", *spin_sources()])


def test_spin_toml_source_is_what_cargo_builds():
    assert spin_sources() == [cargo_wasm_path()]


def test_dockerfile_copies_the_whole_context_to_the_same_paths_under_root(staged):
    _, context, _ = staged
    copies = dockerfile_copies()
    assert sorted(source for source, _ in copies) == files_under(context)
    for source, destination in copies:
        assert destination == "/" + source


def test_image_spin_toml_points_at_the_copied_wasm(staged):
    _, context, _ = staged
    image_files = {destination for _, destination in dockerfile_copies()}
    assert "/spin.toml" in image_files
    manifest = tomllib.loads((context / "spin.toml").read_text())
    for component in manifest["component"].values():
        # The shim resolves `source` against the directory of /spin.toml, i.e. /.
        assert "/" + component["source"] in image_files
        assert (context / component["source"]).read_bytes().startswith(b"\0asm")


def test_both_builders_use_the_staged_context(tiltfile, staged):
    work, context, _ = staged
    expected = str(REPO / context.relative_to(work))
    docker = tiltfile("--cluster=k3d").manifests["dapr-spin-hello"]["ImageTargets"][0]["BuildDetails"]
    nerdctl = tiltfile("--cluster=rancher").manifests["dapr-spin-hello"]["ImageTargets"][0]["BuildDetails"]
    assert docker["context"] == expected
    assert nerdctl["Deps"] == [expected]
