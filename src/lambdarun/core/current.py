"""What the API handlers may reach of the running generation: one narrow protocol and one error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .extensions import ExtensionRegistry
from .runtime import RuntimeChannel


class NoGeneration(Exception):
    """No generation is running to answer (between a reset and the next Init, or after shutdown)."""

    def __init__(self) -> None:
        super().__init__("no environment generation is running")


class Subscriptions(Protocol):
    def subscribe(self, extension: str, subscription: Any) -> None:
        """Add or update a Telemetry/Logs API subscription; raises the telemetry package's SubscriptionError."""


class Generation(Protocol):
    @property
    def channel(self) -> RuntimeChannel: ...

    @property
    def extensions(self) -> ExtensionRegistry: ...

    @property
    def subscriptions(self) -> Subscriptions: ...


Current = Callable[[], Generation]  # raises NoGeneration
