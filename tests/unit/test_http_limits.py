"""The server's input limits as a hostile client meets them: raw bytes over TCP sockets (see test_http.py).

Heads and trailers past `max_head` get 431, a URL past `max_url` 414, both in Lambda's error shape and before the
rest has been read; connections past the cap are closed at once; idle connections are closed, parked long-polls
and requests still arriving never are.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from test_http import (  # the harness and wire helpers of the conformance tests
    CHUNKED,
    TIMEOUT,
    Client,
    Gate,
    Harness,
    chunk,
    echo,
    harness,  # noqa: F401  (the fixture)
    http_request,
    last_chunk,
    wait,
)

from lambdarun.api.http import DEFAULT_LIMITS, Limits, Request, Response

SMALL = Limits(max_url=1024, max_head=8 * 1024, max_connections=4, idle_timeout_s=0.2, linger_s=2.0)
HEAD = b"GET / HTTP/1.1\r\nHost: lambdarun.test\r\n"


def refused(client: Client, status: int, error_type: str) -> dict[str, str]:
    """The refusal's body, once the server answered `status` and closed the connection."""
    reply = client.response()
    assert (reply.status, reply.headers["content-type"]) == (status, "application/json")
    body = reply.json()
    assert set(body) == {"errorMessage", "errorType"} and body["errorType"] == error_type
    assert client.rest_until_closed() == b""
    return body


def counting(calls: list[str]) -> object:
    async def handler(request: Request) -> Response:
        calls.append(request.path)
        return Response(204)

    return handler


# -- heads, URLs and trailers


def test_a_2_mb_header_is_refused_with_431_and_never_reaches_the_handler(harness: Harness) -> None:  # noqa: F811
    calls: list[str] = []
    client = harness.connect(harness.serve(counting(calls)))  # type: ignore[arg-type]

    client.send(HEAD + b"X-Big: " + b"a" * (2 * 1024 * 1024) + b"\r\n\r\n")  # the whole of it: the server drains

    body = refused(client, 431, "RequestHeaderFieldsTooLarge")
    assert str(DEFAULT_LIMITS.max_head) in body["errorMessage"]
    assert calls == []


def test_an_oversized_head_is_answered_before_the_client_finished_sending_it(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))

    client.send(HEAD + b"X-Big: " + b"a" * (4 * SMALL.max_head))  # and never the end of the header

    refused(client, 431, "RequestHeaderFieldsTooLarge")


def test_many_small_headers_past_the_limit_are_refused_with_431(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))
    headers = b"".join(b"X-Same: v\r\n" for _ in range(SMALL.max_head // 10))

    client.send(HEAD + headers + b"\r\n")

    refused(client, 431, "RequestHeaderFieldsTooLarge")


def test_a_head_just_under_the_limit_is_served(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))
    value = "a" * (SMALL.max_head - 200)

    client.send(http_request("GET", "/fits", (("X-Big", value),)))

    reply = client.response()
    assert reply.status == 200
    assert reply.json()["headers"]["x-big"] == value


def test_repeated_headers_are_still_joined(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))

    client.send(http_request("GET", "/", tuple(("X-Same", str(i)) for i in range(300))))

    assert client.response().json()["headers"]["x-same"] == ", ".join(str(i) for i in range(300))


def test_a_url_past_the_limit_is_refused_with_414(harness: Harness) -> None:  # noqa: F811
    calls: list[str] = []
    client = harness.connect(harness.serve(counting(calls), limits=SMALL))  # type: ignore[arg-type]

    client.send(b"GET /" + b"a" * (SMALL.max_url * 3) + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    body = refused(client, 414, "RequestURITooLong")
    assert str(SMALL.max_url) in body["errorMessage"]
    assert calls == []


def test_oversized_trailers_are_refused_with_431(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))
    head = http_request("POST", "/2018-06-01/runtime/invocation/x/response", CHUNKED)

    client.send(
        head + chunk(b"hello") + last_chunk((("Lambda-Runtime-Function-Error-Body", "b" * (2 * SMALL.max_head)),))
    )

    refused(client, 431, "RequestHeaderFieldsTooLarge")


def test_a_large_chunked_body_in_small_chunks_is_not_mistaken_for_large_framing(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, max_body=1 << 20, limits=SMALL))
    head = http_request("POST", "/stream", CHUNKED)

    client.send(head + b"".join(chunk(b"x" * 7) for _ in range(20_000)) + last_chunk((("Trailer-A", "1"),)))

    seen = client.response().json()
    assert (seen["body_size"], seen["trailers"]) == (140_000, {"trailer-a": "1"})


