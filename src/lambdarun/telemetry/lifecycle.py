"""lambdarun's own records: lifecycle facts the platform records lack, for tools (the pytest plugin, the trace,
check-extension). Same stream, same `Event` envelope, `lambdarun.*` types: never sent to Telemetry or Logs API
subscribers (subscriptions.py carries platform types by name only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from .records import Phase, Span, iso_time

INIT_TIMINGS = "lambdarun.initTimings"  # when the runtime and each extension registered and became ready
EXTENSION_INVOKE = "lambdarun.extensionInvoke"  # an INVOKE subscriber's part of one invoke
FREEZE = "lambdarun.freeze"
THAW = "lambdarun.thaw"
TELEMETRY_DELIVERY = "lambdarun.telemetryDelivery"  # one attempt to send one batch to one subscriber
SHUTDOWN_STEP = "lambdarun.shutdownStep"  # a step of the shutdown sequence
EXTENSION_SHUTDOWN = "lambdarun.extensionShutdown"  # how one extension's shutdown went


@dataclass(frozen=True, slots=True)
class ExtensionInitTimes:
    name: str
    external: bool
    registered: float | None  # epoch seconds of its register call; None if it never registered
    ready: float | None  # epoch seconds of its first `/event/next`; None if it never came

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "external": self.external, "registered": _iso(self.registered),
                "ready": _iso(self.ready)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class InitTimings:
    """When each part of an Init got ready, emitted just before its platform.initReport."""

    TYPE: ClassVar[str] = INIT_TIMINGS
    phase: Phase
    runtime_started: float | None  # the runtime process was spawned (None: never started)
    runtime_ready: float | None  # its first `/next`
    extensions: tuple[ExtensionInitTimes, ...]

    def wire(self) -> dict[str, Any]:
        return {"phase": self.phase, "runtimeStarted": _iso(self.runtime_started),
                "runtimeReady": _iso(self.runtime_ready),
                "extensions": [x.wire() for x in self.extensions]}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExtensionInvoke:
    """An INVOKE subscriber's part of one invoke, emitted before the REPORT (whose extensionOverhead span is the
    longest `post_runtime` of these, computed from the same times)."""

    TYPE: ClassVar[str] = EXTENSION_INVOKE
    request_id: str
    name: str
    received: float | None  # its `/event/next` returned the INVOKE; None: it never read it
    settled: float | None  # its next `/event/next`: back, done with the invoke; None: not before the invoke ended
    post_runtime: Span | None  # "postRuntime": from the runtime's `/next` to `settled` (0 if it settled first)

    @property
    def post_runtime_ms(self) -> float | None:
        return None if self.post_runtime is None else self.post_runtime.duration_ms

    def wire(self) -> dict[str, Any]:
        record: dict[str, Any] = {"requestId": self.request_id, "name": self.name,
                                  "received": _iso(self.received), "settled": _iso(self.settled)}  # fmt: skip
        if self.post_runtime is not None:
            record["spans"] = [self.post_runtime.wire()]
        return record


@dataclass(frozen=True, slots=True)
class Freeze:
    """Every process of the environment was stopped (between invokes)."""

    TYPE: ClassVar[str] = FREEZE

    def wire(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Thaw:
    TYPE: ClassVar[str] = THAW

    def wire(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class TelemetryDelivery:
    """One attempt to send one batch to a Telemetry or Logs API subscriber: what it was sent, and how it answered."""

    TYPE: ClassVar[str] = TELEMETRY_DELIVERY
    name: str  # the subscribed extension
    api: str  # telemetry | logs
    protocol: str  # HTTP | TCP
    span: Span  # "delivery": from the first byte sent to the answer (TCP: to the last byte written), or the error
    batch: tuple[bytes, ...]  # each event of the batch as sent (JSON)
    status: int | None  # the HTTP status; None for TCP and when no answer came
    error: str | None  # why the attempt failed (connection refused, closed, status), None when delivered
    attempt: int  # 0 for the first send of this batch, then one more per retry

    @property
    def delivered(self) -> bool:
        return self.error is None

    def events(self) -> list[dict[str, Any]]:
        """The batch's events as the subscriber parsed them."""
        return [json.loads(item) for item in self.batch]

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "api": self.api, "protocol": self.protocol, "items": len(self.batch),
                "bytes": sum(len(item) for item in self.batch), "status": self.status, "error": self.error,
                "attempt": self.attempt, "spans": [self.span.wire()]}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShutdownStep:
    """A step of the shutdown sequence: `runtime` (SIGTERM to exit or SIGKILL), `telemetry flush`, `extensions`
    (SHUTDOWN sent to the last exit or the deadline), `kill` (what was left, and the generation's files)."""

    TYPE: ClassVar[str] = SHUTDOWN_STEP
    span: Span

    def wire(self) -> dict[str, Any]:
        return {"spans": [self.span.wire()]}


@dataclass(frozen=True, slots=True)
class ExtensionShutdown:
    TYPE: ClassVar[str] = EXTENSION_SHUTDOWN
    name: str
    state: str  # the final state: Exited, ShutdownFailed (killed at the deadline, or a non-zero exit), …
    subscribed: bool  # registered for SHUTDOWN (else it was killed at once)
    read: bool  # its `/event/next` returned the SHUTDOWN event
    span: Span  # "shutdown": from SHUTDOWN sent (or the kill) to its exit (or its kill at the deadline)
    exit_status: int | None  # None when it was still running at the deadline, or already gone

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "subscribed": self.subscribed, "read": self.read,
                "exitStatus": self.exit_status, "spans": [self.span.wire()]}  # fmt: skip


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else iso_time(epoch)
