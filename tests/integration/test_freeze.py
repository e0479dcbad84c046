"""Between invokes every process of the environment is frozen: background work stops and resumes on thaw (SPEC 4.5)."""

from __future__ import annotations

import time
from pathlib import Path

from lambdarun import Function

TICKING_HANDLER = """
import threading, time
ticks = []

def _tick():
    while True:
        ticks.append(time.time())
        time.sleep(0.005)

def handler(event, context):
    if not ticks:
        threading.Thread(target=_tick, daemon=True).start()
        time.sleep(0.05)
    return ticks[-400:]
"""

TICKING_EXTENSION = """#!/usr/bin/python3
import json, os, sys, threading, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2020-01-01/extension"
request = urllib.request.Request(api + "/register", data=b'{"events": ["INVOKE"]}', method="POST",
                                 headers={"Lambda-Extension-Name": "ticker"})
me = {"Lambda-Extension-Identifier": urllib.request.urlopen(request).headers["Lambda-Extension-Identifier"]}

def tick():
    while True:
        print("tick", flush=True)
        time.sleep(0.005)

threading.Thread(target=tick, daemon=True).start()
while True:
    urllib.request.urlopen(urllib.request.Request(api + "/event/next", headers=me)).read()
"""

IDLE_S = 0.5
MARGIN_S = 0.05  # freezing follows the REPORT and thawing precedes the START by a moment


def _idle_window(first_report: float, second_start: float) -> tuple[float, float]:
    return first_report + MARGIN_S, second_start - MARGIN_S


def test_a_function_background_thread_does_not_run_between_invokes(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(TICKING_HANDLER)
    with Function(tmp_path, "python3.11", "app.handler") as fn:
        first = fn.invoke({})
        time.sleep(IDLE_S)
        second = fn.invoke({})
    [report] = [e.time for e in first.events if e.type == "platform.report"]
    [start] = [e.time for e in second.events if e.type == "platform.start"]
    low, high = _idle_window(report, start)
    ticks = second.json()
    assert len([t for t in ticks if t <= report]) >= 5  # it did run while the invoke ran
    assert [t for t in ticks if low < t < high] == []  # and not at all while the environment was idle


def test_an_extension_background_thread_does_not_run_between_invokes(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text("def handler(event, context):\n    return 'ok'\n")
    extension = tmp_path / "layer" / "extensions" / "ticker"
    extension.parent.mkdir(parents=True)
    extension.write_text(TICKING_EXTENSION)
    extension.chmod(0o755)
    seen: list[float] = []
    with Function(tmp_path / "code", "python3.11", "app.handler", layers=[tmp_path / "layer"]) as fn:
        fn.subscribe(lambda e: seen.append(e.time) if e.type == "extension" and e.record == "tick" else None)
        first = fn.invoke({})
        time.sleep(IDLE_S)
        second = fn.invoke({})
        time.sleep(0.05)  # the thawed extension ticks again while this third invoke runs
        fn.invoke({})
    [report] = [e.time for e in first.events if e.type == "platform.report"]
    [start] = [e.time for e in second.events if e.type == "platform.start"]
    low, high = _idle_window(report, start)
    assert any(t <= report for t in seen) and any(t >= start for t in seen)
    assert [t for t in seen if low < t < high] == []
