"""One execution environment: Init, Invoke and Shutdown with Lambda's deadlines, errors and resets (SPEC 4).

An `Environment` owns a filesystem view, an HTTP server hosting the in-sandbox APIs, and a succession of
*generations*: the processes and API state of one Init. A reset (timeout, crash, failed init) ends the
generation with the shutdown sequence; the next invoke starts a fresh one. Every observable step is emitted
into the environment's event stream; durations are computed here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..api.http import Server
from ..api.router import Router
from ..api.runtime import RuntimeAPI
from ..config import FunctionConfig
from ..runtimes.registry import Prepared, RuntimeUnavailable, get_runtime
from ..sandbox import freeze, memory
from ..sandbox.processes import Process, kill_all, spawn
from ..sandbox.view import HOSTS_LINE, HostDirs, View, make_view
from ..telemetry import records as r
from ..telemetry.records import Event, iso_time, ms
from ..telemetry.stream import EventStream
from . import env_vars
from . import errors as e
from .layers import materialize_code, merge_layers
from .runtime import InitErrorReport, Invocation, RuntimeChannel, RuntimeReply


@dataclass
class InvokeRequest:
    payload: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    content_type: str = "application/json"
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class InvokeResponse:
    """What the invoker receives, the moment the runtime answers (or the platform fails the invoke)."""

    request_id: str
    payload: bytes
    content_type: str
    function_error: str | None  # "Unhandled" when the function or the platform failed
    error_type: str | None  # the error's type: from the runtime's error, or the platform's


@dataclass(frozen=True)
class InvokeOutcome:
    """The whole invoke, once it ended (END and REPORT emitted)."""

    response: InvokeResponse
    status: str  # success | error | timeout | failure, as platform.report
    report: dict[str, Any]  # the platform.report record
    events: list[Event]  # every event of the stream from the invoke's arrival to its REPORT


@dataclass
class InitResult:
    ok: bool
    status: str  # success | error | timeout
    duration_ms: float
    error_type: str | None = None
    init_error: InitErrorReport | None = None
    exit_text: str | None = None  # `Runtime exited with error: …` when the runtime died


class Generation:
    """The processes and API state of one Init, until the next reset."""

    def __init__(self) -> None:
        self.channel = RuntimeChannel()
        self.runtime: Process | None = None
        self.frozen = False

    @property
    def processes(self) -> list[Process]:
        return [p for p in (self.runtime,) if p is not None]

    def drain_logs(self) -> None:
        for process in self.processes:
            process.logs.drain()


class Environment:
    def __init__(self, config: FunctionConfig, stream: EventStream | None = None) -> None:
        self.config = config
        self.stream = stream or EventStream()
        self.instance_id = uuid.uuid4().hex
        self._lock = asyncio.Lock()
        self._gen: Generation | None = None
        self._scratch: Path | None = None
        self._server: Server | None = None
        self._view: View | None = None
        self._prepared: Prepared | None = None
        self._env: dict[str, str] = {}
        self._closed = False

    # -- set-up and tear-down of the environment itself
    @property
    def log_stream(self) -> str:
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        return f"{day}/[{self.config.version}]{self.instance_id}"

    async def start(self) -> None:
        """Lay out the filesystem view and open the API server; no process starts until the first invoke."""
        spec = get_runtime(self.config.runtime)
        spec.locate()  # raises RuntimeUnavailable before anything is created
        self._scratch = Path(tempfile.mkdtemp(prefix="lambdarun-"))
        try:
            await self._lay_out(spec)
        except BaseException:
            await self._remove_scratch()
            raise

    async def _lay_out(self, spec: Any) -> None:
        assert self._scratch is not None
        scratch = self._scratch
        for name in ("tmp", "runtime", "lang/bin", "empty-opt"):
            (scratch / name).mkdir(parents=True)
        hosts = scratch / "hosts"
        hosts.write_text(HOSTS_LINE)
        code = materialize_code(self.config.code, scratch)
        opt = merge_layers(self.config.layers, scratch) if self.config.layers else scratch / "empty-opt"
        dirs = HostDirs(task=code, opt=opt, runtime=scratch / "runtime", lang=scratch / "lang",
                        tmp=scratch / "tmp", hosts=hosts)
        self._view = view = make_view(dirs)
        self._prepared = spec.prepare(dirs.runtime, dirs.lang / "bin", view.paths.runtime,
                                      f"{view.paths.lang}/bin", dirs.task, dirs.opt, view.paths.task, view.paths.opt)
        router = Router(e.MAX_PAYLOAD)
        router.mount(RuntimeAPI.PREFIX, RuntimeAPI(lambda: self._gen.channel if self._gen else None).handle)
        self._server = Server(router, e.MAX_PAYLOAD)
        await self._server.start()
        platform = env_vars.Platform(
            function_name=self.config.name, function_version=self.config.version, memory_mb=self.config.memory_mb,
            region=self.config.region, runtime_api=f"{self._server.host}:{self._server.port}",
            log_stream=self.log_stream, handler=self.config.handler, task_root=view.paths.task,
            runtime_dir=view.paths.runtime, lang_bin=f"{view.paths.lang}/bin", opt=view.paths.opt,
        )
        self._env = env_vars.runtime_env(platform, self.config.env)
        if not view.sandboxed:
            self._env["LAMBDARUN_OPT_DIR"] = view.paths.opt  # bootstrap.py's layer paths without /opt

    @property
    def runtime_api(self) -> str:
        assert self._server is not None
        return f"{self._server.host}:{self._server.port}"

    async def shutdown(self, reason: str = "spindown") -> None:
        """End the environment: the shutdown sequence, then the server and every file it made."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._gen is not None:
                    await self._end_generation(reason)
            finally:
                if self._server is not None:
                    await self._server.close()
                await self._remove_scratch()

    async def _remove_scratch(self) -> None:
        if self._scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self._scratch, True)
            self._scratch = None

    # -- Init
    async def _init(self, phase: str, budget_s: float) -> InitResult:
        assert self._view is not None and self._prepared is not None
        started = time.time()
        self.stream.emit(r.INIT_START, {
            "initializationType": "on-demand", "phase": phase, "runtimeVersion": self._prepared.version,
            "functionName": self.config.name, "functionVersion": self.config.version,
            "instanceId": self.instance_id, "instanceMaxMemory": self.config.memory_mb,
        })  # fmt: skip
        gen = self._gen = Generation()
        result = await self._run_init(gen, budget_s, started)
        gen.drain_logs()
        record: dict[str, Any] = {"initializationType": "on-demand", "phase": phase, "status": result.status}
        if result.error_type:
            record["errorType"] = result.error_type
        self.stream.emit(r.INIT_RUNTIME_DONE, dict(record))
        self.stream.emit(r.INIT_REPORT, {**record, "metrics": {"durationMs": result.duration_ms}})
        return result

    async def _run_init(self, gen: Generation, budget_s: float, started: float) -> InitResult:
        assert self._view is not None and self._prepared is not None
        view = self._view
        argv = self._prepared.argv
        entrypoint = Path(argv[0].replace(view.paths.task, str(view.dirs.task), 1).replace(
            view.paths.opt, str(view.dirs.opt), 1))
        if self.config.runtime.startswith("provided") and not entrypoint.is_file():
            return InitResult(False, "error", ms(time.time() - started), e.INVALID_ENTRYPOINT,
                              exit_text="Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]")
        try:
            gen.runtime = await spawn("runtime", view.command(argv), self._env, view.cwd, self._function_line,
                                      view.sandboxed)
        except OSError as exc:
            return InitResult(False, "error", ms(time.time() - started), e.INVALID_ENTRYPOINT,
                              exit_text=f"{argv[0]}: {exc.strerror}")
        channel = gen.channel
        waits: list[asyncio.Future[Any]] = [channel.ready, channel.init_error, gen.runtime.exited]
        await asyncio.wait(waits, timeout=budget_s, return_when=asyncio.FIRST_COMPLETED)
        duration = ms(time.time() - started)
        if channel.ready.done():
            return InitResult(True, "success", duration)
        if channel.init_error.done():
            report = channel.init_error.result()
            return InitResult(False, "error", duration, e.sanitize_error_type(report.error_type), init_error=report)
        if gen.runtime.exited.done():
            return InitResult(False, "error", duration, e.RUNTIME_EXIT,
                              exit_text=e.runtime_exit_text(gen.runtime.exit_description()))
        return InitResult(False, "timeout", duration)

    def _function_line(self, line: str, at: float) -> None:
        self.stream.emit(r.FUNCTION, line, at)

    # -- Invoke
    async def invoke(
        self, request: InvokeRequest, on_response: Callable[[InvokeResponse], None] | None = None
    ) -> InvokeOutcome:
        """Run one invoke; `on_response` is called the moment the invoker's answer is known."""
        events: list[Event] = []
        unsubscribe = self.stream.subscribe(events.append)
        try:
            async with self._lock:
                if self._closed:
                    raise RuntimeError("the environment was shut down")
                return await self._invoke(request, on_response or (lambda _: None), events)
        finally:
            unsubscribe()

    async def _invoke(self, request: InvokeRequest, on_response: Callable[[InvokeResponse], None],
                      events: list[Event]) -> InvokeOutcome:
        init_ms: float | None = None
        suppressed = False
        if self._gen is None:
            init = await self._init("init", self.config.init_timeout_s)
            if init.ok:
                init_ms = init.duration_ms
            else:
                await self._end_generation("timeout" if init.status == "timeout" else "failure")
                suppressed = True
        else:
            freeze.thaw(self._gen.processes)
        started = time.time()
        deadline = started + self.config.timeout_s
        self.stream.emit(r.START, {"requestId": request.request_id, "version": self.config.version})
        run = _Run(request, started, deadline, init_ms)
        if suppressed:
            init = await self._init("invoke", max(0.0, deadline - time.time()))
            if not init.ok:
                self._fail_init(run, init)
                on_response(run.response())
                return await self._finish(run, events)
        await self._run_invoke(run, on_response)
        return await self._finish(run, events)

    def _fail_init(self, run: _Run, init: InitResult) -> None:
        if init.status == "timeout":
            run.fail("timeout", e.timeout_error(run.request.request_id, self.config.timeout_s), reset="timeout")
        elif init.init_error is not None:
            report = init.init_error
            error = e.FunctionError(init.error_type or e.RUNTIME_UNKNOWN, report.payload, report.content_type)
            run.fail("error", error, reset="failure")
        else:
            error_type = init.error_type or e.RUNTIME_EXIT
            run.fail("error", e.FunctionError.platform(error_type, init.exit_text or "", run.request.request_id),
                     reset="failure")

    async def _run_invoke(self, run: _Run, on_response: Callable[[InvokeResponse], None]) -> None:
        gen = self._gen
        assert gen is not None and gen.runtime is not None
        channel, runtime = gen.channel, gen.runtime
        invocation = Invocation(
            request_id=run.request.request_id, payload=run.request.payload, deadline_ms=int(run.deadline * 1000),
            function_arn=self.config.arn, content_type=run.request.content_type, trace_id=run.request.trace_id,
            client_context=run.request.client_context, cognito_identity=run.request.cognito_identity,
            tenant_id=run.request.tenant_id,
        )
        channel.assign(invocation)
        assert channel.reply is not None and channel.done is not None
        remaining = run.deadline - time.time()
        await asyncio.wait([channel.reply, runtime.exited], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if channel.reply.done():
            reply = channel.reply.result()
            run.answer(reply)
            on_response(run.response())
            remaining = run.deadline - time.time()
            await asyncio.wait([channel.done, runtime.exited], timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)
            if channel.done.done():
                self._runtime_done(run, invocation, reply, channel.done.result())
                return
        if runtime.exited.done():
            text = e.runtime_exit_text(runtime.exit_description())
            run.fail("error", e.FunctionError.platform(e.RUNTIME_EXIT, text, run.request.request_id),
                     reset="failure")
        else:
            run.fail("timeout", e.timeout_error(run.request.request_id, self.config.timeout_s), reset="timeout")
            gen.drain_logs()
            self.stream.emit(r.FAULT, f"{iso_time(time.time())} {run.request.request_id} Task timed out after "
                                      f"{self.config.timeout_s:.2f} seconds")
        if not run.answered:
            on_response(run.response())
        self._emit_runtime_done(run, run.status, run.error_type, None)

    def _runtime_done(self, run: _Run, invocation: Invocation, reply: RuntimeReply, done_at: float) -> None:
        delivered = invocation.delivered_at or run.started
        spans = [
            _span("responseLatency", delivered, reply.started_at),
            _span("responseDuration", reply.started_at, reply.finished_at),
            _span("runtimeOverhead", reply.finished_at, done_at),
        ]
        # A runtime that reported an error still answered: platform.report stays `success` as classic RAPID
        # reports it (real REPORT lines show no Status for handler exceptions); runtimeDone carries the error.
        status = "error" if reply.is_error else "success"
        error_type = e.sanitize_error_type(reply.error_type) if reply.is_error else None
        run.runtime_done_at = done_at
        self._emit_runtime_done(run, status, error_type, spans, produced=len(reply.payload))

    def _emit_runtime_done(self, run: _Run, status: str, error_type: str | None,
                           spans: list[dict[str, Any]] | None, produced: int | None = None) -> None:
        assert self._gen is not None
        self._gen.drain_logs()
        end = run.runtime_done_at or time.time()
        metrics: dict[str, Any] = {"durationMs": ms(end - run.started)}
        if produced is not None:
            metrics["producedBytes"] = produced
        record: dict[str, Any] = {"requestId": run.request.request_id, "status": status, "metrics": metrics}
        if error_type:
            record["errorType"] = error_type
        if spans:
            record["spans"] = spans
        self.stream.emit(r.RUNTIME_DONE, record)

    async def _finish(self, run: _Run, events: list[Event]) -> InvokeOutcome:
        gen = self._gen
        if gen is not None:
            gen.drain_logs()
        ended = time.time()
        self.stream.emit(r.END, {"requestId": run.request.request_id})
        duration = ms(ended - run.started)
        metrics: dict[str, Any] = {
            "durationMs": duration,
            # Cold starts bill Init too, as Lambda's logs show since 2025 [UNCONFIRMED from the docs].
            "billedDurationMs": max(1, math.ceil(duration + (run.init_ms or 0))),
            "memorySizeMB": self.config.memory_mb,
            "maxMemoryUsedMB": memory.max_used_mb(gen.processes if gen else []),
        }
        if run.init_ms is not None:
            metrics["initDurationMs"] = run.init_ms
        report: dict[str, Any] = {"requestId": run.request.request_id, "status": run.report_status,
                                  "metrics": metrics}
        if run.report_status != "success" and run.error_type:
            report["errorType"] = run.error_type
        self.stream.emit(r.REPORT, report)
        if run.reset is not None:
            await self._end_generation(run.reset)
        elif gen is not None:
            freeze.freeze(gen.processes)
        return InvokeOutcome(run.response(), run.report_status, report, list(events))

    # -- Shutdown and resets
    async def _end_generation(self, reason: str) -> None:
        """The shutdown sequence (SPEC 4.4); with no extensions registered the runtime is simply killed."""
        gen, self._gen = self._gen, None
        if gen is None:
            return
        freeze.thaw(gen.processes)
        await kill_all(gen.processes)
        with contextlib.suppress(Exception):
            gen.drain_logs()


def _span(name: str, start: float, end: float) -> dict[str, Any]:
    return {"name": name, "start": iso_time(start), "durationMs": ms(max(0.0, end - start))}


class _Run:
    """The state of one invoke while it runs: what the invoker gets and how the report reads."""

    def __init__(self, request: InvokeRequest, started: float, deadline: float, init_ms: float | None) -> None:
        self.request = request
        self.started = started
        self.deadline = deadline
        self.init_ms = init_ms
        self.answered = False
        self.status = "success"  # for platform.runtimeDone
        self.report_status = "success"
        self.error_type: str | None = None
        self.reset: str | None = None
        self.runtime_done_at: float | None = None
        self._payload = b""
        self._content_type = "application/json"
        self._function_error: str | None = None
        self._response_error_type: str | None = None

    def answer(self, reply: RuntimeReply) -> None:
        self.answered = True
        if reply.oversized_size is not None:
            error = e.response_too_large(reply.oversized_size)
            self.status = self.report_status = "error"
            self.error_type = error.error_type
            self._set_error(error)
            return
        self._payload, self._content_type = reply.payload, reply.content_type or "application/json"
        if reply.is_error:
            self._function_error = "Unhandled"
            self._response_error_type = reply.error_type

    def fail(self, status: str, error: e.FunctionError, reset: str | None) -> None:
        """The platform failed the invoke. The invoker's answer changes only if it had none yet."""
        self.status = self.report_status = status
        self.error_type = error.error_type
        self.reset = reset
        if not self.answered:
            self.answered = True
            self._set_error(error)

    def _set_error(self, error: e.FunctionError) -> None:
        self._payload, self._content_type = error.payload, error.content_type
        self._function_error = "Unhandled"
        self._response_error_type = error.error_type

    def response(self) -> InvokeResponse:
        return InvokeResponse(self.request.request_id, self._payload, self._content_type, self._function_error,
                              self._response_error_type)


__all__ = ["Environment", "InvokeOutcome", "InvokeRequest", "InvokeResponse", "RuntimeUnavailable"]
