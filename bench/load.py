"""Load runs: the apps side by side, each beside its own daprd on one Redis, and wrk against
each in turn, under the rules of bench/fairness.py."""
import json
import re
import shutil
import time

from fairness import LOAD_CORES, SERVER_CORES, SIDECAR_CORES, SPIN_WASMTIME_OPTIONS, pinned
from harness import (BENCH, LOGS, OtherLoad, Processes, StartError, app_cmd, cpu_seconds, daprd_cmd, free_port, http, output,
                     start_redis, wasmtime_component)

SEED_USERS = 64  # bench/wrk/scenario.lua reads these users in its mix
REUSE = 128  # requests per instance in the instance-reuse rows, as scripts/local.sh serves
WASM_APP_ID, REFERENCE_APP_ID = "dapr-spin-hello", "hello-dapr-fastapi"
SCENARIOS = {
    "get": "GET /",
    "post": "POST /messages",
    "mix": "POST /messages + GET /messages/{user}",
}


def component_files(dest, redis_port, redis_db):
    """The repo's self-hosted Dapr components, on this run's Redis and database, and the event
    retries that the subscriber's answer for an event whose write has not landed yet relies on."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("statestore.yaml", "pubsub.yaml"):
        text = (BENCH.parent / "scripts/dapr" / name).read_text().replace("localhost:6379", f"127.0.0.1:{redis_port}")
        (dest / name).write_text(text.rstrip("\n") + f'\n    - name: redisDB\n      value: "{redis_db}"\n')
    (dest / "resiliency.yaml").write_text((BENCH.parent / "scripts/dapr/resiliency.yaml").read_text())


def spin_manifest(wasm, dapr_port):
    """A spin.toml for `spin up` that serves `wasm` as the repo's manifest does."""
    path = LOGS / f"spin-{wasm.stem}.toml"
    path.write_text("\n".join([
        "spin_manifest_version = 2", "[application]", f'name = "bench-{wasm.stem.replace("_", "-")}"',
        '[[trigger.http]]', 'route = "/..."', 'component = "app"',
        '[variables]', f'dapr_http_port = {{ default = "{dapr_port}" }}',
        '[component.app]', f'source = "{wasm}"',
        'allowed_outbound_hosts = ["http://localhost:{{ dapr_http_port }}", "http://127.0.0.1:{{ dapr_http_port }}"]',
        '[component.app.variables]', 'dapr_http_port = "{{ dapr_http_port }}"', "",
    ]))
    return path


