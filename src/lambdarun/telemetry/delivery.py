"""Delivery of the event stream to Telemetry API and Logs API subscribers (SPEC 3.2).

Each subscriber has its own queue and one task that sends batches in order: a batch leaves when `maxItems` or
`maxBytes` is reached or `timeoutMs` has passed since its first event, and whenever the environment flushes
(shutdown). Failed sends are retried with backoff. A subscriber that falls behind loses log records (never platform
events), counted and reported to it in a `platform.logsDropped` event, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable

import httptools

from . import lifecycle
from . import records as r
from .records import Event
from .subscriptions import LOGS, TELEMETRY, Subscription

HOST = "127.0.0.1"  # sandbox.localdomain, as the environment's processes see it
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[int], Awaitable[Streams]]  # a connection to sandbox.localdomain:PORT, in the sandbox's network


async def connect_here(port: int) -> Streams:
    """Where the environment shares this machine's loopback (plain processes)."""
    return await asyncio.open_connection(HOST, port)


DROP_REASON = "Some logs were dropped because the downstream consumer is slower than the logs production rate"
BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


class SubscriptionError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class Subscriber:
    def __init__(
        self,
        name: str,
        subscription: Subscription,
        connect: Connect = connect_here,
        emit: Callable[[r.Record], object] | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self._emit = emit  # each attempt to send a batch is told to the stream (never sent to subscribers)
        self.update(subscription)
        self._queue: deque[bytes] = deque()
        self._enqueued = 0  # events queued so far
        self._sent = 0  # events delivered so far
        self._flush_target = 0  # deliver up to this count now, without waiting for the buffering limits
        self._flushed = asyncio.Event()
        self._queued_bytes = 0
        self._first_at: float | None = None
        self._dropped_records = 0
        self._dropped_bytes = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"telemetry-{name}")

    def update(self, subscription: Subscription) -> None:
        """The settings of a repeated subscription replace the old ones; nothing is sent twice."""
        self.subscription = subscription
        self._limit = 4 * subscription.buffering.max_bytes  # queued bytes beyond which log records are dropped

    def offer(self, event: Event) -> None:
        if not self.subscription.wants(event):
            return
        data = json.dumps(self.subscription.render(event), separators=(",", ":")).encode()
        is_log = event.type in (r.FUNCTION, r.EXTENSION_LOG)
        if is_log and self._queued_bytes + len(data) > self._limit:
            self._dropped_records += 1
            self._dropped_bytes += len(data)
            return
        self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        if not self._queue:
            self._first_at = time.monotonic()
        self._queue.append(data)
        self._enqueued += 1
        self._queued_bytes += len(data)
        buffering = self.subscription.buffering
        if (
            len(self._queue) == 1
            or len(self._queue) >= buffering.max_items
            or self._queued_bytes >= buffering.max_bytes
        ):
            self._wake.set()

    async def flush(self, timeout: float) -> None:
        """Send what is queued now (not what arrives meanwhile: a subscriber logging each batch it receives
        would refill its own queue forever), waiting at most `timeout` seconds."""
        self._flush_target = self._enqueued
        if self._sent >= self._flush_target:
            return
        self._flushed.clear()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flushed.wait(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._disconnect()

    # -- the sending task
    async def _run(self) -> None:
        while True:
            if not self._queue and not self._dropped_records:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Read each round: a repeated subscription may have changed the buffering.
            due = (self._first_at or time.monotonic()) + self.subscription.buffering.timeout_ms / 1000
            while not self._batch_due(due):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, due - time.monotonic()))
            batch, events = self._take_batch()
            await self._send_until_done(batch)
            self._sent += events
            if self._sent >= self._flush_target:
                self._flushed.set()

    def _batch_due(self, due: float) -> bool:
        buffering = self.subscription.buffering
        return (self._sent < self._flush_target or len(self._queue) >= buffering.max_items
                or self._queued_bytes >= buffering.max_bytes or time.monotonic() >= due)  # fmt: skip

    def _take_batch(self) -> tuple[list[bytes], int]:
        """The next batch, and how many queued events it holds (a logsDropped notice is not one of them)."""
        buffering = self.subscription.buffering
        batch: list[bytes] = []
        notice = bool(self._dropped_records)
        if notice:
            dropped = r.LogsDropped(self._dropped_records, self._dropped_bytes, DROP_REASON)
            batch.append(json.dumps(Event(dropped).envelope(), separators=(",", ":")).encode())
            self._dropped_records = self._dropped_bytes = 0
        size = 0
        while self._queue and len(batch) < buffering.max_items and (not batch or size < buffering.max_bytes):
            item = self._queue.popleft()
            self._queued_bytes -= len(item)
            batch.append(item)
            size += len(item)
        self._first_at = time.monotonic() if self._queue else None
        return batch, len(batch) - (1 if notice else 0)

    async def _send_until_done(self, batch: list[bytes]) -> None:
        attempt = 0
        while True:
            started = time.time()
            try:
                status = await self._send(batch)
                self._delivered(batch, started, status, None, attempt)
                return
            except (OSError, ConnectionError, _BadStatus, asyncio.IncompleteReadError) as exc:
                status = exc.status if isinstance(exc, _BadStatus) else None
                self._delivered(batch, started, status, _describe(exc), attempt)
                self._disconnect()
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1

    def _delivered(self, batch: list[bytes], started: float, status: int | None, error: str | None,
                   attempt: int) -> None:  # fmt: skip
        if self._emit is not None:
            subscription = self.subscription
            self._emit(lifecycle.TelemetryDelivery(self.name, subscription.api, subscription.destination.protocol,
                                           r.Span.between("delivery", started, time.time()), tuple(batch), status,
                                           error, attempt))  # fmt: skip

    async def _send(self, batch: list[bytes]) -> int | None:
        """Send one batch; the HTTP status of the answer (None for TCP)."""
        destination = self.subscription.destination
        if self._writer is None:
            self._reader, self._writer = await self._connect(destination.port)
        assert self._reader is not None
        if destination.protocol == "TCP":
            self._writer.write(b"".join(item + b"\n" for item in batch))
            await self._writer.drain()
            return None
        body = b"[" + b",".join(batch) + b"]"
        head = (f"POST {destination.path} HTTP/1.1\r\nHost: sandbox.localdomain:{destination.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        self._writer.write(head.encode() + body)
        await self._writer.drain()
        status, keep_alive = await _read_response(self._reader)
        if not keep_alive:
            self._disconnect()
        if not 200 <= status < 300:
            raise _BadStatus(status)
        return status

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = self._reader = None


class _BadStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _BadStatus):
        return f"answered HTTP {exc.status}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the connection closed before the answer"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _Response:
    def __init__(self) -> None:
        self.headers_done = False
        self.complete = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.complete = True


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of the listener's reply, and whether the connection stays open."""
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    while not response.complete:
        data = await reader.read(65536)
        if not data:
            if response.headers_done:  # a reply without a length (HTTP/1.0 servers) ends with the connection
                return parser.get_status_code(), False
            raise ConnectionError("the subscriber closed the connection")
        parser.feed_data(data)
    return parser.get_status_code(), parser.should_keep_alive()


