"""Conformance of `lambdarun.api.http` as a client sees it: raw bytes over a TCP socket.

The server runs on an event loop in a background thread (the stdlib loop, and uvloop, which production uses
when installed); each test talks to it with a blocking socket. Handlers run on the loop and report to the test
thread through `threading.Event`s and `queue.Queue`s; a handler that must wait for the test waits at a `Gate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from lambdarun.api.http import DEFAULT_LIMITS, Handler, Limits, Request, Response, Server

T = TypeVar("T")

TIMEOUT = 5.0  # generous upper bound for anything the test waits for; a passing test never waits this long
MAX_BODY = 64
HOST_HEADER = ("Host", "lambdarun.test")
H2C_UPGRADE = (
    ("Connection", "Upgrade, HTTP2-Settings"),
    ("Upgrade", "h2c"),
    ("HTTP2-Settings", "AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA"),
)


# -- the wire -----------------------------------------------------------------------------------------------


def http_request(
    method: str = "GET",
    path: str = "/",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    """One request's bytes; adds Host, and Content-Length when there is a body and no framing header."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {path} HTTP/{version}", "{}: {}".format(*HOST_HEADER)]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunk(data: bytes, extension: str = "") -> bytes:
    return f"{len(data):x}{extension}\r\n".encode() + data + b"\r\n"


def last_chunk(trailers: tuple[tuple[str, str], ...] = ()) -> bytes:
    return b"0\r\n" + b"".join(f"{name}: {value}\r\n".encode() for name, value in trailers) + b"\r\n"


CHUNKED = (("Transfer-Encoding", "chunked"),)


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A blocking socket plus the bytes read from it but not yet consumed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_bytewise(self, data: bytes) -> None:
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = self._recv()
            if not data:
                raise AssertionError(f"connection closed before {marker!r}; unread bytes: {self.buffer!r}")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = self._recv()
            if not data:
                raise AssertionError(f"connection closed after {len(self.buffer)} of {size} body bytes")
            self.buffer += data
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self) -> Reply:
        """The next response (a 1xx interim response too: it has no body)."""
        status_line, *header_lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        version, status, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"repeated response header {name}"
            headers[name.lower()] = value.strip()
        if 100 <= int(status) < 200:
            return Reply(int(status), reason, headers, b"")
        assert "content-length" in headers, f"response without Content-Length: {headers}"
        return Reply(int(status), reason, headers, self._read_exactly(int(headers["content-length"])))

    def rest_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection (a TimeoutError if it never does)."""
        data = self.buffer
        while chunk_ := self._recv():
            data += chunk_
        self.buffer = b""
        return data

    def close(self) -> None:
        self.sock.close()


# -- the server side ----------------------------------------------------------------------------------------


def _loop_factories() -> list[Any]:
    factories = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        skip = pytest.mark.skip(reason="uvloop not installed")
        factories.append(pytest.param(None, id="uvloop", marks=skip))
    else:
        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return factories


class Harness:
    """An event loop on a thread, the servers started on it and the clients connected to them."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = loop_factory()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-http-loop", daemon=True)
        self._thread.start()
        self._servers: list[Server] = []
        self._clients: list[Client] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def serve(self, handler: Handler, max_body: int = MAX_BODY, limits: Limits = DEFAULT_LIMITS) -> Server:
        server = Server(handler, max_body, limits)
        self.run(server.start())
        self._servers.append(server)
        return server

    def connect(self, server: Server) -> Client:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        sock.settimeout(TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = Client(sock)
        self._clients.append(client)
        return client

    def gate(self) -> Gate:
        return Gate(self.loop)

    def shutdown(self) -> None:
        for client in self._clients:
            client.close()

        async def stop() -> None:
            for server in self._servers:
                await server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT)
            self.loop.close()