def the_apps(wasms, env):
    """The rows: for each host, the empty component (the ceiling; GET / only, no sidecar) and
    the service as built for the dev loop and, when given, for production; then the course's
    FastAPI code and that code with one shared httpx client (bench/reference/main.py). Each
    app with a sidecar has its own daprd and Redis database, so that each subscriber gets
    only its own app's events (Redis streams are per database)."""
    # No access log: wasmtime serve logs nothing per request either.
    uvicorn = ["uvicorn", "main:app", "--app-dir", str(BENCH / "reference"), "--host", "127.0.0.1",
               "--workers", "1", "--no-access-log", "--port"]
    hosts = [("wasmtime", "wasmtime serve")] + ([("spin", "spin up")] if shutil.which("spin") else [])
    apps = []
    for host, host_label in hosts:
        for build, label, wasm in [("ceiling", "empty component", wasms["ceiling"]),
                                   ("wasm", "this service", wasms["dev"]),
                                   ("lto", "this service, fat LTO", wasms.get("lto"))]:
            if wasm:
                if host == "wasmtime" and build != "ceiling":
                    wasm = wasmtime_component(wasm, env)
                apps.append({"name": f"{build}-{host}", "label": f"{label} ({host_label})", "host": host, "wasm": wasm,
                             "sidecar": build != "ceiling", "app_id": f"{WASM_APP_ID}-{build}-{host}", "ok": 201, "env": {}})
    # wasmtime serve can reuse an instance for many requests (Spin 4 does so for WASIp3 only):
    # the empty component and the service again, each instance serving up to REUSE requests.
    for build, label, wasm in [("ceiling", "empty component", wasms["ceiling"]), ("wasm", "this service", wasms["dev"])]:
        apps.append({"name": f"{build}-wasmtime-reuse", "label": f"{label} (wasmtime serve, instance reuse {REUSE})",
                     "host": "wasmtime", "reuse": REUSE, "sidecar": build != "ceiling",
                     "wasm": wasm if build == "ceiling" else wasmtime_component(wasm, env),
                     "app_id": f"{WASM_APP_ID}-{build}-wasmtime-reuse", "ok": 201, "env": {}})
    apps += [
        {"name": "reference", "label": "FastAPI, course code", "app_id": REFERENCE_APP_ID, "ok": 200, "env": {}, "sidecar": True},
        {"name": "shared", "label": "FastAPI, shared client", "app_id": REFERENCE_APP_ID + "-shared", "ok": 200,
         "env": {"REFERENCE_SHARED_CLIENT": "1"}, "sidecar": True},
    ]
    for db, app in enumerate(apps):
        app.update(db=db, port=free_port(), dapr=free_port())
        if app.get("host") == "wasmtime":
            app["env"] = {"SPIN_VARIABLE_DAPR_HTTP_PORT": str(app["dapr"])}
            app["cmd"] = app_cmd("wasmtime", app["wasm"], app["port"], app["env"], app.get("reuse"), SPIN_WASMTIME_OPTIONS,
                                 SERVER_CORES)
        elif app.get("host") == "spin":
            app["cmd"] = app_cmd("spin", spin_manifest(app["wasm"], app["dapr"]), app["port"], cores=SERVER_CORES)
        else:
            app["cmd"] = pinned(SERVER_CORES, uvicorn + [str(app["port"])])
    return apps


def start_app_and_sidecar(procs, app, components, env):
    app["pids"] = [procs.start(app["name"], app["cmd"], env={**env, **app["env"], "DAPR_HTTP_PORT": str(app["dapr"])}).pid]
    procs.wait_for(f"{app['name']} (GET /)", lambda: http("GET", f"http://127.0.0.1:{app['port']}/")[0] == 200)
    if not app["sidecar"]:
        return
    # Started after its app, as in tests/support: daprd asks the app for subscriptions at start.
    app["pids"].append(procs.start(f"daprd-{app['name']}", daprd_cmd(app["app_id"], app["port"], app["dapr"], components,
                                                                      SIDECAR_CORES), env=env).pid)
    procs.wait_for(f"daprd for {app['name']}", lambda: http("GET", f"http://127.0.0.1:{app['dapr']}/v1.0/healthz")[0] == 204)


def received_events(name):
    return (LOGS / f"{name}.log").read_text(errors="replace").count("Received event")


def settle_events(name, timeout=120):
    """Waits until the app's subscriber has stopped receiving (Dapr delivers asynchronously),
    so one measurement's event backlog does not load the next."""
    last, still_since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline and time.monotonic() - still_since < 1.5:
        count = received_events(name)
        if count != last:
            last, still_since = count, time.monotonic()
        time.sleep(0.25)


