"""Runtime API 2018-06-01 handlers: HTTP in, calls on the generation's `RuntimeChannel` out (SPEC 1)."""

from __future__ import annotations

import asyncio
import json

from ..core.current import Current
from ..core.errors import INVALID_RESPONSE_MODE, MAX_PAYLOAD, InvalidStateTransition
from ..core.runtime import InitErrorReport, InvalidRequestId, Invocation, RuntimeChannel, RuntimeReply
from .errors import accepted, error, method_not_allowed, not_found, too_large
from .http import Request, Response

ERROR_CAUSE_TYPE = "application/vnd.aws.lambda.error.cause+json"
ERROR_TYPE_HEADER = "lambda-runtime-function-error-type"
RESPONSE_MODE_HEADER = "lambda-runtime-function-response-mode"


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
        if mode is not None:
            # Response streaming is a later capability; until then every mode header gets the documented
            # error and the invoker sees Runtime.InvalidResponseModeHeader.
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
