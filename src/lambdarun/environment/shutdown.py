"""The shutdown sequence (SPEC 4.4), for spin-down and for resets alike.

No extension registered: the runtime is killed at once. Otherwise the budget is 2000 ms with an external extension
(500 ms with internal ones only): the runtime gets SIGTERM and its share before SIGKILL; then each external
extension subscribed to SHUTDOWN gets the event and the rest of the budget, the others are killed; whatever is
left at the deadline is killed.

The runtime's share is RAPID's, 0.3 of the time left (SPEC 4.4): 600 ms of the 2,000 with an external extension.
The docs say "up to 300 ms" (500 ms with an internal extension); that is kept as a floor. A runtime doing the
docs' 300 ms of clean-up would otherwise always be killed a few ms short, SIGTERM's delivery included.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from ..core.extensions import SHUTDOWN, Extension
from ..core.outcomes import ResetReason
from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from ..telemetry.records import ms
from .generation import Generation

EXTERNAL_BUDGET_S = 2.0
INTERNAL_BUDGET_S = 0.5
RUNTIME_SHARE = 0.3  # of the time left (RAPID's runtimeDeadlineShare)
RUNTIME_SHARE_S = 0.3  # the documented shares, at least
RUNTIME_SHARE_INTERNAL_S = 0.5


async def shut_down(gen: Generation, reason: ResetReason) -> None:
    started = time.time()
    gen.thaw()
    registered = gen.extensions.registered
    externals = [x for x in registered if x.external]
    internal = any(not x.external for x in registered)
    deadline = started + (EXTERNAL_BUDGET_S if externals else INTERNAL_BUDGET_S if internal else 0.0)
    steps: list[r.Span] = []  # each step's span, emitted at the end with the outcome of each extension
    runtime = gen.runtime
    if registered and runtime is not None and runtime.running:
        runtime.signal_group(signal.SIGTERM)
        left = deadline - time.time()
        share = min(max(RUNTIME_SHARE_INTERNAL_S if internal else RUNTIME_SHARE_S, RUNTIME_SHARE * left), left)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(runtime.exited), share)
    if runtime is not None:
        await runtime.kill()
        steps.append(r.Span.between("runtime", started, time.time()))
    gen.drain_logs()
    if gen.subscriptions.subscribers:
        # Subscribers get what is buffered (the last REPORT included) before their SHUTDOWN event.
        flush_started = time.time()
        await gen.subscriptions.flush(max(0.0, deadline - time.time()) / 2)
        steps.append(r.Span.between("telemetry flush", flush_started, time.time()))
    listeners: list[tuple[Extension, dict[str, Any]]] = []
    outcomes: dict[str, tuple[float, dict[str, Any] | None]] = {}  # name -> (SHUTDOWN sent or killed, the event)
    exit_times: dict[str, float] = {}
    sent = time.time()
    for ext in gen.extensions.all:
        process = gen.process_of(ext)
        if process is None or not process.running:
            continue
        process.exited.add_done_callback(_stamp(exit_times, ext.name))
        if gen.extensions.listening(ext):
            shutdown: dict[str, Any] = {"eventType": SHUTDOWN, "deadlineMs": int(deadline * 1000),
                                        "shutdownReason": reason}  # fmt: skip
            ext.push(shutdown)
            listeners.append((ext, shutdown))
            outcomes[ext.name] = (time.time(), shutdown)
        else:
            outcomes[ext.name] = (time.time(), None)
            await process.kill()
    exits = [(ext, process.exited) for ext, _ in listeners if (process := gen.process_of(ext)) is not None]
    if exits:
        await asyncio.wait([exited for _, exited in exits], timeout=max(0.0, deadline - time.time()))
    for ext, exited in exits:
        gen.extensions.shut_down(ext, clean=exited.done() and exited.result() == 0)
    waited = time.time()
    if outcomes:
        steps.append(r.Span.between("extensions", sent, waited))
    kill_started = time.time()
    await gen.kill_all()
    with contextlib.suppress(Exception):
        gen.drain_logs()
    await gen.close()
    ended = time.time()
    steps.append(r.Span.between("kill", kill_started, ended))
    for span in steps:
        gen.stream.emit(lc.ShutdownStep(span))
    for ext in gen.extensions.all:
        if ext.name not in outcomes:
            continue
        began, event = outcomes[ext.name]
        process = gen.process_of(ext)
        exit_at = exit_times.get(ext.name, ended)
        # Its own exit status when it exited by itself within the budget; None when it was killed.
        status = None
        if event is not None and exit_at <= waited and process is not None and process.exited.done():
            status = process.exited.result()
        read = event is not None and not any(queued is event for queued in ext.queue)
        gen.stream.emit(lc.ExtensionShutdown(ext.name, ext.state.value, event is not None, read,
                                            r.Span.between("shutdown", began, exit_at), status))  # fmt: skip
    gen.stream.emit(r.ShutdownDone(reason, int(deadline * 1000), ms(ended - started),
                                   tuple((x.name, x.state.value) for x in registered)), ended)  # fmt: skip


def _stamp(times: dict[str, float], name: str) -> Callable[[object], None]:
    """A done-callback noting when `name`'s process exited."""

    def stamp(_: object) -> None:
        times.setdefault(name, time.time())

    return stamp
