"""An environment's life as tracks of spans, read from its event stream: the model the trace file and the picture
are drawn from.

Every figure is one a record carries (REPORT's duration and extensionOverhead, runtimeDone's spans, each extension's
postRuntime span, each delivery's and shutdown step's span); only where a record gives instants (init timings,
freeze and thaw) is a span made from two of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from ..telemetry.records import Event

PLATFORM = "platform"
RUNTIME = "runtime"
TELEMETRY_PREFIX = "telemetry → "  # the track of the batches sent to one subscriber


@dataclass(frozen=True)
class Span:
    track: str
    name: str
    category: str  # init | invoke | runtime | post-runtime | frozen | telemetry | shutdown
    start: float  # epoch seconds
    duration_ms: float
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.duration_ms / 1000


@dataclass
class Timeline:
    tracks: list[str] = field(default_factory=lambda: [PLATFORM, RUNTIME])
    spans: list[Span] = field(default_factory=list)

    def add(self, track: str, name: str, category: str, start: float, length_ms: float, /, **args: Any) -> None:
        if track not in self.tracks:
            self.tracks.append(track)
        self.spans.append(Span(track, name, category, start, max(0.0, length_ms), args))

    def on(self, track: str) -> list[Span]:
        return [s for s in self.spans if s.track == track]

    @property
    def origin(self) -> float:
        return min((s.start for s in self.spans), default=0.0)


def track_order(tracks: list[str]) -> list[str]:
    """Platform, runtime, then each extension followed by the track of the batches it was sent."""
    telemetry = [t for t in tracks if t.startswith(TELEMETRY_PREFIX)]
    extensions = [t for t in tracks if t not in (PLATFORM, RUNTIME) and t not in telemetry]
    order = [PLATFORM, RUNTIME]
    for ext in extensions:
        order.append(ext)
        order.extend(t for t in telemetry if t == TELEMETRY_PREFIX + ext)
    order.extend(t for t in telemetry if t not in order)
    return order


def _ms(start: float, end: float) -> float:
    return max(0.0, (end - start) * 1000)


def _short(request_id: str) -> str:
    return request_id[:8]


def build(events: Iterable[Event]) -> Timeline:
    """The timeline of a stream: init phases, invokes, frozen periods, telemetry deliveries, shutdowns."""
    timeline = Timeline()
    events = list(events)  # in the order emitted: each record follows those it completes (times may not)
    init_start: Event | None = None
    starts: dict[str, Event] = {}
    ends: dict[str, float] = {}
    runtime_done: dict[str, r.RuntimeDone] = {}
    extension_invokes: dict[str, list[lc.ExtensionInvoke]] = {}
    frozen_at: float | None = None
    shutdown_steps: list[lc.ShutdownStep] = []
    extension_shutdowns: list[lc.ExtensionShutdown] = []
    timings: lc.InitTimings | None = None
    for event in events:
        data = event.data
        match data:
            case r.InitStart():
                init_start, timings = event, None
            case lc.InitTimings():
                timings = data
            case r.InitReport() if init_start is not None:
                _init(timeline, init_start.time, data, timings)
                init_start = None
            case r.Start():
                starts[data.request_id] = event
            case r.RuntimeDone():
                runtime_done[data.request_id] = data
            case lc.ExtensionInvoke():
                extension_invokes.setdefault(data.request_id, []).append(data)
            case r.End():
                ends[data.request_id] = event.time
            case r.Report() if data.request_id in starts:
                # END's time is the invoke's end, the REPORT's duration runs up to it (a timeout's is capped).
                start = starts.pop(data.request_id).time
                if data.request_id in ends:
                    start = min(start, ends.pop(data.request_id) - data.duration_ms / 1000)
                _invoke(timeline, start, data, runtime_done.pop(data.request_id, None),
                        extension_invokes.pop(data.request_id, []))  # fmt: skip
            case lc.Freeze():
                frozen_at = event.time
            case lc.Thaw() if frozen_at is not None:
                timeline.add(PLATFORM, "frozen", "frozen", frozen_at, _ms(frozen_at, event.time))
                frozen_at = None
            case lc.TelemetryDelivery():
                _delivery(timeline, data)
            case lc.ShutdownStep():
                shutdown_steps.append(data)
            case lc.ExtensionShutdown():
                extension_shutdowns.append(data)
            case r.ShutdownDone():
                _shutdown(timeline, event.time, data, shutdown_steps, extension_shutdowns)
                shutdown_steps, extension_shutdowns = [], []
    if frozen_at is not None and events:
        timeline.add(PLATFORM, "frozen", "frozen", frozen_at, _ms(frozen_at, max(e.time for e in events)))
    return timeline


def _init(timeline: Timeline, start: float, report: r.InitReport, timings: lc.InitTimings | None) -> None:
    end = start + report.duration_ms / 1000
    timeline.add(PLATFORM, f"init ({report.phase})", "init", start, report.duration_ms, status=str(report.status),
                 error_type=report.error_type, duration_ms=report.duration_ms)  # fmt: skip
    if timings is None:
        return
    externals = [x.registered for x in timings.extensions if x.external and x.registered is not None]
    if externals:
        timeline.add(PLATFORM, "extension init", "init", start, _ms(start, max(externals)))
    if timings.runtime_started is not None:
        ready = timings.runtime_ready if timings.runtime_ready is not None else end
        timeline.add(PLATFORM, "runtime and function init", "init", timings.runtime_started,
                     _ms(timings.runtime_started, ready))  # fmt: skip
        timeline.add(RUNTIME, "init", "init", timings.runtime_started, _ms(timings.runtime_started, ready),
                     ready=timings.runtime_ready is not None)  # fmt: skip
    for ext in timings.extensions:
        began = start if ext.external else (ext.registered or start)
        ready = ext.ready if ext.ready is not None else end
        timeline.add(ext.name, "init", "init", began, _ms(began, ready), external=ext.external,
                     registered=ext.registered is not None, ready=ext.ready is not None)  # fmt: skip
        if ext.external and ext.registered is not None:
            timeline.add(ext.name, "register", "init", began, _ms(began, ext.registered))


def _invoke(
    timeline: Timeline,
    start: float,
    report: r.Report,
    done: r.RuntimeDone | None,
    extensions: list[lc.ExtensionInvoke],
) -> None:
    rid = report.request_id
    timeline.add(PLATFORM, f"invoke {_short(rid)}", "invoke", start, report.duration_ms, request_id=rid,
                 status=str(report.status), duration_ms=report.duration_ms, init_duration_ms=report.init_duration_ms,
                 post_runtime_extensions_ms=report.post_runtime_extensions_ms,
                 max_memory_used_mb=report.max_memory_used_mb)  # fmt: skip
    end = start + report.duration_ms / 1000
    if report.extension_overhead is not None and report.extension_overhead.duration_ms > 0:
        span = report.extension_overhead
        timeline.add(PLATFORM, "extensions after the runtime", "post-runtime", span.start, span.duration_ms,
                     request_id=rid)  # fmt: skip
    if done is not None:
        timeline.add(RUNTIME, f"invoke {_short(rid)}", "invoke", start, done.duration_ms, request_id=rid,
                     status=str(done.status), duration_ms=done.duration_ms)  # fmt: skip
        for span in done.spans:
            timeline.add(RUNTIME, span.name, "runtime", span.start, span.duration_ms, request_id=rid)
    for ext in extensions:
        post = ext.post_runtime
        if ext.received is None:
            timeline.add(ext.name, f"INVOKE {_short(rid)} never read", "invoke", start, report.duration_ms,
                         request_id=rid, read=False)  # fmt: skip
            continue
        began = min(ext.received, post.start) if post is not None and post.duration_ms > 0 else ext.received
        settled = ext.settled if ext.settled is not None else end
        timeline.add(ext.name, f"invoke {_short(rid)}", "invoke", began, _ms(began, settled), request_id=rid,
                     back_in_next=ext.settled is not None, post_runtime_ms=ext.post_runtime_ms)  # fmt: skip
        if post is not None and post.duration_ms > 0:
            timeline.add(ext.name, "after the runtime", "post-runtime", post.start, post.duration_ms, request_id=rid)


def _delivery(timeline: Timeline, data: lc.TelemetryDelivery) -> None:
    answer = data.error or (f"HTTP {data.status}" if data.status is not None else "sent")
    timeline.add(f"{TELEMETRY_PREFIX}{data.name}", f"{len(data.batch)} events: {answer}", "telemetry",
                 data.span.start, data.span.duration_ms, api=data.api, protocol=data.protocol, items=len(data.batch),
                 bytes=sum(len(item) for item in data.batch), status=data.status, error=data.error,
                 attempt=data.attempt)  # fmt: skip


def _shutdown(
    timeline: Timeline,
    at: float,
    done: r.ShutdownDone,
    steps: list[lc.ShutdownStep],
    extensions: list[lc.ExtensionShutdown],
) -> None:
    # The record's time is the sequence's end; its first step starts with it (a microsecond apart at most).
    start = min([at - done.duration_ms / 1000, *(s.span.start for s in steps[:1])])
    for n, span in enumerate(timeline.spans):  # the sequence thaws the environment as its first act
        if span.category == "frozen" and span.start < start < span.end:
            timeline.spans[n] = replace(span, duration_ms=_ms(span.start, start))
    timeline.add(PLATFORM, f"shutdown ({done.reason})", "shutdown", start, max(done.duration_ms, _ms(start, at)),
                 reason=str(done.reason),
                 duration_ms=done.duration_ms, extensions=dict(done.extensions))  # fmt: skip
    for step in steps:
        part = step.span
        timeline.add(PLATFORM, part.name, "shutdown", part.start, part.duration_ms)
        if part.name == "runtime":
            timeline.add(RUNTIME, "shutdown", "shutdown", part.start, part.duration_ms)
    for ext in extensions:
        if not ext.subscribed:
            outcome = "killed (not registered for SHUTDOWN)"
        elif ext.exit_status is not None:
            outcome = f"exited {ext.exit_status}"
        else:
            outcome = "killed at the deadline" if ext.read else "killed, SHUTDOWN never read"
        timeline.add(ext.name, f"SHUTDOWN: {outcome}", "shutdown", ext.span.start, ext.span.duration_ms,
                     state=ext.state, read=ext.read, exit_status=ext.exit_status)  # fmt: skip
