"""Typed platform events: the one stream every observable thing is read from (DESIGN: one event stream is the truth).

One frozen dataclass per record kind. Each figure is computed once, by the flow that emits the record; readers (the
text log, Telemetry and Logs API subscribers, `InvokeResult`, `--telemetry FILE`) read fields. `wire()` is the
Telemetry API form of the record (2022-12-13 and later), key order included; an `Event` adds the envelope (`time`,
`type`, `record`). A few types exist only for the text log (`platform.end` and `platform.fault` come from the Logs
API) or for lambdarun itself (`lambdarun.shutdown`, and lifecycle.py's); subscriptions decide what each API carries.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from ..core.outcomes import Status

# Event types, named once.
INIT_START = "platform.initStart"
INIT_RUNTIME_DONE = "platform.initRuntimeDone"
INIT_REPORT = "platform.initReport"
START = "platform.start"
RUNTIME_DONE = "platform.runtimeDone"
END = "platform.end"
REPORT = "platform.report"
EXTENSION = "platform.extension"
TELEMETRY_SUBSCRIPTION = "platform.telemetrySubscription"
LOGS_SUBSCRIPTION = "platform.logsSubscription"
LOGS_DROPPED = "platform.logsDropped"
FAULT = "platform.fault"
# Ours: the end of a shutdown sequence, for tests and tools; never sent to Telemetry API subscribers (lifecycle.py
# has the others).
SHUTDOWN = "lambdarun.shutdown"
FUNCTION = "function"
EXTENSION_LOG = "extension"

Wire = dict[str, Any] | str


def iso_time(epoch: float) -> str:
    """ISO-8601 UTC with millisecond precision, as Lambda's `2006-01-02T15:04:05.000Z` (on every event: kept cheap)."""
    seconds = int(epoch)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds)) + f".{int((epoch - seconds) * 1000):03d}Z"


def ms(seconds: float) -> float:
    """A duration in milliseconds truncated to microseconds, as RAPID's CalculateDuration."""
    return int(seconds * 1_000_000) / 1000


class Phase(StrEnum):
    INIT = "init"  # the on-demand Init before the first invoke
    INVOKE = "invoke"  # the suppressed init, inside an invoke after a failed Init (SPEC 4.1)


class Record(Protocol):
    TYPE: ClassVar[str]

    def wire(self) -> Wire: ...


@dataclass(frozen=True, slots=True)
class Tracing:
    """The invoke's tracing context (SPEC 3.4 TraceContext); the span id names the platform's span."""

    span_id: str
    value: str

    def wire(self) -> dict[str, Any]:
        return {"spanId": self.span_id, "type": "X-Amzn-Trace-Id", "value": self.value}


@dataclass(frozen=True, slots=True)
class Span:
    name: str
    start: float  # epoch seconds
    duration_ms: float

    @classmethod
    def between(cls, name: str, start: float, end: float) -> Span:
        return cls(name, start, ms(max(0.0, end - start)))

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "start": iso_time(self.start), "durationMs": self.duration_ms}


def _optional(record: dict[str, Any], tracing: Tracing | None, error_type: str | None) -> dict[str, Any]:
    if tracing is not None:
        record["tracing"] = tracing.wire()
    if error_type:
        record["errorType"] = error_type
    return record


@dataclass(frozen=True, slots=True)
class InitStart:
    TYPE: ClassVar[str] = INIT_START
    phase: Phase
    runtime_version: str
    function_name: str
    function_version: str
    instance_id: str
    instance_max_memory: int

    def wire(self) -> dict[str, Any]:
        return {"initializationType": "on-demand", "phase": self.phase, "runtimeVersion": self.runtime_version,
                "functionName": self.function_name, "functionVersion": self.function_version,
                "instanceId": self.instance_id, "instanceMaxMemory": self.instance_max_memory}  # fmt: skip


@dataclass(frozen=True, slots=True)
class InitRuntimeDone:
    TYPE: ClassVar[str] = INIT_RUNTIME_DONE
    phase: Phase
    status: Status
    error_type: str | None = None

    def wire(self) -> dict[str, Any]:
        record = {"initializationType": "on-demand", "phase": self.phase, "status": self.status}
        return _optional(record, None, self.error_type)


@dataclass(frozen=True, slots=True)
class InitReport:
    TYPE: ClassVar[str] = INIT_REPORT
    phase: Phase
    status: Status
    duration_ms: float
    error_type: str | None = None

    def wire(self) -> dict[str, Any]:
        record = _optional({"initializationType": "on-demand", "phase": self.phase, "status": self.status},
                           None, self.error_type)  # fmt: skip
        record["metrics"] = {"durationMs": self.duration_ms}
        return record


@dataclass(frozen=True, slots=True)
class Start:
    TYPE: ClassVar[str] = START
    request_id: str
    version: str
    tracing: Tracing | None = None

    def wire(self) -> dict[str, Any]:
        return _optional({"requestId": self.request_id, "version": self.version}, self.tracing, None)


