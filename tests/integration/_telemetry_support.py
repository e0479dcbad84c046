"""Shared by the telemetry and Logs API tests: a host-side collector that the subscriber extensions forward what
they receive to, layers built from the subscriber fixtures, and helpers to read events back.

The collector listens on the host's loopback; from inside a sandbox an extension (or the function) reaches it at
host.lambdarun.internal (the sandbox's route to the host's loopback), without one at 127.0.0.1.
Every assertion reads what a subscriber received; waits only bound how long to wait for it.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lambdarun
from lambdarun.sandbox.spec import HOST_GATEWAY_NAME
from lambdarun.sandbox.view import bwrap_usable
from lambdarun.telemetry.records import Event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telemetry"
FUNCTION = FIXTURES / "function"
PY_SUBSCRIBER = FIXTURES / "subscriber.py"
NODE_SUBSCRIBER = FIXTURES / "node_subscriber.js"
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
COLLECTOR_VAR = "TELEMETRY_COLLECTOR_PORT"
COLLECTOR_HOST_VAR = "TELEMETRY_COLLECTOR_HOST"


def collector_env(port: int) -> dict[str, str]:
    """Where the function's processes find the collector."""
    host = HOST_GATEWAY_NAME if bwrap_usable() else "127.0.0.1"
    return {COLLECTOR_VAR: str(port), COLLECTOR_HOST_VAR: host}


def free_port() -> int:
    """A port nothing listens on now (the extension binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Batch:
    """One HTTP request a subscriber's listener received (or, for TCP, one line)."""

    ext: str
    instance: str
    seq: int
    status: int
    body: str
    path: str = ""
    method: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def events(self) -> list[dict[str, Any]]:
        value = json.loads(self.body)
        return value if isinstance(value, list) else [value]


