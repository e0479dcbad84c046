"""One execution environment: Init, Invoke and Shutdown with Lambda's deadlines, errors and resets (SPEC 4).

An `Environment` owns a filesystem view, an HTTP server hosting the in-sandbox APIs, and a succession of
*generations*: the processes and API state of one Init. A reset (timeout, crash, failed init) ends the
generation with the shutdown sequence; the next invoke starts a fresh one. Every observable step is emitted
into the environment's event stream; durations are computed here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..api.extensions import ExtensionsAPI
from ..api.http import Server
from ..api.router import Router
from ..api.runtime import RuntimeAPI
from ..api.telemetry import SubscriptionAPI
from ..config import FunctionConfig
from ..runtimes.registry import Prepared, RuntimeUnavailable, get_runtime
from ..sandbox import freeze, memory
from ..sandbox.processes import Process, kill_all, spawn
from ..sandbox.view import HOSTS_LINE, HostDirs, View, make_view
from ..telemetry import records as r
from ..telemetry.delivery import TelemetryHub
from ..telemetry.records import Event, iso_time, ms
from ..telemetry.stream import EventStream
from ..telemetry.subscriptions import LOGS, TELEMETRY
from . import env_vars
from . import errors as e
from .extensions import INVOKE, MAX_EXTENSIONS, SHUTDOWN, Extension, ExtensionRegistry, ExtensionState
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

    def __init__(self, extensions: ExtensionRegistry, stream: EventStream) -> None:
        self.channel = RuntimeChannel()
        self.extensions = extensions
        self.runtime: Process | None = None
        self.telemetry = TelemetryHub(stream.emit)
        self.memory = memory.MemoryMeter()
        self.broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        extensions.fatal.add_done_callback(self._break)
        self.stop_reading = stream.subscribe(self.telemetry.offer)
        # Registration closes when the runtime first asks for an invoke (SPEC 2.4).
        self.channel.ready.add_done_callback(lambda _: extensions.close_registration())

    @property
    def extension_processes(self) -> list[Process]:
        return [x.process for x in self.extensions.all if x.process is not None]

    @property
    def processes(self) -> list[Process]:
        runtime = [self.runtime] if self.runtime is not None else []
        return runtime + self.extension_processes

    def drain_logs(self) -> None:
        for process in self.processes:
            process.drain_logs()

    def watch(self, process: Process) -> Process:
        """Make `process` exiting end the generation's current init or invoke."""
        process.exited.add_done_callback(self._break)
        return process

    def _break(self, _: object) -> None:
        if not self.broken.done():
            self.broken.set_result(None)

    def failure_watch(self) -> list[asyncio.Future[Any]]:
        """What ends an init or invoke early: a process exiting or an extension's fatal error, as one future
        (each wait then registers one callback, not one per process)."""
        return [self.broken]

    def failure(self) -> tuple[str, str] | None:
        """The fatal error that happened, if any: (error type, text for the default error JSON)."""
        if self.runtime is not None and self.runtime.exited.done():
            return e.RUNTIME_EXIT, e.runtime_exit_text(self.runtime.exit_description())
        if self.extensions.fatal.done():
            return self.extensions.fatal.result()
        for ext in self.extensions.all:
            if ext.process is not None and ext.process.exited.done():
                return e.EXTENSION_CRASH, f"Extension {ext.name} exited: {ext.process.exit_description()}"
        return None


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
        self._extension_env: dict[str, str] = {}
        self._json_logs = config.env.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
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
        _sweep_orphans()
        self._scratch = Path(tempfile.mkdtemp(prefix=f"lambdarun-{os.getpid()}-"))
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
        dirs = HostDirs(
            task=code,
            opt=opt,
            runtime=scratch / "runtime",
            lang=scratch / "lang",
            tmp=scratch / "tmp",
            hosts=hosts,
        )
        self._view = view = make_view(dirs)
        self._prepared = spec.prepare(dirs, view.paths, self.config.memory_mb)
        router = Router(e.MAX_PAYLOAD)
        router.mount(RuntimeAPI.PREFIX, RuntimeAPI(lambda: self._gen.channel if self._gen else None).handle)
        router.mount(ExtensionsAPI.PREFIX, ExtensionsAPI(lambda: self._gen.extensions if self._gen else None).handle)
        for api in (TELEMETRY, LOGS):
            subscriptions = SubscriptionAPI(
                api, lambda: (self._gen.extensions, self._gen.telemetry) if self._gen else None
            )
            router.mount(subscriptions.PREFIX, subscriptions.handle)
        self._server = Server(router, e.MAX_PAYLOAD)
        await self._server.start()
        platform = env_vars.Platform(
            function_name=self.config.name,
            function_version=self.config.version,
            memory_mb=self.config.memory_mb,
            region=self.config.region,
            runtime_api=self.runtime_api,
            log_stream=self.log_stream,
            handler=self.config.handler,
            task_root=view.paths.task,
            runtime_dir=view.paths.runtime,
            lang_bin=f"{view.paths.lang}/bin",
            opt=view.paths.opt,
        )
        self._env = env_vars.runtime_env(platform, self.config.env)
        if not view.sandboxed:
            self._env["LAMBDARUN_OPT_DIR"] = view.paths.opt  # bootstrap.py's layer paths without /opt
        self._extension_env = env_vars.extension_env(self._env)

    def _subscription_state(self) -> tuple[ExtensionRegistry, TelemetryHub] | None:
        return (self._gen.extensions, self._gen.telemetry) if self._gen else None

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
        registry = ExtensionRegistry(self.config.name, self.config.version, self.config.handler, self.config.account_id)
        gen = self._gen = Generation(registry, self.stream)  # reads the stream from here: initStart is replayed
        self.stream.emit(r.INIT_START, {
            "initializationType": "on-demand", "phase": phase, "runtimeVersion": self._prepared.version,
            "functionName": self.config.name, "functionVersion": self.config.version,
            "instanceId": self.instance_id, "instanceMaxMemory": self.config.memory_mb,
        })  # fmt: skip
        result = await self._run_init(gen, started + budget_s, started)
        gen.drain_logs()
        gen.telemetry.close_subscriptions()  # subscription is open during Init only (SPEC 3.1)
        record: dict[str, Any] = {"initializationType": "on-demand", "phase": phase, "status": result.status}
        if result.error_type:
            record["errorType"] = result.error_type
        self.stream.emit(r.INIT_RUNTIME_DONE, dict(record))
        for ext in gen.extensions.all:
            self.stream.emit(r.EXTENSION, _extension_record(ext))
        self.stream.emit(r.INIT_REPORT, {**record, "metrics": {"durationMs": result.duration_ms}})
        return result

    async def _run_init(self, gen: Generation, deadline: float, started: float) -> InitResult:
        """Extension init, runtime init, function init (SPEC 4.1): done when the runtime and every extension
        have called `next`."""

        def failed(error_type: str | None, text: str | None = None, status: str = "error") -> InitResult:
            return InitResult(False, status, ms(time.time() - started), error_type, exit_text=text)

        launch_error = await self._launch_extensions(gen)
        if launch_error is not None:
            return failed(e.EXTENSION_LAUNCH, launch_error)
        externals = [x.registered for x in gen.extensions.all]
        if not await self._wait_for(gen, externals, deadline):
            return self._init_failure(gen, started) or failed(None, status="timeout")
        spawn_error = await self._spawn_runtime(gen)
        if spawn_error is not None:
            return failed(e.INVALID_ENTRYPOINT, spawn_error)
        channel = gen.channel
        while True:
            # Re-read each round: internal extensions register while the runtime initialises.
            waiting = [f for f in [channel.ready] + [x.ready for x in gen.extensions.registered] if not f.done()]
            if not waiting:
                return InitResult(True, "success", ms(time.time() - started))
            if not await self._wait_for(gen, waiting, deadline, extra=[channel.init_error], any_of=True):
                return self._init_failure(gen, started) or failed(None, status="timeout")

    def _init_failure(self, gen: Generation, started: float) -> InitResult | None:
        duration = ms(time.time() - started)
        if gen.channel.init_error.done():
            report = gen.channel.init_error.result()
            return InitResult(False, "error", duration, e.sanitize_error_type(report.error_type), init_error=report)
        failure = gen.failure()
        if failure is not None:
            error_type, text = failure
            if error_type == e.EXTENSION_CRASH and self._launch_failed(gen):
                error_type = e.EXTENSION_LAUNCH
            return InitResult(False, "error", duration, error_type, exit_text=text)
        return None

    @staticmethod
    def _launch_failed(gen: Generation) -> bool:
        """An extension that died before registering because bwrap could not exec it never launched."""
        return any(
            x.state is ExtensionState.LAUNCHED and x.process is not None and x.process.exited.done()
            for x in gen.extensions.all
        )

    async def _wait_for(
        self,
        gen: Generation,
        futures: list[asyncio.Future[Any]],
        deadline: float,
        extra: Sequence[asyncio.Future[Any]] = (),
        any_of: bool = False,
    ) -> bool:
        """Wait for all `futures` (or any, with `any_of`) unless a failure (a process exit, a fatal extension error,
        `extra`) or the deadline comes first. True when what was awaited happened: if it happened together with a
        failure, it still counts (a runtime that answered and then died did answer); the next wait sees the failure."""
        watch = gen.failure_watch() + list(extra)
        while True:
            pending = [f for f in futures if not f.done()]
            if not pending or (any_of and len(pending) < len(futures)):
                return True
            if any(f.done() for f in watch):
                return False
            remaining = deadline - time.time()
            if remaining <= 0:
                return False
            await asyncio.wait(pending + watch, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    async def _launch_extensions(self, gen: Generation) -> str | None:
        """Start every executable regular file in /opt/extensions, in name order (SPEC 2.5)."""
        assert self._view is not None
        view = self._view
        directory = view.dirs.opt / "extensions"
        if not directory.is_dir():
            return None
        names = sorted(p.name for p in directory.iterdir() if p.is_file() and os.access(p, os.X_OK))
        if len(names) > MAX_EXTENSIONS:
            return f"TooManyExtensions: Extension limit ({MAX_EXTENSIONS}) reached, {len(names)} in /opt/extensions"
        for name in names:
            ext = gen.extensions.add_external(name)
            command = view.command([f"{view.paths.opt}/extensions/{name}"])
            try:
                ext.process = gen.watch(
                    await spawn(
                        f"extension-{name}",
                        command,
                        self._extension_env,
                        view.cwd,
                        self._extension_line,
                        view.sandboxed,
                    )
                )
            except OSError as exc:
                ext.state = ExtensionState.LAUNCH_ERROR
                return f"{name}: {exc.strerror}"
        return None

    def _runtime_command(self) -> tuple[list[str], dict[str, str]]:
        """Lambda execs /var/runtime/bootstrap; without a wrapper that script only exports a few variables and
        execs the interpreter, so the same is done here directly, a shell's start-up sooner."""
        assert self._prepared is not None
        prepared = self._prepared
        if prepared.direct is None or self._env.get("AWS_LAMBDA_EXEC_WRAPPER"):
            return prepared.argv, self._env
        env = dict(self._env)
        for name, value in prepared.exports.items():
            if name == "AWS_EXECUTION_ENV" or not env.get(name):  # the script's `${NAME:-default}`
                env[name] = value
        return prepared.direct, env

    async def _spawn_runtime(self, gen: Generation) -> str | None:
        assert self._view is not None and self._prepared is not None
        view = self._view
        argv, env = self._runtime_command()
        if self.config.runtime.startswith("provided"):
            host_path = Path(
                argv[0].replace(view.paths.task, str(view.dirs.task), 1).replace(view.paths.opt, str(view.dirs.opt), 1)
            )
            if not host_path.is_file():
                return "Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
        try:
            gen.runtime = gen.watch(
                await spawn(
                    "runtime",
                    view.command(argv),
                    env,
                    view.cwd,
                    self._function_line,
                    view.sandboxed,
                    on_frame=self._function_line,
                )
            )
        except OSError as exc:
            return f"{argv[0]}: {exc.strerror}"
        return None

    def _function_line(self, line: str, at: float) -> None:
        record: str | dict[str, Any] = line
        if self._json_logs and line.startswith("{"):
            # With the JSON log format a record that is a JSON object is passed on as one (SPEC 3.5).
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    record = parsed
        self.stream.emit(r.FUNCTION, record, at)

    def _extension_line(self, line: str, at: float) -> None:
        self.stream.emit(r.EXTENSION_LOG, line, at)

    # -- Invoke
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
            freeze.thaw(self._gen.processes)
            if self._gen.failure() is not None:  # a process died while the environment was idle
                await self._end_generation("failure")
        if self._gen is None:
            init = await self._init("init", self.config.init_timeout_s)
            if init.ok:
                init_ms = init.duration_ms
            else:
                await self._end_generation("timeout" if init.status == "timeout" else "failure")
                suppressed = True
        started = time.time()
        deadline = started + self.config.timeout_s
        run = _Run(request, started, deadline, init_ms, on_outcome)
        self.stream.emit(r.START, run.traced({"requestId": request.request_id, "version": self.config.version}))
        if suppressed:
            # The suppressed init: Init again, inside the invoke, bounded by the function timeout (SPEC 4.1).
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
            run.fail(
                "error",
                e.FunctionError.platform(error_type, init.exit_text or "", run.request.request_id),
                reset="failure",
            )

    async def _run_invoke(self, run: _Run, on_response: Callable[[InvokeResponse], None]) -> None:
        """Hand the invoke to the runtime and the INVOKE subscribers together; answer the invoker the moment
        the runtime replies; end when the runtime and every subscriber are back in `next` (SPEC 4.2)."""
        gen = self._gen
        assert gen is not None
        channel = gen.channel
        req = run.request
        invocation = Invocation(
            request_id=req.request_id,
            payload=req.payload,
            deadline_ms=int(run.deadline * 1000),
            function_arn=self.config.arn,
            content_type=req.content_type,
            trace_id=req.trace_id,
            client_context=req.client_context,
            cognito_identity=req.cognito_identity,
            tenant_id=req.tenant_id,
        )
        event: dict[str, Any] = {
            "eventType": INVOKE,
            "deadlineMs": invocation.deadline_ms,
            "requestId": req.request_id,
            "invokedFunctionArn": self.config.arn,
        }
        if req.trace_id:
            event["tracing"] = {"type": "X-Amzn-Trace-Id", "value": req.trace_id}
        subscribers = [x for x in gen.extensions.registered if x.subscribed(INVOKE)]
        channel.assign(invocation)
        for ext in subscribers:
            ext.push(dict(event))
        assert channel.reply is not None and channel.done is not None
        if await self._wait_for(gen, [channel.reply], run.deadline):
            reply = channel.reply.result()
            run.answer(reply)
            on_response(run.response())
            if await self._wait_for(gen, [channel.done], run.deadline):
                self._runtime_done(run, invocation, reply, channel.done.result())
                settles = [x.settled for x in subscribers if x.settled is not None]
                if await self._wait_for(gen, settles, run.deadline):
                    last = max([f.result() for f in settles], default=run.runtime_done_at or time.time())
                    run.extensions_done_at = max(last, run.runtime_done_at or last)
                    return
                self._fail_invoke(run, gen)
                return
        answered = run.answered
        self._fail_invoke(run, gen)
        if not answered:
            on_response(run.response())
        if run.runtime_done_at is None:
            self._emit_runtime_done(run, run.status, run.error_type, None)

    def _fail_invoke(self, run: _Run, gen: Generation) -> None:
        """The invoke ended by a process exiting, an extension's error, or the deadline."""
        failure = gen.failure()
        if failure is not None:
            error_type, text = failure
            run.fail("error", e.FunctionError.platform(error_type, text, run.request.request_id), reset="failure")
            gen.drain_logs()
            self.stream.emit(r.FAULT, f"RequestId: {run.request.request_id} Error: {text}\n{error_type}")
            return
        run.fail("timeout", e.timeout_error(run.request.request_id, self.config.timeout_s), reset="timeout")
        gen.drain_logs()
        self.stream.emit(
            r.FAULT,
            f"{iso_time(time.time())} {run.request.request_id} Task timed out after "
            f"{self.config.timeout_s:.2f} seconds",
        )

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

    def _emit_runtime_done(
        self,
        run: _Run,
        status: str,
        error_type: str | None,
        spans: list[dict[str, Any]] | None,
        produced: int | None = None,
    ) -> None:
        assert self._gen is not None
        self._gen.drain_logs()
        end = run.runtime_done_at or time.time()
        metrics: dict[str, Any] = {"durationMs": ms(end - run.started)}
        if produced is not None:
            metrics["producedBytes"] = produced
        record: dict[str, Any] = run.traced({"requestId": run.request.request_id, "status": status, "metrics": metrics})
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
        if run.report_status == "timeout":
            duration = min(duration, self.config.timeout_s * 1000)  # Lambda reports the timeout itself
        metrics: dict[str, Any] = {
            "durationMs": duration,
            # Cold starts bill Init too, as Lambda's logs show since 2025 [UNCONFIRMED from the docs].
            "billedDurationMs": max(1, math.ceil(duration + (run.init_ms or 0))),
            "memorySizeMB": self.config.memory_mb,
            "maxMemoryUsedMB": gen.memory.max_used_mb(gen.processes) if gen else 1,
        }
        if run.init_ms is not None:
            metrics["initDurationMs"] = run.init_ms
        report = run.traced({"requestId": run.request.request_id, "status": run.report_status, "metrics": metrics})
        if run.report_status == "error" and run.error_type:
            # Timeouts carry no error type in the report, as real REPORT lines show (`Status: timeout` alone).
            report["errorType"] = run.error_type
        if run.runtime_done_at is not None and gen is not None and gen.extensions.registered:
            # What the runtime's `next` to the last extension's `next` cost: CloudWatch's
            # PostRuntimeExtensionsDuration, as the `extensionOverhead` span RAPID puts on the report.
            done = run.extensions_done_at or ended
            report["spans"] = [_span("extensionOverhead", run.runtime_done_at, done)]
        self.stream.emit(r.REPORT, report)
        outcome = InvokeOutcome(run.response(), run.report_status, report, list(events))
        run.on_outcome(outcome)  # the caller wakes while the environment freezes: the next invoke queues behind it
        if run.reset is not None:
            await self._end_generation(run.reset)
        elif gen is not None:
            freeze.freeze(gen.processes)
        return outcome

    # -- Shutdown and resets
    async def _end_generation(self, reason: str) -> None:
        """The shutdown sequence (SPEC 4.4), for spin-down and for resets alike.

        No extension registered: the runtime is killed at once. Otherwise the budget is 2000 ms with an external
        extension (500 ms with internal ones only): the runtime gets SIGTERM and its share (300 ms, 500 ms with
        an internal extension) before SIGKILL; then each external extension subscribed to SHUTDOWN gets the
        event and the rest of the budget, the others are killed; whatever is left at the deadline is killed.
        """
        gen = self._gen
        if gen is None:
            return
        try:
            await self._shutdown_sequence(gen, reason)
        finally:
            # Detached only now: extensions keep reaching their registry (and their SHUTDOWN) until the end.
            self._gen = None

    async def _shutdown_sequence(self, gen: Generation, reason: str) -> None:
        started = time.time()
        freeze.thaw(gen.processes)
        registered = gen.extensions.registered
        externals = [x for x in registered if x.external]
        internal = any(not x.external for x in registered)
        deadline = started + (2.0 if externals else 0.5 if internal else 0.0)
        if registered and gen.runtime is not None and gen.runtime.running:
            gen.runtime.signal_group(signal.SIGTERM)
            share = min(0.5 if internal else 0.3, deadline - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(gen.runtime.exited), share)
        if gen.runtime is not None:
            await kill_all([gen.runtime])
        gen.drain_logs()
        if gen.telemetry.subscribers:
            # Subscribers get what is buffered (the last REPORT included) before their SHUTDOWN event.
            await gen.telemetry.flush(max(0.0, deadline - time.time()) / 2)
        listeners: list[Extension] = []
        for ext in gen.extensions.all:
            if ext.process is None or not ext.process.running:
                continue
            if ext in externals and ext.subscribed(SHUTDOWN) and ext.state in _LISTENING:
                ext.push({"eventType": SHUTDOWN, "deadlineMs": int(deadline * 1000), "shutdownReason": reason})
                listeners.append(ext)
            else:
                await kill_all([ext.process])
        if listeners:
            exits = [x.process.exited for x in listeners if x.process is not None]
            await asyncio.wait(exits, timeout=max(0.0, deadline - time.time()))
        for ext in listeners:
            assert ext.process is not None
            clean = ext.process.exited.done() and ext.process.exited.result() == 0
            ext.state = ExtensionState.EXITED if clean else ExtensionState.SHUTDOWN_FAILED
        await kill_all(gen.processes)
        with contextlib.suppress(Exception):
            gen.drain_logs()
        gen.stop_reading()
        gen.memory.close()
        await gen.telemetry.close()
        self.stream.emit(r.SHUTDOWN, {
            "shutdownReason": reason, "deadlineMs": int(deadline * 1000),
            "durationMs": ms(time.time() - started),
            "extensions": {x.name: x.state.value for x in registered},
        })  # fmt: skip


_LISTENING = {ExtensionState.READY, ExtensionState.RUNNING, ExtensionState.REGISTERED}


def _extension_record(ext: Extension) -> dict[str, Any]:
    record: dict[str, Any] = {"name": ext.name, "state": ext.state.value, "events": list(ext.events)}
    if ext.state is ExtensionState.LAUNCHED:
        record["state"] = "LaunchError" if ext.process is not None and ext.process.exited.done() else "Started"
    return record


_ORPHAN = re.compile(r"lambdarun-(\d+)-")


def _sweep_orphans() -> None:
    """Remove scratch dirs left by lambdarun processes that died without cleaning up (SIGKILL): their sandboxes
    died with them (bwrap --die-with-parent), their files did not."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            match = _ORPHAN.match(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except PermissionError:
                pass  # alive, someone else's


def _ignore(_: object) -> None:
    pass


def _span(name: str, start: float, end: float) -> dict[str, Any]:
    return {"name": name, "start": iso_time(start), "durationMs": ms(max(0.0, end - start))}


class _Run:
    """The state of one invoke while it runs: what the invoker gets and how the report reads."""

    def __init__(
        self,
        request: InvokeRequest,
        started: float,
        deadline: float,
        init_ms: float | None,
        on_outcome: Callable[[InvokeOutcome], None],
    ) -> None:
        self.request = request
        self.on_outcome = on_outcome
        self.started = started
        self.deadline = deadline
        self.init_ms = init_ms
        self.answered = False
        self.status = "success"  # for platform.runtimeDone
        self.report_status = "success"
        self.error_type: str | None = None
        self.reset: str | None = None
        self.runtime_done_at: float | None = None
        self.extensions_done_at: float | None = None
        self._payload = b""
        self._content_type = "application/json"
        self._function_error: str | None = None
        self._response_error_type: str | None = None
        self._span_id: str | None = None

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

    def traced(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` with the invoke's tracing context when it has a trace id (SPEC 3.4 TraceContext); the span id
        names the platform's span for this invoke."""
        if self.request.trace_id:
            if self._span_id is None:
                self._span_id = os.urandom(8).hex()
            record["tracing"] = {"spanId": self._span_id, "type": "X-Amzn-Trace-Id", "value": self.request.trace_id}
        return record

    def response(self) -> InvokeResponse:
        return InvokeResponse(
            self.request.request_id,
            self._payload,
            self._content_type,
            self._function_error,
            self._response_error_type,
        )


__all__ = ["Environment", "InvokeOutcome", "InvokeRequest", "InvokeResponse", "RuntimeUnavailable"]
