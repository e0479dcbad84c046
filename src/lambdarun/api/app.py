"""The in-sandbox APIs wired together: one server, every API mounted by version prefix (SPEC 1.1).

The one place the environment reaches into `api`: it hands over how to find the current generation and gets a
running server back. Handlers never see the environment; the environment never sees a handler.
"""

from __future__ import annotations

import socket

from ..core.current import Current
from ..core.errors import MAX_PAYLOAD
from ..telemetry.subscriptions import LOGS, TELEMETRY
from .extensions import ExtensionsAPI
from .http import Server
from .router import Router
from .runtime import RuntimeAPI, streams_body
from .telemetry import SubscriptionAPI


async def serve(current: Current, sock: socket.socket | None = None) -> Server:
    """Start the Runtime, Extensions, Telemetry and Logs APIs on one server: on `sock` (a listener inside the
    sandbox's network), else on a loopback port."""
    router = Router(MAX_PAYLOAD)
    router.mount(RuntimeAPI.PREFIX, RuntimeAPI(current).handle)
    router.mount(ExtensionsAPI.PREFIX, ExtensionsAPI(current).handle)
    for api in (TELEMETRY, LOGS):
        subscriptions = SubscriptionAPI(api, current)
        router.mount(subscriptions.PREFIX, subscriptions.handle)
    server = Server(router, MAX_PAYLOAD, streams=streams_body)
    await server.start(sock=sock)
    return server
