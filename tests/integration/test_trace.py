"""The lifecycle trace of a cold and a warm invoke with two extensions: a file in the Chrome trace event format whose
spans nest and carry the REPORT's own figures, and the picture `lambdarun trace --svg` draws of it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import lambdarun
from lambdarun.telemetry import records as r

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "telemetry-extension"
PYTHON_EXT = ROOT / "tests" / "fixtures" / "extensions" / "python_ext.py"
SLACK_US = 2.0  # figures are truncated to microseconds where they are computed

# The JSON Object Format of the Trace Event Format (Google's "Trace Event Format" document): a traceEvents array of
# events, each with a phase; complete events ("X") carry ts and dur in microseconds, metadata events ("M") name
# processes and threads or order them.
TRACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {"type": "array", "items": {"$ref": "#/$defs/event"}},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
    },
    "$defs": {
        "event": {
            "type": "object",
            "required": ["name", "ph", "pid", "tid"],
            "properties": {"ph": {"enum": ["X", "M"]}, "pid": {"type": "integer"}, "tid": {"type": "integer"},
                           "name": {"type": "string"}, "cat": {"type": "string"}, "args": {"type": "object"}},
            "oneOf": [
                {"properties": {"ph": {"const": "X"}, "ts": {"type": "number"},
                                "dur": {"type": "number", "minimum": 0}}, "required": ["ts", "dur"]},
                {"properties": {"ph": {"const": "M"},
                                "name": {"enum": ["process_name", "thread_name", "process_sort_index",
                                                  "thread_sort_index", "process_labels"]}},
                 "required": ["args"],
                 "if": {"properties": {"name": {"enum": ["process_name", "thread_name"]}}},
                 "then": {"properties": {"args": {"required": ["name"],
                                                  "properties": {"name": {"type": "string"}}}}},
                 "else": {"properties": {"args": {"properties": {"sort_index": {"type": "integer"}}}}}},
            ],
        }
    },
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One function with the sample telemetry extension and a second extension that works 30 ms after each
    invoke; a cold and a warm invoke, then the shutdown; its trace file."""
    tmp = tmp_path_factory.mktemp("trace")
    layer = tmp / "layer"
    shutil.copytree(SAMPLE / "layer", layer)
    shutil.copy(PYTHON_EXT, layer / "extensions" / "ext-b")
    (layer / "extensions" / "ext-b").chmod(0o755)
    trace = tmp / "trace.json"
    env = {"TELEMETRY_SAMPLE_PORT": str(_free_port()), "EXT_EXT_B": json.dumps({"sleep_after_invoke": 0.03})}
    fn = lambdarun.Function(SAMPLE / "function-python", "python3.11", "app.handler", layers=[layer], env=env,
                            trace=trace)  # fmt: skip
    with fn:
        results = [fn.invoke({"lines": 2}), fn.invoke({"lines": 1})]
    return {"file": trace, "json": json.loads(trace.read_text()), "results": results, "tmp": tmp}


