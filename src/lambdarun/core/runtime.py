"""The runtime as the Runtime API sees it: its state machine and the hand-over of invokes (SPEC 1.2-1.5, 1.8).

One `RuntimeChannel` exists per generation of the environment (a reset starts a new one). HTTP handlers call
its methods; the lifecycle awaits its futures. Illegal transitions raise `InvalidStateTransition`, rendered as
`403 InvalidStateTransition`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum

from .errors import InvalidStateTransition
from .stream import ResponseStream


class RuntimeState(Enum):
    STARTED = "Started"
    READY = "Ready"
    RUNNING = "Running"
    INVOCATION_RESPONSE = "InvocationResponse"
    INVOCATION_ERROR = "InvocationErrorResponse"
    RESPONSE_SENT = "ResponseSent"
    INIT_ERROR = "InitError"


def _refuse(current: RuntimeState, target: RuntimeState) -> InvalidStateTransition:
    return InvalidStateTransition("runtime", current.value, target.value)


class InvalidRequestId(Exception):
    pass


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    content_type: str = "application/json"
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None
    delivered_at: float | None = None  # when the event was written to the runtime

    def headers(self) -> list[tuple[str, str]]:
        """The `/next` response headers (SPEC 1.2); Content-Type always, both official clients need it."""
        headers = [
            ("Lambda-Runtime-Aws-Request-Id", self.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(self.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", self.function_arn),
            ("Content-Type", self.content_type or "application/json"),
        ]
        optional = [
            ("Lambda-Runtime-Trace-Id", self.trace_id),
            ("Lambda-Runtime-Client-Context", self.client_context),
            ("Lambda-Runtime-Cognito-Identity", self.cognito_identity),
            ("Lambda-Runtime-Aws-Tenant-Id", self.tenant_id),
        ]
        headers.extend((name, value) for name, value in optional if value)
        return headers


@dataclass(frozen=True)
class RuntimeReply:
    """What the runtime answered for an invoke: its response, or its error."""

    payload: bytes
    content_type: str
    is_error: bool
    error_type: str | None  # the header value as sent (sanitised later by whoever reports it)
    started_at: float  # first byte received
    finished_at: float = field(default_factory=time.time)  # last byte received: when the channel was handed it
    oversized_size: int | None = None  # set when the response exceeded the limit
    stream: ResponseStream | None = None  # a streamed response: its chunks arrive after the reply (SPEC 1.7)

    @property
    def last_byte_at(self) -> float:
        if self.stream is not None and self.stream.ended.done():
            return self.stream.ended.result().at
        return self.finished_at


@dataclass(frozen=True)
class InitErrorReport:
    payload: bytes
    content_type: str
    error_type: str | None


@dataclass
class RuntimeChannel:
    state: RuntimeState = RuntimeState.STARTED
    current: Invocation | None = None
    # Futures the lifecycle waits on; created lazily on the running loop.
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    init_error: asyncio.Future[InitErrorReport] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    reply: asyncio.Future[RuntimeReply] | None = None
    done: asyncio.Future[float] | None = None  # the `/next` after the reply: "runtime done", with its time
    ready_at: float | None = None  # the first `/next` (epoch seconds)
    _pending: Invocation | None = None  # assigned but not yet handed to a `/next`
    _waiters: list[asyncio.Future[Invocation]] = field(default_factory=list)

    # -- called by the Runtime API handlers
    def next_requested(self) -> Invocation | None:
        """A `/next` arrived. Returns the event to render now, or None when the caller must park."""
        match self.state:
            case RuntimeState.STARTED:
                self.state = RuntimeState.READY
                if not self.ready.done():
                    self.ready_at = time.time()
                    self.ready.set_result(None)
            case RuntimeState.RESPONSE_SENT:
                self.state = RuntimeState.READY
                self.current = None
                if self.done is not None and not self.done.done():
                    self.done.set_result(time.time())
            case RuntimeState.RUNNING:
                # Asking again while the invoke runs re-renders the same event (RAPID allows it).
                return self.current if self._pending is None else self._take_pending()
            case RuntimeState.READY:
                pass  # a second poller, or one that re-polls after abandoning its connection
            case _:
                raise _refuse(self.state, RuntimeState.READY)
        return None

    def park(self) -> asyncio.Future[Invocation]:
        waiter: asyncio.Future[Invocation] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def unpark(self, waiter: asyncio.Future[Invocation]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def delivered(self, invocation: Invocation) -> None:
        """The event is being written to the runtime: the start of its response latency."""
        invocation.delivered_at = time.time()

    def undelivered(self, invocation: Invocation) -> None:
        """The event could not be written (the poller went away): keep it for the next `/next`."""
        if self.current is invocation and self.state is RuntimeState.RUNNING and self._pending is None:
            self._pending = invocation

    def reply_received(self, request_id: str, reply: RuntimeReply) -> None:
        """A `/response` or `/error` arrived for `request_id`."""
        if not request_id or self.current is None or request_id != self.current.request_id:
            raise InvalidRequestId
        target = RuntimeState.INVOCATION_ERROR if reply.is_error else RuntimeState.INVOCATION_RESPONSE
        if self.state is not RuntimeState.RUNNING:
            raise _refuse(self.state, target)
        # A streamed response stays in InvocationResponse until its stream ends; the invoker is answered now.
        self.state = RuntimeState.INVOCATION_RESPONSE if reply.stream is not None else RuntimeState.RESPONSE_SENT
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(reply)

    def stream_ended(self, stream: ResponseStream, error_type: str | None = None, error_body: bytes = b"") -> None:
        """The streamed response of the current invoke is complete (or broke): the runtime may ask for the next."""
        stream.end(error_type, error_body)
        if self.state is RuntimeState.INVOCATION_RESPONSE:
            self.state = RuntimeState.RESPONSE_SENT

    def init_error_received(self, report: InitErrorReport) -> None:
        if self.state is not RuntimeState.STARTED:
            raise _refuse(self.state, RuntimeState.INIT_ERROR)
        self.state = RuntimeState.INIT_ERROR
        if not self.init_error.done():
            self.init_error.set_result(report)

    # -- called by the lifecycle
    def assign(self, invocation: Invocation) -> None:
        """Hand an invoke to the runtime, which must be Ready; it reaches a parked `/next` at once."""
        if self.state is not RuntimeState.READY:
            raise _refuse(self.state, RuntimeState.RUNNING)
        loop = asyncio.get_running_loop()
        self.state = RuntimeState.RUNNING
        self.current = invocation
        self.reply = loop.create_future()
        self.done = loop.create_future()
        self._pending = invocation
        while self._waiters and self._pending is not None:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(self._take_pending())

    def _take_pending(self) -> Invocation:
        invocation, self._pending = self._pending, None
        assert invocation is not None
        return invocation