class Gate:
    """A handler waits at it on the loop; the test sees that it got there and opens it from its own thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self.reached = threading.Event()

    async def wait(self) -> None:
        self.reached.set()
        await self._event.wait()

    def open(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)


@pytest.fixture(params=_loop_factories())
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    try:
        yield h
    finally:
        h.shutdown()


def describe(request: Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": request.body.decode("latin-1"),
        "trailers": request.trailers,
        "body_size": request.body_size,
        "oversized": request.oversized,
    }


async def echo(request: Request) -> Response:
    """Answers every request with what the handler saw of it; 413 when the body was over the limit."""
    return Response.json(413 if request.oversized else 200, describe(request))


def wait(event: threading.Event, what: str) -> None:
    assert event.wait(TIMEOUT), f"timed out waiting for {what}"


# -- keep-alive ---------------------------------------------------------------------------------------------


def test_several_requests_on_one_connection_are_each_answered(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    for i in range(3):
        client.send(http_request("POST", f"/n/{i}", body=f"body {i}".encode()))
        reply = client.response()
        assert reply.status == 200
        assert (reply.json()["path"], reply.json()["body"]) == (f"/n/{i}", f"body {i}")


def test_connection_close_request_is_answered_then_the_connection_closes(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("GET", "/bye", (("Connection", "close"),)))
    assert client.response().json()["path"] == "/bye"
    assert client.rest_until_closed() == b""


def test_http_1_0_request_without_keep_alive_is_answered_then_the_connection_closes(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("GET", "/old", version="1.0"))
    assert client.response().json()["path"] == "/old"
    assert client.rest_until_closed() == b""


def test_each_request_on_a_keep_alive_connection_has_its_own_start_time(harness: Harness) -> None:
    started: list[float] = []

    async def handler(request: Request) -> Response:
        started.append(request.started)
        return Response(204)

    client = harness.connect(harness.serve(handler))
    before_first = time.time()
    client.send(http_request())
    client.response()
    before_second = time.time()
    client.send(http_request())
    client.response()
    after_second = time.time()
    assert before_first <= started[0] <= before_second <= started[1] <= after_second


# -- what handlers see and what they send -----------------------------------------------------------------


def test_handler_sees_method_path_query_and_lower_case_headers(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    headers = (("X-Amz-Thing", "A"), ("X-Amz-Thing", "B"), ("Lambda-Runtime-Function-Error-Type", "Oops"))
    client.send(http_request("PUT", "/2018-06-01/runtime/invocation/next?a=1&b=two", headers))
    seen = client.response().json()
    assert (seen["method"], seen["path"], seen["query"]) == (
        "PUT",
        "/2018-06-01/runtime/invocation/next",
        "a=1&b=two",
    )
    assert seen["headers"]["x-amz-thing"] == "A, B"
    assert seen["headers"]["lambda-runtime-function-error-type"] == "Oops"
    assert seen["headers"]["host"] == HOST_HEADER[1]


def test_response_status_headers_and_body_reach_the_client_framed_by_content_length(harness: Harness) -> None:
    async def handler(request: Request) -> Response:
        return Response(202, b"accepted\r\n\r\nnot a header", [("Lambda-Runtime-Aws-Request-Id", "abc-123")])

    client = harness.connect(harness.serve(handler))
    client.send(http_request("POST", "/x", body=b"{}") + http_request())
    for _ in range(2):
        reply = client.response()
        assert (reply.status, reply.reason) == (202, "Accepted")
        assert reply.headers["lambda-runtime-aws-request-id"] == "abc-123"
        assert reply.body == b"accepted\r\n\r\nnot a header"


def test_json_response_has_a_json_content_type_and_body(harness: Harness) -> None:
    async def handler(request: Request) -> Response:
        return Response.json(200, {"status": "OK"}, [("X-Extra", "1")])

    client = harness.connect(harness.serve(handler))
    client.send(http_request())
    reply = client.response()
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-extra"] == "1"
    assert reply.json() == {"status": "OK"}


def test_failing_handler_gives_a_500_and_the_connection_stays_usable(harness: Harness) -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response(200, b"fine")

    client = harness.connect(harness.serve(handler))
    client.send(http_request("GET", "/boom"))
    reply = client.response()
    assert reply.status == 500
    assert "handler bug" in reply.json()["errorMessage"]
    client.send(http_request("GET", "/ok"))
    assert client.response().body == b"fine"


def test_large_body_within_the_limit_arrives_whole(harness: Harness) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: many TCP segments, many on_body calls
    client = harness.connect(harness.serve(echo, max_body=len(body)))
    client.send(http_request("POST", "/big", body=body))
    seen = client.response().json()
    assert seen["oversized"] is False
    assert seen["body_size"] == len(body)
    assert seen["body"].encode("latin-1") == body


# -- pipelining ---------------------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slower(harness: Harness) -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            await asyncio.sleep(0.05)  # long enough for a concurrent server to answer the fast ones first
        return Response(200, request.path.encode())

    client = harness.connect(harness.serve(handler))
    client.send(b"".join(http_request("GET", path) for path in ("/slow", "/fast", "/faster")))
    assert [client.response().body for _ in range(3)] == [b"/slow", b"/fast", b"/faster"]


def test_pipelined_requests_sent_one_byte_at_a_time_are_answered_in_order(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    chunked_body = chunk(b"sec", ";x=y") + chunk(b"ond") + last_chunk((("X-T", "v"),))
    client.send_bytewise(
        http_request("POST", "/one", body=b"first")
        + http_request("POST", "/two", CHUNKED, chunked_body)
        + http_request("GET", "/three?q=1")
    )
    one, two, three = (client.response().json() for _ in range(3))
    assert (one["path"], one["body"]) == ("/one", "first")
    assert (two["path"], two["body"], two["trailers"]) == ("/two", "second", {"x-t": "v"})
    assert (three["path"], three["query"], three["body"]) == ("/three", "q=1", "")


# -- chunked request bodies ---------------------------------------------------------------------------------


def test_chunked_body_is_reassembled_for_the_handler(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    body = chunk(b"hello ") + chunk(b"chunked ") + chunk(b"world") + last_chunk()
    client.send(http_request("POST", "/c", CHUNKED, body))
    seen = client.response().json()
    assert (seen["body"], seen["body_size"], seen["oversized"], seen["trailers"]) == (
        "hello chunked world",
        19,
        False,
        {},
    )


def test_chunk_extensions_are_not_part_of_the_body(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    body = chunk(b"abc", ";name=value") + chunk(b"def", ';quoted="a;b"') + chunk(b"g", ";flag") + last_chunk()
    client.send(http_request("POST", "/c", CHUNKED, body))
    assert client.response().json()["body"] == "abcdefg"


def test_trailers_after_the_last_chunk_reach_the_handler(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    headers = (*CHUNKED, ("Trailer", "X-Checksum"), ("Trailer", "Lambda-Runtime-Function-Error-Body"))
    trailers = (("X-Checksum", "abc123"), ("Lambda-Runtime-Function-Error-Body", "eyJlcnJvciI6MX0="))
    client.send(http_request("POST", "/t", headers, chunk(b"payload") + last_chunk(trailers)))
    seen = client.response().json()
    assert seen["body"] == "payload"
    assert seen["trailers"] == {
        "x-checksum": "abc123",
        "lambda-runtime-function-error-body": "eyJlcnJvciI6MX0=",
    }
    assert seen["headers"]["trailer"] == "X-Checksum, Lambda-Runtime-Function-Error-Body"
    assert "x-checksum" not in seen["headers"]


def test_request_after_one_with_trailers_has_no_trailers(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(
        http_request("POST", "/t", CHUNKED, chunk(b"x") + last_chunk((("X-T", "1"),)))
        + http_request("POST", "/plain", CHUNKED, chunk(b"y") + last_chunk())
    )
    assert client.response().json()["trailers"] == {"x-t": "1"}
    assert client.response().json()["trailers"] == {}


# -- Expect: 100-continue -----------------------------------------------------------------------------------


def test_expect_100_continue_gets_a_100_before_the_body_then_the_final_response(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("POST", "/e", (("Content-Length", "5"), ("Expect", "100-continue"))))
    interim = client.response()
    assert (interim.status, interim.reason) == (100, "Continue")
    client.send(b"hello")
    final = client.response()
    assert (final.status, final.json()["body"]) == (200, "hello")


def test_expect_100_continue_with_a_chunked_body_gets_a_100_then_the_final_response(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("POST", "/e", (*CHUNKED, ("Expect", "100-continue"))))
    assert client.response().status == 100
    client.send(chunk(b"abc") + last_chunk())
    assert client.response().json()["body"] == "abc"


def test_expect_100_continue_over_max_body_gets_413_without_a_100_and_the_connection_closes(
    harness: Harness,
) -> None:
    client = harness.connect(harness.serve(echo))
    declared = MAX_BODY + 1
    client.send(http_request("POST", "/e", (("Content-Length", str(declared)), ("Expect", "100-continue"))))
    reply = client.response()  # the body is never sent: a server waiting for it would time out here
    assert reply.status == 413
    assert (reply.json()["oversized"], reply.json()["body"]) == (True, "")
    assert client.rest_until_closed() == b""


def test_expect_100_continue_with_the_body_sent_at_once_is_answered(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    eager = http_request("POST", "/e", (("Expect", "100-continue"),), b"eager")
    client.send(eager + http_request("GET", "/next"))
    replies = [client.response()]
    if replies[0].status == 100:  # allowed but not required once the body has arrived
        replies = [client.response()]
    replies.append(client.response())
    assert [(r.status, r.json()["path"], r.json()["body"]) for r in replies] == [
        (200, "/e", "eager"),
        (200, "/next", ""),
    ]


def test_100_continue_for_a_pipelined_request_comes_after_the_earlier_response(harness: Harness) -> None:
    gate = harness.gate()

    async def handler(request: Request) -> Response:
        if request.path == "/first":
            await gate.wait()
        return await echo(request)

    client = harness.connect(harness.serve(handler))
    client.send(
        http_request("GET", "/first")
        + http_request("POST", "/second", (("Content-Length", "2"), ("Expect", "100-continue")))
    )
    wait(gate.reached, "the first handler")
    gate.open()
    first = client.response()
    assert first.status == 200, "the 100 meant for the second request came before the first's response"
    assert first.json()["path"] == "/first"
    assert client.response().status == 100
    client.send(b"ok")
    assert client.response().json()["body"] == "ok"


# -- Upgrade: h2c (Java's HttpClient) -----------------------------------------------------------------------


def test_h2c_upgrade_get_is_answered_as_http_1_1_and_the_connection_stays_usable(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next", H2C_UPGRADE))
    reply = client.response()
    assert reply.status == 200  # never 101 Switching Protocols
    assert reply.json()["headers"]["upgrade"] == "h2c"
    client.send(http_request("GET", "/after"))
    assert client.response().json()["path"] == "/after"


def test_h2c_upgrade_get_pipelined_with_the_next_request_answers_both(harness: Harness) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("GET", "/upgrade", H2C_UPGRADE) + http_request("GET", "/after"))
    assert [(r.status, r.json()["path"]) for r in (client.response(), client.response())] == [
        (200, "/upgrade"),
        (200, "/after"),
    ]


@pytest.mark.parametrize("framing", ["content-length", "content-length-body-in-later-write", "chunked"])
def test_h2c_upgrade_post_with_a_body_is_answered_as_http_1_1_with_its_body(
    harness: Harness,
    framing: str,
) -> None:
    client = harness.connect(harness.serve(echo))
    payload = b'{"statusCode":200}'
    if framing == "chunked":
        body = chunk(payload) + last_chunk()
        client.send(http_request("POST", "/response", (*H2C_UPGRADE, *CHUNKED), body))
    else:
        head = http_request("POST", "/response", (*H2C_UPGRADE, ("Content-Length", str(len(payload)))))
        if framing == "content-length":
            client.send(head + payload)
        else:
            client.send(head)
            client.send(payload)
    reply = client.response()
    assert reply.status == 200
    assert reply.json()["body"] == payload.decode()
    client.send(http_request("GET", "/after"))
    assert client.response().json()["path"] == "/after"


# -- bodies over max_body -----------------------------------------------------------------------------------


def _oversized_request(framing: str, size: int) -> bytes:
    body = b"z" * size
    if framing == "chunked":
        chunks = b"".join(chunk(body[i : i + 10]) for i in range(0, size, 10))  # a chunk straddles the limit
        return http_request("POST", "/big", CHUNKED, chunks + last_chunk())
    return http_request("POST", "/big", body=body)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_over_max_body_reaches_the_handler_as_oversized_empty_and_counted(
    harness: Harness,
    framing: str,
) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(_oversized_request(framing, 3 * MAX_BODY + 5))
    reply = client.response()
    assert reply.status == 413
    seen = reply.json()
    assert (seen["oversized"], seen["body"], seen["body_size"]) == (True, "", 3 * MAX_BODY + 5)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_connection_stays_usable_after_a_body_over_max_body(harness: Harness, framing: str) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(_oversized_request(framing, 2 * MAX_BODY))
    assert client.response().status == 413
    client.send(http_request("POST", "/next", body=b"small"))
    seen = client.response().json()
    assert (seen["path"], seen["oversized"], seen["body"], seen["body_size"]) == ("/next", False, "small", 5)


@pytest.mark.parametrize(("size", "oversized"), [(MAX_BODY, False), (MAX_BODY + 1, True)])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_max_body_is_the_largest_body_kept(
    harness: Harness,
    framing: str,
    size: int,
    oversized: bool,
) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(_oversized_request(framing, size))
    seen = client.response().json()
    assert (seen["oversized"], len(seen["body"]), seen["body_size"]) == (
        oversized,
        0 if oversized else size,
        size,
    )


# -- long-polls whose client goes away ----------------------------------------------------------------------


class ParkedHandler:
    """A long-poll that never gets an event: it records cancellation and disconnect on thread-safe events."""

    def __init__(self) -> None:
        self.parked = threading.Event()
        self.cancelled = threading.Event()
        self.disconnected = threading.Event()
        self.requests: queue.Queue[Request] = queue.Queue()

    async def __call__(self, request: Request) -> Response:
        request.connection.on_disconnect(self.disconnected.set)
        self.requests.put(request)
        self.parked.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


@pytest.mark.parametrize("how", ["close", "shutdown-write"])
def test_client_going_away_during_a_parked_long_poll_cancels_the_handler(harness: Harness, how: str) -> None:
    handler = ParkedHandler()
    client = harness.connect(harness.serve(handler))
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next"))
    wait(handler.parked, "the handler to park")
    assert not handler.cancelled.is_set()
    if how == "close":
        client.close()
    else:
        client.sock.shutdown(socket.SHUT_WR)
    wait(handler.cancelled, "CancelledError in the handler")


def test_client_closing_during_a_parked_long_poll_fires_on_disconnect(harness: Harness) -> None:
    handler = ParkedHandler()
    client = harness.connect(harness.serve(handler))
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next"))
    wait(handler.parked, "the handler to park")
    assert not handler.disconnected.is_set()
    client.close()
    wait(handler.disconnected, "the on_disconnect callback")


def test_connection_alive_turns_false_once_the_client_has_gone(harness: Harness) -> None:
    handler = ParkedHandler()
    client = harness.connect(harness.serve(handler))
    client.send(http_request())
    wait(handler.parked, "the handler to park")
    connection = handler.requests.get_nowait().connection

    async def alive() -> object:
        return connection.alive

    assert harness.run(alive()) is True
    client.close()
    wait(handler.disconnected, "the on_disconnect callback")
    assert harness.run(alive()) is False


def test_response_whose_connection_is_gone_at_write_time_calls_undelivered_instead(harness: Harness) -> None:
    """An event handed to a long-poll in the same loop iteration its connection is dropped is given back."""
    undelivered = threading.Event()
    futures: queue.Queue[asyncio.Future[None]] = queue.Queue()

    async def handler(request: Request) -> Response:
        future = asyncio.get_running_loop().create_future()
        futures.put(future)
        await future
        return Response(200, b"the event", undelivered=undelivered.set)

    server = harness.serve(handler)
    client = harness.connect(server)
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next"))
    future = futures.get(timeout=TIMEOUT)

    async def event_arrives_as_the_connection_is_dropped() -> None:
        future.set_result(None)  # the handler resumes on the next iteration...
        await server.close()  # ...by which time its transport is already closing

    harness.run(event_arrives_as_the_connection_is_dropped())
    wait(undelivered, "the undelivered callback")
    assert client.rest_until_closed() == b""  # the client never got the event


def _wait_until_peer_acked_our_fin(sock: socket.socket) -> None:
    """FIN_WAIT2: the server's kernel has our FIN, whether or not its event loop has noticed yet."""
    deadline = time.monotonic() + TIMEOUT
    while sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_FIN_WAIT2:
        assert time.monotonic() < deadline, "the server never acknowledged our FIN"
        time.sleep(0.001)


