"""The rules of check-extension: findings from a battery's evidence, each with its level and evidence.

Pure functions of the event stream and the sink's requests, so each rule can be tested on made-up streams.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable

from ..core.outcomes import Status
from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from .battery import Evidence
from .finding import Finding, Level, Verdict, events_of, msec
from .freezes import check_frozen_work, freeze_periods, frozen_overlap

POST_RUNTIME_WARN_MEDIAN_MS = 150.0
POST_RUNTIME_WARN_WORST_MS = 1000.0
# A batch answered slower than this, plus 1 ms per 4 kB it holds (parsing a large batch takes its time), is slow;
# time frozen is not counted.
TELEMETRY_SLOW_MS = 300.0
TELEMETRY_SLOW_MS_PER_KB = 0.25
MEMORY_GROWTH_WARN_MB = 8  # Max Memory Used growing more than this across the warm invokes


def check_init(evidence: Evidence) -> Iterable[Finding]:
    """No register (or no first /event/next) within the init budget; how long init took."""
    infos: list[r.ExtensionInfo] = events_of(evidence, r.ExtensionInfo)
    starts = [e.time for e in evidence.events if isinstance(e.data, r.InitStart)]
    timings: list[lc.InitTimings] = events_of(evidence, lc.InitTimings)
    reports: list[r.InitReport] = events_of(evidence, r.InitReport)
    for name in sorted({i.name for i in infos} | set(evidence.extensions)):
        states = [i.state for i in infos if i.name == name]
        if not states:
            yield Finding("init", Level.ERROR, "never started or never registered: no Init listed it", name)
            continue
        bad = [s for s in states if s in ("Started", "LaunchError")]
        if bad:
            failed = [f"Init {n + 1}: state {s}, {rep.status} after {rep.duration_ms:.1f} ms"
                      for n, (s, rep) in enumerate(zip(states, reports, strict=False)) if s in bad]  # fmt: skip
            yield Finding("init", Level.ERROR, "did not register within the Init budget", name, tuple(failed))
            continue
        ready = [t.ready - start for timing, start in zip(timings, starts, strict=False)
                 for t in timing.extensions if t.name == name and t.ready is not None]  # fmt: skip
        registered = [t.registered - start for timing, start in zip(timings, starts, strict=False)
                      for t in timing.extensions if t.name == name and t.registered is not None]  # fmt: skip
        if ready:
            yield Finding("init", Level.INFO, f"registered after {msec(max(registered))}, ready after "
                          f"{msec(max(ready))} (worst of {len(ready)} Init)", name)  # fmt: skip


def check_unread_events(evidence: Evidence) -> Iterable[Finding]:
    """Registered for INVOKE or SHUTDOWN, but the event was never taken with /event/next."""
    unread: dict[str, list[str]] = {}
    for part in events_of(evidence, lc.ExtensionInvoke):
        if part.received is None:
            unread.setdefault(part.name, []).append(part.request_id)
    for name, ids in unread.items():
        yield Finding("events", Level.ERROR, f"registered for INVOKE but never read {len(ids)} of them", name,
                      tuple(f"{evidence.scenario_of(i)} invoke {i}: the INVOKE was still queued when it ended"
                            for i in ids), tuple(ids))  # fmt: skip
    for outcome in events_of(evidence, lc.ExtensionShutdown):
        if outcome.subscribed and not outcome.read:
            yield Finding(
                "events",
                Level.ERROR,
                "registered for SHUTDOWN but never read it",
                outcome.name,
                (f"it was not waiting in /event/next; killed after {outcome.span.duration_ms:.0f} ms",),
            )


def check_post_runtime(evidence: Evidence) -> Iterable[Finding]:
    """How long each extension keeps each invoke going after the runtime is done."""
    parts: dict[str, list[lc.ExtensionInvoke]] = {}
    for part in events_of(evidence, lc.ExtensionInvoke):
        if part.post_runtime_ms is not None:
            parts.setdefault(part.name, []).append(part)
    for name, done in parts.items():
        times = [p.post_runtime_ms for p in done if p.post_runtime_ms is not None]
        median, worst = statistics.median(times), max(times)
        slowest = max(done, key=lambda p: p.post_runtime_ms or 0.0)
        level = (
            Level.WARNING if median > POST_RUNTIME_WARN_MEDIAN_MS or worst > POST_RUNTIME_WARN_WORST_MS else Level.INFO
        )
        yield Finding("post-runtime", level, f"after the runtime: median {median:.1f} ms, worst {worst:.1f} ms "
                      f"over {len(times)} invokes", name,
                      (f"worst: {evidence.scenario_of(slowest.request_id)} invoke {slowest.request_id}",
                       f"warning above a median of {POST_RUNTIME_WARN_MEDIAN_MS:.0f} ms or a worst of "
                       f"{POST_RUNTIME_WARN_WORST_MS:.0f} ms"), (slowest.request_id,))  # fmt: skip


def check_telemetry(evidence: Evidence) -> Iterable[Finding]:
    """Batches answered slowly or with errors, and records dropped (platform.logsDropped)."""
    freezes = freeze_periods(evidence)
    by_name: dict[str, list[lc.TelemetryDelivery]] = {}
    for delivery in events_of(evidence, lc.TelemetryDelivery):
        by_name.setdefault(delivery.name, []).append(delivery)
    for name, deliveries in by_name.items():
        failed = [d for d in deliveries if not d.delivered]
        active = [(d.span.duration_ms - 1000 * frozen_overlap(d.span.start, d.span.start + d.span.duration_ms / 1000,
                   freezes), d) for d in deliveries if d.delivered]  # fmt: skip
        slow = [(ms, d) for ms, d in active if ms > _allowed_ms(d)]
        dropped = [e["record"] for d in deliveries if d.delivered for e in d.events()
                   if e.get("type") == r.LOGS_DROPPED]  # fmt: skip
        events = sum(len(d.batch) for d in deliveries if d.delivered)
        slowest = max((ms for ms, _ in active), default=0.0)
        yield Finding("telemetry", Level.INFO, f"{len(deliveries) - len(failed)} batches, {events} events "
                      f"delivered; slowest answer {slowest:.1f} ms", name)  # fmt: skip
        if failed:
            reasons = sorted({d.error or "" for d in failed})
            yield Finding("telemetry", Level.WARNING, f"{len(failed)} batch sends failed and were retried", name,
                          tuple(reasons))  # fmt: skip
        if slow:
            yield Finding("telemetry", Level.WARNING, f"{len(slow)} batches answered slowly: more than "
                          f"{TELEMETRY_SLOW_MS:.0f} ms, plus 1 ms per 4 kB (time frozen not counted)", name,
                          tuple(f"{len(d.batch)} events ({_kb(d)} kB) answered in {ms:.1f} ms"
                                for ms, d in slow[:5]))  # fmt: skip
        if dropped:
            records = sum(int(rec.get("droppedRecords", 0)) for rec in dropped)
            yield Finding("telemetry", Level.WARNING, f"{records} log records dropped: the subscriber fell behind "
                          "the function's logging", name,
                          tuple(f"platform.logsDropped: {rec}" for rec in dropped[:5]))  # fmt: skip


def _kb(delivery: lc.TelemetryDelivery) -> int:
    return sum(len(item) for item in delivery.batch) // 1000


def _allowed_ms(delivery: lc.TelemetryDelivery) -> float:
    return TELEMETRY_SLOW_MS + TELEMETRY_SLOW_MS_PER_KB * _kb(delivery)


def check_shutdown(evidence: Evidence) -> Iterable[Finding]:
    """SHUTDOWN handled (exit 0) within its budget, at every shutdown the battery caused."""
    reasons = [e.data.reason for e in evidence.events if isinstance(e.data, r.ShutdownDone)]
    outcomes: list[lc.ExtensionShutdown] = events_of(evidence, lc.ExtensionShutdown)
    for name in sorted({o.name for o in outcomes}):
        mine = [(o, n) for o in outcomes if o.name == name for n in [_sequence_of(o, evidence)]]
        failed = [(o, n) for o, n in mine if o.subscribed and o.state != "Exited"]
        lines = tuple(_shutdown_line(o, reasons[n] if n < len(reasons) else "?") for o, n in mine)
        if failed:
            yield Finding("shutdown", Level.ERROR, f"SHUTDOWN not handled within its budget ({len(failed)} of "
                          f"{len(mine)} shutdowns)", name, lines)  # fmt: skip
        elif not any(o.subscribed for o, _ in mine):
            yield Finding("shutdown", Level.INFO, "not registered for SHUTDOWN: killed at once", name, lines)
        else:
            worst = max(o.span.duration_ms for o, _ in mine)
            yield Finding("shutdown", Level.INFO, f"exited on SHUTDOWN, slowest after {worst:.1f} ms", name, lines)


def _sequence_of(outcome: lc.ExtensionShutdown, evidence: Evidence) -> int:
    """Which shutdown sequence of the battery the outcome belongs to (0 for the first)."""
    ends = [e.time for e in evidence.events if isinstance(e.data, r.ShutdownDone)]
    return sum(1 for t in ends if t < outcome.span.start)


def _shutdown_line(outcome: lc.ExtensionShutdown, reason: str) -> str:
    took = f"{outcome.span.duration_ms:.0f} ms"
    if not outcome.subscribed:
        return f"{reason}: killed at once"
    if outcome.exit_status is not None:
        return f"{reason}: exited {outcome.exit_status} after {took} ({outcome.state})"
    return f"{reason}: {'read SHUTDOWN, ' if outcome.read else ''}still running at the deadline, killed after {took}"


def check_crashes(evidence: Evidence) -> Iterable[Finding]:
    """Extensions that exited or reported an error, and invokes that failed where they should have succeeded."""
    for event in evidence.events:
        data = event.data
        if isinstance(data, r.Fault) and "Extension." in data.text:
            yield Finding("crash", Level.ERROR, data.text.splitlines()[-1], None, tuple(data.text.splitlines()))
    for report in events_of(evidence, r.Report):
        scenario = evidence.scenario_of(report.request_id)
        if report.status is not Status.SUCCESS and scenario not in ("timeout",):
            yield Finding("crash", Level.ERROR, f"the {scenario} invoke failed: {report.status} "
                          f"{report.error_type or ''}".strip(), None, (), (report.request_id,))  # fmt: skip


def check_memory(evidence: Evidence) -> Iterable[Finding]:
    """Max Memory Used across the first run of warm invokes (the function's own work stays the same)."""
    warm: list[str] = []
    for step in evidence.steps[1:]:
        if step.scenario != "warm":
            break
        warm.append(step.request_id)
    reports = [rep for rep in events_of(evidence, r.Report) if rep.request_id in warm]
    if len(reports) < 2:
        return
    first, last = reports[0].max_memory_used_mb, reports[-1].max_memory_used_mb
    growth = last - first
    level = Level.WARNING if growth > MEMORY_GROWTH_WARN_MB else Level.INFO
    yield Finding("memory", level, f"Max Memory Used {first} MB → {last} MB over {len(reports)} warm invokes "
                  "(runtime and extensions together)", None,
                  (f"warning above {MEMORY_GROWTH_WARN_MB} MB of growth",))  # fmt: skip


CHECKS: list[Callable[[Evidence], Iterable[Finding]]] = [
    check_init,
    check_unread_events,
    check_post_runtime,
    check_frozen_work,
    check_telemetry,
    check_shutdown,
    check_crashes,
    check_memory,
]


def judge(evidence: Evidence) -> Verdict:
    return Verdict([finding for check in CHECKS for finding in check(evidence)])
