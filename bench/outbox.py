#!/usr/bin/env python3
"""Dapr's outbox on state.redis, measured against a real daprd and redis-server (issue 10).
The numbers behind the README's "Stored means published".

    python3 bench/outbox.py facts     # the sharp edges, each request and its answer
    python3 bench/outbox.py designs   # POST designs compared on the sidecar calls they make
    python3 bench/outbox.py rate      # how fast outbox events come through, by setting

`designs` plays each POST design's sidecar calls from Python (a new connection per call, as
the component's wasi:http client makes them), for one user: 200 sequential POSTs, then 50
concurrent ones. `current`: read, first-write save with the ETag, publish. `pending`:
read, save with the event marked pending in the value, publish, then read and save again to
clear the mark (what a save-then-publish design needs at least; a sweeper for users who
never post again would come on top). `outbox`: read, one transaction with the outbox
projection (a new user's history first created empty, outside any transaction).

Standard library and bench/harness.py (processes, ports) only; daprd and redis-server from
PATH (`eval "$(scripts/tools.sh env)"`).
"""
import http.client
import http.server
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import Processes, daprd_cmd, free_port, start_redis

def component(name, type, redis_port, **metadata):
    """A Dapr component on the Redis at redis_port, as YAML."""
    lines = [f'    - {{name: {key}, value: "{value}"}}' for key, value in {"redisHost": f"127.0.0.1:{redis_port}", **metadata}.items()]
    return "\n".join(["apiVersion: dapr.io/v1alpha1", "kind: Component", f"metadata: {{name: {name}}}", "spec:",
                      f"  type: {type}", "  version: v1", "  metadata:", *lines]) + "\n"


def components(state_port, pubsub_port, outbox_pubsub, concurrency):
    """The state store with its outbox on `outbox_pubsub`, the app's pub/sub, and `outbox`."""
    return "---\n".join([
        component("statestore", "state.redis", state_port, outboxPublishPubsub="pubsub",
                  outboxPublishTopic="message-updated", outboxPubsub=outbox_pubsub),
        component("pubsub", "pubsub.redis", pubsub_port),
        component("outbox", "pubsub.redis", pubsub_port, concurrency=concurrency, queueDepth=concurrency),
    ])


class Subscriber(http.server.BaseHTTPRequestHandler):
    """Subscribes to pubsub/message-updated and records each delivery with its time."""
    events, lock = [], threading.Lock()

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
        event = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        with Subscriber.lock:
            Subscriber.events.append((time.monotonic(), event))
        self.answer(b'{"status":"SUCCESS"}')