@dataclass(frozen=True, slots=True)
class RuntimeDone:
    TYPE: ClassVar[str] = RUNTIME_DONE
    request_id: str
    status: Status
    duration_ms: float
    produced_bytes: int | None = None
    error_type: str | None = None
    tracing: Tracing | None = None
    spans: tuple[Span, ...] = ()  # responseLatency, responseDuration, runtimeOverhead

    def wire(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {"durationMs": self.duration_ms}
        if self.produced_bytes is not None:
            metrics["producedBytes"] = self.produced_bytes
        record = _optional({"requestId": self.request_id, "status": self.status, "metrics": metrics},
                           self.tracing, self.error_type)  # fmt: skip
        if self.spans:
            record["spans"] = [span.wire() for span in self.spans]
        return record


@dataclass(frozen=True, slots=True)
class End:
    TYPE: ClassVar[str] = END
    request_id: str

    def wire(self) -> dict[str, Any]:
        return {"requestId": self.request_id}


@dataclass(frozen=True, slots=True)
class Report:
    TYPE: ClassVar[str] = REPORT
    request_id: str
    status: Status
    duration_ms: float
    billed_duration_ms: int
    memory_size_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None = None
    error_type: str | None = None
    tracing: Tracing | None = None
    # What the runtime's `next` to the last extension's `next` cost: CloudWatch's PostRuntimeExtensionsDuration,
    # as the `extensionOverhead` span RAPID puts on the report. None when no extension is registered.
    extension_overhead: Span | None = None

    @property
    def post_runtime_extensions_ms(self) -> float | None:
        return None if self.extension_overhead is None else self.extension_overhead.duration_ms

    def wire(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "durationMs": self.duration_ms,
            "billedDurationMs": self.billed_duration_ms,
            "memorySizeMB": self.memory_size_mb,
            "maxMemoryUsedMB": self.max_memory_used_mb,
        }
        if self.init_duration_ms is not None:
            metrics["initDurationMs"] = self.init_duration_ms
        record = _optional({"requestId": self.request_id, "status": self.status, "metrics": metrics},
                           self.tracing, self.error_type)  # fmt: skip
        if self.extension_overhead is not None:
            record["spans"] = [self.extension_overhead.wire()]
        return record


@dataclass(frozen=True, slots=True)
class ExtensionInfo:
    """platform.extension: one per extension after Init, with the state it reached."""

    TYPE: ClassVar[str] = EXTENSION
    name: str
    state: str
    events: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "events": list(self.events)}


@dataclass(frozen=True, slots=True)
class TelemetrySubscription:
    TYPE: ClassVar[str] = TELEMETRY_SUBSCRIPTION
    name: str
    types: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "state": "Subscribed", "types": list(self.types)}


@dataclass(frozen=True, slots=True)
class LogsSubscription(TelemetrySubscription):
    """The same record, for a Logs API subscription (its own type in the stream)."""

    TYPE: ClassVar[str] = LOGS_SUBSCRIPTION


@dataclass(frozen=True, slots=True)
class LogsDropped:
    TYPE: ClassVar[str] = LOGS_DROPPED
    dropped_records: int
    dropped_bytes: int
    reason: str

    def wire(self) -> dict[str, Any]:
        return {"droppedRecords": self.dropped_records, "droppedBytes": self.dropped_bytes, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Fault:
    """A platform line of the Logs API: `Task timed out after …`, `RequestId: … Error: …`."""

    TYPE: ClassVar[str] = FAULT
    text: str

    def wire(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class ShutdownDone:
    TYPE: ClassVar[str] = SHUTDOWN
    reason: str
    deadline_ms: int
    duration_ms: float
    extensions: tuple[tuple[str, str], ...]  # (name, final state) of each registered extension

    def wire(self) -> dict[str, Any]:
        return {"shutdownReason": self.reason, "deadlineMs": self.deadline_ms, "durationMs": self.duration_ms,
                "extensions": dict(self.extensions)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FunctionLog:
    """A record of the function's log: a line, or (JSON log format) the object the runtime logged."""

    TYPE: ClassVar[str] = FUNCTION
    record: str | dict[str, Any]

    def wire(self) -> Wire:
        return self.record


@dataclass(frozen=True, slots=True)
class ExtensionLog:
    TYPE: ClassVar[str] = EXTENSION_LOG
    line: str

    def wire(self) -> str:
        return self.line


@dataclass(frozen=True, slots=True)
class Event:
    data: Record
    time: float = field(default_factory=_time.time)  # epoch seconds when the platform generated it

    @property
    def type(self) -> str:
        return self.data.TYPE

    @property
    def record(self) -> Wire:
        """The record as the Telemetry API sends it."""
        return self.data.wire()

    def envelope(self) -> dict[str, Any]:
        return {"time": iso_time(self.time), "type": self.type, "record": self.record}