def _spans(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    by_track: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "X":
            by_track[names[event["tid"]]].append(event)
    return by_track


def test_the_trace_is_in_the_trace_event_format(traced: dict[str, Any]) -> None:
    trace = traced["json"]
    jsonschema.validate(trace, TRACE_SCHEMA)
    named = {e["tid"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {e["tid"] for e in trace["traceEvents"] if e["ph"] == "X"} <= named
    tracks = set(_spans(trace))
    assert {"platform", "runtime", "telemetry-sample", "ext-b", "telemetry → telemetry-sample"} <= tracks


def test_a_broken_trace_fails_the_validator() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"traceEvents": [{"name": "x", "ph": "X", "pid": 1, "tid": 1, "ts": 0}]}, TRACE_SCHEMA)


def test_spans_nest_within_each_track(traced: dict[str, Any]) -> None:
    for track, spans in _spans(traced["json"]).items():
        stack: list[dict[str, Any]] = []
        for span in sorted(spans, key=lambda s: (s["ts"], -s["dur"])):
            while stack and span["ts"] >= stack[-1]["ts"] + stack[-1]["dur"] - SLACK_US:
                stack.pop()
            if stack:  # it starts inside the span on top: it must end inside it too
                parent = stack[-1]
                assert span["ts"] + span["dur"] <= parent["ts"] + parent["dur"] + SLACK_US, (track, span, parent)
            stack.append(span)


def test_the_spans_carry_the_report_figures(traced: dict[str, Any]) -> None:
    spans = _spans(traced["json"])
    cold, warm = traced["results"]
    assert cold.report.init_duration_ms is not None and warm.report.init_duration_ms is None
    (init,) = [s for s in spans["platform"] if s["name"] == "init (init)"]
    assert init["dur"] / 1000 == pytest.approx(cold.report.init_duration_ms, abs=0.1)
    for result in (cold, warm):
        rid = result.request_id

        def of(track: str, name: str, rid: str = rid) -> dict[str, Any]:
            (found,) = [s for s in spans[track] if s["name"] == name and s["args"].get("request_id") == rid]
            return found

        invoke = of("platform", f"invoke {rid[:8]}")
        assert invoke["dur"] / 1000 == pytest.approx(result.report.duration_ms, abs=0.1)
        post = result.report.post_runtime_extensions_ms
        assert post is not None and post >= 25  # ext-b works 30 ms after each invoke
        assert of("platform", "extensions after the runtime")["dur"] / 1000 == pytest.approx(post, abs=0.1)
        # The longest extension's time after the runtime is the REPORT's Post Runtime Extensions Duration.
        per_extension = [s["dur"] / 1000 for track in ("telemetry-sample", "ext-b") for s in spans[track]
                         if s["name"] == "after the runtime" and s["args"]["request_id"] == rid]  # fmt: skip
        assert max(per_extension) == pytest.approx(post, abs=0.1)
        (done,) = [e.data for e in result.events if isinstance(e.data, r.RuntimeDone)]
        assert of("runtime", f"invoke {rid[:8]}")["dur"] / 1000 == pytest.approx(done.duration_ms, abs=0.1)
        # Every extension's part of the invoke lies inside the platform's invoke.
        for track in ("telemetry-sample", "ext-b"):
            part = of(track, f"invoke {rid[:8]}")
            assert part["ts"] >= invoke["ts"] - SLACK_US
            assert part["ts"] + part["dur"] <= invoke["ts"] + invoke["dur"] + SLACK_US


def test_frozen_periods_deliveries_and_shutdown_are_traced(traced: dict[str, Any]) -> None:
    spans = _spans(traced["json"])
    platform = {s["name"] for s in spans["platform"]}
    assert {"frozen", "shutdown (spindown)", "runtime", "extensions", "kill"} <= platform
    deliveries = spans["telemetry → telemetry-sample"]
    assert deliveries and all(s["args"]["status"] == 200 for s in deliveries)
    shutdowns = [s["name"] for track in ("telemetry-sample", "ext-b") for s in spans[track] if s["cat"] == "shutdown"]
    assert shutdowns == ["SHUTDOWN: exited 0", "SHUTDOWN: exited 0"]


def test_the_trace_draws_as_an_svg(traced: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    out = traced["tmp"] / "trace.svg"
    done = subprocess.run([sys.executable, "-m", "lambdarun", "trace", str(traced["file"]), "--svg", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 20  # bars and glyphs
    if shutil.which("rsvg-convert"):
        png = out.with_suffix(".png")
        subprocess.run(["rsvg-convert", "-o", str(png), str(out)], check=True, timeout=60)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_lists_each_track(traced: dict[str, Any]) -> None:
    done = subprocess.run([sys.executable, "-m", "lambdarun", "trace", str(traced["file"])], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    tracks = {line.split()[0] for line in done.stdout.splitlines()}
    assert {"platform", "runtime", "telemetry-sample", "ext-b"} <= tracks


def test_invoke_writes_the_trace_named_by_the_option(tmp_path: Path) -> None:
    trace = tmp_path / "cli.json"
    done = subprocess.run([sys.executable, "-m", "lambdarun", "invoke", str(SAMPLE / "function-python"), "--runtime",
                           "python3.11", "--handler", "app.handler", "--repeat", "2", "--trace", str(trace)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = json.loads(trace.read_text())
    jsonschema.validate(loaded, TRACE_SCHEMA)
    platform = [s["name"] for s in _spans(loaded)["platform"]]
    # Frozen after each invoke: until the next one, and until the shutdown.
    assert platform.count("frozen") == 2 and sum(name.startswith("invoke ") for name in platform) == 2


def test_a_file_that_is_no_trace_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"events": []}')
    done = subprocess.run([sys.executable, "-m", "lambdarun", "trace", str(bogus)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "no traceEvents list" in done.stderr
