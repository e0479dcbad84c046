"""Streamed request bodies (a runtime's streamed response, SPEC 1.7): the handler reads each chunk as it arrives,
then the trailers; requests the server is not told to stream are buffered as before."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
from test_http import CHUNKED, TIMEOUT, Harness, _loop_factories, chunk, http_request, last_chunk, wait

from lambdarun.api.http import BodyStream, Request, Response, Server

STREAM_HEADER = ("Streamed", "yes")


def _streams(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "POST" and headers.get("streamed") == "yes"


@pytest.fixture(params=_loop_factories())
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    try:
        yield h
    finally:
        h.shutdown()


def _serve(harness: Harness, handler):  # type: ignore[no-untyped-def]
    server = Server(handler, 64, streams=_streams)
    harness.run(server.start())
    harness._servers.append(server)
    return server


def test_each_chunk_reaches_the_handler_before_the_body_ends(harness: Harness) -> None:
    seen: queue.Queue[bytes] = queue.Queue()

    async def handler(request: Request) -> Response:
        assert request.stream is not None and request.body == b""
        async for piece in request.stream.chunks():
            seen.put(piece)
        seen.put(b"END " + request.stream.trailers.get("x-end", "").encode())
        return Response(202, b"ok")

    client = harness.connect(_serve(harness, handler))
    client.send(http_request("POST", "/r", (*CHUNKED, STREAM_HEADER, ("Trailer", "X-End"))) + chunk(b"first"))
    assert seen.get(timeout=TIMEOUT) == b"first"  # the rest has not been sent yet
    client.send(chunk(b"x" * 1000) + last_chunk((("X-End", "done"),)))
    assert seen.get(timeout=TIMEOUT) == b"x" * 1000  # past the server's buffered-body limit: streams have none
    assert seen.get(timeout=TIMEOUT) == b"END done"
    assert client.response().status == 202


def test_a_stream_cut_by_the_client_ends_aborted(harness: Harness) -> None:
    ended: queue.Queue[tuple[bool, bool]] = queue.Queue()

    async def handler(request: Request) -> Response:
        assert request.stream is not None
        try:
            async for _ in request.stream.chunks():
                pass
        finally:
            ended.put((request.stream.complete, request.stream.aborted))
        return Response(202)

    client = harness.connect(_serve(harness, handler))
    client.send(http_request("POST", "/r", (*CHUNKED, STREAM_HEADER)) + chunk(b"half"))
    client.close()
    assert ended.get(timeout=TIMEOUT) == (False, True)


def test_requests_not_streamed_are_buffered_as_before(harness: Harness) -> None:
    async def handler(request: Request) -> Response:
        return Response(200, b"stream" if request.stream is not None else request.body)

    client = harness.connect(_serve(harness, handler))
    client.send(http_request("POST", "/r", CHUNKED) + chunk(b"ab") + last_chunk())
    assert client.response().body == b"ab"


def test_a_streamed_body_past_the_buffer_limit_is_continued_not_refused(harness: Harness) -> None:
    """curl sends `Expect: 100-continue` with a large body: a streamed one is not held to the buffered limit."""
    seen: queue.Queue[int] = queue.Queue()

    async def handler(request: Request) -> Response:
        assert request.stream is not None
        size = 0
        async for piece in request.stream.chunks():
            size += len(piece)
        seen.put(size)
        return Response(202)

    client = harness.connect(_serve(harness, handler))
    body = b"x" * 1000  # the server's buffered limit here is 64
    client.send(http_request("POST", "/r", (STREAM_HEADER, ("Expect", "100-continue"), ("Content-Length", "1000"))))
    assert client.response().status == 100
    client.send(body)
    assert seen.get(timeout=TIMEOUT) == 1000
    assert client.response().status == 202


def test_a_handler_reading_slowly_stops_the_connection_reading(harness: Harness) -> None:
    """Backpressure: a streamed body queues at most about BodyStream.HIGH_WATER bytes in lambdarun."""
    gate = harness.gate()
    queued: queue.Queue[int] = queue.Queue()

    async def handler(request: Request) -> Response:
        assert request.stream is not None
        await gate.wait()
        queued.put(request.stream._queued)
        async for _ in request.stream.chunks():
            pass
        return Response(202)

    client = harness.connect(_serve(harness, handler))
    client.send(http_request("POST", "/r", (*CHUNKED, STREAM_HEADER)))
    client.sock.setblocking(False)
    sent, piece = 0, chunk(b"y" * 65536)
    for _ in range(200):  # 13 MB offered; the kernel's buffers take a few MB once lambdarun stops reading
        try:
            sent += client.sock.send(piece)
        except BlockingIOError:
            break
    client.sock.setblocking(True)
    wait(gate.reached, "the handler to start")
    gate.open()
    assert queued.get(timeout=TIMEOUT) <= 2 * BodyStream.HIGH_WATER


def test_only_a_runtime_response_is_streamed() -> None:
    """Anywhere else a body with the streaming header is buffered and bounded like any other (an extension's
    register call cannot make lambdarun hold an unbounded body)."""
    from lambdarun.api.runtime import streams_body

    header = {"lambda-runtime-function-response-mode": "streaming"}
    assert streams_body("POST", "/2018-06-01/runtime/invocation/abc/response", header)
    assert not streams_body("POST", "/2020-01-01/extension/register", header)
    assert not streams_body("POST", "/2018-06-01/runtime/invocation/abc/error", header)
    assert not streams_body("POST", "/2018-06-01/runtime/invocation/abc/response", {})
