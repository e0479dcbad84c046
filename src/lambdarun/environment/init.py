"""The Init phase (SPEC 4.1): extension init, runtime init, function init, with one deadline.

Done when the runtime and every registered extension have called `next`. Every way it can end is a status of
`InitResult`; the caller decides what a failed Init means (a reset, and a suppressed init inside the next invoke).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..core import errors as e
from ..core.outcomes import Status
from ..core.runtime import InitErrorReport
from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from ..telemetry.records import ms
from .generation import Generation, Wait


@dataclass(frozen=True)
class InitResult:
    status: Status  # success | error | timeout
    duration_ms: float
    error_type: str | None = None  # as INIT_REPORT shows it (a runtime's own type is sanitised)
    init_error: InitErrorReport | None = None  # what the runtime posted to /runtime/init/error
    exit_text: str | None = None  # `Runtime exited with error: …` when a process died

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS


async def run_init(gen: Generation, phase: r.Phase, budget_s: float) -> InitResult:
    """Init one generation, emitting initStart … initReport around it."""
    layout, stream = gen.layout, gen.stream
    started = time.time()
    config = layout.config
    stream.emit(r.InitStart(phase, layout.runtime_version, config.name, config.version, layout.instance_id,
                            config.memory_mb))  # fmt: skip
    result = await _initialize(gen, started, started + budget_s)
    gen.drain_logs()
    gen.subscriptions.close_subscriptions()  # subscription is open during Init only (SPEC 3.1)
    stream.emit(r.InitRuntimeDone(phase, result.status, result.error_type))
    for ext in gen.extensions.all:
        stream.emit(r.ExtensionInfo(ext.name, gen.extension_state(ext), ext.events))
    stream.emit(lc.InitTimings(phase, gen.runtime_started, gen.channel.ready_at,
                              tuple(lc.ExtensionInitTimes(x.name, x.external, x.registered_at, x.ready_at)
                                    for x in gen.extensions.all)))  # fmt: skip
    stream.emit(r.InitReport(phase, result.status, result.duration_ms, result.error_type))
    return result


async def _initialize(gen: Generation, started: float, deadline: float) -> InitResult:
    def failed(error_type: str, text: str) -> InitResult:
        return InitResult(Status.ERROR, ms(time.time() - started), error_type, exit_text=text)

    launch_error = await gen.launch_extensions()
    if launch_error is not None:
        return failed(e.EXTENSION_LAUNCH, launch_error)
    # External extensions register before the runtime starts (SPEC 2.5).
    if await gen.wait([x.registered for x in gen.extensions.all], deadline) is not Wait.DONE:
        return _ended_early(gen, started)
    spawn_error = await gen.start_runtime()
    if spawn_error is not None:
        return failed(e.INVALID_ENTRYPOINT, spawn_error)
    channel = gen.channel
    while True:
        # Re-read each round: internal extensions register while the runtime initialises.
        waiting = [f for f in [channel.ready] + [x.ready for x in gen.extensions.registered] if not f.done()]
        if not waiting:
            return InitResult(Status.SUCCESS, ms(time.time() - started))
        if await gen.wait(waiting, deadline, extra=[channel.init_error], any_of=True) is not Wait.DONE:
            return _ended_early(gen, started)


def _ended_early(gen: Generation, started: float) -> InitResult:
    """The init error the runtime reported, a process that died, or else the deadline."""
    duration = ms(time.time() - started)
    if gen.channel.init_error.done():
        report = gen.channel.init_error.result()
        return InitResult(Status.ERROR, duration, e.sanitize_error_type(report.error_type), init_error=report)
    failure = gen.failure()
    if failure is None:
        return InitResult(Status.TIMEOUT, duration)
    error_type = failure.error_type
    if error_type == e.EXTENSION_CRASH and gen.launch_failed():
        error_type = e.EXTENSION_LAUNCH
    return InitResult(Status.ERROR, duration, error_type, exit_text=failure.text)
