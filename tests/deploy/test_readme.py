"""The README's quick start, run as written, as dapr/quickstarts run their README steps: the
fenced blocks between `<!-- STEP name -->` and `<!-- END_STEP -->` in README.md, in a fresh
clone of this working tree (its committed files plus any edits not yet committed, nothing
ignored; only the compiled dependencies under target/ are copied in, so the first build
compiles the crate alone), in the order a reader follows them:

  dev     `scripts/dev.sh`, started in the background; then wait until GET / answers
  curls   the course's three curls, each answer checked against the `# ...` comment under it
          (`created_at` is only checked to be a timestamp)
  edit    the line of Rust the README says to change: it must be in the file the text before
          the block names, exactly as written; the test saves it with a new greeting
  reload  the curl, until it answers the new greeting

So the README cannot drift from the scripts: a renamed script, a changed answer, a moved
GREETING or a loop that no longer reloads fails here.

Ports: 8000 and the others may be taken on a CI machine, so the loop runs on free ports
(scripts/lib/free_ports.py): APP_PORT, DAPR_*_PORT, REDIS_PORT and TILT_PORT in dev.sh's
environment, and `localhost:8000` in the README's commands rewritten to that APP_PORT. Nothing
else in the commands changes. HOME is a fresh folder too, so Tilt's state stays out of the
user's, while cargo, rustup and the tools cache stay the caller's.

Tools: the caller's (scripts/test.sh's, after `eval "$(scripts/tools.sh env)"`): the cached
Tilt, wasmtime and daprd, all real, as dev.sh picks them. A source build announced by
tools.sh fails the test at once rather than waiting for it.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import time


from deploy_helpers import REPO
from test_laptop import DevLoop

README = REPO / "README.md"
STEPS = ["dev", "curls", "edit", "reload"]
PORT_VARIABLES = ["APP_PORT", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_METRICS_PORT", "REDIS_PORT", "TILT_PORT"]
NEW_GREETING = "Hello from the README's own test!"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def readme_steps(text):
    """{name: (code, prose before it)} for each `<!-- STEP name -->` ... `<!-- END_STEP -->`,
    whose code is the one fenced block inside, its indentation (a list item's) removed."""
    steps, prose_start = {}, 0
    for m in re.finditer(r"<!-- STEP (\w+) -->\n(.*?)<!-- END_STEP -->", text, re.S):
        name, body = m.group(1), m.group(2)
        assert name not in steps, f"README step {name} is written twice"
        fence = re.fullmatch(r"(?:\s*\n)?([ \t]*)```\w*\n(.*?)\n[ \t]*```\s*", body, re.S)
        assert fence, f"README step {name} must hold one fenced code block, not:\n{body}"
        indent, code = fence.groups()
        lines = [line[len(indent):] if line.startswith(indent) else line for line in code.splitlines()]
        steps[name] = ("\n".join(lines), text[prose_start:m.start()])
        prose_start = m.end()
    return steps


def commands_with_answers(code):
    """[(command, expected answer or None)]: each line of a shell block, with the `# ` comment
    lines under it joined as its expected answer."""
    pairs = []
    for line in code.splitlines():
        if line.startswith("#"):
            assert pairs, f"a comment before any command: {line}"
            command, answer = pairs[-1]
            pairs[-1] = (command, (answer or "") + line.lstrip("#").strip())
        elif line.strip():
            pairs.append((line.strip(), None))
    return pairs


def normalized(answer):
    """A JSON answer with each created_at checked to be a timestamp and then blanked."""
    def walk(value):
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key == "created_at":
                    assert isinstance(item, str) and TIMESTAMP.fullmatch(item), f"created_at {item!r}"
                    item = "<timestamp>"
                out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value
    return walk(json.loads(answer))


def free_ports(n):
    out = subprocess.check_output([str(REPO / "scripts/lib/free_ports.py"), str(n)], text=True)
    return [int(port) for port in out.split()]


def on_port(command, port):
    return command.replace("localhost:8000", f"localhost:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def fresh_clone(dest):
    """A clone of this working tree as it is: the checked-out commit, then each modified,
    deleted or untracked (not ignored) file as it is on disk."""
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True)
    head = subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "HEAD"], text=True).strip()
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", head], check=True)
    changed = subprocess.check_output(["git", "-C", str(REPO), "ls-files", "-z", "--modified", "--deleted",
                                       "--others", "--exclude-standard"], text=True).split("\0")
    for name in filter(None, changed):
        source, target = REPO / name, dest / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():
            target.unlink()


