"""Typed platform events: the one stream every observable thing is read from (DESIGN: one event stream is the truth).

An `Event` has the Telemetry API envelope (`time`, `type`, `record`), so delivery to subscribers serialises it as
it is. A few types exist only for the text log (`platform.end`, `platform.fault` come from the Logs API; they
have no Telemetry API counterpart and are filtered out of Telemetry deliveries).
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any] | str


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    record: Record
    time: float = field(default_factory=_time.time)  # epoch seconds when the platform generated it

    def envelope(self) -> dict[str, Any]:
        return {"time": iso_time(self.time), "type": self.type, "record": self.record}


def iso_time(epoch: float) -> str:
    """ISO-8601 UTC with millisecond precision, as Lambda's `2006-01-02T15:04:05.000Z` (on every event: kept cheap)."""
    seconds = int(epoch)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds)) + f".{int((epoch - seconds) * 1000):03d}Z"


def ms(seconds: float) -> float:
    """A duration in milliseconds truncated to microseconds, as RAPID's CalculateDuration."""
    return int(seconds * 1_000_000) / 1000


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
# Ours: the end of a shutdown sequence, for tests and tools; never sent to Telemetry API subscribers.
SHUTDOWN = "lambdarun.shutdown"
FUNCTION = "function"
EXTENSION_LOG = "extension"
