#!/usr/bin/env python3
"""POST delivery designs compared against a real daprd and redis-server (issue 24), and the
sharp edges of Dapr's outbox on state.redis (issue 10).

    taskset -c 0 python3 bench/designs.py designs   # the three designs side by side: one table
    python3 bench/designs.py facts     # the outbox's sharp edges, each request and its answer
    python3 bench/designs.py rate      # how fast outbox events come through, by setting

`designs` plays each design's sidecar calls from Python, with one client for all three (a new
HTTP connection per call, as the component's wasi:http client makes them), each against a
daprd and Redis of its own: daprd on core 1 alone (bench/fairness.py's SERVER_CORES), its
Redis instances beside this script, which is meant to run on core 0 (`taskset -c 0`, above).

- `outbox` (today's, Dapr 1.18's transactional outbox): read the history with its ETag (a new
  user's is first created empty with a first-write save, then read again); then one state
  transaction: the history upsert with the ETag, and the `outbox.projection` upsert carrying
  the event. Its state store has outboxPublishPubsub=pubsub, outboxPublishTopic=message-updated
  and outboxPubsub=outbox (a pub/sub of its own, 500 workers). A lost race (the transaction
  fails; its event is published anyway, a phantom) saves `unstored/<write_id>` (first-write,
  kept 24 h), as src/delivery/publish.rs does, then retries after a random back-off.
- `publish-first` (the candidate): read with the ETag; draw a write id; publish the event,
  which carries the write id and the ETag it is conditional on (none for a new user), straight
  to pubsub/message-updated; then write the history in a one-operation state transaction
  (upsert with the ETag, first-write), or for a new user create it holding the message with a
  first-write save. A lost race (non-2xx) saves `unstored/<write_id>` and retries with a new
  write id after the same back-off.
- `sweep` (save, then publish, with a sweeper): read with the ETag (a new user's history
  created first, as above); save the history with the ETag and the event recorded as pending
  in it; publish; read and save again to clear the mark. A sweeper for users who never post
  again must find the histories with pending events, and Dapr's state API cannot list keys, so
  each pending event also has an index entry `pending/<write_id>` (naming its user), written
  in the same state transaction as the history that marks it pending and deleted in the one
  that clears the mark: no extra sidecar call per POST, and a pending mark is never without
  its entry before its event is published. On state.redis a transaction is one MULTI/EXEC
  whose other commands run when the ETag check fails (measured, daprd 1.18.1): so each lost
  race to mark leaves an entry whose history holds no pending event, which the sweeper must
  read and drop (the run counts those left), and a lost race to clear deletes the entry before
  the retry clears the mark (its event is published by then). The sweeper itself lists the
  entries with SCAN on Redis, around Dapr (or through the state query API, which needs
  RediSearch), reads each history, publishes what is still pending, and clears it: a cost per
  sweep interval, not per POST, and not in daprd, so not measured here. Neither publish-first
  nor sweep has outbox settings on its state store (a daprd of its own each).

The subscriber (an HTTP server here that daprd delivers to) judges each event before acting on
it, as src/delivery/subscribe.rs does, by reading the user's history: an event acts once the
history holds its write id. For publish-first, whose event may come before its write lands: if
the history's ETag still equals the event's and the write id is absent, it reads again after 5,
10, 20, 40, 80 and 160 ms; absent with another ETag, the event is a phantom (and still the same
ETag after the last wait: `unstored/<write_id>` decides, or the event stays undecided, which the
service would answer 503 for Dapr to deliver again). For outbox and sweep the write has landed
before the event is published, so one read decides (a message the history limit has dropped:
`unstored/<write_id>` decides). The claim that makes acting once (subscribe.rs) is the same in
every design and is left out.

Measured per design: 200 POSTs one after another for one user (p50, p99, sidecar calls per
POST; and for their events, the time from each POST's return to the moment the subscriber
would act on it, p50 and p99: below 0 when it acts before the POST returns, as under sweep,
whose POST still clears its mark after publishing); then 50 POSTs at once for a new user
(time, their sidecar calls, lost races, events delivered and phantoms among them, time from
the start until the subscriber would act on the last real event); then daprd's CPU at rest
(5 s after the runs, over 10 s, as % of one core). Lines of code: a column to fill in by hand.

Standard library and bench/harness.py (processes, ports) only; daprd and redis-server from
PATH (`eval "$(scripts/tools.sh env)"`).
"""
import http.client
import http.server
import json
import math
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from fairness import LOAD_CORES, SERVER_CORES
from harness import Processes, cpu_seconds, daprd_cmd, free_port, start_redis