class Background(DevLoop):
    """test_laptop's DevLoop (output collected, fails on a source build or an early exit,
    stopped with SIGINT as Tilt expects), for a README command run in the clone."""

    def __init__(self, command, cwd, env):
        self.lines = []
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()


def shell(command, cwd, env):
    p = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout


def test_the_readme_has_each_step_once():
    # Where they lie (the first 60 lines) is test_docs.py's check.
    steps = readme_steps(README.read_text())
    assert sorted(steps) == sorted(STEPS), f"README steps {sorted(steps)}, expected {STEPS}"


def test_the_quick_start_runs_as_written(tmp_path):
    for tool in ("tilt", "cargo", "redis-server", "curl", "git"):
        assert shutil.which(tool), \
            f'{tool} is not on PATH: run scripts/tools.sh all, then eval "$(scripts/tools.sh env)"'
    steps = readme_steps(README.read_text())
    clone = tmp_path / "dapr-spin-hello"
    fresh_clone(clone)
    # This tree's compiled dependencies, so the clone's first build compiles only the crate
    # itself (a cold build of every dependency adds minutes and tests nothing of the README).
    for build in ("target/wasm32-wasip2/release", "target/release"):
        if (REPO / build).is_dir():
            shutil.copytree(REPO / build, clone / build, symlinks=True)

    ports = dict(zip(PORT_VARIABLES, map(str, free_ports(len(PORT_VARIABLES)))))
    app_port = ports["APP_PORT"]
    home = tmp_path / "home"
    home.mkdir()
    kept = {"CARGO_HOME": "~/.cargo", "RUSTUP_HOME": "~/.rustup", "DAPR_SPIN_HELLO_CACHE": "~/.cache/dapr-spin-hello"}
    env = dict(os.environ, **ports, HOME=str(home), TILT_DISABLE_ANALYTICS="1",
               **{name: os.environ.get(name, os.path.expanduser(default)) for name, default in kept.items()})
    env.pop("CARGO_TARGET_DIR", None)  # the loop reads the .wasm from the clone's target/

    def get_root():
        code, out = shell(on_port("curl -s http://localhost:8000/", app_port), clone, env)
        return code == 0 and out

    # dev: started as the README writes it, in the background; the first cargo build of a fresh
    # clone takes a while on a loaded machine.
    dev = Background(on_port(steps["dev"][0], app_port), clone, env)
    try:
        dev.wait_until("answer to GET /", get_root, timeout=900)

        # curls: each command as written, on the chosen port; its answer as the comment says.
        pairs = commands_with_answers(steps["curls"][0])
        assert len(pairs) == 3 and all(answer for _, answer in pairs), pairs
        for command, answer in pairs:
            code, out = shell(on_port(command, app_port), clone, env)
            assert code == 0, f"{command} exited {code}"
            assert normalized(out) == normalized(answer), f"{command}\nanswered {out}\nthe README says {answer}"

        # edit: the README names the file in the text before the block, and shows the line.
        code, prose = steps["edit"]
        named = re.findall(r"`([\w/.-]+\.rs)`", prose)
        assert named, f"the text before the README's edit step names no .rs file:\n{prose}"
        path = named[-1]
        line = code.strip()
        source = (clone / path).read_text()
        assert line in source.splitlines(), f"README's line is not in {path} as written:\n{line}"
        assert '"' in line, f"the README's line has no string to change: {line}"
        edited = re.sub(r'"[^"]*"', json.dumps(NEW_GREETING), line, count=1)
        (clone / path).write_text(source.replace(line, edited, 1))

        # reload: the README's curl, until the new greeting answers.
        [(command, _)] = commands_with_answers(steps["reload"][0])

        def reloaded():
            code, out = shell(on_port(command, app_port), clone, env)
            return code == 0 and NEW_GREETING in out and json.loads(out) == {"message": NEW_GREETING}

        started = time.monotonic()
        dev.wait_until("new greeting", reloaded, timeout=300)
        print(f"README quick start: the new greeting answered {time.monotonic() - started:.1f} s after the save")
    finally:
        dev.stop()
