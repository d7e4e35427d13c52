"""Fixtures for the deployment tests: the Tiltfile evaluated by the real Tilt binary
(`tilt alpha tiltfile-result`), which needs no cluster."""

import json
import os
import re
import shutil
import subprocess

import pytest

from deploy_helpers import REPO, TiltResult, extension_checkout, kubeconfig


@pytest.fixture(scope="session")
def tilt_binary():
    tilt = shutil.which("tilt")
    if tilt is None:
        pytest.fail('tilt is not on PATH: run scripts/tools.sh tilt, then eval "$(scripts/tools.sh env)"')
    return tilt


@pytest.fixture(scope="session")
def tilt_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("tilt-home")
    extension_checkout(home / "data")
    return home


@pytest.fixture(scope="session")
def run_tiltfile(tilt_binary, tilt_home):
    """run_tiltfile(*args, context=None) -> (returncode, stdout, stderr) of
    `tilt alpha tiltfile-result -- args` under a kubeconfig whose current context is `context`."""

    def run(*args, context=None):
        name = re.sub(r"[^A-Za-z0-9]+", "-", context or "none")
        env = dict(
            os.environ,
            HOME=str(tilt_home),
            XDG_DATA_HOME=str(tilt_home / "data"),
            KUBECONFIG=str(kubeconfig(tilt_home / f"kubeconfig-{name}", context)),
            TILT_DISABLE_ANALYTICS="1",
        )
        cmd = [tilt_binary, "alpha", "tiltfile-result", "-f", str(REPO / "Tiltfile"), "--", *args]
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr

    return run


@pytest.fixture(scope="session")
def tiltfile(run_tiltfile):
    """tiltfile(*args, context=None) -> TiltResult; fails the test if evaluation fails."""

    def evaluate(*args, context=None):
        code, out, err = run_tiltfile(*args, context=context)
        assert code == 0, f"tiltfile-result {args} (context {context}) exited {code}:\n{err}"
        return TiltResult(json.loads(out))

    return evaluate