class TelemetryHub:
    """The subscribers of one generation, fed from the environment's event stream."""

    def __init__(self, emit: Callable[[r.Record], Event], connect: Connect = connect_here) -> None:
        self._emit = emit
        self._connect = connect
        self._subscribers: dict[tuple[str, str], Subscriber] = {}
        self._backlog: list[Event] | None = []  # init-phase events, replayed to each subscriber until closed
        self.open = True

    def offer(self, event: Event) -> None:
        if self._backlog is not None:
            self._backlog.append(event)
        for subscriber in list(self._subscribers.values()):
            subscriber.offer(event)

    def subscribe(self, extension: str, subscription: Subscription) -> None:
        api = subscription.api
        name = "Telemetry" if api == TELEMETRY else "Logs"
        if not self.open:
            raise SubscriptionError(403, f"{name}.SubscriptionClosed", f"{name} API subscription is closed")
        other = LOGS if api == TELEMETRY else TELEMETRY
        if (extension, other) in self._subscribers:
            # The docs say the two APIs cannot be mixed by one extension; the exact error is [UNCONFIRMED].
            raise SubscriptionError(
                400, "ValidationError" if api == TELEMETRY else "Logs.ValidationError",
                f"extension {extension} already subscribed to the {other.capitalize()} API; an extension uses the "
                "Telemetry API or the Logs API, not both",
            )  # fmt: skip
        previous = self._subscribers.get((extension, api))
        if previous is not None:
            previous.update(subscription)  # subscribing again is idempotent (SPEC 3.1): no replay, no new event
            return
        subscriber = Subscriber(extension, subscription, self._connect, self._emit)
        for event in self._backlog or []:
            subscriber.offer(event)
        self._subscribers[(extension, api)] = subscriber
        kind = r.TelemetrySubscription if api == TELEMETRY else r.LogsSubscription
        self._emit(kind(extension, subscription.types))

    def close_subscriptions(self) -> None:
        self.open = False
        self._backlog = None

    @property
    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers.values())

    async def flush(self, timeout: float) -> None:
        if self._subscribers:
            await asyncio.gather(*(s.flush(timeout) for s in self._subscribers.values()))

    async def close(self) -> None:
        subscribers, self._subscribers = list(self._subscribers.values()), {}
        await asyncio.gather(*(s.close() for s in subscribers))
