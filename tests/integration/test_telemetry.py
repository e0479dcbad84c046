"""The Telemetry API with real subscriber extensions (SPEC 3.1-3.5, 3.7, 4.7).

Each subscriber is an extension in a layer (tests/fixtures/telemetry): it registers, subscribes, runs its own
listener (Python HTTP on sandbox.localdomain or sandbox, Python TCP, Node.js HTTP) and forwards every batch it
receives, verbatim, to a collector this test runs on 127.0.0.1 (the sandbox shares the host's network). The
assertions read what the subscriber received and compare it with the environment's event stream.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _telemetry_support import (
    FUNCTION,
    NODE_SUBSCRIBER,
    TIME_RE,
    Collector,
    Run,
    Subscriber,
    build_layer,
    check_accounted,
    collector_env,
    envelope,
    free_port,
    function_lines,
    generations,
    http_subscriber,
    line_text,
    telemetry_function,
    telemetry_request,
    telemetry_view,
)

from lambdarun.telemetry.records import Event

pytestmark = pytest.mark.usefixtures("sandboxed")

PLATFORM_FUNCTION = ("platform", "function")
SCHEMAS = ("2022-07-01", "2022-12-13", "2025-01-29")

# SPEC 3.4: the fields each record must have, and the ones it may have.
REQUIRED = {
    "platform.initStart": {"initializationType", "phase"},
    "platform.initRuntimeDone": {"initializationType", "status"},
    "platform.initReport": {"initializationType", "phase", "metrics"},
    "platform.start": {"requestId"},
    "platform.runtimeDone": {"requestId", "status"},
    "platform.report": {"requestId", "metrics"},
    "platform.extension": {"name", "state", "events"},
    "platform.telemetrySubscription": {"name", "state", "types"},
    "platform.logsDropped": {"droppedBytes", "droppedRecords", "reason"},
}
OPTIONAL = {
    "platform.initStart": {
        "runtimeVersion",
        "runtimeVersionArn",
        "functionName",
        "functionVersion",
        "instanceId",
        "instanceMaxMemory",
        "tracing",
    },
    "platform.initRuntimeDone": {"phase", "errorType", "spans", "tracing"},
    "platform.initReport": {"spans", "status", "errorType", "tracing"},
    "platform.start": {"version", "tracing", "tenantId"},
    "platform.runtimeDone": {"errorType", "metrics", "spans", "tracing", "tenantId"},
    "platform.report": {"status", "errorType", "spans", "tracing", "tenantId"},
    "platform.extension": {"errorType"},
    "platform.telemetrySubscription": set(),
    "platform.logsDropped": set(),
}


def check_shape(event: dict[str, Any]) -> None:
    """The envelope and, for platform events, the record's fields (SPEC 3.3, 3.4)."""
    assert set(event) == {"time", "type", "record"}, event
    assert TIME_RE.match(event["time"]), event["time"]
    if event["type"] in ("function", "extension"):
        assert isinstance(event["record"], (str, dict))
        return
    record = event["record"]
    keys = set(record)
    assert REQUIRED[event["type"]] <= keys, (event["type"], keys)
    assert keys <= REQUIRED[event["type"]] | OPTIONAL[event["type"]], (event["type"], keys)
    for span in record.get("spans", []):
        assert set(span) == {"name", "start", "durationMs"}, span
        assert TIME_RE.match(span["start"]) and span["durationMs"] >= 0


def platform_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"].startswith("platform.")]


def one(events: list[dict[str, Any]], type_: str, **match: Any) -> dict[str, Any]:
    found = [e["record"] for e in events if e["type"] == type_ and all(e["record"].get(k) == v
                                                                         for k, v in match.items())]  # fmt: skip
    assert len(found) == 1, f"expected one {type_} {match}, got {found}"
    record: dict[str, Any] = found[0]
    return record


