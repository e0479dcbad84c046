"""lambdarun's own Node.js runtime client (the fallback when npm is unreachable) reads answers as libcurl does.

Runtime API proxy extensions (the aws-samples Go proxy) repeat an identical `Content-Length` on `/next`; the official
client accepts it (SPEC 10.10), and so must ours. Different values are refused. The client runs directly against a
stub Runtime API, with the Node.js of a nodejs runtime's image.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from lambdarun.runtimes import registry

PROBE = Path(__file__).resolve().parents[1] / "fixtures" / "nodejs" / "probe_cjs"


class RepeatingStub:
    """A Runtime API that answers one `/next` with the given Content-Length headers, then waits."""

    def __init__(self, lengths: list[str | None]) -> None:
        self.posts: list[tuple[str, bytes]] = []
        self.posted = threading.Event()
        self.served = False
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if stub.served:
                    time.sleep(30)  # the client parks here after its first invoke
                    return
                stub.served = True
                body = json.dumps({"op": "echo"}).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:1:function:f")
                self.send_header("Content-Type", "application/json")
                for length in lengths:
                    self.send_header("Content-Length", length if length is not None else str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stub.posts.append((self.path, body))
                answer = b'{"status":"OK"}'
                self.send_response(202)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                stub.posted.set()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client is killed mid-request at the end of each test

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def node() -> str:
    """The node of the first Node.js runtime that is ready here."""
    hints = []
    for runtime in ("nodejs20.x", "nodejs22.x", "nodejs24.x", "nodejs18.x"):
        hint = registry.get_runtime(runtime).install_hint()
        if hint is None:
            path = registry.get_runtime(runtime).locate()
            assert path is not None
            return path
        hints.append(f"{runtime}: {hint}")
    pytest.skip(f"no Node.js runtime is ready here; {'; '.join(hints)}")


def run_our_client(node: str, lengths: list[str | None]) -> tuple[RepeatingStub, subprocess.Popen[bytes]]:
    stub = RepeatingStub(lengths)
    entry = resources.files("lambdarun.runtimes").joinpath("nodejs", "index.mjs")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "_HANDLER": "index.handler",
           "LAMBDA_TASK_ROOT": str(PROBE), "AWS_LAMBDA_RUNTIME_API": stub.address}  # fmt: skip
    client = subprocess.Popen([node, str(entry)], env=env, cwd=PROBE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return stub, client


@pytest.fixture
def stubs() -> Iterator[list[tuple[RepeatingStub, subprocess.Popen[bytes]]]]:
    started: list[tuple[RepeatingStub, subprocess.Popen[bytes]]] = []
    yield started
    for stub, client in started:
        client.kill()
        client.wait()
        stub.close()


def test_repeated_identical_content_length_is_accepted(node: str, stubs: list[Any]) -> None:
    stub, client = run_our_client(node, [None, None])
    stubs.append((stub, client))

    assert stub.posted.wait(30), "the client posted nothing"
    [(path, body)] = stub.posts
    assert path == "/2018-06-01/runtime/invocation/req-1/response"
    assert json.loads(body) == {"event": {"op": "echo"}}


def test_different_content_lengths_are_refused(node: str, stubs: list[Any]) -> None:
    stub, client = run_our_client(node, [None, "3"])
    stubs.append((stub, client))

    status = client.wait(timeout=30)
    output = client.stdout.read().decode() if client.stdout else ""
    assert status != 0
    assert "different Content-Length" in output
    assert stub.posts == []