def wrk(url, mode, tag, seconds, connections):
    cmd = pinned(LOAD_CORES, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                              "-s", str(BENCH / "wrk/scenario.lua"), url, "--", mode, tag])
    text = output(cmd)
    match = re.search(r"^BENCH_JSON (.*)$", text, re.M)
    if not match:
        raise StartError(f"wrk printed no result:\n{text}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["error_count"] = sum(result["errors"].values())
    return result


def seed(app, checks):
    """The course's curl for SEED_USERS users, which the mixed scenario reads back."""
    name, base = app["name"], f"http://127.0.0.1:{app['port']}"
    answers = [http("POST", f"{base}/messages?user_id=seed-{i}&message=seed%20{i}", {"Content-Type": "application/json"})[0]
               for i in range(SEED_USERS)]
    checks.check(f"{name}: the course's curl stores {SEED_USERS} users", answers == [app["ok"]] * SEED_USERS,
                 f"statuses {sorted(set(map(str, answers)))}")
    status, body = http("GET", f"{base}/messages/seed-7")
    checks.check(f"{name}: GET /messages/seed-7 returns it", status == 200 and "seed 7" in body, f"{status} {body[:80]}")


def request_path(wasms, env, args, checks):
    procs = Processes()
    apps = the_apps(wasms, env)
    try:
        print("==> request path: redis, the apps, a daprd for each that calls one", flush=True)
        redis_port = free_port()
        start_redis(procs, redis_port, SIDECAR_CORES, env)
        for app in apps:
            components = LOGS / f"components-{app['name']}"
            component_files(components, redis_port, app["db"])
            if app["name"] in ("reference", "shared"):
                shutil.copy(BENCH / "reference/subscription.yaml", components)
            start_app_and_sidecar(procs, app, components, env)
        for app in apps:
            if app.get("host") and app["sidecar"]:
                spin = f"http://127.0.0.1:{app['port']}"
                procs.wait_for(f"{app['name']} to be ready (GET /readyz)", lambda spin=spin: http("GET", spin + "/readyz")[0] == 200)
        checks.check(f"started redis, {len(apps)} apps and their daprd", True)

        for app in apps:
            name, base = app["name"], f"http://127.0.0.1:{app['port']}"
            status, body = http("GET", base + "/")
            checks.check(f"{name}: GET / answers its greeting", status == 200 and "Hello" in body, f"{status} {body[:80]}")
            if app["sidecar"]:
                seed(app, checks)
                procs.wait_for(f"{name}'s subscriber to log {SEED_USERS} events", lambda name=name: received_events(name) >= SEED_USERS, timeout=30)
                checks.check(f"{name}: Dapr delivered the {SEED_USERS} events to the subscriber", True)

        results = {}
        for mode, title in SCENARIOS.items():
            for app in apps:
                if mode != "get" and not app["sidecar"]:
                    continue
                name, url = app["name"], f"http://127.0.0.1:{app['port']}"
                print(f"==> {title} on {name}: {args.warmup} s warm-up, {args.duration} s measured", flush=True)
                if args.warmup:
                    wrk(url, mode, f"warm-{mode}", args.warmup, args.connections)
                    settle_events(name)
                cpu_before, other = [cpu_seconds(pid) for pid in app["pids"]], OtherLoad(procs)
                result = results[(mode, name)] = wrk(url, mode, mode, args.duration, args.connections)
                settle_events(name)  # the events of these requests are part of their cost
                used = [[now - then for now, then in zip(cpu_seconds(pid), before)] for pid, before in zip(app["pids"], cpu_before)]
                # A row with no requests (a host too busy to answer in a --quick second) fails its check below.
                result["cpu_ms"] = [sum(u) * 1000 / max(result["requests"], 1) for u in used] + [0.0] * (2 - len(used))
                result["app_sys_share"] = used[0][1] / max(sum(used[0]), 1e-9)
                result["other_cores"] = other.cores()
                checks.check(f"{name} {title}: {result['requests']} requests, {result['rps']:.0f}/s, "
                             f"p99 {result['p99_us'] / 1000:.1f} ms, no errors",
                             result["requests"] > 0 and result["error_count"] == 0, json.dumps(result["errors"]))
        with_sidecar = [app for app in apps if app["sidecar"]]
        return {"results": results, "apps": apps,
                "daprd_errors": {app["name"]: dapr_log_errors(f"daprd-{app['name']}") for app in with_sidecar},
                "dropped": {app["name"]: (LOGS / f"{app['name']}.log").read_text(errors="replace").count("Dropped event")
                            for app in with_sidecar if app.get("host")}}
    finally:
        procs.stop_all()


def dapr_log_errors(name):
    """daprd's error lines, each message once with its count."""
    counts = {}
    for line in (LOGS / f"{name}.log").read_text(errors="replace").splitlines():
        if "level=error" in line:
            msg = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
            key = (msg.group(1) if msg else line)[:160]
            counts[key] = counts.get(key, 0) + 1
    return counts
