"""One execution environment: the seam a control plane (pools) or a remote backend calls.

A small facade over the flows: the lock that keeps one invoke at a time, the swap of generations, and the reset
policy (a failed Init resets and the next invoke runs a suppressed init; a timeout or crash resets; a process that
died while idle resets before the next invoke). `start`, `invoke` and `shutdown` are the whole public surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

from ..api.app import serve
from ..api.http import Server
from ..config import FunctionConfig
from ..core.current import NoGeneration
from ..core.errors import FunctionError
from ..core.outcomes import ResetReason, Status
from ..core.stream import TRUNCATED
from ..sandbox.limited import LimitedSandbox
from ..sandbox.limited import sweep as limited_sweep
from ..sandbox.limits import Limits
from ..sandbox.sandbox import plain_reason
from ..sandbox.scratch import Scratch
from ..sandbox.spec import Network
from ..sandbox.view import LAMBDA_PATHS, Paths
from ..telemetry import records as r
from ..telemetry.records import Event
from ..telemetry.stream import EventStream
from . import invoke as flow
from .generation import Generation, Sandbox
from .init import InitResult, run_init
from .invoke import InvokeOutcome, InvokeRequest, InvokeResponse, Run
from .layout import Layout, assemble, lay_out, make_scratch, prepare_runtime
from .shutdown import shut_down


class Environment:
    def __init__(self, config: FunctionConfig, stream: EventStream | None = None) -> None:
        self.config = config
        self.stream = stream or EventStream()
        self._lock = asyncio.Lock()
        self._gen: Generation | None = None
        self._scratch: Scratch | None = None
        self._sandbox: Sandbox | None = None
        self._limited: LimitedSandbox | None = None
        self._server: Server | None = None
        self._layout: Layout | None = None
        self._closed = False

    async def start(self) -> None:
        """Lay out the files, open the sandbox and the API server inside it; no process starts until the first
        invoke."""
        limited_sweep()
        self._scratch = make_scratch()
        config = self.config
        try:
            sandboxed = plain_reason() is None
            dirs = lay_out(config, self._scratch.path, sandboxed)
            prepared = prepare_runtime(config, dirs, LAMBDA_PATHS if sandboxed else Paths.of(dirs))
            limits = Limits(config.memory_mb, config.ephemeral_storage_mb)
            network: Network = "none" if config.network == "none" else "default"
            self._limited = await LimitedSandbox.open(dirs, prepared.binds, limits, network, self._scratch.path)
            self._sandbox = self._limited
            self._server = await serve(self._current, self._limited.listener)
            self._layout = assemble(config, dirs, prepared, self._limited.paths, self._limited.runtime_api,
                                    self._limited.sandboxed)  # fmt: skip
        except BaseException:
            await self._close()
            raise

    def use(self, layout: Layout, sandbox: Sandbox) -> None:
        """Run on `layout` in `sandbox` without `start()`: what the flows' unit tests do with fakes."""
        self._layout, self._sandbox = layout, sandbox

    def _current(self) -> Generation:
        if self._gen is None:
            raise NoGeneration
        return self._gen

    async def invoke(
        self,
        request: InvokeRequest,
        on_response: Callable[[InvokeResponse], None] | None = None,
        on_outcome: Callable[[InvokeOutcome], None] | None = None,
    ) -> InvokeOutcome:
        """Run one invoke. `on_response` is called the moment the invoker's answer is known, `on_outcome` the
        moment the invoke ended (REPORT emitted), before the environment is frozen or reset."""
        events: list[Event] = []
        unsubscribe = self.stream.subscribe(events.append)
        try:
            async with self._lock:
                if self._closed:
                    raise RuntimeError("the environment was shut down")
                return await self._invoke(request, on_response or _ignore, on_outcome or _ignore, events)
        finally:
            unsubscribe()

    async def _invoke(
        self,
        request: InvokeRequest,
        on_response: Callable[[InvokeResponse], None],
        on_outcome: Callable[[InvokeOutcome], None],
        events: list[Event],
    ) -> InvokeOutcome:
        init_ms: float | None = None
        suppressed = False
        if self._gen is not None:
            self._gen.thaw()
            if self._gen.failure() is not None:  # a process died while the environment was idle
                await self._reset(ResetReason.FAILURE)
        if self._gen is None:
            init = await self._init(r.Phase.INIT, self.config.init_timeout_s)
            if init.ok:
                init_ms = init.duration_ms
            else:
                await self._reset(ResetReason.TIMEOUT if init.status is Status.TIMEOUT else ResetReason.FAILURE)
                suppressed = True
        started = time.time()
        run = Run(request, started, started + self.config.timeout_s, init_ms, self.config.tracing == "Active")
        self.stream.emit(r.Start(request.request_id, self.config.version, run.tracing))
        if suppressed:
            # The suppressed init: Init again, inside the invoke, bounded by the function timeout (SPEC 4.1).
            init = await self._init(r.Phase.INVOKE, max(0.0, run.deadline - time.time()))
            if not init.ok:
                flow.fail_init(run, init, self.config.timeout_s)
                on_response(run.response())
                return await self._finish(run, events, on_outcome)
        assert self._gen is not None
        try:
            await flow.run_invoke(self._gen, run, on_response)
        except asyncio.CancelledError:  # abandoned (the function closed): a stream's readers are released
            run.end_stream(FunctionError.platform(TRUNCATED, "the invoke was abandoned", request.request_id))
            raise
        return await self._finish(run, events, on_outcome)

    async def _init(self, phase: r.Phase, budget_s: float) -> InitResult:
        assert self._layout is not None and self._sandbox is not None
        self._gen = Generation(self._layout, self._sandbox, self.stream)
        return await run_init(self._gen, phase, budget_s)

    async def _finish(
        self, run: Run, events: list[Event], on_outcome: Callable[[InvokeOutcome], None]
    ) -> InvokeOutcome:
        assert self._gen is not None
        outcome = InvokeOutcome(run.streamed(), flow.report(self._gen, run), list(events))
        on_outcome(outcome)  # the caller wakes while the environment freezes: the next invoke queues behind it
        if run.reset is not None:
            await self._reset(run.reset)
        else:
            self._gen.freeze()
        return outcome

    async def _reset(self, reason: ResetReason) -> None:
        gen = self._gen
        if gen is None:
            return
        try:
            await shut_down(gen, reason)
        finally:
            # Detached only now: extensions keep reaching their registry (and their SHUTDOWN) until the end.
            self._gen = None

    async def shutdown(self, reason: ResetReason = ResetReason.SPINDOWN) -> None:
        """End the environment: the shutdown sequence, then the server and every file it made."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                await self._reset(reason)
            finally:
                await self._close()

    async def _close(self) -> None:
        """The server, the sandbox (namespaces, /tmp, cgroup), then every file."""
        try:
            if self._server is not None:
                await self._server.close()
                self._server = None
        finally:
            try:
                if self._limited is not None:
                    await self._limited.close()
                    self._limited = None
            finally:
                if self._scratch is not None:
                    await asyncio.to_thread(self._scratch.remove)
                    self._scratch = None

    def kill(self) -> None:
        """SIGKILL every process of the environment now; a shutdown under way then ends as soon as it sees them gone,
        without waiting out its budget. Call it on the environment's loop (`loop.call_soon_threadsafe`), or once
        that loop has stopped."""
        gen = self._gen
        for process in gen.processes if gen is not None else []:
            process.signal_group(signal.SIGKILL)
            process.signal_group(signal.SIGCONT)

    def discard(self) -> None:
        """What `shutdown()` would have left undone when the loop running it was stopped before its end: kill
        every process and remove the files. Synchronous and idempotent; nothing to do after a full shutdown."""
        # Each step on its own: one that fails (its loop already closed) must not keep the files from going.
        for step in (self.kill, self._limited.discard if self._limited else None, self._scratch.remove if
                     self._scratch else None):  # fmt: skip
            if step is not None:
                with contextlib.suppress(Exception):
                    step()


def _ignore(_: object) -> None:
    pass