class Collector:
    """A TCP server on 127.0.0.1 reading one JSON message per line from the extensions; the function can also ask
    it to wait (`{"kind": "wait", ...}`) until a subscriber received something."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._open = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # -- the server
    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._cond:
                self._open += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffered = b""
        try:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                buffered += data
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    if message.get("kind") == "wait":
                        answer = self._answer_wait(message)
                        conn.sendall((json.dumps(answer) + "\n").encode())
                        continue
                    acked = message.pop("ack", False)
                    message["events"] = _events_of(message)
                    with self._cond:
                        self.messages.append(message)
                        self._cond.notify_all()
                    if acked:
                        conn.sendall(b"+\n")
        finally:
            conn.close()
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    def _answer_wait(self, query: dict[str, Any]) -> dict[str, Any]:
        """Hold the function until subscriber `ext` received a record containing `contains`, or until `count`
        records starting with `prefix` were received or counted in platform.logsDropped. Scans each message once."""
        ext, timeout = query["ext"], query.get("timeout", 30)
        seen = 0
        tally = {"found": False, "received": 0, "dropped": 0}

        def done() -> bool:
            nonlocal seen
            for message in self.messages[seen:]:
                if message["ext"] != ext:
                    continue
                for event in message["events"]:
                    if "contains" in query:
                        tally["found"] = tally["found"] or query["contains"] in json.dumps(event["record"])
                    elif event["type"] == "function" and str(event["record"]).startswith(query["prefix"]):
                        tally["received"] += 1
                    elif event["type"] == "platform.logsDropped":
                        tally["dropped"] += event["record"]["droppedRecords"]
            seen = len(self.messages)
            if "contains" in query:
                return bool(tally["found"])
            return tally["received"] + tally["dropped"] >= query["count"]

        ok = self.wait(done, timeout)
        with self._cond:
            done()
            return {"ok": ok, **tally}

    # -- reading what arrived
    def wait(self, predicate: Callable[[], bool], timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def settle(self, timeout: float = 10) -> None:
        """Wait until every extension's connection ended: all they forwarded has been read."""
        assert self.wait(lambda: self._open == 0, timeout), "an extension still holds its collector connection"

    def of(self, ext: str, kind: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [m for m in self.messages if m["ext"] == ext and (kind is None or m["kind"] == kind)]

    def instances(self, ext: str) -> list[str]:
        """The extension's processes, one per environment generation, in start order."""
        return list(dict.fromkeys(m["instance"] for m in self.of(ext)))

    def batches(self, ext: str, instance: str | None = None, accepted_only: bool = True) -> list[Batch]:
        found = []
        for m in self.of(ext, "batch"):
            if instance is not None and m["instance"] != instance:
                continue
            if accepted_only and m["status"] != 200:
                continue
            found.append(Batch(ext, m["instance"], m["seq"], m["status"], m["body"], m["path"], m["method"],
                               m["headers"]))  # fmt: skip
        return found

    def events(self, ext: str, instance: str | None = None) -> list[dict[str, Any]]:
        """Every event the subscriber accepted, in arrival order (HTTP batches flattened, or TCP lines)."""
        with self._cond:
            messages = [m for m in self.messages if m["ext"] == ext and instance in (None, m["instance"])]
        return [event for m in messages for event in m["events"]]

    def received_event(self, ext: str, event_type: str) -> list[dict[str, Any]]:
        """The Extensions API events (INVOKE, SHUTDOWN) the extension got."""
        return [m["event"] for m in self.of(ext, "event") if m["event"]["eventType"] == event_type]

    def probes(self, ext: str) -> dict[str, dict[str, Any]]:
        return {m["case"]: m for m in self.of(ext, "probe")}

    def close(self) -> None:
        self._server.close()


def _events_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events a forwarded message carries: an accepted HTTP batch, or one TCP line."""
    if message["kind"] == "batch" and message["status"] == 200:
        events: list[dict[str, Any]] = json.loads(message["body"])
        return events
    if message["kind"] == "tcp":
        return [json.loads(message["line"])]
    return []


def dropped_records(events: Sequence[dict[str, Any]]) -> int:
    return sum(e["record"]["droppedRecords"] for e in events if e["type"] == "platform.logsDropped")


def rendered_size(envelope: dict[str, Any]) -> int:
    """The bytes a record takes in the platform's queue: its compact JSON."""
    return len(json.dumps(envelope, separators=(",", ":")).encode())


@dataclass
class Subscriber:
    """One extension of a test layer: a fixture file under a name, and its configuration."""

    name: str
    config: dict[str, Any]
    fixture: Path = PY_SUBSCRIBER


def telemetry_request(
    port: int,
    types: Sequence[str] = ("platform", "function"),
    schema: str = "2022-12-13",
    buffering: Mapping[str, int] | None = None,
    uri: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": schema,
        "types": list(types),
        "destination": {"protocol": "HTTP", "URI": uri or f"http://sandbox.localdomain:{port}/telemetry"},
    }
    body["buffering"] = dict(buffering or {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25})
    return body


def http_subscriber(name: str, schema: str = "2022-12-13", types: Sequence[str] = ("platform", "function"),
                    buffering: Mapping[str, int] | None = None, port: int | None = None, uri: str | None = None,
                    **config: Any) -> Subscriber:  # fmt: skip
    """A Python subscriber with an HTTP listener on sandbox.localdomain:<port> (a free one unless given)."""
    port = port or free_port()
    request = telemetry_request(port, types, schema, buffering, uri)
    return Subscriber(name, {"port": port, "request": request, **config})


def build_layer(root: Path, subscribers: Sequence[Subscriber]) -> Path:
    (root / "extensions").mkdir(parents=True, exist_ok=True)
    (root / "telemetry-config").mkdir(exist_ok=True)
    for sub in subscribers:
        target = root / "extensions" / sub.name
        shutil.copyfile(sub.fixture, target)
        target.chmod(0o755)
        (root / "telemetry-config" / f"{sub.name}.json").write_text(json.dumps(sub.config))
    return root


@dataclass
class Run:
    fn: lambdarun.Function
    collector: Collector
    stream: list[Event]

    def stream_of(self, type_: str) -> list[Event]:
        return [e for e in self.stream if e.type == type_]


@contextmanager
def telemetry_function(tmp_path: Path, subscribers: Sequence[Subscriber], env: Mapping[str, str] | None = None,
                       timeout: float = 10.0, code: Path = FUNCTION) -> Iterator[Run]:  # fmt: skip
    """A python3.11 function whose layer holds the subscribers; yields before the first invoke. On exit the
    environment is shut down and the collector has read all the extensions forwarded."""
    collector = Collector()
    layer = build_layer(tmp_path / f"layer-{uuid.uuid4().hex[:8]}", subscribers)
    fn = lambdarun.Function(
        code=code,
        runtime="python3.11",
        handler="app.handler",
        layers=[layer],
        env={**collector_env(collector.port), **(env or {})},
        timeout=timeout,
    )
    run = Run(fn, collector, [])
    fn.subscribe(run.stream.append)
    try:
        yield run
    finally:
        try:
            fn.close()
            collector.settle()
        finally:
            collector.close()


# Platform events each API carries (SPEC 3.4, 3.6); `lambdarun.*` events are never sent.
TELEMETRY_PLATFORM = {
    "platform.initStart", "platform.initRuntimeDone", "platform.initReport", "platform.start",
    "platform.runtimeDone", "platform.report", "platform.extension", "platform.telemetrySubscription",
    "platform.logsDropped",
}  # fmt: skip
LOGS_PLATFORM = {
    "platform.start", "platform.end", "platform.report", "platform.fault", "platform.extension",
    "platform.logsSubscription", "platform.logsDropped",
}  # fmt: skip


def envelope(event: Event) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(json.dumps(event.envelope()))
    return value


def generations(stream: Sequence[Event]) -> list[list[Event]]:
    """The stream cut into environment generations: from each platform.initStart to its last platform.report
    (what a subscriber of that generation is sent before its SHUTDOWN)."""
    cuts: list[list[Event]] = []
    for event in stream:
        if event.type == "platform.initStart":
            cuts.append([])
        if cuts:
            cuts[-1].append(event)
    for i, cut in enumerate(cuts):
        last_report = max(j for j, e in enumerate(cut) if e.type == "platform.report")
        cuts[i] = cut[: last_report + 1]
    return cuts


def telemetry_view(events: Sequence[Event], types: Sequence[str]) -> list[dict[str, Any]]:
    """What a Telemetry API subscriber to `types` is sent of these events, envelopes as the stream has them."""
    wanted = [
        e for e in events
        if (e.type in TELEMETRY_PLATFORM and "platform" in types) or (e.type in ("function", "extension")
                                                                        and e.type in types)
    ]  # fmt: skip
    return [envelope(e) for e in wanted]


def function_lines(events: Sequence[dict[str, Any]], prefix: str) -> list[str]:
    return [str(e["record"]) for e in events if e["type"] == "function" and str(e["record"]).startswith(prefix)]


def line_text(prefix: str, index: int, width: int = 0) -> str:
    """The function fixture's `print` op line."""
    text = f"{prefix}{index:07d}"
    return text + "." * (width - len(text))


def check_accounted(events: Sequence[dict[str, Any]], prefix: str, count: int, width: int = 0) -> tuple[int, int]:
    """Every line `prefix`0..count-1 was received once, in order, or counted (records and bytes exactly) in
    platform.logsDropped. Returns (received, dropped)."""
    received = function_lines(events, prefix)
    indices = [int(text[len(prefix) : len(prefix) + 7]) for text in received]
    assert indices == sorted(set(indices)), "lines received out of order or twice"
    for index, text in zip(indices, received, strict=True):
        assert text == line_text(prefix, index, width)
    drops = [e for e in events if e["type"] == "platform.logsDropped"]
    for drop in drops:
        assert TIME_RE.match(drop["time"])
        assert set(drop["record"]) == {"droppedRecords", "droppedBytes", "reason"}
        assert drop["record"]["droppedRecords"] > 0 and drop["record"]["reason"]
    dropped = sum(d["record"]["droppedRecords"] for d in drops)
    assert len(received) + dropped == count, f"{len(received)} received + {dropped} dropped != {count} printed"
    missing = sorted(set(range(count)) - set(indices))
    sample = "2000-01-01T00:00:00.000Z"  # every `time` has this length
    expected_bytes = sum(
        rendered_size({"time": sample, "type": "function", "record": line_text(prefix, i, width)}) for i in missing
    )
    assert sum(d["record"]["droppedBytes"] for d in drops) == expected_bytes
    return len(received), dropped
