"""Work attempted while frozen: the sink's requests against the environment's freezes (check-extension).

A request an extension had under way when the environment froze, or one that came in while it was frozen, is work
started after `/event/next` that on Lambda waits for the next thaw, or never finishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from .battery import Evidence
from .finding import Finding, Level, events_of, msec
from .sink import SinkRequest


@dataclass
class Freeze:
    start: float
    end: float | None
    request_id: str | None  # the invoke just before it


def freeze_periods(evidence: Evidence) -> list[Freeze]:
    freezes: list[Freeze] = []
    last: str | None = None
    for event in evidence.events:  # in the order emitted
        if isinstance(event.data, r.Report):
            last = event.data.request_id
        elif isinstance(event.data, lc.Freeze):
            freezes.append(Freeze(event.time, None, last))
        elif isinstance(event.data, lc.Thaw) and freezes and freezes[-1].end is None:
            freezes[-1].end = event.time
    return freezes


def check_frozen_work(evidence: Evidence) -> Iterable[Finding]:
    """Requests to the sink outstanding when the environment froze, or arriving while it was frozen: work an
    extension started after /event/next, which on Lambda would wait for the next thaw (or never finish)."""
    if evidence.sink_unreachable is not None:
        yield Finding("frozen-work", Level.INFO, "work after /event/next could not be watched: "
                      f"{evidence.sink_unreachable}", None)  # fmt: skip
        return
    if not evidence.sink:
        yield Finding("frozen-work", Level.INFO, "no request reached the check's sink, so work after /event/next "
                      "could not be watched", None, ("send your extension's output to ${LAMBDARUN_CHECK_SINK} "
                      "(e.g. --env YOUR_ENDPOINT_VARIABLE={sink})",))  # fmt: skip
        return
    settles = sorted((p.settled, p) for p in events_of(evidence, lc.ExtensionInvoke) if p.settled is not None)
    # A shutdown sequence thaws the environment and tells extensions to finish: their requests then are welcome.
    shutdowns = [(e.time - e.data.duration_ms / 1000, e.time) for e in evidence.events
                 if isinstance(e.data, r.ShutdownDone)]  # fmt: skip
    flagged: list[tuple[str | None, str]] = []
    late: list[tuple[str | None, str]] = []
    for request in evidence.sink:
        if any(start <= request.arrived <= end for start, end in shutdowns):
            continue
        for freeze in freeze_periods(evidence):
            end = freeze.end if freeze.end is not None else float("inf")
            if request.arrived < freeze.start < request.answered or freeze.start <= request.arrived < end:
                parts = [p for p in events_of(evidence, lc.ExtensionInvoke) if p.request_id == freeze.request_id]
                flagged.append((freeze.request_id, _describe(request, freeze, parts)))
                break
        else:
            after = [(t, p) for t, p in settles if t < request.arrived and _same_invoke(p, request, evidence)]
            if after:
                settled, part = after[-1]
                late.append((part.request_id, f"{request.method} {request.path} arrived "
                             f"{msec(request.arrived - settled)} after {part.name}'s /event/next"))  # fmt: skip
    owner = evidence.extensions[0] if len(evidence.extensions) == 1 else None
    if flagged:
        ids = tuple(dict.fromkeys(i for i, _ in flagged if i is not None))
        yield Finding("frozen-work", Level.ERROR, f"{len(flagged)} request(s) were under way while the environment "
                      "was frozen: started after /event/next, finished only on the next thaw", owner,
                      tuple(f"invoke {i}: {text}" for i, text in flagged), ids)  # fmt: skip
    if late:
        ids = tuple(dict.fromkeys(i for i, _ in late if i is not None))
        yield Finding("frozen-work", Level.WARNING, f"{len(late)} request(s) started after /event/next (they "
                      "finished before the freeze, by luck of timing)", owner,
                      tuple(f"invoke {i}: {text}" for i, text in late), ids)  # fmt: skip
    if not flagged and not late:
        yield Finding("frozen-work", Level.INFO, f"{len(evidence.sink)} request(s) reached the sink, none after "
                      "/event/next", owner)  # fmt: skip


def _same_invoke(part: lc.ExtensionInvoke, request: SinkRequest, evidence: Evidence) -> bool:
    """The request came before the next invoke reached that extension."""
    later = [p.received for p in events_of(evidence, lc.ExtensionInvoke)
             if p.name == part.name and p.received is not None and part.settled is not None
             and p.received > part.settled]  # fmt: skip
    return not later or request.arrived < min(later)


def _describe(request: SinkRequest, freeze: Freeze, parts: list[lc.ExtensionInvoke]) -> str:
    """Where the request fell: against each extension's /event/next of the invoke before the freeze, and the freeze."""
    where = "".join(f"{msec(abs(request.arrived - p.settled))} {'after' if request.arrived >= p.settled else 'before'} "
                    f"{p.name}'s /event/next, " for p in parts if p.settled is not None)  # fmt: skip
    if request.arrived >= freeze.start:
        return f"{request.method} {request.path} arrived {where}{msec(request.arrived - freeze.start)} into a freeze"
    return (f"{request.method} {request.path} arrived {where}{msec(freeze.start - request.arrived)} before the "
            f"freeze, answered {msec(request.answered - freeze.start)} into it")  # fmt: skip


def frozen_overlap(start: float, end: float, freezes: list[Freeze]) -> float:
    total = 0.0
    for freeze in freezes:
        stop = freeze.end if freeze.end is not None else end
        total += max(0.0, min(end, stop) - max(start, freeze.start))
    return total
