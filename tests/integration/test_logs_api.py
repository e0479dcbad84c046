"""The Logs API (2020-08-15 and 2021-03-18) with real subscriber extensions (SPEC 3.1, 3.2, 3.6).

The subscribers are the fixture extensions of tests/fixtures/telemetry, subscribed with `PUT /2020-08-15/logs`;
they forward what they receive to a collector on 127.0.0.1 (see _telemetry_support).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _telemetry_support import (
    LOGS_PLATFORM,
    TIME_RE,
    Run,
    Subscriber,
    envelope,
    free_port,
    generations,
    telemetry_function,
)

from lambdarun.telemetry.records import Event

pytestmark = pytest.mark.usefixtures("sandboxed")

NEVER_IN_LOGS = {"platform.initStart", "platform.initRuntimeDone", "platform.initReport",
                 "platform.telemetrySubscription"}  # fmt: skip
# name: (schemaVersion or None for the default, types, destination kind)
SUBSCRIBERS = {
    "logs-default": (None, ["platform", "function"], "http"),
    "logs-2020": ("2020-08-15", ["platform", "function", "extension"], "http"),
    "logs-2021": ("2021-03-18", ["platform", "function"], "tcp"),
}


def logs_request(port: int, schema: str | None, types: list[str], kind: str) -> dict[str, Any]:
    body: dict[str, Any] = {"types": types, "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25}}
    if schema is not None:
        body["schemaVersion"] = schema
    if kind == "tcp":
        body["destination"] = {"protocol": "TCP", "URI": f"tcp://sandbox.localdomain:{port}"}
    else:
        body["destination"] = {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/logs"}
    return body


def logs_view(events: list[Event], schema: str, types: list[str]) -> list[dict[str, Any]]:
    """What a Logs API subscriber is sent of these stream events (SPEC 3.6), as it should read."""
    platform = LOGS_PLATFORM | ({"platform.runtimeDone"} if schema == "2021-03-18" else set())
    view = []
    for event in events:
        if not ((event.type in platform and "platform" in types) or event.type in types):
            continue
        item = envelope(event)
        record = item["record"]
        if event.type == "platform.report":
            item["record"] = {"requestId": record["requestId"], "metrics": record["metrics"]}
        elif event.type == "platform.runtimeDone":
            status = "failure" if record["status"] == "error" else record["status"]  # SPEC 3.6: no `error`
            item["record"] = {"requestId": record["requestId"], "status": status}
        view.append(item)
    return view


@pytest.fixture(scope="module")
def logs_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, dict[str, Any]]]:
    """Three Logs API subscribers; a cold invoke, a warm one, a function error, a timeout (a reset), a cold one."""
    subscribers = []
    for name, (schema, types, kind) in SUBSCRIBERS.items():
        port = free_port()
        subscribers.append(Subscriber(name, {"api": "logs", "port": port, "listener": kind,
                                             "request": logs_request(port, schema, types, kind)}))  # fmt: skip
    results: dict[str, Any] = {}
    with telemetry_function(tmp_path_factory.mktemp("logs"), subscribers, timeout=1.0) as run:
        results["cold"] = run.fn.invoke({"op": "hello", "lines": ["cold line"]})
        results["warm"] = run.fn.invoke({"op": "hello", "lines": ["warm line"]})
        results["error"] = run.fn.invoke({"op": "error"})
        results["timeout"] = run.fn.invoke({"op": "sleep", "seconds": 30})
        results["again"] = run.fn.invoke({"op": "hello", "lines": ["after the reset"]})
    yield run, results


def received(run: Run, name: str) -> list[list[dict[str, Any]]]:
    """What the subscriber received, per environment generation."""
    return [run.collector.events(name, instance) for instance in run.collector.instances(name)]


@pytest.mark.parametrize("name", SUBSCRIBERS)
def test_logs_api_delivers_the_stream(logs_run: tuple[Run, dict[str, Any]], name: str) -> None:
    run, _ = logs_run
    schema, types, _ = SUBSCRIBERS[name]
    for subscribed in run.collector.of(name, "subscribed"):  # one per generation
        assert (subscribed["status"], subscribed["body"]) == (200, "OK")
    got = received(run, name)
    cuts = generations(run.stream)
    assert len(got) == len(cuts) == 2
    for events, cut in zip(got, cuts, strict=True):
        assert events == logs_view(cut, schema or "2020-08-15", types)
        for event in events:
            assert set(event) == {"time", "type", "record"} and TIME_RE.match(event["time"])
            assert event["type"] not in NEVER_IN_LOGS
            if event["type"] in ("function", "extension"):
                assert isinstance(event["record"], str)


@pytest.mark.parametrize("name", SUBSCRIBERS)
def test_logs_api_records(logs_run: tuple[Run, dict[str, Any]], name: str) -> None:
    """platform.start / end / report per invoke, with the Logs API's fields only; init metrics on cold starts;
    platform.runtimeDone only for 2021-03-18; platform.fault for the timeout; platform.logsSubscription."""
    run, results = logs_run
    schema, types, _ = SUBSCRIBERS[name]
    events = [e for generation in received(run, name) for e in generation]

    def records(type_: str, request_id: str) -> list[dict[str, Any]]:
        return [e["record"] for e in events if e["type"] == type_ and e["record"]["requestId"] == request_id]

    for key, result in results.items():
        rid = result.request_id
        (start,) = records("platform.start", rid)
        assert start["requestId"] == rid and set(start) <= {"requestId", "version"}
        assert records("platform.end", rid) == [{"requestId": rid}]
        (report,) = records("platform.report", rid)
        assert set(report) == {"requestId", "metrics"}
        basic = {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB"}
        cold = key in ("cold", "again")
        assert set(report["metrics"]) == (basic | {"initDurationMs"} if cold else basic), key
        assert report["metrics"] == result.metrics
        runtime_done = records("platform.runtimeDone", rid)
        if schema == "2021-03-18":
            (done,) = runtime_done
            assert set(done) == {"requestId", "status"}
            expected = {"cold": "success", "warm": "success", "again": "success", "timeout": "timeout"}
            if key in expected:
                assert done["status"] == expected[key]
        else:
            assert runtime_done == []
    # The timeout's platform.fault: a string record.
    faults = [e["record"] for e in events if e["type"] == "platform.fault"]
    assert len(faults) == 1 and isinstance(faults[0], str)
    assert f"{results['timeout'].request_id} Task timed out after 1.00 seconds" in faults[0]
    # Function records are strings, one per line.
    lines = [e["record"] for e in events if e["type"] == "function"]
    for text in ("cold line", "warm line", "about to fail", "going to sleep", "after the reset"):
        assert lines.count(text) == 1
    assert any(line.startswith("[ERROR] ValueError: something went wrong\non two lines\n") for line in lines)
    # Each generation: every subscriber's logsSubscription, and one platform.extension per extension.
    for generation in received(run, name):
        subscriptions = [e["record"] for e in generation if e["type"] == "platform.logsSubscription"]
        assert sorted(s["name"] for s in subscriptions) == sorted(SUBSCRIBERS)
        mine = next(s for s in subscriptions if s["name"] == name)
        assert mine == {"name": name, "state": "Subscribed", "types": types}
        extensions = [e["record"] for e in generation if e["type"] == "platform.extension"]
        assert sorted(x["name"] for x in extensions) == sorted(SUBSCRIBERS)
        assert all(x["state"] == "Ready" and x["events"] == ["INVOKE", "SHUTDOWN"] for x in extensions)


def test_logs_2021_runtime_done_status_values(logs_run: tuple[Run, dict[str, Any]]) -> None:
    run, results = logs_run
    statuses = {e["record"]["requestId"]: e["record"]["status"]
                for generation in received(run, "logs-2021") for e in generation
                if e["type"] == "platform.runtimeDone"}  # fmt: skip
    assert set(statuses) == {r.request_id for r in results.values()}
    assert set(statuses.values()) <= {"success", "failure", "timeout"}, statuses


def test_logs_lines_in_the_function_log(logs_run: tuple[Run, dict[str, Any]]) -> None:
    """Each subscription shows as a `LOGS` line before START (SPEC 4.7), on each cold start."""
    _, results = logs_run
    for key in ("cold", "again"):
        logs = results[key].logs
        start = next(i for i, line in enumerate(logs) if line.startswith("START RequestId:"))
        for name, (_, types, _) in SUBSCRIBERS.items():
            expected = f"LOGS\tName: {name}\tState: Subscribed\tTypes: [{', '.join(t.capitalize() for t in types)}]"
            assert expected in logs[:start], (expected, logs[:start])
        assert not [line for line in logs if line.startswith("TELEMETRY\t")]


# -- subscription requests --------------------------------------------------------------------------------------

REFUSED = [  # (case, change to a good body, word the message names)
    ("schema of the Telemetry API", {"schemaVersion": "2022-07-01"}, "schemaVersion"),
    ("schema unknown", {"schemaVersion": "2019-01-01"}, "schemaVersion"),
    ("types empty", {"types": []}, "types"),
    ("types unknown", {"types": ["platform", "metrics"]}, "types"),
    ("maxItems below", {"buffering": {"maxItems": 999}}, "maxItems"),
    ("maxBytes above", {"buffering": {"maxBytes": 1048577}}, "maxBytes"),
    ("timeoutMs below", {"buffering": {"timeoutMs": 24}}, "timeoutMs"),
    ("timeoutMs not an integer", {"buffering": {"timeoutMs": "100"}}, "timeoutMs"),
    ("destination missing", {"destination": None}, "destination"),
    ("protocol unknown", {"destination": {"protocol": "UDP", "URI": "http://sandbox.localdomain:1234"}}, "protocol"),
    ("URI https", {"destination": {"protocol": "HTTP", "URI": "https://sandbox.localdomain:1234"}}, "URI"),
    ("URI host", {"destination": {"protocol": "HTTP", "URI": "http://localhost:1234"}}, "URI"),
    ("URI port 9001", {"destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:9001"}}, "9001"),
]


@pytest.fixture(scope="module")
def logs_probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, dict[str, Any]]]:
    port = free_port()
    good = {"types": ["platform", "function"], "buffering": {"timeoutMs": 25},
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/logs"}}  # fmt: skip
    probes: list[dict[str, Any]] = []
    for case, change, _ in REFUSED:
        body = {**good, **change}
        if change.get("destination", 0) is None:
            del body["destination"]
        probes.append({"case": case, "api": "logs", "body": body})
    probes += [
        {"case": "identifier missing", "api": "logs", "body": good, "identifier": "none"},
        {"case": "identifier unknown", "api": "logs", "body": good, "identifier": "unknown"},
        {"case": "ok", "api": "logs", "body": good, "sleep_after": 0.3},
        {"case": "ok again", "api": "logs", "body": good},
        {"case": "then the Telemetry API", "api": "telemetry", "body": {**good, "schemaVersion": "2022-12-13"}},
    ]
    after = [{"case": "after Init", "api": "logs", "body": good}]
    sub = Subscriber("logs-prober", {"port": port, "subscribe": False, "probes": probes, "probes_after_init": after})
    with telemetry_function(tmp_path_factory.mktemp("logs-probed"), [sub]) as run:
        result = run.fn.invoke({"op": "hello"})
    yield run, {"result": result}


@pytest.mark.parametrize("case", [c for c, _, _ in REFUSED])
def test_logs_validation_error(logs_probed: tuple[Run, dict[str, Any]], case: str) -> None:
    run, _ = logs_probed
    word = next(w for c, _, w in REFUSED if c == case)
    answer = run.collector.probes("logs-prober")[case]
    assert answer["status"] == 400, answer
    assert answer["body"]["errorType"] == "Logs.ValidationError"
    assert word in answer["body"]["errorMessage"]


def test_logs_subscription_answers(logs_probed: tuple[Run, dict[str, Any]]) -> None:
    run, _ = logs_probed
    probes = run.collector.probes("logs-prober")
    assert (probes["identifier missing"]["status"], probes["identifier missing"]["body"]["errorType"]) == (
        403, "Extension.MissingExtensionIdentifier")  # fmt: skip
    assert (probes["identifier unknown"]["status"], probes["identifier unknown"]["body"]["errorType"]) == (
        403, "Extension.UnknownExtensionIdentifier")  # fmt: skip
    for case in ("ok", "ok again"):  # idempotent (SPEC 3.1)
        assert (probes[case]["status"], probes[case]["body"], probes[case]["content_type"]) == (
            200, "OK", "application/json")  # fmt: skip
    assert probes["then the Telemetry API"]["status"] == 400
    assert probes["then the Telemetry API"]["body"]["errorType"] == "ValidationError"
    assert probes["after Init"]["status"] == 403
    assert probes["after Init"]["body"]["errorType"] == "Logs.SubscriptionClosed"


def test_logs_subscribing_twice_delivers_once(logs_probed: tuple[Run, dict[str, Any]]) -> None:
    """A second identical subscription does not make a second subscriber: nothing is received twice."""
    run, info = logs_probed
    events = run.collector.events("logs-prober")
    texts = [json.dumps(e, sort_keys=True) for e in events]
    assert len(texts) == len(set(texts)), [t for t in texts if texts.count(t) > 1]
    rid = info["result"].request_id
    for type_ in ("platform.start", "platform.end", "platform.report"):
        assert len([e for e in events if e["type"] == type_ and e["record"]["requestId"] == rid]) == 1