TCP_FIN_WAIT2 = 5  # tcpi_state, the first byte of Linux's struct tcp_info


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux TCP_INFO")
def test_response_to_a_client_that_closed_before_the_loop_noticed_calls_undelivered_instead(
    harness: Harness,
) -> None:
    """The FIN is in the kernel but the loop (blocked here by the handler) has not seen it at write time."""
    entered, fin_acked, undelivered = threading.Event(), threading.Event(), threading.Event()

    async def handler(request: Request) -> Response:
        entered.set()
        fin_acked.wait(TIMEOUT)  # blocks the loop on purpose: it must not see the EOF before we answer
        return Response(200, b"the event", undelivered=undelivered.set)

    client = harness.connect(harness.serve(handler))
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next"))
    wait(entered, "the handler")
    client.sock.shutdown(socket.SHUT_WR)
    _wait_until_peer_acked_our_fin(client.sock)
    fin_acked.set()
    wait(undelivered, "the undelivered callback")
    assert client.rest_until_closed() == b""  # the event was not written to the abandoned long-poll


def test_delivered_response_does_not_call_undelivered(harness: Harness) -> None:
    undelivered = threading.Event()

    async def handler(request: Request) -> Response:
        return Response(200, b"the event", undelivered=undelivered.set)

    client = harness.connect(harness.serve(handler))
    client.send(http_request())
    assert client.response().body == b"the event"
    assert not undelivered.is_set()  # it would have been called instead of writing, i.e. before we could read


