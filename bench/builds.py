"""The builds and the save-to-serve loop: the clean build and the rebuild after a one-line
change, the production (fat-LTO) build, the ceiling component, and `tilt up` from a save to
the new answer. All of it in a copy of the repo, never in src/ (the ceiling builds in
bench/ceiling/, which holds nothing else)."""
import contextlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

from harness import BENCH, LOGS, REPO, OtherLoad, Processes, StartError, free_port, http, port_busy, run

WASM = "target/wasm32-wasip2/release/dapr_spin_hello.wasm"
BUILD = ["cargo", "build", "--target", "wasm32-wasip2", "--release"]
# The README's production build: the release profile with fat LTO and one codegen unit.
PRODUCTION = {"CARGO_PROFILE_RELEASE_LTO": "true", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "1"}
CEILING = BENCH / "ceiling"
GREETING = "Hello from Dapr Spin!"
GREETING_LINE = re.compile(r'(pub const GREETING: &str = )"[^"]*";')
# Tilt's local mode binds these fixed ports; another run of the test suite may hold them.
TILT_PORTS = {"app": 8000, "daprd HTTP": 3500, "redis": 6379, "daprd gRPC": 50001, "daprd metrics": 9090}


def set_greeting(crate, text):
    source = crate / "src/routes.rs"
    code, n = GREETING_LINE.subn(rf'\g<1>"{text}";', source.read_text())
    if n != 1:
        raise StartError(f"{source}: no `pub const GREETING` line to edit")
    source.write_text(code)


def copy_repo(dest):
    """The repo without target/, .git/ and bench/out/: what a fresh clone builds from."""
    shutil.copytree(REPO, dest, ignore=lambda d, names: [n for n in names if (Path(d) / n).relative_to(REPO).as_posix()
                                                         in ("target", ".git", "bench/out", ".pytest_cache")])


def measure_builds(crate, edits, env):
    """Clean release build in the copy, then `edits` rebuilds after changing the greeting."""
    print("==> artifact: clean release build in a copy of the repo", flush=True)
    log = LOGS / "cargo-copy.log"
    other = OtherLoad()
    clean = run(BUILD, cwd=crate, env=env, log=log)
    size = (crate / WASM).stat().st_size
    print(f"    clean build {clean:.1f} s, {size} bytes", flush=True)
    rebuilds = []
    for i in range(1, edits + 1):
        set_greeting(crate, f"{GREETING} (rebuild {i})")
        rebuilds.append(run(BUILD, cwd=crate, env=env, log=log))
        print(f"    rebuild {i}: {rebuilds[-1]:.2f} s", flush=True)
    set_greeting(crate, GREETING)
    run(BUILD, cwd=crate, env=env, log=log)  # leave the copy built, as Tilt will start from it
    return {"clean_s": clean, "size": size, "rebuilds_s": rebuilds, "other_cores": other.cores()}


def production_build(crate, env):
    """The fat-LTO build of the copy, in its own target dir: how long, how big, and the .wasm."""
    print("==> production build: fat LTO, one codegen unit, in the copy", flush=True)
    target = crate / "target-production"
    other = OtherLoad()
    seconds = run(BUILD, cwd=crate, env={**env, **PRODUCTION, "CARGO_TARGET_DIR": str(target)}, log=LOGS / "cargo-production.log")
    wasm = LOGS / "dapr_spin_hello-production.wasm"
    shutil.copy(target / WASM.removeprefix("target/"), wasm)
    print(f"    {seconds:.1f} s, {wasm.stat().st_size} bytes", flush=True)
    return {"clean_s": seconds, "size": wasm.stat().st_size, "wasm": wasm, "other_cores": other.cores()}


def ceiling_build(env):
    """The empty component, built with the service's release profile (checked by the caller).
    It shares the repo's target dir: its Cargo.lock pins the service's crates, so spin-sdk and
    the rest compile once for both (a cold ceiling build of its own cost CI about 50 s)."""
    print("==> the ceiling: bench/ceiling/, an empty spin-sdk component", flush=True)
    target = REPO / "target"
    run(BUILD, cwd=CEILING, env={**env, "CARGO_TARGET_DIR": str(target)}, log=LOGS / "cargo-ceiling.log")
    wasm = LOGS / "ceiling.wasm"
    shutil.copy(target / "wasm32-wasip2/release/ceiling.wasm", wasm)
    return wasm


def wait_for_tilt_ports(checks, timeout=900):
    """Tilt's fixed ports, free: a test suite running meanwhile holds them for minutes, so
    this waits and tries again before it gives up."""
    deadline = time.monotonic() + timeout
    while busy := [f"{what} {port}" for what, port in TILT_PORTS.items() if port_busy(port)]:
        if time.monotonic() > deadline:
            break
        print(f"    tilt's ports are taken ({', '.join(busy)}); trying again in 15 s", flush=True)
        time.sleep(15)
    return checks.check("tilt local mode: its ports are free", not busy, ", ".join(busy))


def save_to_serve(crate, edits, env, checks):
    """`tilt up -- --local --host=wasmtime` in the copy; per edit, the time from saving a new
    greeting in src/routes.rs until GET / on the app answers it."""
    if not wait_for_tilt_ports(checks):
        return None
    print("==> save-to-serve: tilt up -- --local --host=wasmtime, in the copy", flush=True)
    procs = Processes()
    app = f"http://127.0.0.1:{TILT_PORTS['app']}"
    try:
        procs.start("tilt", ["tilt", "up", "--stream", "--web-mode=prod", f"--port={free_port()}",
                             "--", "--local", "--host=wasmtime"], env=env, cwd=crate)
        procs.wait_for("tilt's app to serve the greeting and be ready",
                       lambda: GREETING in http("GET", app + "/")[1] and http("GET", app + "/readyz")[0] == 200, timeout=600)
        checks.check("tilt up -- --local --host=wasmtime serves the app", True)
        times, other = [], OtherLoad(procs)
        for i in range(1, edits + 1):
            time.sleep(3)  # let the previous restart and Tilt's file watcher settle
            text = f"{GREETING} (save {i})"
            set_greeting(crate, text)
            saved = time.monotonic()
            procs.wait_for(f"GET / to answer {text!r}", lambda text=text: text in http("GET", app + "/", timeout=2)[1], timeout=300)
            times.append(time.monotonic() - saved)
            print(f"    save {i}: {times[-1]:.2f} s", flush=True)
        # Tilt's log has cargo's own time for each rebuild: the share of the build in each save.
        builds = re.findall(r"Finished `release` profile .* in ([\d.]+)s", (LOGS / "tilt.log").read_text())
        return {"times": times, "builds": [float(b) for b in builds[-edits:]], "other_cores": other.cores()}
    finally:
        procs.stop_all(signal.SIGINT)  # Tilt ends its serve_cmds on Ctrl-C
        kill_left_in(crate)


def kill_left_in(directory):
    """Ends processes still running in the copy (Tilt's serve_cmds run in their own groups)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                continue
            if cwd == directory.resolve() or directory.resolve() in cwd.parents:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
