"""External and internal extensions, run as real processes (Python, bash with curl, Node.js) in layers.

Every figure asserted on is read from the environment's event stream (its timestamps, its order, the durations
the platform measured), never from the test's own clock.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from _extension_support import (
    ABANDONING_EXT,
    BASH_EXT,
    NODE_EXT,
    PYTHON_EXT,
    Recorded,
    build_layer,
    leftover_processes,
    options,
    recorded_function,
)

from lambdarun.sandbox.view import bwrap_usable
from lambdarun.telemetry import records as r
from lambdarun.telemetry.records import Event

ARN = "arn:aws:lambda:us-east-1:123456789012:function:function"
FRESH_TRACE = r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0"
TRACE_ID = "Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"
LANGUAGES = {"python": PYTHON_EXT, "bash": BASH_EXT, "node": NODE_EXT}


def _report(rec: Recorded, request_id: str) -> Event:
    return rec.one(r.REPORT, requestId=request_id)


# -- an external extension in each language: registration, INVOKE events, SHUTDOWN


@pytest.mark.parametrize("language", LANGUAGES)
def test_external_extension_registers_and_is_ready_after_init(tmp_path: Path, language: str) -> None:
    name = f"{language}-ext"
    layer = build_layer(tmp_path / "layer", {name: LANGUAGES[language]})
    with recorded_function([layer]) as rec:
        result = rec.fn.invoke({})
        assert result.status == "success"
        (registered,) = rec.lines(name, "REGISTER")
        assert '"functionName":"function"' in registered
        assert '"handler":"app.handler"' in registered
        extension = rec.one(r.EXTENSION, name=name)
        assert extension.record == {"name": name, "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]}
        assert f"EXTENSION\tName: {name}\tState: Ready\tEvents: [INVOKE, SHUTDOWN]" in result.logs
        # Registered during Init, before the runtime's first invoke
        init_report = rec.one(r.INIT_REPORT)
        assert init_report.record["status"] == "success"
        assert rec.index(extension) < rec.index(init_report)


@pytest.mark.parametrize("language", LANGUAGES)
def test_external_extension_gets_every_invoke_event_with_its_fields(tmp_path: Path, language: str) -> None:
    name = f"{language}-ext"
    layer = build_layer(tmp_path / "layer", {name: LANGUAGES[language]})
    with recorded_function([layer], timeout=7) as rec:
        ids = [rec.fn.invoke({}).request_id for _ in range(3)]
        traced = rec.fn.invoke({}, trace_id=TRACE_ID).request_id
        invokes = rec.received(name, "INVOKE")
    assert [e["requestId"] for e in invokes] == [*ids, traced]
    for event in invokes:
        start = rec.one(r.START, requestId=event["requestId"])
        assert event["invokedFunctionArn"] == ARN
        # The deadline is the invoke's start plus the function timeout, in epoch milliseconds.
        assert abs(event["deadlineMs"] - (start.time + 7) * 1000) < 50
        if event["requestId"] == traced:
            assert event["tracing"] == {"type": "X-Amzn-Trace-Id", "value": TRACE_ID}
        else:  # Lambda sends a trace id on every invoke, Sampled=0 without active tracing (SPEC 1.2)
            assert event["tracing"]["type"] == "X-Amzn-Trace-Id"
            assert re.fullmatch(FRESH_TRACE, event["tracing"]["value"])
        assert set(event) <= {"eventType", "deadlineMs", "requestId", "invokedFunctionArn", "tracing"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_external_extension_gets_shutdown_spindown_at_close_and_exits(tmp_path: Path, language: str) -> None:
    name = f"{language}-ext"
    layer = build_layer(tmp_path / "layer", {name: LANGUAGES[language]})
    with recorded_function([layer]) as rec:
        rec.fn.invoke({})
        assert rec.received(name, "SHUTDOWN") == []
    (shutdown_event,) = rec.received(name, "SHUTDOWN")
    shutdown = rec.shutdown()
    assert shutdown_event == {
        "eventType": "SHUTDOWN",
        "deadlineMs": shutdown["deadlineMs"],
        "shutdownReason": "spindown",
    }
    # Two seconds for a shutdown with an external extension (SPEC 4.4), counted from the shutdown's start.
    shutdown_event_at = rec.of_type(r.SHUTDOWN)[0].time
    started = shutdown_event_at - shutdown["durationMs"] / 1000
    assert abs(shutdown["deadlineMs"] - (started + 2) * 1000) < 50
    assert shutdown["shutdownReason"] == "spindown"
    assert shutdown["extensions"] == {name: "Exited"}
    assert rec.lines(name)[-1] == "EXIT"


def test_process_scan_sees_the_environments_processes(tmp_path: Path) -> None:
    """The check every test makes after close (no process carrying the test's marker) can see them."""
    layer = build_layer(tmp_path / "layer", {"python-ext": PYTHON_EXT})
    with recorded_function([layer]) as rec:
        rec.fn.invoke({})
        running = leftover_processes(rec.marker)
        assert any("extensions/python-ext" in p for p in running), running
        assert any("bootstrap.py" in p for p in running), running


# -- an extension that works after INVOKE


@pytest.mark.slow
def test_invoke_response_arrives_while_an_extension_still_works(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"sleepy": PYTHON_EXT})
    with recorded_function([layer], env=options("sleepy", sleep_after_invoke=1.0)) as rec:
        pending = rec.fn.start_invoke({})
        response = pending.response()
        # When the response is there, the invoke has not ended: no REPORT in the stream yet.
        assert r.REPORT not in {e.type for e in list(rec.events)}, "the response waited for the extension"
        assert response.function_error is None
        second = rec.fn.start_invoke({})
        first_result, second_result = pending.result(), second.result()
    assert first_result.json() == {"requestId": first_result.request_id}
    assert second_result.status == "success"
    done = rec.one(r.RUNTIME_DONE, requestId=first_result.request_id)
    report = _report(rec, first_result.request_id)
    second_start = rec.one(r.START, requestId=second_result.request_id)
    # The extension got INVOKE no earlier than the invoke's start and worked 1 s from then: it was back in
    # /event/next at least 1 s after the start, so at least (1000 - runtime's duration) ms after runtimeDone.
    runtime_ms = done.record["metrics"]["durationMs"]
    assert report.time - done.time >= (1000 - runtime_ms) / 1000
    assert rec.index(done) < rec.index(report) < rec.index(second_start)
    assert second_start.time >= report.time
    assert report.record["metrics"]["durationMs"] >= 1000


