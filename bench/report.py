"""The report: bench/RESULTS.md (or bench/out/quick.md), from what the run measured."""
import re
import statistics

from builds import BUILD, PRODUCTION
from fairness import SPIN_WASMTIME_OPTIONS, placement
from load import SCENARIOS
from profile import table


# Below this line, RESULTS.md holds measurements written by hand (comparisons across
# branches, which one run cannot make); a new run keeps them.
KEPT = "<!-- Written by hand below: bench/run.py keeps this part. -->"


def kept_notes(path):
    """The hand-written part of the report at path, from KEPT on, or nothing."""
    text = path.read_text() if path.exists() else ""
    return "\n" + text[text.index(KEPT):] if KEPT in text else ""


def spread(values, unit="s"):
    return (f"{statistics.median(values):.2f} {unit} median (min {min(values):.2f}, max {max(values):.2f}; "
            f"n={len(values)})")


def ms(us):
    return f"{us / 1000:.2f} ms"


def verdict(ok):
    return "n/a" if ok is None else ("pass" if ok else "miss")


def release_profile(cargo_toml):
    match = re.search(r"^\[profile\.release\]\n((?:[^\[\n].*\n?)*)", cargo_toml.read_text(), re.M)
    return ", ".join(line.strip() for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")) if match else ""


def share(part, whole):
    """part ÷ whole; 0 when whole completed no request (that row's own check has failed)."""
    return part / whole if whole else 0.0


def targets(res):
    """The targets of issue 12, on wasmtime serve, as table rows."""
    rows = []
    ceiling = res.get(("get", "ceiling-wasmtime"))
    fastapi_get, fastapi_post = res.get(("get", "reference")), res.get(("post", "reference"))
    for name, label in (("wasm-wasmtime", "dev-loop build"), ("lto-wasmtime", "fat-LTO build")):
        get, post = res.get(("get", name)), res.get(("post", name))
        if not get:
            continue
        ratio = share(get["rps"], ceiling["rps"])
        rows.append(f"| GET /, this service ÷ the empty component ({label}) | ≥ 0.95 | {ratio:.2f} "
                    f"({get['rps']:,.0f} vs {ceiling['rps']:,.0f} req/s) | {verdict(ratio >= 0.95)} |")
        rows.append(f"| GET / p99 ({label}) | ≤ the FastAPI original's | {ms(get['p99_us'])} vs {ms(fastapi_get['p99_us'])} | "
                    f"{verdict(get['p99_us'] <= fastapi_get['p99_us'])} |")
        post_ratio = share(post["rps"], fastapi_post["rps"])
        rows.append(f"| POST /messages throughput ({label}) | ≥ 20× the FastAPI original's | {post_ratio:.1f}× "
                    f"({post['rps']:,.0f} vs {fastapi_post['rps']:,.0f} req/s) | {verdict(post_ratio >= 20)} |")
    return rows


def profile_section(profile, req):
    """The callgrind profile of GET /, and what it says about the hosts."""
    if not profile:
        return ["", "## Where GET / goes", "", "Not profiled in this run: quick mode, or no valgrind (`apt-get install valgrind`)."]
    empty, service = profile["empty component"], profile["this service"]
    lines = ["", "## Where GET / goes", "",
             "`python3 bench/profile.py`'s measure, in this run: each .wasm under `wasmtime serve` in valgrind's "
             "callgrind (no pooling allocator: valgrind cannot map its reservation), instructions per request in "
             "user space, split by where they run; \"instantiation\" is everything instantiating the component "
             "takes, host and guest.", ""] + table(profile, 500) + [""]
    lines.append(
        f"- The service's own code is a small part of the gap: its guest code runs {service['guest (wasm)'] - empty['guest (wasm)']:,.0f} "
        f"instructions more than the empty handler's {empty['guest (wasm)']:,.0f}. What remains is instantiation, "
        f"{service['instantiation']:,.0f} against {empty['instantiation']:,.0f}: every request gets a fresh instance, and "
        "wasmtime binds each imported function into it, and the service imports what the empty component does not "
        "(the outgoing HTTP client, request options for its time limits, clocks). Fat LTO trims the guest's code, "
        "not its imports.")
    if req:
        res = req["results"]
        fastapi, ceiling = res.get(("get", "reference")), res.get(("get", "ceiling-wasmtime"))
        lines.append(
            "- Why the hosts differ: uvicorn keeps one Python process and one app object for every request, parses "
            "HTTP in C (httptools) on one event loop (uvloop), and its per-request cost is the framework's routing and "
            f"JSON: {fastapi['cpu_ms'][0]:.3f} ms of CPU per GET / here. wasmtime serve isolates each request in a new "
            f"instance: even the empty component spends {empty['instantiation']:,.0f} of its {empty['all']:,.0f} "
            "instructions instantiating, and most of the rest in the host's HTTP stack (hyper on tokio) and in handing "
            "headers and bodies across the wasi:http boundary as resources, against "
            f"{empty['guest (wasm)']:,.0f} in the guest; {ceiling['cpu_ms'][0]:.3f} ms of CPU per GET / here.")
    return lines


def report(data, args):
    req, builds, prod, saves, m = data["requests"], data.get("builds"), data.get("production"), data.get("saves"), data["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"One run of `{data['command']}` on {data['date']}, on the machine described below.",
        "Targets (issues 5 and 12) are benchmarks, not tests: a miss does not fail the run.",
        "",
        "| measure | target | measured | result |",
        "| --- | --- | --- | --- |",
    ]
    if builds:
        med = statistics.median(builds["rebuilds_s"])
        lines.append(f"| incremental rebuild after a one-line change | ≤ 2 s median | {spread(builds['rebuilds_s'])} | {verdict(med <= 2)} |")
    if saves:
        med = statistics.median(saves["times"])
        lines.append(f"| save-to-serve, `tilt up -- --local --host=wasmtime` | ≤ 3 s median | {spread(saves['times'])} | {verdict(med <= 3)} |")
    size = builds["size"] if builds else data["wasm_size"]
    lines.append(f"| .wasm size, dev-loop build | ≤ 300 KB | {size:,} bytes = {size / 1000:.0f} KB | {verdict(size <= 300_000)} |")
    if prod:
        lines.append(f"| .wasm size, fat-LTO build | ≤ 300 KB | {prod['size']:,} bytes = {prod['size'] / 1000:.0f} KB | "
                     f"{verdict(prod['size'] <= 300_000)} |")
    if req:
        res = req["results"]
        lines += targets(res)
        lines += [
            "",
            "## Request path",
            "",
            f"wrk, 1 thread, {args.connections} connections, {args.duration} s per measurement after a {args.warmup} s "
            f"warm-up. Cores: {placement()}. Each app that calls Dapr beside its own daprd, all on one "
            "redis-server (one database each). The last column compares the row with the empty component on "
            "the same host (GET /) or with the FastAPI course code (POST).",
            "",
            "| scenario | app | req/s | p50 | p99 | failed requests | CPU ms per request: app (system share), its daprd | other load, cores | ÷ |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode, title in SCENARIOS.items():
            for app in req["apps"]:
                r = res.get((mode, app["name"]))
                if not r:
                    continue
                # GET /: ÷ the empty component on the same host, with the same instance reuse.
                ceiling = f"ceiling-{app.get('host')}" + ("-reuse" if app.get("reuse") else "")
                base = res.get(("get", ceiling)) if mode == "get" else res.get((mode, "reference"))
                ratio = f"{r['rps'] / base['rps']:.2f}×" if base and base is not r else ""
                daprd = f"{r['cpu_ms'][1]:.3f}" if app["sidecar"] else "–"
                lines.append(f"| {title} | {app['label']} | {r['rps']:,.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {r['error_count']} | "
                             f"{r['cpu_ms'][0]:.3f} ({r['app_sys_share']:.0%}), {daprd} | {r['other_cores']:.2f} | {ratio} |")
        spin_installed = any(app.get("host") == "spin" for app in req["apps"])
        lines += [
            "",
            "- Failed requests: non-2xx answers, socket errors and time-outs (10 s), as wrk counts them.",
            "- CPU ms per request: the process's user + system CPU time over the measurement (and the delivery of its "
            "events) divided by its requests; in brackets the app's share spent in the kernel. Every server has one "
            "core (bench/fairness.py), so its CPU per request is at most 1000 ms ÷ its req/s.",
            "- The empty component (bench/ceiling/) is a spin-sdk 5.2 handler that returns the same JSON with the same "
            "headers, built with the same release profile; its throughput is the host's limit for GET /.",
            f"- wasmtime serve runs with the wasmtime options Spin sets for itself (spinframework/spin, "
            f"crates/core/src/lib.rs, `impl Default for Config`): `{' '.join(SPIN_WASMTIME_OPTIONS)}`.",
            "- " + ("Spin: measured with `spin up`, rows marked so." if spin_installed else
                    "Spin: not installed on this machine (its installer downloads from GitHub, which this machine "
                    "cannot reach), so no `spin up` rows; the harness adds them when `spin` is on PATH."),
            "- Production build: the README's push build, `" + " ".join(f"{k}={v}" for k, v in PRODUCTION.items()) +
            f" {' '.join(BUILD)}`.",
            "- What a POST does: the service reads the user's history with its ETag (a new user, as every POST here "
            "is (bench/wrk/scenario.lua), has none); then it publishes the message's event and creates the history "
            "holding the message with a first-write save (a user with a history: writes it under that ETag in a "
            "one-operation state transaction): three sidecar calls, each on a new connection. The reference saves the latest "
            "message and publishes (two calls, no concurrency control), as the course did. GET /messages is one "
            "state read in all.",
            "- The course code opens a new httpx client per request, which builds an SSL context each time; "
            "\"shared client\" is the same code with one client for the app's life (bench/reference/main.py).",
            "- FastAPI runs under uvicorn with 1 worker, uvloop and httptools (the course's `fastapi[standard]`), "
            "no access log.",
            "- wrk is a closed-loop generator: under saturation its percentiles understate queueing (coordinated omission).",
        ]
        for app in req["apps"]:
            if app["name"] in req["daprd_errors"]:
                errs = req["daprd_errors"][app["name"]]
                detail = "; ".join(f"{n}× `{msg}`" for msg, n in errs.items()) if errs else "none"
                lines.append(f"- Error lines in the log of {app['label']}'s daprd: {detail}.")
        for name, dropped in req["dropped"].items():
            if dropped:
                lines.append(f"- Events dropped by the subscriber of {name}: {dropped}.")
    lines += profile_section(data.get("instructions"), req)
    if builds:
        lines += [
            "",
            "## Artifact",
            "",
            f"- Clean release build (`{' '.join(BUILD)}` in a copy of the repo with an empty target/): {builds['clean_s']:.1f} s.",
            f"- Rebuilds after changing the greeting in src/routes.rs: {', '.join(f'{t:.2f}' for t in builds['rebuilds_s'])} s.",
        ]
        if prod:
            lines.append(f"- Production build (fat LTO, one codegen unit), clean: {prod['clean_s']:.1f} s, "
                         f"{prod['size']:,} bytes (dev-loop build: {builds['size']:,}).")
        lines += [
            f"- [profile.release] in Cargo.toml at the time: {data['profile'] or 'none (cargo defaults)'}.",
            f"- Other load during the builds: {builds['other_cores']:.2f} cores"
            + (f"; during the production build: {prod['other_cores']:.2f}." if prod else "."),
        ]
    if saves:
        lines += [
            "",
            "## Save-to-serve",
            "",
            "`tilt up -- --local --host=wasmtime` in a copy of the repo; each edit writes a new greeting into "
            "src/routes.rs and times until GET http://127.0.0.1:8000/ answers it (Tilt's rebuild, the app's restart, the first answer).",
            f"- Per edit: {', '.join(f'{t:.2f}' for t in saves['times'])} s.",
            f"- Of which cargo's rebuild, as Tilt's log reports it: {', '.join(f'{t:.2f}' for t in saves['builds'])} s.",
            f"- Other load during the edits: {saves['other_cores']:.2f} cores.",
        ]
    lines += [
        "",
        "## Machine",
        "",
        f"- {m['cpus']} CPUs: {m['cpu']}; {m['memory']} memory; {m['os']}.",
        f"- Load average (1, 5, 15 min): {data['load']['start']} at the start, {data['load'].get('requests', '?')} before the "
        f"request path, {data['load']['end']} at the end.{' ' + data['note'] if data['note'] else ''}",
        "- Other load, in each section: the cores kept busy meanwhile by processes that this run did not start "
        f"(and by the kernel's own work), out of {m['cpus']}. More than a few tenths means something else ran "
        "and skewed those numbers.",
    ] + [f"- {name}: {version}" for name, version in m["tools"].items()]
    return "\n".join(lines) + "\n"
