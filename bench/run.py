#!/usr/bin/env python3
"""The benchmark of issues 5 and 12: the Spin component under `wasmtime serve` (and `spin up`
when installed) against an empty component, the host's ceiling (bench/ceiling/), and the
course's FastAPI original (bench/reference/), each beside its own daprd, on one Redis.

    python3 bench/run.py           # full: writes bench/RESULTS.md (about 12 minutes on 2 cores)
    python3 bench/run.py --quick   # CI: short runs, writes bench/out/quick.md

It installs what it needs first: the pinned tools through scripts/tools.sh (cached; a no-op
once there) and wrk from Debian (`apt-get install -y wrk`) when missing. Standard library
only; the reference runs in the tools' Python venv.

Measured:
- request path (bench/load.py): wrk at a fixed concurrency on GET /, on POST /messages (the
  course's curl), and on POST and GET /messages/{user} alternating, for the empty component
  (GET / only), the Spin app (and, in full mode, its fat-LTO build) and the reference (as
  the course wrote it, and with one shared httpx client) in one run, under the rules of
  bench/fairness.py (pinned cores, the same load, Spin's wasmtime options);
- artifact (full only; bench/builds.py): the .wasm size, the clean release build, the
  rebuild after a one-line change (the greeting), and the production (fat-LTO) build, in a
  copy of the repo, never in src/;
- save-to-serve (full only): `tilt up -- --local --host=wasmtime` in that copy, time from
  saving a new greeting until GET / returns it. Tilt's local mode uses the fixed ports
  8000, 3500, 6379, 50001 and 9090; while another run holds them, it waits (up to 15 min).

The targets are benchmarks, not tests: a missed target does not fail the run. A process that
does not start, a request that errors, or a ceiling not built like the service does (exit
status 1). Logs: bench/out/logs/. The report: bench/report.py.
"""
import argparse
import datetime
import fcntl
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from builds import BUILD, CEILING, WASM, ceiling_build, copy_repo, measure_builds, production_build, save_to_serve
from harness import BENCH, LOGS, OUT, REPO, Checks, StartError, install_tools, load, machine, run, wasmtime_component
from load import request_path
from profile import instructions_per_get
from report import kept_notes, release_profile, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI: short runs, no build timings, no Tilt; writes bench/out/quick.md")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, help="seconds per measurement (full 15, quick 1)")
    parser.add_argument("--edits", type=int, default=5, help="rebuilds and save-to-serve edits (full mode)")
    parser.add_argument("--note", default="", help="a remark for RESULTS.md, e.g. what else loaded the machine")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops what was started
    args.duration = args.duration or (1 if args.quick else 15)
    args.warmup = 0 if args.quick else 3  # quick mode checks that the harness works, not the numbers
    command = shlex.join(["python3", "bench/run.py", *sys.argv[1:]])

    OUT.mkdir(exist_ok=True)
    lock = open(OUT / ".lock", "w")  # held until exit: two runs would share bench/out/logs and the CPU
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("bench: another bench/run.py is running (it holds bench/out/.lock)", file=sys.stderr)
        return 1
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir()
    checks = Checks()
    data = {"command": command, "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "load": {"start": load()}, "note": args.note, "profile": release_profile(REPO / "Cargo.toml"), "requests": None}
    try:
        env = install_tools(full=not args.quick)
        data["machine"] = machine(env)
        print("==> building the component (spin.toml's build command)", flush=True)
        run(BUILD, env=env, log=LOGS / "cargo-repo.log")
        wasms = {"dev": LOGS / "dapr_spin_hello.wasm"}  # a copy: a rebuild of the repo meanwhile cannot change it
        shutil.copy(REPO / WASM, wasms["dev"])
        data["wasm_size"] = wasms["dev"].stat().st_size
        profiles = {path: release_profile(path / "Cargo.toml") for path in (REPO, CEILING)}
        checks.check("the ceiling is built with the service's release profile", len(set(profiles.values())) == 1,
                     "; ".join(f"{path}: {profile}" for path, profile in profiles.items()))
        wasms["ceiling"] = ceiling_build(env)
        with tempfile.TemporaryDirectory(prefix="dapr-spin-hello-bench-") as tmp:
            crate = Path(tmp) / "repo"
            if not args.quick:
                copy_repo(crate)
                data["builds"] = measure_builds(crate, args.edits, env)
                data["production"] = production_build(crate, env)
                wasms["lto"] = data["production"]["wasm"]
            data["load"]["requests"] = load()
            data["requests"] = request_path(wasms, env, args, checks)
            if not args.quick and shutil.which("valgrind"):
                print("==> profile: instructions per GET / under callgrind (bench/profile.py)", flush=True)
                data["instructions"] = instructions_per_get({"empty component": wasms["ceiling"],
                                                             "this service": wasmtime_component(wasms["dev"], env),
                                                             "this service, fat LTO": wasmtime_component(wasms["lto"], env)}, env)
            if not args.quick:
                data["saves"] = save_to_serve(crate, args.edits, env, checks)
    except StartError as e:
        checks.check("start", False, str(e))
    finally:
        data["load"]["end"] = load()
    if "wasm_size" in data:
        target = OUT / "quick.md" if args.quick else BENCH / "RESULTS.md"
        target.write_text(report(data, args) + kept_notes(target))
        print(f"==> wrote {target.relative_to(REPO)}")
    print(f"bench {'quick' if args.quick else 'full'}: {checks.passed} passed, {len(checks.failed)} failed")
    for failure in checks.failed:
        print(f"  failed: {failure}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
