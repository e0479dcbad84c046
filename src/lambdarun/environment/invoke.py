"""The Invoke phase (SPEC 4.2, 4.3): the event goes to the runtime and to every INVOKE subscriber together; the
invoker is answered the moment the runtime replies; the invoke ends when the runtime and every subscriber are back
in `next`, or when a process dies or the deadline passes. `Run` holds what the invoker gets and how the report
reads; `run_invoke` and `report` are the flow.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import errors as e
from ..core.extensions import INVOKE, Extension
from ..core.outcomes import ResetReason, Status
from ..core.runtime import Invocation, RuntimeReply
from ..core.stream import ResponseStream
from ..telemetry import lifecycle as lc
from ..telemetry import records as r
from ..telemetry.records import Event, Span, iso_time, ms
from .generation import Generation, Wait
from .init import InitResult


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
    error_type: str | None  # the error's type as the invoker sees it: the runtime's own, or the platform's
    # A streamed response: its chunks as they arrive. The response given when the invoke starts has no payload;
    # the outcome's has the whole body, and the error the stream ended with, if any.
    stream: ResponseStream | None = None


@dataclass(frozen=True)
class InvokeOutcome:
    """The whole invoke, once it ended (END and REPORT emitted)."""

    response: InvokeResponse
    report: r.Report
    events: list[Event]  # every event of the stream from the invoke's arrival to its REPORT

    @property
    def status(self) -> Status:
        return self.report.status


def new_trace_id(sampled: bool) -> str:
    """A fresh X-Ray header as Lambda sends on every invoke, `Sampled=0` without active tracing (SPEC 1.2)."""
    root = f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"
    return f"Root={root};Parent={os.urandom(8).hex()};Sampled={1 if sampled else 0}"


class Run:
    """The state of one invoke while it runs."""

    def __init__(
        self, request: InvokeRequest, started: float, deadline: float, init_ms: float | None, active_tracing: bool
    ) -> None:
        self.request = request
        self.trace_id = request.trace_id or new_trace_id(sampled=active_tracing)
        self.started = started
        self.deadline = deadline
        self.init_ms = init_ms
        self.answered = False
        self.status = Status.SUCCESS  # for platform.report
        self.error_type: str | None = None  # for platform.report
        self.reset: ResetReason | None = None
        self.runtime_done_at: float | None = None
        self.extensions_done_at: float | None = None
        self._response = InvokeResponse(request.request_id, b"", "application/json", None, None)
        # The platform records carry a tracing context when the invoke is traced: the caller sent a header, or
        # active tracing sampled it. A fresh unsampled header only reaches the runtime and the INVOKE event
        # [UNCONFIRMED: whether Lambda puts an unsampled context on platform.start/runtimeDone/report].
        traced = request.trace_id is not None or active_tracing
        self.tracing = r.Tracing(os.urandom(8).hex(), self.trace_id) if traced else None

    def answer(self, reply: RuntimeReply) -> None:
        self.answered = True
        if reply.oversized_size is not None:
            error = e.response_too_large(reply.oversized_size)
            self.status, self.error_type = Status.ERROR, error.error_type
            self._set_error(error)
            return
        content_type = reply.content_type or "application/json"
        function_error = "Unhandled" if reply.is_error else None
        self._response = InvokeResponse(self.request.request_id, reply.payload, content_type, function_error,
                                        reply.error_type if reply.is_error else None, reply.stream)  # fmt: skip

    def fail(self, status: Status, error: e.FunctionError, reset: ResetReason, report_type: str | None = None) -> None:
        """The platform failed the invoke. The report carries `report_type` (default: the invoker's error type);
        the invoker's answer changes only if it had none yet."""
        self.status = status
        self.error_type = report_type or error.error_type
        self.reset = reset
        if not self.answered:
            self.answered = True
            self._set_error(error)

    def _set_error(self, error: e.FunctionError) -> None:
        self._response = InvokeResponse(self.request.request_id, error.payload, error.content_type, "Unhandled",
                                        error.error_type)  # fmt: skip

    def response(self) -> InvokeResponse:
        return self._response

    def streamed(self) -> InvokeResponse:
        """The response once a stream has ended: the whole body, and the error it ended with."""
        response, stream = self._response, self._response.stream
        if stream is None or not stream.ended.done():
            return response
        end = stream.ended.result()
        function_error = "Unhandled" if end.error_type else None
        return InvokeResponse(response.request_id, stream.body(), response.content_type, function_error,
                              end.error_type, stream)  # fmt: skip

    def end_stream(self, error: e.FunctionError) -> None:
        """The platform ended the invoke mid-stream: the stream ends with its error, readers are released."""
        stream = self._response.stream
        if stream is not None:
            stream.end(error.error_type, error.payload)


async def run_invoke(gen: Generation, run: Run, on_response: Callable[[InvokeResponse], None]) -> None:
    channel, config, req = gen.channel, gen.layout.config, run.request
    invocation = Invocation(
        request_id=req.request_id,
        payload=req.payload,
        deadline_ms=int(run.deadline * 1000),
        function_arn=config.arn,
        content_type=req.content_type,
        trace_id=run.trace_id,
        client_context=req.client_context,
        cognito_identity=req.cognito_identity,
        tenant_id=req.tenant_id,
    )
    event: dict[str, Any] = {"eventType": INVOKE, "deadlineMs": invocation.deadline_ms, "requestId": req.request_id,
                             "invokedFunctionArn": config.arn,
                             "tracing": {"type": "X-Amzn-Trace-Id", "value": run.trace_id}}  # fmt: skip
    subscribers = [x for x in gen.extensions.registered if x.subscribed(INVOKE)]
    pushed = [(ext, dict(event)) for ext in subscribers]
    channel.assign(invocation)
    for ext, copy in pushed:
        ext.push(copy)
    assert channel.reply is not None and channel.done is not None
    if await gen.wait([channel.reply], run.deadline) is Wait.DONE:
        reply = channel.reply.result()
        run.answer(reply)
        on_response(run.response())
        if await gen.wait([channel.done], run.deadline) is Wait.DONE:
            _runtime_done(gen, run, invocation, reply, channel.done.result())
            settles = [x.settled for x in subscribers if x.settled is not None]
            if await gen.wait(settles, run.deadline) is Wait.DONE:
                last = max([f.result() for f in settles], default=run.runtime_done_at or time.time())
                run.extensions_done_at = max(last, run.runtime_done_at or last)
                _emit_extension_invokes(gen, run, pushed)
                return
    answered = run.answered
    _fail(gen, run)
    if not answered:
        on_response(run.response())
    if run.runtime_done_at is None:
        _emit_runtime_done(gen, run, run.status, run.error_type)
    _emit_extension_invokes(gen, run, pushed)


def _emit_extension_invokes(gen: Generation, run: Run, pushed: list[tuple[Extension, dict[str, Any]]]) -> None:
    """Each INVOKE subscriber's part, from the times the REPORT's extensionOverhead is computed from."""
    for ext, event in pushed:
        read = not any(queued is event for queued in ext.queue)
        settled = ext.settled.result() if ext.settled is not None and ext.settled.done() and read else None
        post = None
        if settled is not None and run.runtime_done_at is not None:
            post = Span.between("postRuntime", run.runtime_done_at, settled)
        gen.stream.emit(lc.ExtensionInvoke(run.request.request_id, ext.name, ext.handed_at if read else None,
                                          settled, post))  # fmt: skip


def _fail(gen: Generation, run: Run) -> None:
    """The invoke ended by a process exiting, an extension's error, or the deadline."""
    failure = gen.failure()
    request_id = run.request.request_id
    if failure is not None:
        error = e.FunctionError.platform(failure.error_type, failure.text, request_id)
        run.fail(Status.ERROR, error, ResetReason.FAILURE)
        run.end_stream(error)
        gen.drain_logs()
        gen.stream.emit(r.Fault(f"RequestId: {request_id} Error: {failure.text}\n{failure.error_type}"))
        return
    timeout_s = gen.layout.config.timeout_s
    error = e.timeout_error(request_id, timeout_s)
    run.fail(Status.TIMEOUT, error, ResetReason.TIMEOUT)
    run.end_stream(error)
    gen.drain_logs()
    gen.stream.emit(r.Fault(f"{iso_time(time.time())} {request_id} Task timed out after {timeout_s:.2f} seconds"))


def fail_init(run: Run, init: InitResult, timeout_s: float) -> None:
    """The suppressed init inside this invoke failed too: the invoke fails with it (SPEC 4.1)."""
    request_id = run.request.request_id
    if init.status is Status.TIMEOUT:
        run.fail(Status.TIMEOUT, e.timeout_error(request_id, timeout_s), ResetReason.TIMEOUT)
    elif init.init_error is not None:
        # The invoker gets what the runtime posted, with its own error type; the report the sanitised one.
        report = init.init_error
        raw_type = report.error_type or init.error_type or e.RUNTIME_UNKNOWN
        error = e.FunctionError(raw_type, report.payload, report.content_type)
        run.fail(Status.ERROR, error, ResetReason.FAILURE, report_type=init.error_type or e.RUNTIME_UNKNOWN)
    else:
        error_type = init.error_type or e.RUNTIME_EXIT
        run.fail(Status.ERROR, e.FunctionError.platform(error_type, init.exit_text or "", request_id),
                 ResetReason.FAILURE)  # fmt: skip


def _runtime_done(gen: Generation, run: Run, invocation: Invocation, reply: RuntimeReply, done_at: float) -> None:
    delivered = invocation.delivered_at or run.started
    finished = reply.last_byte_at
    spans = (Span.between("responseLatency", delivered, reply.started_at),
             Span.between("responseDuration", reply.started_at, finished),
             Span.between("runtimeOverhead", finished, done_at))  # fmt: skip
    # A runtime that reported an error still answered: platform.report stays `success` as classic RAPID reports
    # it (real REPORT lines show no Status for handler exceptions); runtimeDone carries the error.
    raw_type = reply.error_type if reply.is_error else None
    produced = len(reply.payload)
    if reply.stream is not None and reply.stream.ended.done():
        raw_type, produced = reply.stream.ended.result().error_type, reply.stream.size
    status = Status.ERROR if raw_type is not None or reply.is_error else Status.SUCCESS
    error_type = e.sanitize_error_type(raw_type) if status is Status.ERROR else None
    run.runtime_done_at = done_at
    _emit_runtime_done(gen, run, status, error_type, spans, produced=produced)


def _emit_runtime_done(
    gen: Generation,
    run: Run,
    status: Status,
    error_type: str | None,
    spans: tuple[Span, ...] = (),
    produced: int | None = None,
) -> None:
    gen.drain_logs()
    end = run.runtime_done_at or time.time()
    gen.stream.emit(r.RuntimeDone(run.request.request_id, status, ms(end - run.started), produced, error_type,
                                  run.tracing, spans))  # fmt: skip


def report(gen: Generation, run: Run) -> r.Report:
    """END and REPORT: the invoke's figures, each computed here once."""
    gen.drain_logs()
    config = gen.layout.config
    ended = time.time()
    duration = ms(ended - run.started)
    if run.status is Status.TIMEOUT:
        duration = min(duration, config.timeout_s * 1000)  # Lambda reports the timeout itself
    overhead = None
    if run.runtime_done_at is not None and gen.extensions.registered:
        overhead = Span.between("extensionOverhead", run.runtime_done_at, run.extensions_done_at or ended)
    record = r.Report(
        request_id=run.request.request_id,
        status=run.status,
        duration_ms=duration,
        # Cold starts bill Init too, as Lambda's logs show since 2025 [UNCONFIRMED from the docs].
        billed_duration_ms=max(1, math.ceil(duration + (run.init_ms or 0))),
        memory_size_mb=config.memory_mb,
        max_memory_used_mb=gen.max_memory_used_mb(),
        init_duration_ms=run.init_ms,
        # Timeouts carry no error type in the report, as real REPORT lines show (`Status: timeout` alone).
        error_type=run.error_type if run.status is Status.ERROR else None,
        tracing=run.tracing,
        extension_overhead=overhead,
    )
    gen.stream.emit(r.End(run.request.request_id), ended)
    gen.stream.emit(record)
    return record