class Sidecar:
    """redis-server for state, one for pub/sub, the subscriber, and daprd, on free ports."""

    def __init__(self, dir, outbox_pubsub="outbox", concurrency=500):
        self.dir, self.procs = Path(dir), Processes(logs=dir)
        self.state_port, self.pubsub_port, app_port, self.port = free_port(), free_port(), free_port(), free_port()
        (self.dir / "components").mkdir()
        (self.dir / "components/components.yaml").write_text(
            components(self.state_port, self.pubsub_port, outbox_pubsub, concurrency))
        start_redis(self.procs, self.state_port)
        self.pubsub_redis = start_redis(self.procs, self.pubsub_port)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", app_port), Subscriber)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.procs.start("daprd", daprd_cmd("outbox-bench", app_port, self.port, self.dir / "components"))
        deadline = time.monotonic() + 60
        while self.call("GET", "/v1.0/healthz/outbound", quiet=True)[0] != 204:
            if time.monotonic() > deadline:
                raise SystemExit(f"daprd did not start:\n{(self.dir / 'daprd.log').read_text()[-3000:]}")
            time.sleep(0.1)
        self.transaction("warm-up", {"v": 0}, None, {"event": "warm-up"})
        self.wait_for_events(1)

    def stop(self):
        self.procs.stop_all()
        self.server.shutdown()

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
        status, headers, body = self.call("GET", f"/v1.0/state/statestore/{key}?consistency=strong")
        return (json.loads(body) if status == 200 else None), headers.get("etag")

    def save(self, key, value, etag=None):
        item = {"key": key, "value": value, "options": {"concurrency": "first-write", "consistency": "strong"}}
        if etag:
            item["etag"] = etag
        return self.call("POST", "/v1.0/state/statestore", [item])

    def transaction(self, key, value, etag, event, content_type=True):
        write = {"key": key, "value": value, "options": {"concurrency": "first-write", "consistency": "strong"}}
        if etag is not None:
            write["etag"] = etag
        projection = {"outbox.projection": "true"}
        if content_type:
            projection["contentType"] = "application/json"
        return self.call("POST", "/v1.0/state/statestore/transaction", {"operations": [
            {"operation": "upsert", "request": write},
            {"operation": "upsert", "request": {"key": key, "value": event, "metadata": projection}},
        ]})

    def publish(self, event):
        return self.call("POST", "/v1.0/publish/pubsub/message-updated", event)

    def wait_for_events(self, count, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(Subscriber.events) < count:
            time.sleep(0.05)
        time.sleep(1.5)  # and anything that would come after
        with Subscriber.lock:
            events = list(Subscriber.events)
            Subscriber.events.clear()
        return events


def show(step, answer):
    status, _, body = answer
    print(f"{step}: {status} {body[:160]}", flush=True)


def facts(dapr):
    def data(events):
        return [e["data"] for _, e in events]

    show("1. transaction creates a key, no ETag", dapr.transaction("k", {"v": "one"}, None, {"event": "one"}))
    print("   stored:", dapr.get("k"), " delivered:", data(dapr.wait_for_events(1)))
    show("2. transaction with a stale ETag", dapr.transaction("k", {"v": "two"}, "999", {"event": "two"}))
    print("   stored:", dapr.get("k"), " delivered:", data(dapr.wait_for_events(1, 10)))
    show("3. transaction without an ETag on that key", dapr.transaction("k", {"v": "three"}, None, {"event": "three"}))
    print("   stored:", dapr.get("k"), " delivered:", data(dapr.wait_for_events(1)))
    show("4. projection without contentType", dapr.transaction("k2", {"v": 1}, None, {"user_id": "ann", "id": 1}, content_type=False))
    [(_, event)] = dapr.wait_for_events(1)
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


def designs(dapr):
    stats, lock = {}, threading.Lock()

    def count(name, n=1):
        with lock:
            stats[name] = stats.get(name, 0) + n

    def backoff(attempt):  # as src/messages.rs
        time.sleep((1 + random.randrange(1 << min(attempt, 6))) / 1000)

    def append(history, text):
        history = history or {"next_id": 0, "messages": [], "write_ids": {}}
        history["next_id"] += 1
        write_id = os.urandom(16).hex()
        history["messages"] = (history["messages"] + [{"id": history["next_id"], "message": text, "created_at": "2026-11-26T15:00:00.000Z"}])[-100:]
        history["write_ids"][str(history["next_id"])] = write_id
        return history, {"user_id": "u", "message": text, "id": history["next_id"], "write_id": write_id}

    def update(user, change):
        """Read, change, first-write save with the ETag; again after a lost race."""
        for attempt in range(40):
            history, etag = dapr.get(user)
            history, result = change(history)
            count("calls", 2)
            if dapr.save(user, history, etag)[0] == 204:
                return result
            count("conflicts")
            backoff(attempt)
        raise SystemExit(f"{user}: gave up")

    def publish(event):
        count("calls")
        assert dapr.publish(event)[0] == 204

    def current(user, text):
        publish(update(user, lambda history: append(history, text)))

    def marked(history, text):
        history, event = append(history, text)
        history.setdefault("pending", []).append(event["write_id"])
        return history, event

    def unmarked(history, event):
        history["pending"].remove(event["write_id"])
        return history, None

    def pending(user, text):
        event = update(user, lambda history: marked(history, text))
        publish(event)
        update(user, lambda history: unmarked(history, event))

    def outbox(user, text):
        for attempt in range(40):
            history, etag = dapr.get(user)
            count("calls")
            if history is None:
                dapr.save(user, {"next_id": 0, "messages": [], "write_ids": {}})
                count("calls")
                continue
            history, event = append(history, text)
            count("calls")
            if dapr.transaction(user, history, etag, event)[0] == 204:
                return
            count("conflicts")  # each one also publishes a phantom event
            backoff(attempt)
        raise SystemExit("outbox: gave up")

    print("| design | sequential p50 | p99 | sidecar calls per POST | 50 concurrent: time | calls | lost races | events delivered | time to last event |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, post in [("current", current), ("pending", pending), ("outbox", outbox)]:
        stats.clear()
        latencies = []
        for n in range(200):
            started = time.monotonic()
            post(f"sequential-{name}", f"m{n}")
            latencies.append((time.monotonic() - started) * 1000)
        latencies.sort()
        sequential_calls = stats["calls"] / 200
        dapr.wait_for_events(200)
        stats.clear()
        started = time.monotonic()
        threads = [threading.Thread(target=post, args=(f"storm-{name}", f"m{n}")) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - started
        history, _ = dapr.get(f"storm-{name}")
        assert len(history["messages"]) == 50, f"{name}: lost updates"
        events = dapr.wait_for_events(50 + stats.get("conflicts", 0) if name == "outbox" else 50)
        print(f"| {name} | {statistics.median(latencies):.2f} ms | {latencies[197]:.2f} ms | {sequential_calls:.2f} | {took:.2f} s "
              f"| {stats['calls']} | {stats.get('conflicts', 0)} | {len(events)} | {events[-1][0] - started:.2f} s |", flush=True)


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
    settings = {"rate": [("pubsub", 10), ("outbox", 10), ("outbox", 500)]}.get(what, [("outbox", 500)])
    print(f"load average at the start: {os.getloadavg()}")
    for outbox_pubsub, concurrency in settings:
        with tempfile.TemporaryDirectory(prefix="outbox-bench-") as dir:
            dapr = Sidecar(dir, outbox_pubsub, concurrency)
            try:
                if what == "rate":
                    print(f"outboxPubsub {outbox_pubsub}, its concurrency {concurrency}: ", end="", flush=True)
                {"facts": facts, "designs": designs, "rate": rate}[what](dapr)
            finally:
                dapr.stop()
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