APP_ID = "designs-bench"
HISTORY_LIMIT = 100  # src/config.rs: message_history_limit's default
MAX_ATTEMPTS = 20  # src/delivery/publish.rs: MAX_SAVE_ATTEMPTS
MARK_TTL_SECONDS = 86400  # src/delivery/mod.rs: RECORD_TTL_SECONDS
WAITS_MS = (5, 10, 20, 40, 80, 160)  # publish-first's subscriber, for a write still on its way
SEQUENTIAL, STORM = 200, 50
DESIGNS = ("outbox", "publish-first", "sweep")


def component(name, type, redis_port, **metadata):
    """A Dapr component on the Redis at redis_port, as YAML."""
    lines = [f'    - {{name: {key}, value: "{value}"}}' for key, value in {"redisHost": f"127.0.0.1:{redis_port}", **metadata}.items()]
    return "\n".join(["apiVersion: dapr.io/v1alpha1", "kind: Component", f"metadata: {{name: {name}}}", "spec:",
                      f"  type: {type}", "  version: v1", "  metadata:", *lines]) + "\n"


def components(state_port, pubsub_port, outbox_pubsub, concurrency):
    """The state store with its outbox on `outbox_pubsub`, the app's pub/sub, and `outbox`; with
    outbox_pubsub None, a state store without outbox settings and the app's pub/sub."""
    if outbox_pubsub is None:
        return "---\n".join([component("statestore", "state.redis", state_port), component("pubsub", "pubsub.redis", pubsub_port)])
    return "---\n".join([
        component("statestore", "state.redis", state_port, outboxPublishPubsub="pubsub",
                  outboxPublishTopic="message-updated", outboxPubsub=outbox_pubsub),
        component("pubsub", "pubsub.redis", pubsub_port),
        component("outbox", "pubsub.redis", pubsub_port, concurrency=concurrency, queueDepth=concurrency),
    ])


