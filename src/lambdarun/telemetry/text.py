"""The CloudWatch text form of platform events (SPEC 4.7): `INIT_START`, `START`, `END`, `REPORT`, …

Only a reader of the event stream: every figure here was computed once, by whoever emitted the event.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..core.outcomes import Status
from . import records as r
from .records import Event


def _fmt_ms(value: float) -> str:
    return f"{value:.2f} ms"


def _events_list(events: Iterable[str]) -> str:
    return "[" + ", ".join(events) + "]"


def text_line(event: Event) -> str | None:
    """The log line for an event, or None for events with no line of their own. No trailing newline."""
    match event.data:
        case r.FunctionLog(record=str() as line) | r.ExtensionLog(line=line):
            return line.rstrip("\n")
        case r.InitStart(runtime_version=version):
            return f"INIT_START Runtime Version: {version}"
        case r.InitReport() as rec:
            if rec.status == Status.SUCCESS:
                return None  # a successful on-demand init shows only as `Init Duration` in REPORT
            line = f"INIT_REPORT Init Duration: {_fmt_ms(rec.duration_ms)}\tPhase: {rec.phase}\tStatus: {rec.status}"
            if rec.error_type:
                line += f"\tError Type: {rec.error_type}"
            return line
        case r.ExtensionInfo() as rec:
            return f"EXTENSION\tName: {rec.name}\tState: {rec.state}\tEvents: {_events_list(rec.events)}"
        case r.TelemetrySubscription() as rec:  # a LogsSubscription is one too
            label = "LOGS" if rec.TYPE == r.LOGS_SUBSCRIPTION else "TELEMETRY"
            types = (t.capitalize() for t in rec.types)
            return f"{label}\tName: {rec.name}\tState: Subscribed\tTypes: {_events_list(types)}"
        case r.Start() as rec:
            return f"START RequestId: {rec.request_id} Version: {rec.version}"
        case r.End() as rec:
            return f"END RequestId: {rec.request_id}"
        case r.Fault() as rec:
            return rec.text
        case r.Report() as rec:
            return report_line(rec)
    return None


def report_line(rec: r.Report) -> str:
    parts = [
        f"REPORT RequestId: {rec.request_id}",
        f"Duration: {_fmt_ms(rec.duration_ms)}",
        f"Billed Duration: {rec.billed_duration_ms} ms",
        f"Memory Size: {rec.memory_size_mb} MB",
        f"Max Memory Used: {rec.max_memory_used_mb} MB",
    ]
    if rec.init_duration_ms is not None:
        parts.append(f"Init Duration: {_fmt_ms(rec.init_duration_ms)}")
    overhead = rec.post_runtime_extensions_ms
    if overhead is not None:
        # Not in Lambda's own line: what the extensions cost, shown whenever one is registered.
        parts.append(f"Runtime Duration: {_fmt_ms(max(0.0, rec.duration_ms - overhead))}")
        parts.append(f"Post Runtime Extensions Duration: {_fmt_ms(overhead)}")
    if rec.status != Status.SUCCESS:
        parts.append(f"Status: {rec.status}")
        if rec.error_type:
            parts.append(f"Error Type: {rec.error_type}")
    return "\t".join(parts) + "\t"
