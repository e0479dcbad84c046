"""Response streaming through lambdarun (SPEC 1.7): a runtime posts its response chunked with
`Lambda-Runtime-Function-Response-Mode: streaming`; the invoker reads chunks as they arrive, the error trailers end
the stream with the runtime's error, and a stream past the limit ends with Lambda's error. Driven by a real Node.js
runtime client (`awslambda.streamifyResponse`) and by a bash bootstrap speaking HTTP with curl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lambdarun import Function

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
STREAMING = FIXTURES / "nodejs" / "streaming"
CURL_BOOTSTRAP = """#!/bin/bash
set -euo pipefail
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation"
while true; do
  id=$(curl -sS -D - -o /dev/null "$api/next" | tr -d '\\r' | sed -n 's/^Lambda-Runtime-Aws-Request-Id: //Ip')
  { printf 'part one,'; sleep 0.05; printf 'part two'; } | curl -sS -o /dev/null -X POST "$api/$id/response" \\
    -H 'Lambda-Runtime-Function-Response-Mode: streaming' -H 'Transfer-Encoding: chunked' \\
    -H 'Content-Type: text/plain' -H 'Trailer: Lambda-Runtime-Function-Error-Type' --data-binary @-
done
"""


def node(handler: str, **options: object) -> Function:
    return Function(code=STREAMING, runtime="nodejs20.x", handler=handler, **options)  # type: ignore[arg-type]


def test_the_first_chunk_reaches_the_invoker_before_the_handler_finishes() -> None:
    with node("index.slow", timeout=30) as fn:
        pending = fn.start_invoke({"pauseMs": 5000})
        chunks = pending.chunks()
        first = next(chunks)
        stream = pending.response().stream
        assert stream is not None
        still_running = not stream.ended.done()  # the handler is in its 5 s pause
        rest = b"".join(chunks)
        result = pending.result()
    assert first == b"first"
    assert still_running
    assert rest == b"last"
    assert result.payload == b"firstlast" and result.function_error is None
    assert result.content_type == "text/plain"
    done = next(e for e in result.events if e.type == "platform.runtimeDone")
    assert done.record["status"] == "success" and done.record["metrics"]["producedBytes"] == 9


def test_a_mid_stream_error_arrives_as_the_trailer_error() -> None:
    with node("index.failing") as fn:
        result = fn.invoke({})
    assert result.payload == b"partial"  # what was streamed before the error stays streamed
    assert result.function_error == "Unhandled"
    assert result.error_type == "Error"
    done = next(e for e in result.events if e.type == "platform.runtimeDone")
    assert done.record["status"] == "error"


def test_the_http_integration_prelude_passes_through() -> None:
    with node("index.httpResponse") as fn:
        result = fn.invoke({})
    assert result.content_type == "application/vnd.awslambda.http-integration-response"
    prelude, _, body = result.payload.partition(b"\0" * 8)
    assert json.loads(prelude) == {"statusCode": 201, "headers": {"x-a": "b"}} and body == b"body"


@pytest.mark.slow
def test_a_stream_past_20_mib_ends_with_response_size_too_large_and_the_function_stays_warm() -> None:
    with node("index.huge", memory=512, timeout=30) as fn:
        big = fn.invoke({"mebibytes": 21})
        small = fn.invoke({"mebibytes": 1})
    assert big.function_error == "Unhandled"
    assert big.error_type == "Function.ResponseSizeTooLarge"
    assert len(big.payload) == 20 * 1024 * 1024  # what fit is kept
    assert small.function_error is None and len(small.payload) == 1024 * 1024
    assert small.init_duration_ms is None  # no reset


def test_a_curl_bootstrap_streams_with_chunked_encoding(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(CURL_BOOTSTRAP)
    bootstrap.chmod(0o755)
    with Function(code=tmp_path, runtime="provided.al2023") as fn:
        result = fn.invoke({})
    assert result.payload == b"part one,part two" and result.function_error is None


def test_a_streamed_body_over_6_mb_sent_with_expect_continue_arrives_whole(tmp_path: Path) -> None:
    """curl sends `Expect: 100-continue` with a large body; a streamed response is not held to the 6 MB limit."""
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(CURL_BOOTSTRAP.replace(
        "{ printf 'part one,'; sleep 0.05; printf 'part two'; }", "head -c 8388608 /dev/zero | tr '\\0' x"
    ).replace("-H 'Transfer-Encoding: chunked' ", ""))  # fmt: skip
    bootstrap.chmod(0o755)
    with Function(code=tmp_path, runtime="provided.al2023", timeout=30) as fn:
        result = fn.invoke({})
    assert result.function_error is None
    assert len(result.payload) == 8 * 1024 * 1024 and set(result.payload) == {ord("x")}


def test_cli_stream_writes_the_bytes_as_they_arrive() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "lambdarun", "invoke", str(STREAMING), "--runtime", "nodejs20.x",
         "--handler", "index.handler", "--stream"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout == b"one,two,three\n"


def test_an_unknown_response_mode_is_still_refused(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(CURL_BOOTSTRAP.replace("Response-Mode: streaming", "Response-Mode: Streaming"))
    bootstrap.chmod(0o755)
    with Function(code=tmp_path, runtime="provided.al2023") as fn:
        result = fn.invoke({})
    assert result.error_type == "Runtime.InvalidResponseModeHeader"


def test_closing_the_function_mid_stream_releases_its_readers() -> None:
    fn = node("index.slow", timeout=30)
    try:
        pending = fn.start_invoke({"pauseMs": 20000})
        chunks = pending.chunks(timeout=30)
        assert next(chunks) == b"first"
    finally:
        fn.close()  # the invoke is abandoned in its pause
    assert list(chunks) == []  # the reader ends instead of waiting for the rest