@pytest.mark.slow
def test_report_extension_overhead_counts_the_extension_time_after_the_runtime(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"sleepy": PYTHON_EXT})
    with recorded_function([layer], env=options("sleepy", sleep_after_invoke=1.0)) as rec:
        result = rec.fn.invoke({})
    done = rec.one(r.RUNTIME_DONE, requestId=result.request_id)
    overhead = result.report.post_runtime_extensions_ms
    assert overhead is not None
    runtime_ms = done.record["metrics"]["durationMs"]
    assert overhead >= 1000 - runtime_ms
    assert overhead < 1500
    assert abs(result.duration_ms - (runtime_ms + overhead)) < 50
    assert any("Post Runtime Extensions Duration: " in line for line in result.logs)


# -- an extension registered for no events


def test_extension_registered_for_no_events_lets_invokes_run_and_is_killed_at_close(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"quiet": PYTHON_EXT})
    with recorded_function([layer], env=options("quiet", events=[])) as rec:
        results = [rec.fn.invoke({}) for _ in range(2)]
        assert [x.status for x in results] == ["success", "success"]
        assert rec.one(r.INIT_REPORT).record["status"] == "success"
        assert rec.one(r.EXTENSION, name="quiet").record == {"name": "quiet", "state": "Ready", "events": []}
    assert rec.received("quiet") == []
    shutdown = rec.shutdown()
    # Not subscribed to SHUTDOWN: killed at once, not waited for until the deadline; its state is untouched.
    assert shutdown["extensions"] == {"quiet": "Ready"}
    assert shutdown["durationMs"] < 1000


# -- an extension that ignores SHUTDOWN