def invoke_window(events: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    """platform.start .. platform.report of one invoke."""
    start = next(i for i, e in enumerate(events) if e["type"] == "platform.start"
                 and e["record"]["requestId"] == request_id)  # fmt: skip
    end = next(i for i, e in enumerate(events) if e["type"] == "platform.report"
               and e["record"]["requestId"] == request_id)  # fmt: skip
    return events[start : end + 1]


def check_init(events: list[dict[str, Any]], name: str, types: list[str]) -> float:
    """The init events of one generation (SPEC 3.4, 3.7); returns the init duration."""
    init_start = one(events, "platform.initStart")
    assert init_start["initializationType"] == "on-demand"
    assert init_start["phase"] == "init"
    assert init_start["runtimeVersion"].startswith("python:3.11")
    assert init_start["functionName"] == "function"
    assert init_start["functionVersion"] == "$LATEST"
    assert one(events, "platform.telemetrySubscription", name=name) == {
        "name": name, "state": "Subscribed", "types": types}  # fmt: skip
    assert one(events, "platform.initRuntimeDone") == {
        "initializationType": "on-demand", "phase": "init", "status": "success"}  # fmt: skip
    assert one(events, "platform.extension", name=name) == {
        "name": name, "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]}  # fmt: skip
    init_report = one(events, "platform.initReport")
    assert {k: v for k, v in init_report.items() if k != "metrics"} == {
        "initializationType": "on-demand", "phase": "init", "status": "success"}  # fmt: skip
    assert set(init_report["metrics"]) == {"durationMs"}
    duration = init_report["metrics"]["durationMs"]
    assert isinstance(duration, float) and duration > 0
    return float(duration)


def check_start(window: list[dict[str, Any]], request_id: str) -> None:
    assert window[0]["record"] == {"requestId": request_id, "version": "$LATEST"}


def check_runtime_done_answered(record: dict[str, Any], status: str, produced: int) -> None:
    assert record["status"] == status
    assert set(record["metrics"]) == {"durationMs", "producedBytes"}
    assert record["metrics"]["producedBytes"] == produced
    assert record["metrics"]["durationMs"] >= 0
    assert [s["name"] for s in record["spans"]] == ["responseLatency", "responseDuration", "runtimeOverhead"]


def check_report(record: dict[str, Any], status: str, init_ms: float | None) -> None:
    metrics = record["metrics"]
    assert record["status"] == status
    expected = {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB"}
    assert set(metrics) == (expected | {"initDurationMs"} if init_ms is not None else expected)
    assert metrics["memorySizeMB"] == 128
    assert isinstance(metrics["maxMemoryUsedMB"], int) and 0 < metrics["maxMemoryUsedMB"] <= 128
    assert isinstance(metrics["billedDurationMs"], int)
    if init_ms is None:
        assert metrics["billedDurationMs"] == max(1, math.ceil(metrics["durationMs"]))
    else:
        assert metrics["initDurationMs"] == init_ms
        # Billing of a cold start: with or without Init, SPEC 4.1 [UNCONFIRMED which one Lambda does now].
        assert metrics["billedDurationMs"] in (math.ceil(metrics["durationMs"]),
                                               math.ceil(metrics["durationMs"] + init_ms))  # fmt: skip


# -- the full sequence ------------------------------------------------------------------------------------------


def test_event_sequence_cold_warm_error_timeout_shutdown(tmp_path: Path) -> None:
    name = "observer"
    with telemetry_function(tmp_path, [http_subscriber(name)], timeout=1.0) as run:
        cold = run.fn.invoke({"op": "hello", "lines": ["cold line"]})
        warm = run.fn.invoke({"op": "hello", "lines": ["warm line"]})
        failed = run.fn.invoke({"op": "error"})
        timed_out = run.fn.invoke({"op": "sleep", "seconds": 30})
        again = run.fn.invoke({"op": "hello", "lines": ["line after the reset"]})
    assert (cold.status, warm.status, failed.function_error, timed_out.status) == (
        "success", "success", "Unhandled", "timeout")  # fmt: skip
    collector = run.collector
    first, second = collector.instances(name)  # the timeout reset started a second environment generation
    gen1, gen2 = collector.events(name, first), collector.events(name, second)

    # What the subscriber received is what the stream had, in order, each once (types platform + function).
    stream1, stream2 = generations(run.stream)
    assert gen1 == telemetry_view(stream1, PLATFORM_FUNCTION)
    assert gen2 == telemetry_view(stream2, PLATFORM_FUNCTION)
    for event in gen1 + gen2:
        check_shape(event)

    # Init, then four invokes; platform events only (function records are checked per invoke below).
    invoke = ["platform.start", "platform.runtimeDone", "platform.report"]
    assert platform_types(gen1) == [
        "platform.initStart", "platform.telemetrySubscription", "platform.initRuntimeDone", "platform.extension",
        "platform.initReport", *invoke * 4]  # fmt: skip
    assert platform_types(gen2) == platform_types(gen1)[:5] + invoke
    init_ms = check_init(gen1, name, list(PLATFORM_FUNCTION))

    # Cold invoke: the report carries initDurationMs = initReport's duration.
    window = invoke_window(gen1, cold.request_id)
    check_start(window, cold.request_id)
    assert function_lines(window, "") == ["cold line"]
    check_runtime_done_answered(one(window, "platform.runtimeDone"), "success", len(cold.payload))
    report = one(window, "platform.report")
    check_report(report, "success", init_ms)
    assert report["metrics"] == cold.metrics
    assert [s["name"] for s in report.get("spans", [])] in ([], ["extensionOverhead"])

    # Warm invoke: no init figures.
    window = invoke_window(gen1, warm.request_id)
    check_start(window, warm.request_id)
    assert function_lines(window, "") == ["warm line"]
    check_runtime_done_answered(one(window, "platform.runtimeDone"), "success", len(warm.payload))
    check_report(one(window, "platform.report"), "success", None)

    # Function error: the runtime answered with an error; the stack trace is one function record.
    window = invoke_window(gen1, failed.request_id)
    check_start(window, failed.request_id)
    about, trace = function_lines(window, "")
    assert about == "about to fail"
    assert trace.startswith("[ERROR] ValueError: something went wrong\non two lines\nTraceback (most recent call last)")
    assert trace.count("in deeper") == 4 and trace.count("\n") >= 10
    runtime_done = one(window, "platform.runtimeDone")
    check_runtime_done_answered(runtime_done, "error", len(failed.payload))
    assert runtime_done["errorType"] == "Runtime.Unknown"  # the Python RIC sends no error type (SPEC 4.3)
    check_report(one(window, "platform.report"), "success", None)  # classic RAPID (SPEC 4.3)

    # Timeout: runtimeDone and report say timeout / Sandbox.Timedout; no spans (the runtime never answered).
    window = invoke_window(gen1, timed_out.request_id)
    check_start(window, timed_out.request_id)
    assert function_lines(window, "") == ["going to sleep"]
    runtime_done = one(window, "platform.runtimeDone")
    assert (runtime_done["requestId"], runtime_done["status"]) == (timed_out.request_id, "timeout")
    assert "spans" not in runtime_done
    assert set(runtime_done["metrics"]) == {"durationMs"} and runtime_done["metrics"]["durationMs"] >= 1000
    report = one(window, "platform.report")
    check_report(report, "timeout", None)
    # SPEC 4.3: Sandbox.Timedout (LMI RAPID) or no errorType at all (classic RAPID, real REPORT lines).
    assert runtime_done.get("errorType") in (None, "Sandbox.Timedout")
    assert report.get("errorType") in (None, "Sandbox.Timedout")
    assert gen1[-1]["type"] == "platform.report"  # the timeout's report was the last thing sent

    # The reset, and the final spin-down: SHUTDOWN reached each generation's extension after its last batch.
    for instance, reason in ((first, "timeout"), (second, "spindown")):
        messages = [m for m in collector.of(name) if m["instance"] == instance]
        kinds = [m["event"]["eventType"] if m["kind"] == "event" else m["kind"] for m in messages]
        assert kinds[-2:] == ["SHUTDOWN", "bye"]
        assert messages[-2]["event"]["shutdownReason"] == reason
        assert "batch" not in kinds[kinds.index("SHUTDOWN") :]
    assert [e["requestId"] for e in collector.received_event(name, "INVOKE")] == [
        cold.request_id, warm.request_id, failed.request_id, timed_out.request_id, again.request_id]  # fmt: skip

    # The generation after the reset starts cold again.
    init_ms2 = check_init(gen2, name, list(PLATFORM_FUNCTION))
    window = invoke_window(gen2, again.request_id)
    check_start(window, again.request_id)
    assert function_lines(window, "") == ["line after the reset"]
    check_runtime_done_answered(one(window, "platform.runtimeDone"), "success", len(again.payload))
    check_report(one(window, "platform.report"), "success", init_ms2)
    assert run.stream[-1].type == "lambdarun.shutdown"


def test_schema_versions(tmp_path: Path) -> None:
    """Every schema carries the same records: 2022-07-01 reports keep status (and errorType), as Lambda sends them
    and the `lambda-extension` crate, which always subscribes with that schema, requires."""
    names = {schema: f"schema-{schema}" for schema in SCHEMAS}
    subscribers = [http_subscriber(names[schema], schema=schema) for schema in SCHEMAS]
    with telemetry_function(tmp_path, subscribers, timeout=1.0) as run:
        run.fn.invoke({"op": "hello"})
        run.fn.invoke({"op": "error"})
        timed_out = run.fn.invoke({"op": "sleep", "seconds": 30})
        run.fn.invoke({"op": "hello"})  # (the reset's shutdown sequence runs to its end before this invoke)
    received = {schema: run.collector.events(names[schema], run.collector.instances(names[schema])[0])
                for schema in SCHEMAS}  # fmt: skip
    stream = generations(run.stream)[0]
    superset = telemetry_view(stream, PLATFORM_FUNCTION)
    assert received["2022-12-13"] == superset
    assert received["2025-01-29"] == superset
    old = received["2022-07-01"]
    assert old == superset
    # Every subscriber sees every subscription, its own included.
    for schema in SCHEMAS:
        subscriptions = [e["record"]["name"] for e in received[schema] if e["type"] == "platform.telemetrySubscription"]
        assert sorted(subscriptions) == sorted(names.values())
    assert one(received["2025-01-29"], "platform.report", requestId=timed_out.request_id)["status"] == "timeout"
    assert one(old, "platform.report", requestId=timed_out.request_id)["status"] == "timeout"
    assert one(old, "platform.initReport")["status"] == "success"


def test_close_right_after_a_reset_completes_the_shutdown_sequence(tmp_path: Path) -> None:
    """close() just after an invoke whose runtime exited (a reset): the reset's shutdown sequence still runs to
    its end: the subscriber gets the invoke's REPORT, then SHUTDOWN (reason failure), and exits cleanly."""
    name = "resetting"
    for attempt in range(3):
        with telemetry_function(tmp_path / str(attempt), [http_subscriber(name)]) as run:
            crashed = run.fn.invoke({"op": "exit"})
        assert (crashed.status, crashed.error_type) == ("error", "Runtime.ExitError")
        assert one(run.collector.events(name), "platform.report", requestId=crashed.request_id)["status"] == "error"
        assert [e["shutdownReason"] for e in run.collector.received_event(name, "SHUTDOWN")] == ["failure"]
        shutdowns = [e.record for e in run.stream if e.type == "lambdarun.shutdown"]
        assert shutdowns and shutdowns[0]["shutdownReason"] == "failure", shutdowns
        assert shutdowns[0]["extensions"] == {name: "Exited"}


# -- destinations -----------------------------------------------------------------------------------------------

DESTINATIONS = ("py-localdomain", "py-sandbox-host", "py-tcp", "node-http")


@pytest.fixture(scope="module")
def destinations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, dict[str, Any]]]:
    """One function, four subscribers with different destinations, one invoke."""
    ports = {name: free_port() for name in DESTINATIONS}
    subscribers = [
        http_subscriber("py-localdomain", port=ports["py-localdomain"]),
        http_subscriber("py-sandbox-host", port=ports["py-sandbox-host"], bind="sandbox",
                        uri=f"http://sandbox:{ports['py-sandbox-host']}"),
        Subscriber("py-tcp", {"port": ports["py-tcp"], "listener": "tcp", "request": {
            "schemaVersion": "2022-12-13", "types": ["platform", "function"],
            "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
            "destination": {"protocol": "TCP", "port": ports["py-tcp"]}}}),
        Subscriber("node-http", {"port": ports["node-http"], "request": telemetry_request(
            ports["node-http"], uri=f"http://sandbox.localdomain:{ports['node-http']}/node")}, NODE_SUBSCRIBER),
    ]  # fmt: skip
    results: dict[str, Any] = {}
    with telemetry_function(tmp_path_factory.mktemp("destinations"), subscribers) as run:
        results["first"] = run.fn.invoke({"op": "hello", "lines": ["to every destination"]})
        results["second"] = run.fn.invoke({"op": "hello", "lines": ["again"]})
    yield run, results


@pytest.mark.parametrize("name", DESTINATIONS)
def test_destination_receives_everything(destinations: tuple[Run, dict[str, Any]], name: str) -> None:
    run, results = destinations
    collector = run.collector
    (subscribed,) = collector.of(name, "subscribed")
    assert (subscribed["status"], subscribed["body"]) == (200, "OK")
    (stream,) = generations(run.stream)
    received = collector.events(name)
    assert received == telemetry_view(stream, PLATFORM_FUNCTION)
    for event in received:
        check_shape(event)
    for result, text in ((results["first"], "to every destination"), (results["second"], "again")):
        window = invoke_window(received, result.request_id)
        assert function_lines(window, "") == [text]
        assert one(window, "platform.report")["metrics"] == result.metrics


@pytest.mark.parametrize(("name", "path"), [("py-localdomain", "/telemetry"), ("py-sandbox-host", "/"),
                                            ("node-http", "/node")])  # fmt: skip
def test_http_destination_requests(destinations: tuple[Run, dict[str, Any]], name: str, path: str) -> None:
    """HTTP: a POST of a JSON array to the URI's path ("/" when the URI has none), Content-Type application/json."""
    run, _ = destinations
    batches = run.collector.batches(name, accepted_only=False)
    assert batches
    for batch in batches:
        assert (batch.method, batch.path, batch.status) == ("POST", path, 200)
        headers = {k.lower(): v for k, v in batch.headers.items()}
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(batch.body.encode())
        assert isinstance(json.loads(batch.body), list)


def test_tcp_destination_is_newline_delimited_json(destinations: tuple[Run, dict[str, Any]]) -> None:
    run, _ = destinations
    lines = run.collector.of("py-tcp", "tcp")
    assert lines and not any(m.get("partial") for m in lines)
    for message in lines:
        event = json.loads(message["line"])
        assert isinstance(event, dict) and set(event) == {"time", "type", "record"}


# -- buffering --------------------------------------------------------------------------------------------------


def test_buffering_by_count(tmp_path: Path) -> None:
    """maxItems 1000 (bytes and time out of reach): 2500 lines leave in batches of at most 1000."""
    name = "by-count"
    sub = http_subscriber(name, buffering={"maxItems": 1000, "maxBytes": 1048576, "timeoutMs": 30000})
    with telemetry_function(tmp_path, [sub]) as run:
        run.fn.invoke({"op": "print", "count": 2500, "prefix": "C"})
    sizes = [len(b.events) for b in run.collector.batches(name)]
    assert max(sizes) == 1000 and sizes.count(1000) >= 2, sizes
    events = run.collector.events(name)
    assert function_lines(events, "C") == [line_text("C", i) for i in range(2500)]
    (stream,) = generations(run.stream)
    assert events == telemetry_view(stream, PLATFORM_FUNCTION)


def test_buffering_by_bytes(tmp_path: Path) -> None:
    """maxBytes 262144 (count and time out of reach): a batch leaves once its records reach maxBytes, so each but
    the last (the shutdown flush) holds at least maxBytes and less than maxBytes plus its last record."""
    name, max_bytes, width, count = "by-bytes", 262144, 30000, 20
    sub = http_subscriber(name, buffering={"maxItems": 10000, "maxBytes": max_bytes, "timeoutMs": 30000})
    with telemetry_function(tmp_path, [sub]) as run:
        run.fn.invoke({"op": "print", "count": count, "prefix": "B", "width": width})
    batches = run.collector.batches(name)
    assert len(batches) >= 3
    for batch in batches:
        items = [json.dumps(e, separators=(",", ":")) for e in batch.events]
        size = len(batch.body.encode()) - 2 - (len(items) - 1)  # the body is `[` + items joined by `,` + `]`
        assert size == sum(len(i.encode()) for i in items)
        assert size <= 2 * max_bytes
        if batch is not batches[-1]:
            assert max_bytes <= size < max_bytes + len(items[-1].encode()), (size, len(items))
    events = run.collector.events(name)
    assert function_lines(events, "B") == [line_text("B", i, width) for i in range(count)]


def test_buffering_by_time(tmp_path: Path) -> None:
    """timeoutMs alone sends a batch: the handler prints a line and waits until the 25 ms subscriber has it
    before printing the next; the 1000 ms subscriber gets the same lines, fewer batches, before the invoke ends."""
    big = {"maxItems": 10000, "maxBytes": 1048576}
    fast = http_subscriber("fast", buffering={**big, "timeoutMs": 25})
    slow = http_subscriber("slow", buffering={**big, "timeoutMs": 1000})
    lines = [f"paced line {i}" for i in range(5)]
    with telemetry_function(tmp_path, [fast, slow]) as run:
        result = run.fn.invoke({"op": "paced", "ext": "fast", "lines": lines,
                                "then": [{"ext": "slow", "contains": lines[-1], "timeout": 10}]})  # fmt: skip
    answer = result.json()
    assert all(w["ok"] for w in answer["waits"]), answer  # each line reached `fast` while the invoke ran
    assert answer["then"][0]["ok"], answer  # and `slow` had them all before the invoke ended
    for name in ("fast", "slow"):
        assert function_lines(run.collector.events(name), "paced") == lines

    def carrying(name: str) -> list[list[str]]:
        found = [function_lines(b.events, "paced") for b in run.collector.batches(name)]
        return [f for f in found if f]

    assert carrying("fast") == [[line] for line in lines]
    assert len(carrying("slow")) < len(lines)


def test_retry_after_500(tmp_path: Path) -> None:
    """The listener answers 500 once: the same batch is sent again, and nothing is lost or duplicated."""
    name = "flaky"
    with telemetry_function(tmp_path, [http_subscriber(name, fail_first=1)]) as run:
        run.fn.invoke({"op": "hello"})
        run.fn.invoke({"op": "hello"})
    batches = run.collector.batches(name, accepted_only=False)
    assert [b.status for b in batches][:2] == [500, 200]
    assert batches[1].body == batches[0].body
    assert all(b.status == 200 for b in batches[1:])
    (stream,) = generations(run.stream)
    assert run.collector.events(name) == telemetry_view(stream, PLATFORM_FUNCTION)


def test_listener_that_starts_late(tmp_path: Path) -> None:
    """The listener only opens at the first INVOKE: Init's events wait and arrive then, once each, in order."""
    name = "late"
    with telemetry_function(tmp_path, [http_subscriber(name, listen_on="invoke")]) as run:
        result = run.fn.invoke({"op": "paced", "ext": name, "lines": ["late line"], "timeout": 15})
        run.fn.invoke({"op": "hello"})
    assert all(w["ok"] for w in result.json()["waits"])
    messages = run.collector.of(name)
    kinds = [m["kind"] for m in messages]
    assert kinds.index("event") < kinds.index("batch")  # nothing was received before the listener opened
    (stream,) = generations(run.stream)
    assert run.collector.events(name) == telemetry_view(stream, PLATFORM_FUNCTION)


# -- slow subscribers and logsDropped --------------------------------------------------------------------------


def test_slow_subscriber_gets_logs_dropped(tmp_path: Path) -> None:
    """A listener that sleeps in its handler falls behind: function records are dropped, never platform events,
    and every line printed is either received (once, in order) or counted in platform.logsDropped."""
    name, count, width = "sluggish", 20000, 100
    sub = http_subscriber(name, sleep_s=0.2, buffering={"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25})
    with telemetry_function(tmp_path, [sub], timeout=120) as run:
        result = run.fn.invoke({"op": "print", "count": count, "prefix": "D", "width": width,
                                "wait": {"ext": name, "prefix": "D", "count": count, "timeout": 100}})  # fmt: skip
    assert result.json()["wait"]["ok"], result.json()
    events = run.collector.events(name)
    received, dropped = check_accounted(events, "D", count, width)
    assert dropped > 0 and received > 0
    # Platform events are never dropped.
    (stream,) = generations(run.stream)
    platform = [e for e in telemetry_view(stream, PLATFORM_FUNCTION) if e["type"] != "function"]
    assert [e for e in events if e["type"].startswith("platform.") and e["type"] != "platform.logsDropped"] == platform


@pytest.mark.slow
def test_200000_lines_reach_the_subscriber_or_are_accounted_for(tmp_path: Path) -> None:
    name, count = "bulk", 200_000
    sub = http_subscriber(name, buffering={"maxItems": 10000, "maxBytes": 1048576, "timeoutMs": 25})
    with telemetry_function(tmp_path, [sub], timeout=300) as run:
        result = run.fn.invoke({"op": "print", "count": count, "prefix": "M",
                                "wait": {"ext": name, "prefix": "M", "count": count, "timeout": 200}})  # fmt: skip
    assert result.json()["wait"]["ok"], result.json()
    check_accounted(run.collector.events(name), "M", count)
    # The stream itself has every line, once, in order.
    assert [line for line in result.function_logs if line.startswith("M")] == [line_text("M", i) for i in range(count)]


def test_subscriber_logging_its_own_batches_does_not_flood_itself(tmp_path: Path) -> None:
    """Subscribed to `extension` and printing one line per batch: the echo is bounded, at most a few batches per
    invoke and for the shutdown, not a stream of batches that only carry its own previous line."""
    name, invokes = "chatty", 3
    sub = http_subscriber(name, types=["platform", "function", "extension"], log_batches=True)
    with telemetry_function(tmp_path, [sub]) as run:
        for _ in range(invokes):
            run.fn.invoke({"op": "hello"})
    batches = run.collector.batches(name)
    events = run.collector.events(name)
    # Lambda sends an extension its own log lines too (SPEC 3.2 warns of the loop); not sending them would be a
    # way out of the loop as good as any, so this test does not ask for them.
    last_report = max(i for i, e in enumerate(events) if e["type"] == "platform.report")
    after_last_report = events[last_report + 1 :]
    assert len(after_last_report) <= 5, f"{len(after_last_report)} echo records sent during the shutdown flush"
    assert len(batches) <= 10 * (invokes + 1), f"{len(batches)} batches for {invokes} short invokes"


# -- subscription requests --------------------------------------------------------------------------------------


def validation_cases(port: int) -> list[tuple[str, dict[str, Any], str]]:
    """(case, request body, a word the error message must name) for requests refused with 400 ValidationError."""
    good = {"schemaVersion": "2022-12-13", "types": ["platform", "function"],
            "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 100},
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/t"}}  # fmt: skip

    def but(**changes: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(good))
        for key, value in changes.items():
            target, *path = key.split("__")
            holder = body
            for part in [target, *path][:-1]:
                holder = holder[part]
            last = [target, *path][-1]
            if value is _DROP:
                holder.pop(last)
            else:
                holder[last] = value
        return body

    uri = "destination__URI"
    return [
        ("schema missing", but(schemaVersion=_DROP), "schemaVersion"),
        ("schema unknown", but(schemaVersion="2023-01-01"), "schemaVersion"),
        ("schema of the Logs API", but(schemaVersion="2020-08-15"), "schemaVersion"),
        ("types missing", but(types=_DROP), "types"),
        ("types empty", but(types=[]), "types"),
        ("types unknown", but(types=["platform", "bogus"]), "types"),
        ("types not a list", but(types="platform"), "types"),
        ("maxItems below", but(buffering__maxItems=999), "maxItems"),
        ("maxItems above", but(buffering__maxItems=10001), "maxItems"),
        ("maxBytes below", but(buffering__maxBytes=262143), "maxBytes"),
        ("maxBytes above", but(buffering__maxBytes=1048577), "maxBytes"),
        ("timeoutMs below", but(buffering__timeoutMs=24), "timeoutMs"),
        ("timeoutMs above", but(buffering__timeoutMs=30001), "timeoutMs"),
        ("maxItems a string", but(buffering__maxItems="1000"), "maxItems"),
        ("maxBytes a float", but(buffering__maxBytes=262144.5), "maxBytes"),
        ("timeoutMs a boolean", but(buffering__timeoutMs=True), "timeoutMs"),
        ("buffering not an object", but(buffering=[1000]), "buffering"),
        ("destination missing", but(destination=_DROP), "destination"),
        ("protocol missing", but(destination__protocol=_DROP), "protocol"),
        ("protocol unknown", but(destination__protocol="UDP"), "protocol"),
        ("protocol HTTPS", but(destination__protocol="HTTPS"), "protocol"),
        ("URI missing", but(destination__URI=_DROP), "URI"),
        ("URI https", but(**{uri: f"https://sandbox.localdomain:{port}/t"}), "URI"),
        ("URI host localhost", but(**{uri: f"http://localhost:{port}/t"}), "URI"),
        ("URI host 127.0.0.1", but(**{uri: f"http://127.0.0.1:{port}/t"}), "URI"),
        ("URI host elsewhere", but(**{uri: f"http://example.com:{port}/t"}), "URI"),
        ("URI without port", but(**{uri: "http://sandbox.localdomain/t"}), "URI"),
        ("URI port 9001", but(**{uri: "http://sandbox.localdomain:9001/t"}), "9001"),
        ("TCP without port", but(destination={"protocol": "TCP"}), "port"),
        ("TCP port 0", but(destination={"protocol": "TCP", "port": 0}), "port"),
        ("TCP port 65536", but(destination={"protocol": "TCP", "port": 65536}), "port"),
        ("TCP port 9001", but(destination={"protocol": "TCP", "port": 9001}), "9001"),
        ("TCP port a string", but(destination={"protocol": "TCP", "port": str(port)}), "port"),
        ("body a list", [good], "object"),  # type: ignore[list-item]
    ]


_DROP = object()


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, dict[str, Any], list[Any]]]:
    """An extension that tries every refused request during Init, then subscribes, then tries the Logs API too;
    at its first INVOKE (Init over) it tries to subscribe again."""
    port = free_port()
    cases = validation_cases(port)
    good = {"schemaVersion": "2022-12-13", "types": ["platform", "function"],
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/t"}}  # fmt: skip
    logs = {"schemaVersion": "2021-03-18", "types": ["platform"],
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/logs"}}  # fmt: skip
    probes: list[dict[str, Any]] = [{"case": case, "body": body} for case, body, _ in cases]
    probes += [
        {"case": "not JSON", "raw": "{not json"},
        {"case": "identifier missing", "body": good, "identifier": "none"},
        {"case": "identifier unknown", "body": good, "identifier": "unknown"},
        {"case": "identifier invalid", "body": good, "identifier": "invalid"},
        {"case": "ok", "body": good},
        {"case": "then the Logs API", "api": "logs", "body": logs},
    ]
    after = [{"case": "after Init", "body": good}, {"case": "Logs API after Init", "api": "logs", "body": logs}]
    sub = Subscriber("prober", {"port": port, "subscribe": False, "probes": probes, "probes_after_init": after})
    with telemetry_function(tmp_path_factory.mktemp("probed"), [sub]) as run:
        result = run.fn.invoke({"op": "hello"})
    yield run, {"result": result, "port": port}, cases


@pytest.mark.parametrize("case", [c for c, _, _ in validation_cases(1234)])
def test_validation_error(probed: tuple[Run, dict[str, Any], list[Any]], case: str) -> None:
    run, _, cases = probed
    word = next(w for c, _, w in cases if c == case)
    answer = run.collector.probes("prober")[case]
    assert answer["status"] == 400, answer
    assert answer["body"]["errorType"] == "ValidationError"
    assert word in answer["body"]["errorMessage"], answer["body"]


def test_request_body_not_json(probed: tuple[Run, dict[str, Any], list[Any]]) -> None:
    answer = probed[0].collector.probes("prober")["not JSON"]
    assert (answer["status"], answer["body"]["errorType"]) == (400, "ValidationError")


@pytest.mark.parametrize(("case", "error_type"), [
    ("identifier missing", "Extension.MissingExtensionIdentifier"),
    ("identifier unknown", "Extension.UnknownExtensionIdentifier"),
    ("identifier invalid", "Extension.InvalidExtensionIdentifier"),
])  # fmt: skip
def test_identifier_refused(probed: tuple[Run, dict[str, Any], list[Any]], case: str, error_type: str) -> None:
    answer = probed[0].collector.probes("prober")[case]
    assert answer["status"] == 403
    assert answer["body"]["errorType"] == error_type


def test_subscription_accepted_and_logged(probed: tuple[Run, dict[str, Any], list[Any]]) -> None:
    """200 with the JSON string "OK"; platform.telemetrySubscription; a TELEMETRY line in the function's log."""
    run, info, _ = probed
    answer = run.collector.probes("prober")["ok"]
    assert (answer["status"], answer["body"], answer["content_type"]) == (200, "OK", "application/json")
    received = run.collector.events("prober")
    assert one(received, "platform.telemetrySubscription") == {
        "name": "prober", "state": "Subscribed", "types": ["platform", "function"]}  # fmt: skip
    logs = info["result"].logs
    assert "TELEMETRY\tName: prober\tState: Subscribed\tTypes: [Platform, Function]" in logs
    assert logs.index("TELEMETRY\tName: prober\tState: Subscribed\tTypes: [Platform, Function]") < next(
        i for i, line in enumerate(logs) if line.startswith("START RequestId:")
    )


def test_one_extension_cannot_use_both_apis(probed: tuple[Run, dict[str, Any], list[Any]]) -> None:
    answer = probed[0].collector.probes("prober")["then the Logs API"]
    assert answer["status"] == 400, answer
    assert answer["body"]["errorType"] == "Logs.ValidationError"
    assert not [e for e in probed[0].stream if e.type == "platform.logsSubscription"]


def test_subscribing_after_init_is_refused(probed: tuple[Run, dict[str, Any], list[Any]]) -> None:
    probes = probed[0].collector.probes("prober")
    assert probes["after Init"]["status"] == 403
    assert probes["after Init"]["body"]["errorType"] == "Telemetry.SubscriptionClosed"
    assert probes["Logs API after Init"]["status"] == 403
    assert probes["Logs API after Init"]["body"]["errorType"] == "Logs.SubscriptionClosed"
    # The refused requests changed nothing: one subscription, and it kept delivering.
    assert len([e for e in probed[0].stream if e.type == "platform.telemetrySubscription"]) == 1
    result = probed[1]["result"]
    assert one(probed[0].collector.events("prober"), "platform.report", requestId=result.request_id)


# -- function logs through _LAMBDA_TELEMETRY_LOG_FD ------------------------------------------------------------


def test_function_records_text_format(tmp_path: Path) -> None:
    """The Python runtime writes framed records: a multi-line `logging` message and a multi-line stack trace are
    one record each; each print line is a record of its own."""
    name = "logs-text"
    with telemetry_function(tmp_path, [http_subscriber(name, types=["function"])]) as run:
        result = run.fn.invoke({"op": "logging"})
    records = [e["record"] for e in invoke_records(run.collector.events(name), result.request_id, run.stream)]
    assert len(records) == 4, records
    logged = next(r for r in records if r.startswith("[INFO]"))
    level, stamp, request_id, message = logged.split("\t", 3)
    assert (level, TIME_RE.match(stamp) is not None) == ("[INFO]", True)
    assert request_id == result.request_id
    assert message.rstrip("\n") == "first line\nsecond line\nthird line"
    assert [r for r in records if r.startswith("plain")] == ["plain one", "plain two"]
    trace = next(r for r in records if r.startswith("[ERROR]"))
    assert trace.startswith("[ERROR] ValueError: boom\nsecond line of the message\nTraceback (most recent call last):")
    assert trace.count("in deeper") == 3 and "raise ValueError(message)" in trace


def test_function_records_json_format(tmp_path: Path) -> None:
    """With AWS_LAMBDA_LOG_FORMAT=JSON the runtime's records are JSON objects (level, message, requestId);
    print lines, which are not JSON, stay strings."""
    name = "logs-json"
    with telemetry_function(tmp_path, [http_subscriber(name, types=["function"])],
                            env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}) as run:  # fmt: skip
        result = run.fn.invoke({"op": "logging"})
    records = [e["record"] for e in invoke_records(run.collector.events(name), result.request_id, run.stream)]
    assert len(records) == 4, records
    objects = [r for r in records if isinstance(r, dict)]
    info, error = sorted(objects, key=lambda r: r["level"] != "INFO")
    assert info["level"] == "INFO" and info["requestId"] == result.request_id
    assert info["message"] == "first line\nsecond line\nthird line"
    assert error["level"] == "ERROR" and error["requestId"] == result.request_id
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "boom\nsecond line of the message")
    assert len(error["stackTrace"]) == 4
    assert [r for r in records if isinstance(r, str)] == ["plain one", "plain two"]


def invoke_records(received: list[dict[str, Any]], request_id: str, stream: list[Event]) -> list[dict[str, Any]]:
    """The function records a `function`-only subscriber received for one invoke: those the stream has between
    the invoke's platform.start and platform.runtimeDone."""
    start = next(i for i, e in enumerate(stream) if e.type == "platform.start" and e.record["requestId"] == request_id)
    end = next(i for i, e in enumerate(stream) if e.type == "platform.runtimeDone"
               and e.record["requestId"] == request_id)  # fmt: skip
    expected = [envelope(e) for e in stream[start:end] if e.type == "function"]
    got = [e for e in received if e in expected]
    assert got == expected
    return got


# -- the command line -------------------------------------------------------------------------------------------


def test_cli_telemetry_file(tmp_path: Path) -> None:
    """`lambdarun invoke ... --telemetry FILE` writes every event of the stream as a JSON line."""
    collector = Collector()
    try:
        sub = http_subscriber("cli-observer")
        layer = build_layer(tmp_path / "layer", [sub])
        out = tmp_path / "events.jsonl"
        env_args = [arg for k, v in collector_env(collector.port).items() for arg in ("--env", f"{k}={v}")]
        completed = subprocess.run(
            [sys.executable, "-m", "lambdarun", "invoke", str(FUNCTION), "--runtime", "python3.11",
             "--handler", "app.handler", "--layer", str(layer), *env_args,
             "--event", '{"op": "hello", "lines": ["from the cli"]}', "--repeat", "2", "--telemetry", str(out)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        collector.settle()
    finally:
        collector.close()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    for event in written:
        assert set(event) == {"time", "type", "record"} and TIME_RE.match(event["time"])
    types = [e["type"] for e in written]
    assert types[0] == "platform.initStart" and types[-1] == "lambdarun.shutdown"
    for type_, count in (
        ("platform.start", 2),
        ("platform.runtimeDone", 2),
        ("platform.end", 2),
        ("platform.report", 2),
        ("platform.telemetrySubscription", 1),
        ("platform.initReport", 1),
    ):
        assert types.count(type_) == count, type_  # fmt: skip
    assert [str(e["record"]) for e in written if e["type"] == "function"].count("from the cli") == 2
    # Everything the subscriber received is in the file, in the same order.
    received = collector.events("cli-observer")
    assert received and [e for e in written if e in received] == received
    assert "REPORT RequestId:" in completed.stderr
