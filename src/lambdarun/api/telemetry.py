"""Telemetry API 2022-07-01 and Logs API 2020-08-15 subscribe handlers (SPEC 3.1)."""

from __future__ import annotations

import json
from typing import Any

from ..core.current import Current
from ..core.extensions import ExtensionError
from ..telemetry.delivery import SubscriptionError
from ..telemetry.subscriptions import LOGS, TELEMETRY, ValidationError, parse
from .errors import error, method_not_allowed, not_found
from .extensions import ID_HEADER
from .http import Request, Response


class SubscriptionAPI:
    """Mounted twice: at /2022-07-01 for `PUT /telemetry` and at /2020-08-15 for `PUT /logs`."""

    def __init__(self, api: str, current: Current) -> None:
        self.api = api
        self.PREFIX = "/2022-07-01" if api == TELEMETRY else "/2020-08-15"
        self._resource = "telemetry" if api == TELEMETRY else "logs"
        self._current = current
        self._validation_type = "ValidationError" if api == TELEMETRY else "Logs.ValidationError"

    async def handle(self, request: Request) -> Response:
        if request.path.rstrip("/") != f"{self.PREFIX}/{self._resource}":
            return not_found(request.path)
        if request.method != "PUT" and not (self.api == LOGS and request.method == "POST"):
            return method_not_allowed(request.method, request.path)
        generation = self._current()
        try:
            ext = generation.extensions.lookup(request.header(ID_HEADER))
        except ExtensionError as exc:
            return error(exc.status, exc.error_type, str(exc))
        try:
            body: Any = json.loads(request.body)
            subscription = parse(self.api, body)
        except ValueError as exc:  # ValidationError and JSON errors alike
            message = str(exc) if isinstance(exc, ValidationError) else f"request body is not valid JSON: {exc}"
            return error(400, self._validation_type, message)
        try:
            generation.subscriptions.subscribe(ext.name, subscription)
        except SubscriptionError as exc:
            return error(exc.status, exc.error_type, str(exc))
        return Response.json(200, "OK")