def test_connection_close_after_a_delivered_response_with_undelivered_still_closes(harness: Harness) -> None:
    """Checking the peer before delivering must not keep the connection open once the server closes it."""

    async def handler(request: Request) -> Response:
        return Response(200, b"the event", undelivered=lambda: None)

    client = harness.connect(harness.serve(handler))
    client.send(http_request())
    assert client.response().body == b"the event"
    client.send(http_request("GET", "/bye", (("Connection", "close"),)))
    assert client.response().body == b"the event"
    assert client.rest_until_closed() == b""


# -- malformed requests -------------------------------------------------------------------------------------


MALFORMED = {
    "not-http": b"NOT AN HTTP REQUEST\r\n\r\n",
    "junk-after-version": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "bad-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_gets_a_400_and_the_connection_closes(harness: Harness, raw: bytes) -> None:
    handled: list[Request] = []

    async def handler(request: Request) -> Response:
        handled.append(request)
        return Response(200)

    client = harness.connect(harness.serve(handler))
    client.send(raw)
    reply = client.response()
    assert reply.status == 400
    assert reply.json()["errorType"] == "BadRequest"
    assert client.rest_until_closed() == b""
    assert handled == []


def test_malformed_request_after_an_answered_one_gets_a_400_and_the_connection_closes(
    harness: Harness,
) -> None:
    client = harness.connect(harness.serve(echo))
    client.send(http_request("GET", "/good"))
    assert client.response().status == 200
    client.send(MALFORMED["not-http"])
    assert client.response().status == 400
    assert client.rest_until_closed() == b""


def test_malformed_request_pipelined_after_a_good_one_is_answered_after_it(harness: Harness) -> None:
    gate = harness.gate()

    async def handler(request: Request) -> Response:
        await gate.wait()
        return Response(200, b"good")

    client = harness.connect(harness.serve(handler))
    client.send(http_request("GET", "/good") + MALFORMED["not-http"])
    wait(gate.reached, "the handler of the good request")
    gate.open()
    first = client.response()
    assert (first.status, first.body) == (200, b"good")
    assert client.response().status == 400
    assert client.rest_until_closed() == b""


# -- server.close() -----------------------------------------------------------------------------------------


def test_server_close_drops_idle_keep_alive_connections(harness: Harness) -> None:
    server = harness.serve(echo)
    clients = [harness.connect(server) for _ in range(3)]
    for client in clients:
        client.send(http_request())
        assert client.response().status == 200
    harness.run(server.close())
    for client in clients:
        assert client.rest_until_closed() == b""


def test_server_close_drops_connections_with_a_parked_long_poll_and_cancels_it(harness: Harness) -> None:
    handler = ParkedHandler()
    server = harness.serve(handler)
    client = harness.connect(server)
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next"))
    wait(handler.parked, "the handler to park")
    harness.run(server.close())
    wait(handler.cancelled, "CancelledError in the handler")
    wait(handler.disconnected, "the on_disconnect callback")
    assert client.rest_until_closed() == b""


def test_server_close_refuses_new_connections(harness: Harness) -> None:
    server = harness.serve(echo)
    address = (server.host, server.port)
    harness.run(server.close())
    with pytest.raises(ConnectionRefusedError), contextlib.closing(socket.socket()) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
