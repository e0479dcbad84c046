"""Error bodies in Lambda's shape: `{"errorMessage": …, "errorType": …}` with `application/json`."""

from __future__ import annotations

from .http import Response


def error(status: int, error_type: str, message: str) -> Response:
    return Response.json(status, {"errorMessage": message, "errorType": error_type})


_ACCEPTED = b'{"status":"OK"}\n'


def accepted() -> Response:
    return Response(202, _ACCEPTED, [("Content-Type", "application/json")])


def not_found(path: str) -> Response:
    return error(404, "NotFound", f"No API at {path}")


def method_not_allowed(method: str, path: str) -> Response:
    return error(405, "MethodNotAllowed", f"{method} is not allowed on {path}")


def too_large(limit: int) -> Response:
    return error(413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({limit} bytes).")