@pytest.mark.slow
def test_extension_ignoring_shutdown_is_killed_at_the_deadline(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"stubborn": PYTHON_EXT})
    with recorded_function([layer], env=options("stubborn", ignore_shutdown=True)) as rec:
        rec.fn.invoke({})
    assert len(rec.received("stubborn", "SHUTDOWN")) == 1
    assert rec.lines("stubborn", "IGNORING") == ["SHUTDOWN"]
    shutdown = rec.shutdown()
    assert 1950 <= shutdown["durationMs"] <= 2500
    assert shutdown["extensions"] == {"stubborn": "ShutdownFailed"}


# -- an extension that crashes


def test_extension_crash_fails_the_invoke_and_the_next_invoke_starts_a_fresh_init(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"fragile": PYTHON_EXT})
    with recorded_function([layer], env=options("fragile", crash_on_invoke=2)) as rec:
        first = rec.fn.invoke({})
        crashed = rec.fn.invoke({})
        third = rec.fn.invoke({})
    assert first.status == "success"
    assert crashed.status == "error"
    assert crashed.report.status == "error"
    assert crashed.report.error_type == "Extension.Crash"
    assert any(line.endswith("Status: error\tError Type: Extension.Crash\t") for line in crashed.logs)
    assert third.status == "success"
    assert third.json() == {"requestId": third.request_id}
    # The crash reset the environment: a failure shutdown, then a second Init before the third invoke.
    inits = rec.of_type(r.INIT_START)
    assert len(inits) == 2
    reset = rec.of_type(r.SHUTDOWN)[0]
    assert reset.record["shutdownReason"] == "failure"
    crash_report = _report(rec, crashed.request_id)
    third_start = rec.one(r.START, requestId=third.request_id)
    assert rec.index(crash_report) < rec.index(reset) < rec.index(inits[1]) < rec.index(third_start)
    assert [e["requestId"] for e in rec.received("fragile", "INVOKE")] == [
        first.request_id,
        crashed.request_id,
        third.request_id,
    ]


# -- an internal extension started by a wrapper script


