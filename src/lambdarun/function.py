"""The Python API: `with lambdarun.Function(code=..., runtime=..., handler=...) as fn: fn.invoke({...})`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FunctionConfig
from .core.outcomes import ResetReason, Status
from .environment.environment import Environment
from .environment.invoke import InvokeOutcome, InvokeRequest, InvokeResponse
from .loop import LoopThread
from .telemetry import lifecycle as lc
from .telemetry import records as r
from .telemetry.records import Event
from .telemetry.text import text_line


@dataclass(frozen=True)
class InvokeResult:
    """One finished invoke as its invoker and its logs saw it."""

    request_id: str
    payload: bytes
    content_type: str
    function_error: str | None  # "Unhandled" when the function or the platform failed (X-Amz-Function-Error)
    error_type: (
        str | None
    )  # the error's type: the runtime's own (header, else errorType of its body), or the platform's
    report: r.Report  # the platform.report record: status, error type, metrics, post-runtime extension time
    events: list[Event]  # the event stream from the invoke's arrival to its REPORT

    @classmethod
    def of(cls, outcome: InvokeOutcome) -> InvokeResult:
        response = outcome.response
        return cls(response.request_id, response.payload, response.content_type, response.function_error,
                   response.error_type, outcome.report, outcome.events)  # fmt: skip

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def status(self) -> Status:
        """success | error | timeout | failure, as the REPORT says."""
        return self.report.status

    @property
    def logs(self) -> list[str]:
        """The text log lines of this invoke (INIT lines on a cold start, START … REPORT)."""
        return [line for event in self.events if (line := text_line(event)) is not None]

    @property
    def function_logs(self) -> list[str]:
        return [str(event.record) for event in self.events if event.type == r.FUNCTION]

    @property
    def metrics(self) -> dict[str, Any]:
        """The report's metrics as the Telemetry API sends them."""
        metrics: dict[str, Any] = self.report.wire()["metrics"]
        return metrics

    @property
    def duration_ms(self) -> float:
        return self.report.duration_ms

    @property
    def init_duration_ms(self) -> float | None:
        return self.report.init_duration_ms


_KILL_GRACE_S = 3.0  # after kill(), how long close() lets the shutdown sequence finish before it stops it