class Subscriber(http.server.BaseHTTPRequestHandler):
    """Subscribes to pubsub/message-updated and hands each delivery to its sidecar's `received`."""

    def log_message(self, *args):
        pass

    def answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(json.dumps([{"pubsubname": "pubsub", "topic": "message-updated", "route": "/events"}]).encode()
                    if self.path == "/dapr/subscribe" else b"{}")

    def do_POST(self):
        arrived = time.monotonic()
        self.server.sidecar.received(arrived, json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
        self.answer(b'{"status":"SUCCESS"}')


class Sidecar:
    """redis-server for state, one for pub/sub, the subscriber, and daprd, on free ports. With
    outbox_pubsub None, the state store has no outbox. `judge(sidecar, event)` decides on each
    delivered event that carries a write id, before it is recorded (None: record only)."""

    def __init__(self, dir, outbox_pubsub="outbox", concurrency=500, judge=None):
        self.dir, self.procs, self.judge = Path(dir), Processes(logs=dir), judge
        self.deliveries, self.lock = [], threading.Lock()
        self.state_port, self.pubsub_port, app_port, self.port = free_port(), free_port(), free_port(), free_port()
        (self.dir / "components").mkdir()
        (self.dir / "components/components.yaml").write_text(
            components(self.state_port, self.pubsub_port, outbox_pubsub, concurrency))
        start_redis(self.procs, self.state_port, cores=LOAD_CORES)
        self.pubsub_redis = start_redis(self.procs, self.pubsub_port, cores=LOAD_CORES)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", app_port), Subscriber)
        self.server.daemon_threads, self.server.sidecar = True, self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.daprd = self.procs.start("daprd", daprd_cmd(APP_ID, app_port, self.port, self.dir / "components", cores=SERVER_CORES))
        deadline = time.monotonic() + 60
        while self.call("GET", "/v1.0/healthz/outbound", quiet=True)[0] != 204:
            if time.monotonic() > deadline or self.daprd.poll() is not None:
                raise SystemExit(f"daprd did not start:\n{(self.dir / 'daprd.log').read_text()[-3000:]}")
            time.sleep(0.1)
        if outbox_pubsub is None:
            self.publish({"event": "warm-up"})
        else:
            self.transaction("warm-up", {"v": 0}, None, {"event": "warm-up"})
        self.wait_for_events(1)

    def stop(self):
        self.procs.stop_all()
        self.server.shutdown()
        self.server.server_close()

    def received(self, arrived, event):
        data = event.get("data")
        verdict = self.judge(self, data) if self.judge and isinstance(data, dict) and "write_id" in data else None
        with self.lock:
            self.deliveries.append((arrived, event, verdict))

    def call(self, method, path, body=None, quiet=False):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request(method, path, body=None if body is None else json.dumps(body), headers={"content-type": "application/json"})
            response = conn.getresponse()
            answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
            conn.close()
            return answer
        except OSError:
            if quiet:
                return None, {}, ""
            raise

    def get(self, key):
        status, headers, body = self.call("GET", f"/v1.0/state/statestore/{urllib.parse.quote(key, safe='')}?consistency=strong")
        return (json.loads(body) if status == 200 else None), headers.get("etag")

    def save(self, key, value, etag=None, ttl=None):
        item = {"key": key, "value": value, "options": {"concurrency": "first-write", "consistency": "strong"}}
        if etag:
            item["etag"] = etag
        if ttl:
            item["metadata"] = {"ttlInSeconds": str(ttl)}
        return self.call("POST", "/v1.0/state/statestore", [item])

    def transact(self, *operations):
        return self.call("POST", "/v1.0/state/statestore/transaction", {"operations": list(operations)})

    def transaction(self, key, value, etag, event, content_type=True):
        """The outbox's: the history upsert with its ETag and the projection carrying the event."""
        projection = {"outbox.projection": "true"}
        if content_type:
            projection["contentType"] = "application/json"
        return self.transact(upsert(key, value, etag), {"operation": "upsert", "request": {"key": key, "value": event, "metadata": projection}})

    def publish(self, event):
        return self.call("POST", "/v1.0/publish/pubsub/message-updated", event)

    def wait_for_events(self, count, timeout=120):
        """The deliveries (time, event, verdict) once `count` have been judged, and any after them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.deliveries) < count:
            time.sleep(0.05)
        time.sleep(1.5)  # and anything that would come after
        with self.lock:
            deliveries = list(self.deliveries)
            self.deliveries.clear()
        return deliveries

    def state_keys(self, pattern):
        """How many keys match `pattern` in the state store's Redis, asked directly (KEYS), as a
        sweeper would have to: Dapr's state API lists no keys."""
        with socket.create_connection(("127.0.0.1", self.state_port), timeout=10) as redis:
            redis.sendall(f"*2\r\n$4\r\nKEYS\r\n${len(pattern)}\r\n{pattern}\r\n".encode())
            reply = b""
            while b"\r\n" not in reply:
                reply += redis.recv(4096)
        return int(reply.split(b"\r\n", 1)[0][1:])


def upsert(key, value, etag=None):
    request = {"key": key, "value": value, "options": {"concurrency": "first-write", "consistency": "strong"}}
    if etag is not None:
        request["etag"] = etag
    return {"operation": "upsert", "request": request}


def delete(key):
    return {"operation": "delete", "request": {"key": key}}


def show(step, answer):
    status, _, body = answer
    print(f"{step}: {status} {body[:160]}", flush=True)


def facts(dapr):
    def data(events):
        return [e["data"] for _, e, _ in events]

    show("1. transaction creates a key, no ETag", dapr.transaction("k", {"v": "one"}, None, {"event": "one"}))
    print("   stored:", dapr.get("k"), " delivered:", data(dapr.wait_for_events(1)))
    show("2. transaction with a stale ETag", dapr.transaction("k", {"v": "two"}, "999", {"event": "two"}))
    print("   stored:", dapr.get("k"), " delivered:", data(dapr.wait_for_events(1, 10)))
    show("3. transaction without an ETag on that key", dapr.transaction("k", {"v": "three"}, None, {"event": "three"}))
    print("   stored:", dapr.get("k"), " delivered:", data(dapr.wait_for_events(1)))
    show("4. projection without contentType", dapr.transaction("k2", {"v": 1}, None, {"user_id": "ann", "id": 1}, content_type=False))
    [(_, event, _)] = dapr.wait_for_events(1)
    print(f"   delivered: datacontenttype {event['datacontenttype']!r}, data {event['data']!r}, id {event['id']!r}")
    show("5. first-write save without an ETag, new key", dapr.save("k3", {"v": "created"}))
    show("6. the same on the existing key", dapr.save("k3", {"v": "again"}))
    show("7. transaction without an ETag on a key created by (5)", dapr.transaction("k3", {"v": "over"}, None, {"event": "seven"}))
    print("   stored:", dapr.get("k3"), " delivered:", data(dapr.wait_for_events(1, 10)))
    dapr.pubsub_redis.send_signal(signal.SIGTERM)
    dapr.pubsub_redis.wait()
    started = time.monotonic()
    show("8. transaction with the pub/sub's Redis down", dapr.transaction("k4", {"v": "down"}, None, {"event": "down"}))
    print(f"   answered in {time.monotonic() - started:.2f} s; stored: {dapr.get('k4')}")


# The designs: each POST function plays one POST's sidecar calls and returns the event of the
# write that landed; `tally` counts the calls, lost races and events sent.

class Tally:
    def __init__(self):
        self.counts, self.lock = {}, threading.Lock()

    def add(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def __getitem__(self, name):
        return self.counts.get(name, 0)


def backoff(attempt):  # as src/delivery/publish.rs
    time.sleep((1 + random.randrange(1 << min(attempt, 6))) / 1000)


def ok(answer):
    return 200 <= answer[0] < 300


def append(history, user, text):
    """The history with `text` appended by a new write id (the oldest beyond the limit dropped), and its event."""
    history = history or {"next_id": 0, "messages": [], "write_ids": {}}
    history["next_id"] += 1
    id, write_id = history["next_id"], os.urandom(16).hex()
    message = {"id": id, "message": text, "created_at": "2026-12-01T12:00:00.000Z"}
    history["messages"].append(message)
    history["write_ids"][str(id)] = write_id
    for dropped in history["messages"][:-HISTORY_LIMIT]:
        del history["write_ids"][str(dropped["id"])]
    history["messages"] = history["messages"][-HISTORY_LIMIT:]
    return history, {"user_id": user, **message, "write_id": write_id}


def stored_by(history, event):
    """"yes", "no" or "forgotten" (the limit dropped that message id), as History::stored_by."""
    history = history or {"next_id": 0, "messages": []}
    first_kept = history["messages"][0]["id"] if history["messages"] else history["next_id"] + 1
    if event["id"] > history["next_id"]:
        return "no"
    if event["id"] < first_kept:
        return "forgotten"
    kept = any(m["id"] == event["id"] and m["message"] == event["message"] for m in history["messages"])
    return "yes" if kept and history.get("write_ids", {}).get(str(event["id"])) == event["write_id"] else "no"


def unstored_key(write_id):
    return f"unstored/{write_id}"


def create(dapr, tally, user):
    """A new user's history, created empty (first-write: refused when another writer was first)."""
    tally.add("calls")
    if not ok(dapr.save(user, {"next_id": 0, "messages": [], "write_ids": {}})):
        tally.add("lost creates")


def mark_unstored(dapr, tally, event):
    tally.add("calls")
    dapr.save(unstored_key(event["write_id"]), {"user_id": event["user_id"], "id": event["id"]}, ttl=MARK_TTL_SECONDS)


def post_outbox(dapr, tally, user, text):
    for attempt in range(MAX_ATTEMPTS):
        history, etag = dapr.get(user)
        tally.add("calls")
        if history is None:
            create(dapr, tally, user)
            continue
        history, event = append(history, user, text)
        tally.add("calls")
        tally.add("events sent")  # the outbox publishes the event of a failed transaction too
        if ok(dapr.transaction(user, history, etag, event)):
            return event
        tally.add("lost races")
        mark_unstored(dapr, tally, event)
        backoff(attempt)
    raise SystemExit(f"outbox: {user}: gave up")


def post_publish_first(dapr, tally, user, text):
    for attempt in range(MAX_ATTEMPTS):
        history, etag = dapr.get(user)
        tally.add("calls")
        history, event = append(history, user, text)
        event["etag"] = etag
        tally.add("calls")
        tally.add("events sent")
        assert dapr.publish(event)[0] == 204
        tally.add("calls")
        written = dapr.transact(upsert(user, history, etag)) if etag else dapr.save(user, history)
        if ok(written):
            return event
        if not etag:
            tally.add("lost creates")
        tally.add("lost races")
        mark_unstored(dapr, tally, event)
        backoff(attempt)
    raise SystemExit(f"publish-first: {user}: gave up")


def pending_key(write_id):
    return f"pending/{write_id}"


def post_sweep(dapr, tally, user, text):
    for attempt in range(MAX_ATTEMPTS):  # the message, its event pending, and its index entry
        history, etag = dapr.get(user)
        tally.add("calls")
        if history is None:
            create(dapr, tally, user)
            continue
        history, event = append(history, user, text)
        history.setdefault("pending", {})[event["write_id"]] = event
        tally.add("calls")
        if ok(dapr.transact(upsert(user, history, etag), upsert(pending_key(event["write_id"]), {"user_id": user}))):
            break
        tally.add("lost races")
        backoff(attempt)
    else:
        raise SystemExit(f"sweep: {user}: gave up")
    tally.add("calls")
    tally.add("events sent")
    assert dapr.publish(event)[0] == 204
    for attempt in range(MAX_ATTEMPTS):  # the mark cleared, and its index entry
        history, etag = dapr.get(user)
        del history["pending"][event["write_id"]]
        tally.add("calls", 2)
        if ok(dapr.transact(upsert(user, history, etag), delete(pending_key(event["write_id"])))):
            return event
        tally.add("lost races")
        tally.add("lost clears")
        backoff(attempt)
    raise SystemExit(f"sweep: {user}: gave up clearing")


class Verdict:
    def __init__(self, kind, reads, waits=0):
        self.kind, self.at, self.reads, self.waits = kind, time.monotonic(), reads, waits


def landed(dapr, event, history):
    """Whether `history` holds the event's write, asking `unstored/` for a message it has dropped; and the reads that took."""
    found = stored_by(history, event)
    if found == "forgotten":
        return dapr.get(unstored_key(event["write_id"]))[0] is None, 1
    return found == "yes", 0


def judge_landed(dapr, event):
    """outbox, sweep: published after the write ran, so one read of the history decides."""
    history, _ = dapr.get(event["user_id"])
    stored, reads = landed(dapr, event, history)
    return Verdict("act" if stored else "phantom", 1 + reads)


def judge_publish_first(dapr, event):
    """publish-first: the write may still be on its way while the history's ETag is the event's."""
    reads = 0
    for waits, pause in enumerate((0, *WAITS_MS)):
        time.sleep(pause / 1000)
        history, etag = dapr.get(event["user_id"])
        stored, more = landed(dapr, event, history)
        reads += 1 + more
        if stored:
            return Verdict("act", reads, waits)
        if etag != event["etag"]:
            return Verdict("phantom", reads, waits)
    marked = dapr.get(unstored_key(event["write_id"]))[0] is not None
    return Verdict("phantom" if marked else "undecided", reads + 1, len(WAITS_MS))


SETUPS = {  # design: its POST, its subscriber's judge, whether its state store has the outbox
    "outbox": (post_outbox, judge_landed, True),
    "publish-first": (post_publish_first, judge_publish_first, False),
    "sweep": (post_sweep, judge_landed, False),
}


def percentile(values, q):
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def run_design(name, dir):
    post, judge, outbox = SETUPS[name]
    dapr = Sidecar(dir, "outbox" if outbox else None, 500, judge)
    try:
        return measure(name, dapr, post)
    finally:
        dapr.stop()


def measure(name, dapr, post):
    row, notes = {"design": name}, []

    def judged(deliveries, events, since):
        """Checks that each real event was acted on once, and what the subscriber did."""
        verdicts = [(event["data"], verdict) for _, event, verdict in deliveries if verdict]
        acted = [(data, verdict) for data, verdict in verdicts if verdict.kind == "act"]
        mine = {event["write_id"] for event in events}
        acted_ids = [data["write_id"] for data, _ in acted]
        if sorted(acted_ids) != sorted(mine):
            notes.append(f"{since}: acted on {len(acted_ids)} events ({len(set(acted_ids))} distinct) for {len(mine)} stored messages; "
                         f"{len(mine - set(acted_ids))} never acted on")
        kinds = {kind: sum(v.kind == kind for _, v in verdicts) for kind in ("act", "phantom", "undecided")}
        waited = [(v.at - arrived) * 1000 for arrived, _, v in deliveries if v and v.waits]
        steps = {}
        for _, v in verdicts:
            steps[v.waits] = steps.get(v.waits, 0) + 1
        notes.append(f"{since}: {len(deliveries)} events delivered: {kinds['act']} acted on, {kinds['phantom']} phantoms, "
                     f"{kinds['undecided']} undecided; subscriber reads {sum(v.reads for _, v in verdicts)} "
                     f"({sum(v.reads for _, v in verdicts) / max(1, len(verdicts)):.2f} per event)"
                     + (f"; {len(waited)} waited for their write: by pauses taken {dict(sorted(steps.items()))}, "
                        f"arrival to verdict max {max(waited):.1f} ms, median {statistics.median(waited):.1f} ms" if waited else ""))
        return verdicts, acted, kinds

    tally, latencies, returned, events = Tally(), [], {}, []
    for n in range(SEQUENTIAL):
        started = time.monotonic()
        event = post(dapr, tally, f"sequential-{name}", f"m{n}")
        returned[event["write_id"]] = time.monotonic()
        latencies.append((returned[event["write_id"]] - started) * 1000)
        events.append(event)
    row["p50"], row["p99"] = statistics.median(latencies), percentile(latencies, 0.99)
    row["calls per POST"] = tally["calls"] / SEQUENTIAL
    verdicts, acted, _ = judged(dapr.wait_for_events(tally["events sent"]), events, "sequential")
    event_latencies = [(verdict.at - returned[data["write_id"]]) * 1000 for data, verdict in acted if data["write_id"] in returned]
    row["event p50"], row["event p99"] = statistics.median(event_latencies), percentile(event_latencies, 0.99)
    row["reads per event"] = sum(v.reads for _, v in verdicts) / len(verdicts)
    if tally["lost races"]:
        notes.append(f"sequential: {tally['lost races']} lost races")

    tally, events, lock = Tally(), [], threading.Lock()
    user = f"storm-{name}"

    def storm_post(n):
        event = post(dapr, tally, user, f"m{n}")
        with lock:
            events.append(event)

    started = time.monotonic()
    threads = [threading.Thread(target=storm_post, args=(n,)) for n in range(STORM)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row["storm time"] = time.monotonic() - started
    history, _ = dapr.get(user)
    assert len(history["messages"]) == STORM, f"{name}: lost updates"
    row["storm calls"], row["lost races"] = tally["calls"], tally["lost races"]
    _, acted, kinds = judged(dapr.wait_for_events(tally["events sent"]), events, "storm")
    row["delivered"], row["phantoms"], row["undecided"] = sum(kinds.values()), kinds["phantom"], kinds["undecided"]
    row["to last event"] = max(verdict.at for _, verdict in acted) - started
    notes.append(f"storm: {tally['lost creates']} lost creates of the history, {tally['lost clears']} lost clears, "
                 f"{tally['events sent']} events sent")
    notes.append(f"after the runs: {dapr.state_keys('*unstored/*')} unstored/ marks, "
                 f"{dapr.state_keys('*pending/*')} pending/ index entries in Redis")

    time.sleep(5)  # then daprd at rest
    t0, cpu0 = time.monotonic(), sum(cpu_seconds(dapr.daprd.pid))
    time.sleep(10)
    row["rest cpu"] = (sum(cpu_seconds(dapr.daprd.pid)) - cpu0) / (time.monotonic() - t0) * 100
    return row, notes


def designs():
    rows = []
    print("| design | POST p50 | POST p99 | sidecar calls per POST | event latency p50 | event latency p99 | subscriber reads per event (sequential) "
          "| 50 at once: time | their calls | lost races | events delivered (phantoms) | time to last event | daprd CPU at rest | lines of code |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for name in DESIGNS:
        with tempfile.TemporaryDirectory(prefix=f"designs-bench-{name}-") as dir:
            row, notes = run_design(name, dir)
        rows.append((row, notes))
        undecided = f", {row['undecided']} undecided" if row["undecided"] else ""
        print(f"| {name} | {row['p50']:.2f} ms | {row['p99']:.2f} ms | {row['calls per POST']:.2f} | {row['event p50']:.1f} ms "
              f"| {row['event p99']:.1f} ms | {row['reads per event']:.2f} | {row['storm time']:.2f} s | {row['storm calls']} "
              f"| {row['lost races']} | {row['delivered']} ({row['phantoms']}{undecided}) | {row['to last event']:.2f} s "
              f"| {row['rest cpu']:.2f} % | n/a |", flush=True)
    print()
    for row, notes in rows:
        for note in notes:
            print(f"- {row['design']}, {note}")


def rate(dapr, count=300):
    started = time.monotonic()
    threads = [threading.Thread(target=dapr.transaction, args=(f"r{n}", {"v": n}, None, {"n": n})) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = time.monotonic()
    events = dapr.wait_for_events(count)
    print(f"{count} transactions in {sent - started:.2f} s; {len(events)} events, the last {events[-1][0] - sent:.2f} s after the last transaction")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "designs"
    if what not in ("facts", "designs", "rate"):
        sys.exit(__doc__)
    print(f"load average at the start: {os.getloadavg()}", flush=True)
    if what == "designs":
        designs()
    for outbox_pubsub, concurrency in {"rate": [("pubsub", 10), ("outbox", 10), ("outbox", 500)], "facts": [("outbox", 500)]}.get(what, []):
        with tempfile.TemporaryDirectory(prefix="outbox-bench-") as dir:
            dapr = Sidecar(dir, outbox_pubsub, concurrency)
            try:
                if what == "rate":
                    print(f"outboxPubsub {outbox_pubsub}, its concurrency {concurrency}: ", end="", flush=True)
                {"facts": facts, "rate": rate}[what](dapr)
            finally:
                dapr.stop()
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
