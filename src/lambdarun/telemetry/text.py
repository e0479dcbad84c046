"""The CloudWatch text form of platform events (SPEC 4.7): `INIT_START`, `START`, `END`, `REPORT`, …

Only a reader of the event stream: every figure here was computed once, by whoever emitted the event.
"""

from __future__ import annotations

from typing import Any

from . import records as r
from .records import Event


def _fmt_ms(value: float) -> str:
    return f"{value:.2f} ms"


def _events_list(events: list[str]) -> str:
    return "[" + ", ".join(events) + "]"


def text_line(event: Event) -> str | None:
    """The log line for an event, or None for events with no line of their own. No trailing newline."""
    rec: Any = event.record
    match event.type:
        case r.FUNCTION | r.EXTENSION_LOG:
            return rec.rstrip("\n") if isinstance(rec, str) else None
        case r.INIT_START:
            line = f"INIT_START Runtime Version: {rec.get('runtimeVersion', 'unknown')}"
            if rec.get("runtimeVersionArn"):
                line += f"\tRuntime Version ARN: {rec['runtimeVersionArn']}"
            return line
        case r.INIT_REPORT:
            if rec.get("status") == "success":
                return None  # a successful on-demand init shows only as `Init Duration` in REPORT
            line = f"INIT_REPORT Init Duration: {_fmt_ms(rec['metrics']['durationMs'])}\tPhase: {rec['phase']}"
            line += f"\tStatus: {rec['status']}"
            if rec.get("errorType"):
                line += f"\tError Type: {rec['errorType']}"
            return line
        case r.EXTENSION:
            line = f"EXTENSION\tName: {rec['name']}\tState: {rec['state']}\tEvents: {_events_list(rec['events'])}"
            if rec.get("errorType"):
                line += f"\tError Type: {rec['errorType']}"
            return line
        case r.TELEMETRY_SUBSCRIPTION | r.LOGS_SUBSCRIPTION:
            label = "TELEMETRY" if event.type == r.TELEMETRY_SUBSCRIPTION else "LOGS"
            types = [t.capitalize() for t in rec["types"]]
            return f"{label}\tName: {rec['name']}\tState: {rec['state']}\tTypes: {_events_list(types)}"
        case r.START:
            return f"START RequestId: {rec['requestId']} Version: {rec.get('version', '$LATEST')}"
        case r.END:
            return f"END RequestId: {rec['requestId']}"
        case r.FAULT:
            return str(rec)
        case r.REPORT:
            return report_line(rec)
    return None


def report_line(rec: dict[str, Any]) -> str:
    m = rec["metrics"]
    parts = [
        f"REPORT RequestId: {rec['requestId']}",
        f"Duration: {_fmt_ms(m['durationMs'])}",
        f"Billed Duration: {m['billedDurationMs']} ms",
        f"Memory Size: {m['memorySizeMB']} MB",
        f"Max Memory Used: {m['maxMemoryUsedMB']} MB",
    ]
    if "initDurationMs" in m:
        parts.append(f"Init Duration: {_fmt_ms(m['initDurationMs'])}")
    overhead = next((s["durationMs"] for s in rec.get("spans", []) if s["name"] == "extensionOverhead"), None)
    if overhead is not None:
        # Not in Lambda's own line: what the extensions cost, shown whenever one is registered.
        parts.append(f"Runtime Duration: {_fmt_ms(max(0.0, m['durationMs'] - overhead))}")
        parts.append(f"Post Runtime Extensions Duration: {_fmt_ms(overhead)}")
    if rec.get("status") not in (None, "success"):
        parts.append(f"Status: {rec['status']}")
        if rec.get("errorType"):
            parts.append(f"Error Type: {rec['errorType']}")
    return "\t".join(parts) + "\t"
