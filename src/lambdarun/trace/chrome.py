"""The Chrome trace event format (what Perfetto and chrome://tracing open), written from a timeline and read back.

One process (the environment) with one thread per track: "M" metadata events name each track and fix its order, and
each span is an "X" (complete) event with `ts` and `dur` in microseconds from the first span. `otherData.originEpoch`
keeps the epoch time of `ts` 0, so a trace read back has the times it was written with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..telemetry.records import iso_time
from .timeline import Timeline, track_order

PID = 1


class TraceFormatError(ValueError):
    """A file that is not a trace lambdarun wrote (or one it can read)."""


def to_chrome(timeline: Timeline, name: str = "function") -> dict[str, Any]:
    origin = timeline.origin
    tids = {track: n for n, track in enumerate(track_order(timeline.tracks), 1)}
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": f"lambdarun: {name}"}}
    ]
    for track, tid in tids.items():
        events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": track}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    # Parents before children at equal start, so viewers nest them the same way.
    for span in sorted(timeline.spans, key=lambda s: (s.start, -s.duration_ms)):
        events.append({
            "name": span.name,
            "cat": span.category,
            "ph": "X",
            "ts": round((span.start - origin) * 1_000_000, 3),
            "dur": round(span.duration_ms * 1000, 3),
            "pid": PID,
            "tid": tids[span.track],
            "args": {k: v for k, v in span.args.items() if v is not None},
        })  # fmt: skip
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"generator": "lambdarun", "function": name, "origin": iso_time(origin), "originEpoch": origin},
    }


def write(path: str | Path, timeline: Timeline, name: str = "function") -> None:
    Path(path).write_text(json.dumps(to_chrome(timeline, name), indent=1) + "\n")


def from_chrome(trace: Any) -> Timeline:
    """A timeline from a trace lambdarun wrote."""
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise TraceFormatError("not a trace in the JSON object format (no traceEvents list)")
    origin = float((trace.get("otherData") or {}).get("originEpoch", 0.0))
    names: dict[int, str] = {}
    timeline = Timeline()
    spans = []
    for event in trace["traceEvents"]:
        if not isinstance(event, dict):
            raise TraceFormatError(f"a trace event must be an object, got {event!r}")
        if event.get("ph") == "M" and event.get("name") == "thread_name":
            names[int(event["tid"])] = str(event["args"]["name"])
        elif event.get("ph") == "X":
            spans.append(event)
    for tid in sorted(names):
        if names[tid] not in timeline.tracks:
            timeline.tracks.append(names[tid])
    for event in spans:
        try:
            track = names.get(int(event["tid"]), f"track {event['tid']}")
            start = origin + float(event["ts"]) / 1_000_000
            timeline.add(track, str(event["name"]), str(event.get("cat", "")), start, float(event["dur"]) / 1000,
                         **dict(event.get("args") or {}))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceFormatError(f"a complete (X) event needs name, ts, dur and tid: {event!r}") from exc
    return timeline


def load(path: str | Path) -> Timeline:
    try:
        trace = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise TraceFormatError(f"{path} is not JSON: {exc}") from None
    return from_chrome(trace)
