"""Extensions as the Extensions API sees them: registration, state machines, event queues (SPEC 2).

One `ExtensionRegistry` exists per generation. An event is queued per extension and handed to its `/event/next`
when it polls; an event written to a connection that is already gone goes back to the front of the queue, so no
event is ever lost to an abandoned long-poll or to an extension that was busy when the invoke arrived. Every state
change is a method here; a move the state machine does not allow raises `InvalidStateTransition`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import EXTENSION_EXIT, EXTENSION_INIT, InvalidStateTransition

MAX_EXTENSIONS = 10
INVOKE = "INVOKE"
SHUTDOWN = "SHUTDOWN"


class ExtensionState(Enum):
    LAUNCHED = "Launched"  # external, started but not registered yet
    REGISTERED = "Registered"
    READY = "Ready"
    RUNNING = "Running"
    INIT_ERROR = "InitError"
    EXIT_ERROR = "ExitError"
    EXITED = "Exited"
    SHUTDOWN_FAILED = "ShutdownFailed"
    LAUNCH_ERROR = "LaunchError"


class ExtensionError(Exception):
    """A refused Extensions API call: rendered as `403 {"errorType", "errorMessage"}`."""

    def __init__(self, error_type: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status


@dataclass
class Extension:
    name: str
    external: bool
    state: ExtensionState = ExtensionState.REGISTERED
    id: str = ""
    events: tuple[str, ...] = ()
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    busy: dict[str, Any] | None = None  # the event handed out and not yet answered by the next `/event/next`
    waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    # Resolved with the time of the `/event/next` that finds the queue empty after work: "back in next".
    settled: asyncio.Future[float] | None = None
    # When it registered, first asked for an event, and was last handed one (epoch seconds; for tools only).
    registered_at: float | None = None
    ready_at: float | None = None
    handed_at: float | None = None
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    registered: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def subscribed(self, event_type: str) -> bool:
        return event_type in self.events

    def push(self, event: dict[str, Any]) -> None:
        """Queue an event; a parked poller gets it at once."""
        if self.settled is None or self.settled.done():
            self.settled = asyncio.get_running_loop().create_future()
        self.queue.append(event)
        self._hand_out()

    def _hand_out(self) -> None:
        while self.waiters and self.queue and self.busy is None:
            waiter = self.waiters.pop(0)
            if waiter.done():
                continue
            self.busy = self.queue.popleft()
            self.handed_at = time.time()
            self.state = ExtensionState.RUNNING
            waiter.set_result(self.busy)

    def give_back(self, event: dict[str, Any]) -> None:
        """The event never reached the extension (its poller was gone, or threw it away unread): it is delivered
        to the next poll instead."""
        if self.busy is event:
            self.busy = None
            self.queue.appendleft(event)
            if self.state is ExtensionState.RUNNING:
                self.state = ExtensionState.READY

    def _move(self, allowed: set[ExtensionState], target: ExtensionState) -> None:
        if self.state not in allowed:
            raise InvalidStateTransition("extension", self.state.value, target.value)
        self.state = target


_NEXT_ALLOWED = {ExtensionState.REGISTERED, ExtensionState.READY, ExtensionState.RUNNING}
_LISTENING = _NEXT_ALLOWED  # states in which an extension can still take its SHUTDOWN event


class ExtensionRegistry:
    def __init__(self, function_name: str, function_version: str, handler: str | None, account_id: str) -> None:
        self._by_name: dict[str, Extension] = {}
        self._by_id: dict[str, Extension] = {}
        self.registration_open = True
        self._info = {
            "functionName": function_name,
            "functionVersion": function_version,
            "handler": handler or "",
        }
        self._account_id = account_id
        loop = asyncio.get_running_loop()
        self.fatal: asyncio.Future[tuple[str, str]] = loop.create_future()  # (error type, text)

    # -- the generation's view
    @property
    def all(self) -> list[Extension]:
        return list(self._by_name.values())

    @property
    def registered(self) -> list[Extension]:
        return [x for x in self._by_name.values() if x.id]

    def add_external(self, name: str) -> Extension:
        ext = Extension(name=name, external=True, state=ExtensionState.LAUNCHED)
        self._by_name[name] = ext
        return ext

    def launch_failed(self, ext: Extension) -> None:
        """Its executable could not be started."""
        ext._move({ExtensionState.LAUNCHED}, ExtensionState.LAUNCH_ERROR)

    def listening(self, ext: Extension) -> bool:
        return ext.external and ext.subscribed(SHUTDOWN) and ext.state in _LISTENING

    def shut_down(self, ext: Extension, clean: bool) -> None:
        """It took its SHUTDOWN event and exited (cleanly, or not/too late)."""
        ext._move(_LISTENING, ExtensionState.EXITED if clean else ExtensionState.SHUTDOWN_FAILED)

    def fail(self, error_type: str, text: str) -> None:
        if not self.fatal.done():
            self.fatal.set_result((error_type, text))

    # -- API calls
    def register(self, name: str, body: Any, accept_features: str | None) -> tuple[Extension, dict[str, Any]]:
        if not name:
            raise ExtensionError("Extension.InvalidExtensionName", "Empty extension name")
        if not isinstance(body, dict):
            raise ExtensionError("InvalidRequestFormat", "Request body must be a JSON object")
        if body.get("configurationKeys"):
            raise ExtensionError(
                "InvalidRequestFormat", "configurationKeys are deprecated; use environment variables instead"
            )
        events = body.get("events") or []
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise ExtensionError("InvalidRequestFormat", "events must be a list of strings")
        for event in events:
            if event not in (INVOKE, SHUTDOWN):
                raise ExtensionError("Extension.InvalidEventType", f"{event}: InvalidEventType")
        ext = self._by_name.get(name)
        if ext is not None and ext.external and ext.state is ExtensionState.LAUNCHED:
            ext._move({ExtensionState.LAUNCHED}, ExtensionState.REGISTERED)  # the launched executable registers
        elif ext is not None:
            raise ExtensionError("Extension.InvalidExtensionState", "Extension with this name already registered")
        else:
            if not self.registration_open:
                raise ExtensionError("Extension.RegistrationClosed", "Extension registration closed already")
            if len(self._by_name) >= MAX_EXTENSIONS:
                raise ExtensionError("Extension.TooManyExtensions", f"Extension limit ({MAX_EXTENSIONS}) reached")
            if SHUTDOWN in events:
                raise ExtensionError(
                    "Extension.InvalidEventType", "SHUTDOWN: ShutdownEventNotSupportedForInternalExtension"
                )
            ext = Extension(name=name, external=False)  # an internal extension is born Registered
            self._by_name[name] = ext
        ext.id = str(uuid.uuid4())
        ext.registered_at = time.time()
        ext.events = tuple(dict.fromkeys(events))
        self._by_id[ext.id] = ext
        if not ext.registered.done():
            ext.registered.set_result(None)
        response = dict(self._info)
        features = {f.strip() for f in (accept_features or "").split(",")}
        if "accountId" in features:
            response["accountId"] = self._account_id
        return ext, response

    def lookup(self, identifier: str | None) -> Extension:
        if not identifier:
            raise ExtensionError("Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header")
        ext = self._by_id.get(identifier)  # a known id is a valid one: parse only the others (every call does this)
        if ext is not None:
            return ext
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ExtensionError(
                "Extension.InvalidExtensionIdentifier", f"Invalid Lambda-Extension-Identifier: {identifier}"
            ) from None
        raise ExtensionError("Extension.UnknownExtensionIdentifier", f"Unknown extension {identifier}")

    def next_requested(self, ext: Extension, previous_lost: bool = False) -> dict[str, Any] | None:
        """An `/event/next` arrived: the event to return now, or None when the caller must park. `previous_lost`:
        the poll that carried the last event was abandoned with the event unread, so it is sent again."""
        if ext.state is ExtensionState.REGISTERED and not ext.ready.done():
            ext.ready_at = time.time()
            ext.ready.set_result(None)
        ext._move(_NEXT_ALLOWED, ExtensionState.READY)
        if ext.busy is not None and previous_lost:
            ext.give_back(ext.busy)
        ext.busy = None
        if ext.queue:
            ext.busy = ext.queue.popleft()
            ext.handed_at = time.time()
            ext.state = ExtensionState.RUNNING
            return ext.busy
        if ext.settled is not None and not ext.settled.done():
            ext.settled.set_result(time.time())
        return None

    def park(self, ext: Extension) -> asyncio.Future[dict[str, Any]]:
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        ext.waiters.append(waiter)
        return waiter

    def init_error(self, ext: Extension, error_type: str) -> None:
        ext._move({ExtensionState.REGISTERED}, ExtensionState.INIT_ERROR)
        self.fail(EXTENSION_INIT, f"Extension {ext.name} reported an init error: {error_type}")

    def exit_error(self, ext: Extension, error_type: str) -> None:
        ext._move(_NEXT_ALLOWED, ExtensionState.EXIT_ERROR)
        self.fail(EXTENSION_EXIT, f"Extension {ext.name} reported an exit error: {error_type}")

    def close_registration(self) -> None:
        self.registration_open = False
