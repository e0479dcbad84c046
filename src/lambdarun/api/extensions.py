"""Extensions API 2020-01-01 handlers: HTTP in, calls on the generation's `ExtensionRegistry` out (SPEC 2)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from ..core.current import Current
from ..core.errors import InvalidStateTransition
from ..core.extensions import Extension, ExtensionError
from .errors import accepted, error, method_not_allowed, not_found
from .http import Connection, Request, Response

ID_HEADER = "Lambda-Extension-Identifier"
ERROR_TYPE_HEADER = "lambda-extension-function-error-type"


class ExtensionsAPI:
    PREFIX = "/2020-01-01"

    def __init__(self, current: Current) -> None:
        self._current = current
        # The connection that carried each extension's last event: if that poll was abandoned with the event
        # unread, the next poll gets it again (a transport fact the registry is told, never asks for).
        self._carriers: dict[str, Connection] = {}

    async def handle(self, request: Request) -> Response:
        parts = request.path[len(self.PREFIX) :].strip("/").split("/")
        route = (request.method, *parts)
        try:
            match route:
                case ("POST", "extension", "register"):
                    return self._register(request)
                case ("GET", "extension", "event", "next"):
                    return await self._next(request)
                case ("POST", "extension", "init", "error"):
                    return self._report_error(request, init=True)
                case ("POST", "extension", "exit", "error"):
                    return self._report_error(request, init=False)
                case (
                    (_, "extension", "register")
                    | (_, "extension", "event", "next")
                    | (_, "extension", "init" | "exit", "error")
                ):
                    return method_not_allowed(request.method, request.path)
        except ExtensionError as exc:
            return error(exc.status, exc.error_type, str(exc))
        except InvalidStateTransition as exc:
            return error(403, "Extension.InvalidExtensionState", str(exc))
        return not_found(request.path)

    def _register(self, request: Request) -> Response:
        registry = self._current().extensions
        try:
            body: Any = json.loads(request.body) if request.body.strip() else None
        except ValueError as exc:
            raise ExtensionError("InvalidRequestFormat", f"Request body is not valid JSON: {exc}") from None
        ext, info = registry.register(
            request.header("lambda-extension-name") or "",
            body,
            request.header("lambda-extension-accept-feature"),
        )
        return Response.json(200, info, [(ID_HEADER, ext.id)])

    async def _next(self, request: Request) -> Response:
        registry = self._current().extensions
        ext = registry.lookup(request.header(ID_HEADER))
        carrier = self._carriers.pop(ext.id, None)
        event = registry.next_requested(ext, previous_lost=carrier is not None and carrier.lost_unread())
        if event is None:
            waiter = registry.park(ext)
            try:
                event = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    ext.give_back(waiter.result())
                elif waiter in ext.waiters:
                    ext.waiters.remove(waiter)
                raise
        self._carriers[ext.id] = request.connection
        return _render(ext, event)

    def _report_error(self, request: Request, init: bool) -> Response:
        registry = self._current().extensions
        ext = registry.lookup(request.header(ID_HEADER))
        error_type = request.header(ERROR_TYPE_HEADER)
        if not error_type:
            raise ExtensionError("Extension.MissingHeader", "Lambda-Extension-Function-Error-Type not found")
        if init:
            registry.init_error(ext, error_type)
        else:
            registry.exit_error(ext, error_type)
        return accepted()


def _render(ext: Extension, event: dict[str, Any]) -> Response:
    headers = [(ID_HEADER, ext.id), ("Lambda-Extension-Event-Identifier", str(uuid.uuid4()))]
    response = Response.json(200, event, headers)
    response.undelivered = lambda: ext.give_back(event)
    return response
