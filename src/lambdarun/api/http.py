"""The HTTP/1.1 server under the in-sandbox APIs: an asyncio.Protocol on httptools (llhttp).

Handlers above this module see whole `Request` objects and return `Response` objects; they never see bytes.
What real runtime clients and extensions need from it (SPEC 10.3): keep-alive, pipelined requests answered in
order, chunked bodies with trailers, `Expect: 100-continue`, `Upgrade: h2c` ignored (Java's HttpClient sends it on
plain HTTP/1.1), and long-polls whose client has gone are cancelled so no event is handed to a dead socket.

Clients are hostile code: `Limits` bounds what one server (one environment) accepts, so that parsing stays linear
and memory bounded, and one environment's clients cannot use up what another's need.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

Headers = dict[str, str]  # lower-case names; a repeated header's values are joined with ", " as RFC 9110 allows


@dataclass(frozen=True)
class Limits:
    """What one server accepts. Real clients (the runtime interface clients, extensions, curl) send heads under
    1 KiB on a handful of connections, so these bounds only ever stop hostile or broken code. Sources:
    - RAPID, Lambda's own server, is Go's net/http with its defaults (rapi/server.go): 1 MiB for the request line
      and headers (431 past it), trailers bounded by its 4 KiB read buffer, no connection cap, no idle timeout;
    - hardened servers: nginx answers 414 past an 8 KiB request line and allows 4 x 8 KiB of headers, keep-alive
      75 s; Node.js answers 431 past 16 KiB of headers;
    - clients keep idle connections up to 90 s (Go) or 118 s (curl): a longer server timeout lets the client close
      first, so a request never races the server's close. Frozen environments sit idle for a long time too.
    """

    max_url: int = 8 * 1024  # 414 past it; a Runtime API URL is under 100 bytes
    max_head: int = 64 * 1024  # request line and headers, and trailers likewise: 431 past it
    max_connections: int = 256  # per server, parked long-polls included; a runtime and 10 extensions use < 50
    idle_timeout_s: float = 300.0  # no request under way or parked this long: closed
    linger_s: float = 2.0  # after refusing a request, how long to read (and drop) what its client still sends
    linger_bytes: int = 4 * 1024 * 1024  # ... and at most this much of it


DEFAULT_LIMITS = Limits()
_CHUNK_FRAMING = 64  # bytes allowed per chunk of a chunked body for its size line and CRLFs, past `max_head`


class BodyStream:
    """A request body handed to its handler as it arrives (a streamed response, SPEC 1.7): `chunks()` yields it
    piece by piece; then `complete` and `trailers` are set, or `aborted` when the connection went first."""

    HIGH_WATER = 1024 * 1024  # bytes queued for the handler past which the connection stops reading

    def __init__(self, pause: Callable[[], None] = lambda: None, resume: Callable[[], None] = lambda: None) -> None:
        self._pending: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self._pause, self._resume = pause, resume
        self._more = asyncio.Event()
        self.complete = False
        self.aborted = False
        self.trailers: Headers = {}

    def _feed(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._queued += len(chunk)
        if self._queued > self.HIGH_WATER and not self._paused:
            self._paused = True  # a handler that reads slower than its client sends holds at most about this much
            self._pause()
        self._more.set()

    def _end(self, trailers: Headers) -> None:
        self.trailers, self.complete = trailers, True
        self._more.set()

    def _abort(self) -> None:
        self.aborted = True
        self._more.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self._pending:
                chunk = self._pending.popleft()
                self._queued -= len(chunk)
                if self._paused and self._queued <= self.HIGH_WATER // 2:
                    self._paused = False
                    self._resume()
                yield chunk
            if self.complete or self.aborted:
                return
            self._more.clear()
            await self._more.wait()


# Which requests have their body streamed to the handler rather than buffered: given method, path and headers.
StreamsBody = Callable[[str, str, "Headers"], bool]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    trailers: Headers
    body_size: int  # bytes received, even when the body was over the limit and not kept
    oversized: bool  # the body exceeded the server's limit; `body` is then empty
    started: float  # epoch seconds when the request's first byte arrived
    connection: Connection
    stream: BodyStream | None = None  # the body as it arrives, for requests the server streams (`body` is empty)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON whatever the Content-Type (curl sends form-urlencoded JSON)."""
        return json.loads(self.body)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Called instead of delivering when the connection is already gone at write time, so that an event
    # taken from a queue for this response can be put back.
    undelivered: Callable[[], None] | None = None

    @classmethod
    def json(cls, status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        body = json.dumps(value, separators=(",", ":")).encode() + b"\n"
        return cls(status, body, [("Content-Type", "application/json"), *headers])


Handler = Callable[[Request], Awaitable[Response]]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Connection(asyncio.Protocol):
    """One client connection: parses requests and runs the handler for each, strictly in order."""

    def __init__(
        self,
        handler: Handler,
        max_body: int,
        on_lost: Callable[[Connection], None],
        limits: Limits = DEFAULT_LIMITS,
        streams: StreamsBody | None = None,
    ) -> None:
        self._handler = handler
        self._streams = streams
        self._stream: BodyStream | None = None  # the body being streamed to a handler already running
        self._max_body = max_body
        self._on_lost = on_lost
        self._limits = limits
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.idle_since: float | None = None  # loop time since when no request is under way or parked
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request | Response] = deque()  # a queued Response is an answer owed by the server
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self._peek: socket.socket | None = None
        self._unconfirmed: Response | None = None  # the last event written here, until the client asks again
        self._peer_reset = False
        self._broken = False  # no more requests are parsed: the input was refused or unparseable
        self._discarded = 0
        self._replay = b""
        # What was fed to the parser, to bound it: the head (from the end of the last message to the end of the
        # headers), then what came after the headers apart from body bytes (chunk framing, trailers).
        self._in_head = True
        self._head_fed = self._after_head_fed = self._body_fed = self._chunks = 0
        self._reset_message()

    # -- state of the message being parsed
    def _reset_message(self) -> None:
        self._url = b""
        self._fields: dict[str, list[str]] = {}  # header (then trailer) values as they arrive, joined once complete
        self._headers: Headers = {}
        self._trailers: Headers = {}
        self._in_trailers = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._oversized = False
        self._close_after = False
        self._continue_owed = False
        self._started = time.time()

    @property
    def alive(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        self._disconnect_callbacks.append(callback)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self._loop = asyncio.get_running_loop()
        self.idle_since = self._loop.time()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            self._drop(len(data))
            return
        view = memoryview(data)
        while view:
            # Fed in pieces no larger than what may still come, so that a huge head is refused after its first
            # `max_head` bytes: httptools accumulates a header value by concatenation, quadratic in its size.
            room = self._room()
            if room <= 0:
                self._refuse(431, "RequestHeaderFieldsTooLarge",
                             f"Request header fields exceed the limit of {self._limits.max_head} bytes.")  # fmt: skip
                self._drop(len(view))
                return
            piece, view = view[:room], view[room:]
            if self._in_head:
                self._head_fed += len(piece)
            else:
                self._after_head_fed += len(piece)
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                # The request asked to switch protocols (h2c). We stay on HTTP/1.1: the request itself was
                # complete, anything after it is the next request for a fresh parser.
                offset = upgrade.args[0] if upgrade.args else len(piece)
                self._parser = httptools.HttpRequestParser(self)
                rest, self._replay = self._replay + bytes(piece[offset:]) + bytes(view), b""
                if rest:
                    self.data_received(rest)
                return
            except httptools.HttpParserError as exc:
                if len(self._url) > self._limits.max_url:  # on_url stopped the parser
                    self._refuse(414, "RequestURITooLong",
                                 f"The request URI exceeds the limit of {self._limits.max_url} bytes.")  # fmt: skip
                else:
                    self._refuse(400, "BadRequest", str(exc))
                return

    def _room(self) -> int:
        """How many more bytes may be fed before the head, or the framing and trailers after it, are too large."""
        if self._in_head:
            return self._limits.max_head - self._head_fed
        framing = self._after_head_fed - self._body_fed
        return self._limits.max_head + _CHUNK_FRAMING * self._chunks - framing

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        self._broken = True  # llhttp cannot resume after an error: answer what came before, then this
        self._queue.append(Response.json(status, {"errorMessage": message, "errorType": error_type}))
        self._queue.append(_CLOSE)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run_queue())

    def _drop(self, size: int) -> None:
        """Input after a refusal: read and dropped for a while, so that the client, still sending, gets to read the
        answer (closing with unread input would reset the connection and lose the answer)."""
        self._discarded += size
        if self._discarded > self._limits.linger_bytes:
            self._close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; a parked long-poll is then cancelled by connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if exc is not None or (self._unconfirmed is not None and self._socket_error()):
            # A reset: the client closed with our last response unread (Linux sends RST, not FIN, then); or it
            # had closed just before the event was written, and its kernel refused the data (SO_ERROR is set).
            self._peer_reset = True
            unconfirmed, self._unconfirmed = self._unconfirmed, None
            if unconfirmed is not None and unconfirmed.undelivered is not None:
                unconfirmed.undelivered()
        if self._peek is not None:
            self._peek.close()
        if self._stream is not None:
            self._stream._abort()
        if self._task is not None:
            self._task.cancel()
        self._queue.clear()
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks, []
        for callback in callbacks:
            callback()
        self._on_lost(self)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._unconfirmed = None  # a client asking again on this connection has read what came before
        self._reset_message()
        if self.idle_since is not None and self._loop is not None:
            self.idle_since = self._loop.time()  # the head gets a whole idle timeout to arrive

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url:
            raise ValueError("URI too long")  # stops the parser before the request is complete

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._headers, self._fields = _joined(self._fields), {}
        self._in_head = False
        self._after_head_fed = self._body_fed = self._chunks = 0
        self.idle_since = None  # a request is under way, its body may take long to arrive
        self._in_trailers = True
        length = self._headers.get("content-length")
        declared = int(length) if length and length.isdigit() else 0
        streamed = self._streams is not None and self._streams(
            self._parser.get_method().decode(), _path(self._url), self._headers
        )
        if self._headers.get("expect", "").lower() == "100-continue":
            if declared > self._max_body and not streamed:  # a streamed body is bounded by its handler
                # Refuse before the body is sent; the client may send it anyway, so the connection closes.
                self._oversized, self._body_size, self._close_after = True, declared, True
                self._dispatch()
                return
            if self._task is None and not self._queue:
                self._write(_CONTINUE)
            else:
                self._continue_owed = True  # written by _run_queue once the earlier responses are out
        if streamed:
            self._stream = BodyStream(self._pause_reading, self._resume_reading)
            self._dispatch(self._stream)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body_fed += len(body)
        self._continue_owed = False  # the client sent the body without waiting for the 100
        if self._stream is not None:
            self._stream._feed(body)  # its handler bounds what it keeps
            return
        if self._close_after:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            if not self._oversized:
                self._oversized = True
                self._body.clear()  # drop what was kept; count the rest without keeping it
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_head, self._head_fed = True, 0
        self._trailers, self._fields = _joined(self._fields), {}
        if self._stream is not None:  # dispatched at headers: its handler reads on
            stream, self._stream = self._stream, None
            stream._end(self._trailers)
            if not self._parser.should_keep_alive():
                self._queue.append(_CLOSE)
            return
        if self._close_after:
            return  # already dispatched at headers
        chunked = "chunked" in self._headers.get("transfer-encoding", "").lower()
        if self._parser.should_upgrade() and (chunked or self._headers.get("content-length", "0") != "0"):
            # httptools made llhttp skip this body (it does for every Upgrade request): parse the request again
            # on the fresh parser, without its Upgrade header, so that the body is read as HTTP/1.1.
            head = [f"{self._parser.get_method().decode()} {self._url.decode('latin-1')} HTTP/1.1"]
            head += [f"{name}: {value}" for name, value in self._headers.items() if name not in ("upgrade", "expect")]
            self._replay = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            return
        if not self._parser.should_keep_alive():
            self._close_after = True
        self._dispatch()

    # -- request execution
    def _pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _dispatch(self, stream: BodyStream | None = None) -> None:
        url = httptools.parse_url(self._url)
        request = Request(
            method=self._parser.get_method().decode(),
            path=url.path.decode("latin-1") if url.path else "/",
            query=url.query.decode("latin-1") if url.query else "",
            headers=self._headers,
            body=b"".join(self._body),
            trailers=self._trailers if self._in_trailers else {},
            body_size=self._body_size,
            oversized=self._oversized,
            started=self._started,
            connection=self,
            stream=stream,
        )
        close_after = self._close_after
        self._body = []
        self._queue.append(request)
        if close_after:
            self._queue.append(_CLOSE)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run_queue())

    async def _run_queue(self) -> None:
        try:
            while self._queue and not self._closed:
                request = self._queue.popleft()
                if request is _CLOSE:
                    self._close_after_answers()
                    return
                if isinstance(request, Response):
                    self._send(request)
                    continue
                try:
                    response = await self._handler(request)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a handler bug must not kill the connection silently
                    response = Response.json(
                        500,
                        {
                            "errorMessage": f"Internal Server Error: {exc!r}",
                            "errorType": "InternalServerError",
                        },
                    )
                self._send(response)
                if self._continue_owed and not self._queue:
                    self._continue_owed = False
                    self._write(_CONTINUE)
        finally:
            self._task = None
            if self._in_head and self._loop is not None:
                self.idle_since = self._loop.time()

    def _peer_closed(self) -> bool:
        """Whether the client already closed its side (a FIN is waiting): checked before handing out an event,
        so an event is not written to a long-poll its client has just abandoned."""
        if self._transport is None:
            return True
        fd = self._transport.get_extra_info("socket").fileno()
        if self._peek is None:
            self._peek = socket.socket(fileno=os.dup(fd))
        try:
            return self._peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _send(self, response: Response) -> None:
        if not self.alive or (response.undelivered is not None and self._peer_closed()):
            if response.undelivered is not None:
                response.undelivered()
            return
        self._write_raw(response.status, response.body, response.headers)
        if response.undelivered is not None:
            self._unconfirmed = response

    def _socket_error(self) -> bool:
        if self._peek is None:
            return False
        try:
            return self._peek.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return False

    def lost_unread(self) -> bool:
        """Whether the client threw away what was last written here: it reset the connection. A long-poll client
        that timed out and closed as an event arrived does this; one that read the event closes with a FIN."""
        if self._peer_reset:
            return True
        if self._closed or self._peek is None:
            return False
        if self._socket_error():
            return True
        try:
            self._peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return False

    def _write_raw(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        head = [f"HTTP/1.1 {status} {_reason(status)}"]
        head.extend(f"{name}: {value}" for name, value in headers)
        head.append(f"Content-Length: {len(body)}")
        self._write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_idle(self) -> None:
        self._close()

    def _close_after_answers(self) -> None:
        transport = self._transport
        if not self._broken or transport is None or transport.is_closing() or not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()  # the answers, then FIN; what the client still sends is dropped until it closes
        assert self._loop is not None
        self._loop.call_later(self._limits.linger_s, self._close)


def _joined(fields: dict[str, list[str]]) -> Headers:
    return {name: ", ".join(values) for name, values in fields.items()}


_CLOSE: Any = object()  # queue marker: close the connection once the responses before it are written


class Server:
    """An HTTP server on a loopback port; `close()` drops every connection and cancels every handler.

    Past `limits.max_connections`, a new connection is closed at once; a connection with no request under way or
    parked for `limits.idle_timeout_s` is closed. A parked long-poll is never idle."""

    def __init__(
        self, handler: Handler, max_body: int, limits: Limits = DEFAULT_LIMITS, streams: StreamsBody | None = None
    ) -> None:
        self._handler = handler
        self._max_body = max_body
        self._limits = limits
        self._streams = streams
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[Connection] = set()
        self._idle_check: asyncio.TimerHandle | None = None
        self.refused = 0  # connections closed at once because the server was full
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None) -> None:
        """Listen at host:port, or on `sock`, a listening socket made elsewhere (inside a sandbox's network)."""
        raise_open_file_limit()
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self._new_connection, sock=sock)
        else:
            self._server = await loop.create_server(self._new_connection, host, port, reuse_address=True)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        self._idle_check = loop.call_later(self._idle_check_interval, self._close_idle)

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _new_connection(self) -> asyncio.Protocol:
        if len(self._connections) >= self._limits.max_connections:
            self.refused += 1
            return _Refused()
        connection = Connection(self._handler, self._max_body, self._connections.discard, self._limits, self._streams)
        self._connections.add(connection)
        return connection

    @property
    def _idle_check_interval(self) -> float:
        return min(self._limits.idle_timeout_s / 4, 30.0)  # closed between 1 and 1.25 timeouts after going idle

    def _close_idle(self) -> None:
        loop = asyncio.get_running_loop()
        since = loop.time() - self._limits.idle_timeout_s
        for connection in list(self._connections):
            if connection.idle_since is not None and connection.idle_since <= since:
                connection.close_idle()
        self._idle_check = loop.call_later(self._idle_check_interval, self._close_idle)

    async def close(self) -> None:
        if self._server is None:
            return
        if self._idle_check is not None:
            self._idle_check.cancel()
        self._server.close()
        for connection in list(self._connections):
            connection._close()
        await self._server.wait_closed()
        self._server = None


def _path(url: bytes) -> str:
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return ""
    return parsed.path.decode("latin-1") if parsed.path else "/"


class _Refused(asyncio.Protocol):
    """A connection past the server's cap: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@functools.cache
def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit, once (Go programs do the same at start):
    every connection costs a descriptor, and the usual soft limit of 1,024 is what let one environment's idle
    connections starve the others. Processes started later inherit it unless their sandbox sets its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