def _internal_layer(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The layer with the wrapper and the sitecustomize hook, and the env that names the wrapper."""
    layer = build_layer(
        tmp_path / "layer",
        {},
        {"wrapper.sh": "internal/wrapper.sh", "internal/sitecustomize.py": "internal/sitecustomize.py"},
    )
    # The layer is at /opt in the sandbox; without bubblewrap, a one-layer /opt is the layer directory itself.
    opt = "/opt" if bwrap_usable() else str(layer.resolve())
    return layer, {"AWS_LAMBDA_EXEC_WRAPPER": f"{opt}/wrapper.sh"}


def test_internal_extension_from_a_wrapper_receives_every_invoke(tmp_path: Path) -> None:
    layer, env = _internal_layer(tmp_path)
    with recorded_function([layer], env=env) as rec:
        results = [rec.fn.invoke({}) for _ in range(3)]
    assert [x.status for x in results] == ["success"] * 3
    (registered,) = rec.lines("my-internal", "REGISTER", type_=r.FUNCTION)
    assert registered.startswith("200 ")
    got = rec.lines("my-internal", "EVENT", type_=r.FUNCTION)
    assert got == [f"INVOKE {x.request_id}" for x in results]


def test_internal_extension_shows_in_the_extension_line(tmp_path: Path) -> None:
    layer, env = _internal_layer(tmp_path)
    with recorded_function([layer], env=env) as rec:
        result = rec.fn.invoke({})
    assert "EXTENSION\tName: my-internal\tState: Ready\tEvents: [INVOKE]" in result.logs
    assert rec.shutdown()["extensions"] == {"my-internal": "Ready"}


def test_internal_extension_cannot_register_for_shutdown(tmp_path: Path) -> None:
    layer, env = _internal_layer(tmp_path)
    with recorded_function([layer], env=env) as rec:
        rec.fn.invoke({})
    (refused,) = rec.lines("my-internal", "REGISTER-WITH-SHUTDOWN", type_=r.FUNCTION)
    status, body = refused.split(" ", 1)
    assert status == "403"
    assert '"errorType":"Extension.InvalidEventType"' in body


# -- a client that abandons its long-poll (the client re-polls as each INVOKE arrives and gives a poll up 2 s
# later, then polls again on a new connection; an invoke whose function runs about 2 s places the next INVOKE
# before, at or after that moment, while the environment is not frozen)


@pytest.mark.slow
def test_long_poll_abandoned_before_or_after_the_event_arrives_loses_no_event(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"impatient": ABANDONING_EXT})
    with recorded_function([layer]) as rec:
        ids = [rec.fn.invoke({}).request_id]
        # Next INVOKE 200 ms after the client gave up; 500 ms before it would; 500 ms after it gave up.
        for seconds in (2.2, 1.5, 2.5):
            ids.append(rec.fn.invoke({"sleep": seconds}).request_id)
        ids.append(rec.fn.invoke({}).request_id)
    assert rec.lines("impatient", "ABANDONED") == ["", ""]
    got = [e["requestId"] for e in rec.received("impatient", "INVOKE")]
    assert got == ids
    assert len(rec.received("impatient", "SHUTDOWN")) == 1


@pytest.mark.slow
def test_event_written_to_a_poll_abandoned_but_not_yet_closed_is_not_lost(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"impatient": ABANDONING_EXT})
    # The client keeps an abandoned connection open 0.3 s, unread, before closing it and polling again: the
    # moment between a client's timeout and its close, made long enough to land an event in it every time.
    with recorded_function([layer], env={"ABANDON_HOLD_S": "0.3"}) as rec:
        # The first invoke runs 2.1 s: the client abandons its poll at 2 s; the second INVOKE comes at 2.1 s.
        ids = [rec.fn.invoke({"sleep": 2.1}).request_id, rec.fn.invoke({}).request_id]
    assert rec.lines("impatient", "ABANDONED") == [""]
    got = [e["requestId"] for e in rec.received("impatient", "INVOKE")]
    assert got == ids


@pytest.mark.slow
def test_long_poll_abandoned_as_the_event_arrives_loses_no_event(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {"impatient": ABANDONING_EXT})
    with recorded_function([layer]) as rec:
        ids = [rec.fn.invoke({}).request_id]
        # The next INVOKE lands within a few milliseconds of the client's giving up, on either side.
        for seconds in (1.995, 1.997, 1.999, 2.0, 2.001, 2.003, 2.005, 2.007):
            ids.append(rec.fn.invoke({"sleep": seconds}).request_id)
        # Between invokes the environment is frozen but the client's clock runs: a poll older than 2 s times
        # out the moment it is thawed, just as the next INVOKE arrives.
        for _ in range(2):
            time.sleep(2.1)  # pacing only; nothing is asserted on the test's clock
            ids.append(rec.fn.invoke({}).request_id)
    # The test proves something only if polls were abandoned close to an INVOKE's arrival.
    abandoned = [e.time for e in rec.of_type(r.EXTENSION_LOG) if e.record == "[impatient] ABANDONED"]
    starts = [e.time for e in rec.of_type(r.START)]
    assert any(abs(a - s) < 0.01 for a in abandoned for s in starts), (abandoned, starts)
    got = [e["requestId"] for e in rec.received("impatient", "INVOKE")]
    assert got == ids
    assert len(rec.received("impatient", "SHUTDOWN")) == 1


# -- too many extensions


def test_eleven_extensions_fail_init_with_the_extension_limit(tmp_path: Path) -> None:
    layer = build_layer(tmp_path / "layer", {f"ext{i:02d}": PYTHON_EXT for i in range(1, 12)})
    with recorded_function([layer]) as rec:
        result = rec.fn.invoke({})
    assert result.function_error == "Unhandled"
    assert result.error_type == "Extension.LaunchError"
    payload = result.json()
    assert payload["errorType"] == "Extension.LaunchError"
    assert "limit" in payload["errorMessage"].lower() and "10" in payload["errorMessage"]
    reports = rec.of_type(r.INIT_REPORT)
    assert [e.record["phase"] for e in reports] == ["init", "invoke"]
    assert all(e.record["status"] == "error" for e in reports)
    assert all(e.record["errorType"] == "Extension.LaunchError" for e in reports)
    assert result.report.status == "error"
    assert result.report.error_type == "Extension.LaunchError"
    assert rec.of_type(r.EXTENSION_LOG) == [], "no extension may start when there are too many"
