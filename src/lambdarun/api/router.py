"""One HTTP server per environment hosts every in-sandbox API, mounted by version prefix (SPEC 1.1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..core.current import NoGeneration
from .errors import error, not_found, too_large
from .http import Request, Response

Route = Callable[[Request], Awaitable[Response]]


class Router:
    def __init__(self, max_body: int) -> None:
        self._routes: dict[str, Route] = {}
        self._max_body = max_body

    def mount(self, prefix: str, route: Route) -> None:
        self._routes[prefix] = route

    async def __call__(self, request: Request) -> Response:
        prefix = "/" + request.path.lstrip("/").split("/", 1)[0]
        route = self._routes.get(prefix)
        if route is None:
            if request.oversized:
                return too_large(self._max_body)
            return not_found(request.path)
        try:
            return await route(request)
        except NoGeneration as exc:  # between a reset and the next init, or after shutdown
            return error(500, "InternalServerError", f"Internal Server Error: {exc}")
