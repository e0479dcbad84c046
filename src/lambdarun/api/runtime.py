"""Runtime API 2018-06-01 handlers: HTTP in, calls on the generation's `RuntimeChannel` out (SPEC 1)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json

from ..core.current import Current
from ..core.errors import INVALID_RESPONSE_MODE, MAX_PAYLOAD, InvalidStateTransition
from ..core.runtime import InitErrorReport, InvalidRequestId, Invocation, RuntimeChannel, RuntimeReply
from ..core.stream import ERROR_BODY_TRAILER, ERROR_TYPE_TRAILER, TRUNCATED, ResponseStream
from .errors import accepted, error, method_not_allowed, not_found, too_large
from .http import Request, Response

ERROR_CAUSE_TYPE = "application/vnd.aws.lambda.error.cause+json"
ERROR_TYPE_HEADER = "lambda-runtime-function-error-type"
RESPONSE_MODE_HEADER = "lambda-runtime-function-response-mode"
STREAMING = "streaming"  # the only response mode there is, case-sensitive as RAPID checks it (SPEC 1.7)


def streams_body(method: str, path: str, headers: dict[str, str]) -> bool:
    """Whether the server hands this request's body to its handler as it arrives: a streamed response, and only on
    `/response` (anywhere else the body is buffered and bounded like any other)."""
    return (
        method == "POST"
        and headers.get(RESPONSE_MODE_HEADER) == STREAMING
        and path.startswith(f"{RuntimeAPI.PREFIX}/runtime/invocation/")
        and path.endswith("/response")
    )


class RuntimeAPI:
    PREFIX = "/2018-06-01"

    def __init__(self, current: Current) -> None:
        self._current = current

    async def handle(self, request: Request) -> Response:
        parts = request.path[len(self.PREFIX) :].strip("/").split("/")
        route = (request.method, *parts)
        match route:
            case ("GET", "ping"):
                return Response(200, b"pong", [("Content-Type", "text/plain")])
            case (_, "ping"):
                return method_not_allowed(request.method, request.path)
            case ("GET", "runtime", "invocation", "next"):
                return await self._next(request)
            case ("POST", "runtime", "invocation", request_id, "response") if (
                request.header(RESPONSE_MODE_HEADER) == STREAMING
            ):
                return await self._stream(request, request_id)
            case ("POST", "runtime", "invocation", request_id, "response" | "error" as kind):
                return self._reply(request, request_id, is_error=kind == "error")
            case ("POST", "runtime", "init", "error"):
                return self._init_error(request)
            case (
                (_, "runtime", "invocation", "next")
                | (_, "runtime", "init", "error")
                | (_, "runtime", "invocation", _, "response" | "error")
            ):
                return method_not_allowed(request.method, request.path)
        return not_found(request.path)

    async def _next(self, request: Request) -> Response:
        channel = self._current().channel
        try:
            invocation = channel.next_requested()
        except InvalidStateTransition as exc:
            return error(403, "InvalidStateTransition", str(exc))
        if invocation is None:
            waiter = channel.park()
            try:
                invocation = await waiter
            except asyncio.CancelledError:
                # The poller went away; if an event had just been handed to it, it goes back to the queue.
                if waiter.done() and not waiter.cancelled():
                    channel.undelivered(waiter.result())
                else:
                    channel.unpark(waiter)
                raise
        return self._render(channel, invocation)

    @staticmethod
    def _render(channel: RuntimeChannel, invocation: Invocation) -> Response:
        channel.delivered(invocation)
        return Response(
            200, invocation.payload, invocation.headers(), undelivered=lambda: channel.undelivered(invocation)
        )

    def _reply(self, request: Request, request_id: str, is_error: bool) -> Response:
        channel = self._current().channel
        mode = request.header(RESPONSE_MODE_HEADER)
        if mode is not None and not (is_error and mode == STREAMING):  # a streaming function's /error is an error
            # Any mode but `streaming` (on /response) gets the documented error; the invoker sees
            # Runtime.InvalidResponseModeHeader.
            body = json.dumps(
                {
                    "errorType": INVALID_RESPONSE_MODE,
                    "errorMessage": f"Invalid function response mode: {mode}",
                }
            ).encode()
            reply = RuntimeReply(body, "application/json", True, INVALID_RESPONSE_MODE, request.started)
            failure = self._deliver(channel, request_id, reply)
            return failure or error(400, "InvalidFunctionResponseMode", "Invalid function response mode")
        if request.oversized and not is_error:
            reply = RuntimeReply(b"", "", True, None, request.started, oversized_size=request.body_size)
            failure = self._deliver(channel, request_id, reply)
            return failure or too_large(MAX_PAYLOAD)
        if request.oversized:
            return too_large(MAX_PAYLOAD)
        if is_error:
            payload, content_type, error_type = _error_body(request)
        else:
            payload, content_type, error_type = request.body, request.header("content-type") or "", None
        reply = RuntimeReply(payload, content_type, is_error, error_type, request.started)
        return self._deliver(channel, request_id, reply) or accepted()

    async def _stream(self, request: Request, request_id: str) -> Response:
        """A streamed response: the invoker is answered at its first byte, chunks pass on as they arrive, and the
        trailers say whether it ended in an error (SPEC 1.7)."""
        channel = self._current().channel
        content_type = request.header("content-type") or "application/octet-stream"
        stream = ResponseStream(content_type)
        failure = self._deliver(channel, request_id, RuntimeReply(b"", content_type, False, None, request.started,
                                                                  stream=stream))  # fmt: skip
        if failure is not None:
            return failure
        try:
            if request.stream is None:
                stream.write(request.body)
            else:
                async for chunk in request.stream.chunks():
                    stream.write(chunk)
        finally:  # also when the connection went mid-stream: the stream ends broken
            trailers = request.stream.trailers if request.stream is not None else request.trailers
            cut = request.stream is not None and not request.stream.complete
            error_type = TRUNCATED if cut else trailers.get(ERROR_TYPE_TRAILER)
            channel.stream_ended(stream, error_type, _trailer_error(trailers, error_type))
        if stream.oversized:
            return too_large(stream.limit)
        return accepted()

    @staticmethod
    def _deliver(channel: RuntimeChannel, request_id: str, reply: RuntimeReply) -> Response | None:
        try:
            channel.reply_received(request_id, reply)
        except InvalidRequestId:
            return error(400, "InvalidRequestID", "Invalid request ID")
        except InvalidStateTransition as exc:
            return error(403, "InvalidStateTransition", str(exc))
        return None

    def _init_error(self, request: Request) -> Response:
        channel = self._current().channel
        if request.oversized:
            return too_large(MAX_PAYLOAD)
        payload, content_type, error_type = _error_body(request)
        if content_type != "application/json":
            # The cached init error is served as JSON when it parses, else as bytes (RAPID initerror.go).
            try:
                json.loads(payload)
                content_type = "application/json"
            except ValueError:
                content_type = "application/octet-stream"
        try:
            channel.init_error_received(InitErrorReport(payload, content_type, error_type))
        except InvalidStateTransition as exc:
            return error(403, "InvalidStateTransition", str(exc))
        return accepted()


def _error_body(request: Request) -> tuple[bytes, str, str | None]:
    """The payload the invoker gets for a runtime error, its content type, and the error type (SPEC 1.4).

    The type comes from `Lambda-Runtime-Function-Error-Type`, else from the body's `errorType` (runtime
    clients put it only in the body).
    """
    header_type = request.header(ERROR_TYPE_HEADER) or None
    content_type = request.header("content-type") or "application/json"
    body = request.body
    if content_type.split(";")[0].strip() == ERROR_CAUSE_TYPE:
        try:
            parsed = json.loads(body)
            if not isinstance(parsed, dict):
                raise ValueError
        except ValueError:
            return b'"Invalid error body"', "application/octet-stream", header_type
        forwarded = {k: parsed[k] for k in ("errorMessage", "errorType", "stackTrace") if k in parsed}
        body_type = parsed.get("errorType") if isinstance(parsed.get("errorType"), str) else None
        return json.dumps(forwarded).encode(), "application/json", header_type or body_type
    if not body and header_type:
        # No payload: Lambda builds the error from the header (Runtime API OpenAPI notes).
        return (
            json.dumps({"errorMessage": "", "errorType": header_type}).encode(),
            "application/json",
            header_type,
        )
    body_type = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("errorType"), str):
            body_type = parsed["errorType"]
    except ValueError:
        pass
    return body, content_type, header_type or body_type


def _trailer_error(trailers: dict[str, str], error_type: str | None) -> bytes:
    """The error JSON a streamed response ended with: the trailer's base64 body, else one built from the type."""
    if error_type is None:
        return b""
    encoded = trailers.get(ERROR_BODY_TRAILER)
    if encoded:
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            pass
    return json.dumps({"errorType": error_type, "errorMessage": ""}).encode()