class PendingInvoke:
    """An invoke under way: its response arrives before the invoke ends (extensions may still run)."""

    def __init__(
        self,
        response: concurrent.futures.Future[InvokeResponse],
        outcome: concurrent.futures.Future[InvokeOutcome],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._response = response
        self._outcome = outcome
        self._loop = loop

    def response(self, timeout: float | None = None) -> InvokeResponse:
        """What the invoker gets the moment the runtime answers: for a streamed response, its start (`stream`)."""
        return self._response.result(timeout)

    def chunks(self, timeout: float | None = None) -> Iterator[bytes]:
        """The response body as it arrives: a streamed response chunk by chunk, any other in one piece. The whole
        body, and the error a stream ended with, are in `result()`."""
        response = self.response(timeout)
        if response.stream is None:
            if response.payload:
                yield response.payload
            return
        arrived: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._loop.call_soon_threadsafe(response.stream.read, arrived.put)
        while True:
            try:
                chunk = arrived.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no chunk within {timeout} s") from None
            if chunk is None:
                return
            yield chunk

    def result(self, timeout: float | None = None) -> InvokeResult:
        return InvokeResult.of(self._outcome.result(timeout))


class Function:
    """A function with one warm execution environment, started on the first invoke and reused after."""

    def __init__(
        self,
        code: str | Path,
        runtime: str,
        handler: str | None = None,
        layers: Sequence[str | Path] = (),
        env: Mapping[str, str] | None = None,
        memory: int = 128,
        timeout: float = 3.0,
        name: str = "function",
        tracing: str = "PassThrough",
        ephemeral_storage: int = 512,
        network: str = "default",
        trace: str | Path | None = None,
    ) -> None:
        """`trace`: a file to write the lifecycle trace to (Chrome trace event format) when the function closes."""
        self.config = FunctionConfig(
            code=Path(code),
            runtime=runtime,
            handler=handler,
            layers=[Path(p) for p in layers],
            env=dict(env or {}),
            memory_mb=memory,
            timeout_s=timeout,
            name=name,
            tracing=tracing,
            ephemeral_storage_mb=ephemeral_storage,
            network=network,
        )
        self._loop: LoopThread | None = None
        self._env: Environment | None = None
        # Invokes under way: the task, and the outcome that tells whether the invoke itself has ended.
        self._pending: list[tuple[concurrent.futures.Future[Any], concurrent.futures.Future[Any]]] = []
        self._kill_requested = False
        self._wake: threading.Event | None = None  # set when the close() under way should stop waiting
        self._trace = Path(trace) if trace is not None else None
        self._traced: list[Event] = []  # every event since start, when a trace is asked for
        self._closing: list[Event] = []  # the events of the shutdown under way in close()

    def __enter__(self) -> Function:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._env is not None:
            return
        self._loop = LoopThread()
        self._env = Environment(self.config)
        if self._trace is not None:
            self._env.stream.subscribe(self._traced.append)
        try:
            self._loop.run(self._env.start())
        except BaseException:  # Ctrl-C too: the loop stops with start() unfinished, discard() removes its files
            self._loop.stop()
            self._env.discard()
            self._loop = self._env = None
            raise

    def subscribe(self, reader: Callable[[Event], None]) -> Callable[[], None]:
        """Read every event of the environment's stream as it is emitted (called on the loop's thread)."""
        self.start()
        assert self._env is not None
        return self._env.stream.subscribe(reader)

    def start_invoke(
        self,
        event: Any = None,
        *,
        payload: bytes | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
        tenant_id: str | None = None,
    ) -> PendingInvoke:
        """Begin an invoke; `event` is JSON-encoded unless raw `payload` bytes are given. `trace_id` is an X-Ray
        header (`Root=…;Parent=…;Sampled=1`), `client_context` and `cognito_identity` JSON text, as the runtime's
        `Lambda-Runtime-*` headers carry them (SPEC 1.2)."""
        self.start()
        assert self._env is not None and self._loop is not None
        body = payload if payload is not None else json.dumps({} if event is None else event).encode()
        request = InvokeRequest(body, trace_id=trace_id, client_context=client_context,
                                cognito_identity=cognito_identity, tenant_id=tenant_id)  # fmt: skip
        if request_id is not None:
            request.request_id = request_id
        response: concurrent.futures.Future[InvokeResponse] = concurrent.futures.Future()
        outcome: concurrent.futures.Future[InvokeOutcome] = concurrent.futures.Future()

        def settle(future: concurrent.futures.Future[Any], value: Any) -> None:
            if not future.done():
                future.set_result(value)

        def failed(task: concurrent.futures.Future[InvokeOutcome]) -> None:
            # An invoke that raised or was cancelled never reported an outcome: pass that on to the waiters.
            for future in (response, outcome):
                if not future.done():
                    if task.cancelled():
                        future.cancel()
                    elif task.exception() is not None:
                        future.set_exception(task.exception())

        task = self._loop.submit(self._env.invoke(request, lambda r: settle(response, r), lambda o: settle(outcome, o)))
        task.add_done_callback(failed)
        self._pending = [(t, o) for t, o in self._pending if not t.done()] + [(task, outcome)]
        return PendingInvoke(response, outcome, self._loop.loop)

    def invoke(self, event: Any = None, **options: Any) -> InvokeResult:
        """Invoke and wait until the invoke has ended (every extension back in `next`); options as start_invoke."""
        return self.start_invoke(event, **options).result()

    def close(self) -> None:
        """Shut the environment down (the shutdown sequence), kill what is left and remove its files. `kill()`
        cuts the sequence short; a KeyboardInterrupt while waiting still kills every process and removes the files."""
        if self._env is None or self._loop is None:
            return
        env, loop = self._env, self._loop
        self._closing = []
        env.stream.subscribe(self._closing.append)
        for task, outcome in self._pending:
            if not outcome.done():
                task.cancel()  # an invoke still running is abandoned; one that ended may still be resetting
        wake = self._wake = threading.Event()
        try:
            shutdown = loop.submit(env.shutdown(ResetReason.SPINDOWN))
            shutdown.add_done_callback(lambda _: wake.set())
            if self._kill_requested:
                wake.set()
            wake.wait()
            if not shutdown.done():  # kill(): the sequence ends once it sees its processes gone
                loop.loop.call_soon_threadsafe(env.kill)
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    shutdown.result(_KILL_GRACE_S)
            elif not shutdown.cancelled():
                shutdown.result()
        finally:
            loop.stop()
            env.discard()  # nothing left to do after a whole shutdown; after a cut-short one, whatever is left
            self._loop = self._env = self._wake = None
            self._kill_requested = False
            if self._trace is not None:
                self.write_trace(self._trace)

    def shutdown(self) -> dict[str, lc.ExtensionShutdown]:
        """Close the function (the shutdown sequence, as `close()`) and return how each extension's SHUTDOWN went,
        by name: its final state (`Exited`, `ShutdownFailed`, …), whether it read the event, its exit status, and
        how long it took (`.span.duration_ms`)."""
        self.close()
        return {e.data.name: e.data for e in self._closing if isinstance(e.data, lc.ExtensionShutdown)}

    def write_trace(self, path: str | Path) -> None:
        """Write the lifecycle trace of the events so far (needs `trace=` at construction to have recorded them)."""
        from .trace import chrome, timeline  # only users of traces pay for the import

        chrome.write(path, timeline.build(self._traced), self.config.name)

    def kill(self) -> None:
        """Stop without the shutdown sequence: every process is killed at once and the files are removed by the
        close() under way, or by the next close(). Safe to call from a signal handler or another thread."""
        self._kill_requested = True
        wake = self._wake
        if wake is not None:
            wake.set()