def test_requests_before_a_refused_one_are_answered_first(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))

    client.send(http_request("GET", "/first") + HEAD + b"X-Big: " + b"a" * (2 * SMALL.max_head) + b"\r\n\r\n")

    assert client.response().json()["path"] == "/first"
    refused(client, 431, "RequestHeaderFieldsTooLarge")


# -- connections


def connect_raw(port: int) -> Client:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return Client(sock)


def served(client: Client) -> bool:
    try:
        client.send(http_request("GET", "/ping"))
        return client.response().status == 200
    except (AssertionError, OSError):
        return False


def test_connections_past_the_cap_are_closed_at_once_and_a_freed_slot_serves_again(harness: Harness) -> None:  # noqa: F811
    server = harness.serve(echo, limits=Limits(max_connections=4))
    held = [connect_raw(server.port) for _ in range(4)]
    assert all(served(client) for client in held)

    extra = connect_raw(server.port)
    assert extra.rest_until_closed() == b""  # closed by the server without an answer
    assert server.refused >= 1

    held.pop().close()
    for _ in range(100):  # the server notices the close on its loop; poll until it has (no timing asserted)
        client = connect_raw(server.port)
        if served(client):
            break
        client.close()
    else:
        pytest.fail("a connection freed under the cap never made room for a new one")
    for still_open in [*held, client]:
        still_open.close()


def test_an_idle_connection_is_closed_after_the_timeout(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))
    assert served(client)

    assert client.rest_until_closed() == b""  # within TIMEOUT, many idle timeouts


def test_a_connection_that_never_finishes_its_head_is_closed(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))

    client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # and nothing more

    assert client.rest_until_closed() == b""


def test_a_parked_long_poll_is_never_closed_as_idle(harness: Harness) -> None:  # noqa: F811
    gate: Gate = harness.gate()

    async def parked(request: Request) -> Response:
        await gate.wait()
        return Response(200, b"event")

    client = harness.connect(harness.serve(parked, limits=SMALL))
    client.send(http_request("GET", "/2018-06-01/runtime/invocation/next"))
    wait(gate.reached, "the long-poll to park")
    client.sock.settimeout(3 * SMALL.idle_timeout_s)
    with pytest.raises(TimeoutError):
        client.sock.recv(1, socket.MSG_PEEK)  # nothing for three idle timeouts: not closed
    client.sock.settimeout(TIMEOUT)

    gate.open()

    assert client.response().body == b"event"


def test_a_body_still_arriving_is_not_idle(harness: Harness) -> None:  # noqa: F811
    client = harness.connect(harness.serve(echo, limits=SMALL))
    client.send(http_request("POST", "/slow", (("Content-Length", "10"),)) + b"12345")
    client.sock.settimeout(3 * SMALL.idle_timeout_s)
    with pytest.raises(TimeoutError):
        client.sock.recv(1, socket.MSG_PEEK)
    client.sock.settimeout(TIMEOUT)

    client.send(b"67890")

    assert client.response().json()["body"] == "1234567890"


def test_idle_connections_of_one_server_leave_another_servers_clients_served(harness: Harness) -> None:  # noqa: F811
    crowded = harness.serve(echo, limits=Limits(max_connections=8))
    other = harness.serve(echo, limits=Limits(max_connections=8))
    flood = [connect_raw(crowded.port) for _ in range(50)]

    client = harness.connect(other)
    assert all(served(client) for _ in range(5))
    assert crowded.refused > 0
    for sock in flood:
        sock.close()


def test_starting_a_server_raises_the_open_file_soft_limit_to_the_hard_limit() -> None:
    code = textwrap.dedent("""
        import asyncio, json, resource
        from lambdarun.api.http import Response, Server
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        async def main():
            server = Server(lambda request: Response(204), 64)
            await server.start()
            await server.close()
        asyncio.run(main())
        print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))
    """)
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src}, capture_output=True,
                         text=True, timeout=30, check=True).stdout  # fmt: skip
    soft, hard = json.loads(out)
    assert soft == hard or (hard == -1 and soft >= 1 << 20)


def test_many_refused_clients_sending_at_once_are_all_answered(harness: Harness) -> None:  # noqa: F811
    # Each refusal lingers without buffering what its client still sends.
    server = harness.serve(echo, limits=SMALL)
    statuses: list[int] = []

    def hostile() -> None:
        client = connect_raw(server.port)
        client.send(HEAD + b"X-Big: " + b"a" * (256 * 1024) + b"\r\n\r\n")
        statuses.append(client.response().status)
        client.close()

    threads = [threading.Thread(target=hostile) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert statuses == [431] * 4
