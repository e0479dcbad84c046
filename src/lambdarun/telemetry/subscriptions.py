"""Telemetry API and Logs API subscription requests: validation and what each subscriber is sent (SPEC 3.1, 3.4, 3.6).

Validation errors name the field that is wrong. Which event types each API carries, and how a record reads in each
schema version, is decided here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..core.outcomes import Status
from . import records as r
from .records import Event

TELEMETRY = "telemetry"
LOGS = "logs"
SCHEMAS = {TELEMETRY: ("2022-07-01", "2022-12-13", "2025-01-29"), LOGS: ("2020-08-15", "2021-03-18")}
DEFAULT_SCHEMA = {LOGS: "2020-08-15"}
TYPES = ("platform", "function", "extension")
# Buffering bounds: (default, min, max), as the main docs table and the RIE validator give them.
BUFFERING = {"maxItems": (10_000, 1_000, 10_000), "maxBytes": (262_144, 262_144, 1_048_576),
             "timeoutMs": (1_000, 25, 30_000)}  # fmt: skip
RESERVED_PORT = 9001
_HOSTS = ("sandbox.localdomain", "sandbox")

# Platform events each API carries; everything else of the stream (our own `lambdarun.*`) is never sent.
_TELEMETRY_PLATFORM = {r.INIT_START, r.INIT_RUNTIME_DONE, r.INIT_REPORT, r.START, r.RUNTIME_DONE, r.REPORT,
                       r.EXTENSION, r.TELEMETRY_SUBSCRIPTION, r.LOGS_DROPPED}  # fmt: skip
_LOGS_PLATFORM = {r.START, r.END, r.REPORT, r.FAULT, r.EXTENSION, r.LOGS_SUBSCRIPTION, r.LOGS_DROPPED}


class ValidationError(ValueError):
    pass


@dataclass(frozen=True)
class Buffering:
    max_items: int
    max_bytes: int
    timeout_ms: int


@dataclass(frozen=True)
class Destination:
    protocol: str  # HTTP | TCP
    port: int
    path: str = "/"


@dataclass(frozen=True)
class Subscription:
    api: str  # telemetry | logs
    schema: str
    types: tuple[str, ...]  # in the order asked
    buffering: Buffering
    destination: Destination

    def wants(self, event: Event) -> bool:
        if event.type == r.FUNCTION or event.type == r.EXTENSION_LOG:
            return event.type in self.types
        if "platform" not in self.types:
            return False
        if self.api == TELEMETRY:
            return event.type in _TELEMETRY_PLATFORM
        return event.type in _LOGS_PLATFORM or (event.type == r.RUNTIME_DONE and self.schema == "2021-03-18")

    def render(self, event: Event) -> dict[str, Any]:
        """The event as this subscriber's API and schema version show it."""
        envelope = event.envelope()
        data = event.data
        if self.api == LOGS:
            record = _logs_record(data)
            if record is not None:
                envelope["record"] = record
        # Every Telemetry API schema gets the same records: 2022-07-01 reports keep `status` and `errorType`, as
        # records captured from Lambda by the `lambda-extension` crate show (it requires `status` on that schema).
        return envelope


def _logs_record(data: r.Record) -> dict[str, Any] | None:
    """The Logs API's own shape of a record, where it differs from the Telemetry API's."""
    match data:
        case r.Report():
            return {"requestId": data.request_id, "metrics": data.wire()["metrics"]}
        case r.RuntimeDone():
            # The Logs API knows success, failure and timeout only (SPEC 3.6): a function error reads as failure.
            status = Status.FAILURE if data.status == Status.ERROR else data.status
            return {"requestId": data.request_id, "status": status}
        case r.Start():
            return {"requestId": data.request_id, "version": data.version}
    return None


def parse(api: str, body: Any) -> Subscription:
    """A subscription from a request body; raises ValidationError naming the wrong field."""
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object")
    schema = body.get("schemaVersion", DEFAULT_SCHEMA.get(api))
    if schema not in SCHEMAS[api]:
        raise ValidationError(f"schemaVersion: {schema!r} is not one of {', '.join(SCHEMAS[api])}")
    types = body.get("types")
    if not isinstance(types, list) or not types:
        raise ValidationError("types: must be a non-empty list of platform, function, extension")
    for t in types:
        if t not in TYPES:
            raise ValidationError(f"types: {t!r} is not one of platform, function, extension")
    return Subscription(api, schema, tuple(dict.fromkeys(types)), _buffering(body.get("buffering")),
                        _destination(body.get("destination")))  # fmt: skip


def _buffering(value: Any) -> Buffering:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValidationError("buffering: must be an object")
    figures = {}
    for name, (default, low, high) in BUFFERING.items():
        figure = value.get(name, default)
        if isinstance(figure, bool) or not isinstance(figure, int):
            raise ValidationError(f"buffering.{name}: must be an integer")
        if not low <= figure <= high:
            raise ValidationError(f"buffering.{name}: {figure} is outside {low}-{high}")
        figures[name] = figure
    return Buffering(figures["maxItems"], figures["maxBytes"], figures["timeoutMs"])


def _destination(value: Any) -> Destination:
    if not isinstance(value, dict):
        raise ValidationError("destination: required, an object with protocol and URI")
    protocol = value.get("protocol")
    if protocol not in ("HTTP", "TCP"):
        raise ValidationError(f"destination.protocol: {protocol!r} is not HTTP or TCP")
    if protocol == "TCP" and "URI" not in value:
        port = value.get("port")  # the TCP form of the schema names a port only
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValidationError("destination.port: a TCP destination needs a port between 1 and 65535")
        return _checked(Destination("TCP", port))
    uri = value.get("URI")
    if not isinstance(uri, str):
        raise ValidationError("destination.URI: required, e.g. http://sandbox.localdomain:8080/path")
    scheme = "http" if protocol == "HTTP" else "tcp"
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != scheme or parts.hostname not in _HOSTS or port is None:
        raise ValidationError(
            f"destination.URI: {uri!r} must be {scheme}://sandbox.localdomain:PORT[/path] (or host sandbox)"
        )
    return _checked(Destination(protocol, port, parts.path or "/"))


def _checked(destination: Destination) -> Destination:
    if destination.port == RESERVED_PORT:
        raise ValidationError(f"destination: port {RESERVED_PORT} is reserved for the Lambda APIs")
    return destination
