"""Extension registration rules and the event queue (SPEC 2.1-2.4)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lambdarun.core.errors import InvalidStateTransition
from lambdarun.core.extensions import ExtensionError, ExtensionRegistry, ExtensionState


def _registry() -> ExtensionRegistry:
    return ExtensionRegistry("fn", "$LATEST", "app.handler", "123456789012")


def _error_type(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ExtensionError) as info:
        call()
    return info.value.error_type


def test_registration_answers_the_function_and_an_identifier() -> None:
    async def scenario() -> None:
        ext, info = _registry().register("x", {"events": ["INVOKE"]}, None)
        assert info == {"functionName": "fn", "functionVersion": "$LATEST", "handler": "app.handler"}
        uuid.UUID(ext.id)

    asyncio.run(scenario())


def test_account_id_only_when_the_feature_is_asked_for() -> None:
    async def scenario() -> None:
        _, info = _registry().register("x", {}, "accountId")
        assert info["accountId"] == "123456789012"

    asyncio.run(scenario())


def test_registration_errors_have_lambdas_types() -> None:
    async def scenario() -> None:
        registry = _registry()
        assert _error_type(lambda: registry.register("", {}, None)) == "Extension.InvalidExtensionName"
        assert _error_type(lambda: registry.register("x", {"events": ["BOOM"]}, None)) == "Extension.InvalidEventType"
        assert _error_type(lambda: registry.register("x", [], None)) == "InvalidRequestFormat"
        assert _error_type(lambda: registry.register("x", {"configurationKeys": ["a"]}, None)) == "InvalidRequestFormat"
        assert (
            _error_type(lambda: registry.register("x", {"events": ["SHUTDOWN"]}, None)) == "Extension.InvalidEventType"
        )
        registry.register("x", {}, None)
        assert _error_type(lambda: registry.register("x", {}, None)) == "Extension.InvalidExtensionState"
        registry.close_registration()
        assert _error_type(lambda: registry.register("late", {}, None)) == "Extension.RegistrationClosed"

    asyncio.run(scenario())


def test_an_eleventh_extension_is_refused() -> None:
    async def scenario() -> None:
        registry = _registry()
        for n in range(10):
            registry.register(f"x{n}", {}, None)
        assert _error_type(lambda: registry.register("x10", {}, None)) == "Extension.TooManyExtensions"

    asyncio.run(scenario())


def test_a_launched_executable_registers_as_external_with_shutdown() -> None:
    async def scenario() -> None:
        registry = _registry()
        registry.add_external("ext")
        ext, _ = registry.register("ext", {"events": ["INVOKE", "SHUTDOWN"]}, None)
        assert ext.external and ext.events == ("INVOKE", "SHUTDOWN")

    asyncio.run(scenario())


def test_identifier_checks() -> None:
    async def scenario() -> None:
        registry = _registry()
        assert _error_type(lambda: registry.lookup(None)) == "Extension.MissingExtensionIdentifier"
        assert _error_type(lambda: registry.lookup("nope")) == "Extension.InvalidExtensionIdentifier"
        assert _error_type(lambda: registry.lookup(str(uuid.uuid4()))) == "Extension.UnknownExtensionIdentifier"

    asyncio.run(scenario())


def test_an_event_pushed_while_busy_waits_for_the_next_poll() -> None:
    async def scenario() -> None:
        registry = _registry()
        ext, _ = registry.register("x", {"events": ["INVOKE"]}, None)
        registry.next_requested(ext)  # init: Registered -> Ready
        ext.push({"requestId": "1"})
        first = registry.next_requested(ext)
        ext.push({"requestId": "2"})
        assert first == {"requestId": "1"} and ext.state is ExtensionState.RUNNING
        assert registry.next_requested(ext) == {"requestId": "2"}
        assert ext.settled is not None and not ext.settled.done()
        assert registry.next_requested(ext) is None
        assert ext.settled.done()

    asyncio.run(scenario())


def test_an_event_given_back_is_delivered_to_the_next_poll() -> None:
    async def scenario() -> None:
        registry = _registry()
        ext, _ = registry.register("x", {"events": ["INVOKE"]}, None)
        registry.next_requested(ext)
        waiter = registry.park(ext)
        ext.push({"requestId": "1"})
        event = await waiter
        ext.give_back(event)
        assert registry.next_requested(ext) == {"requestId": "1"}

    asyncio.run(scenario())


def test_exit_error_makes_the_generation_fail() -> None:
    async def scenario() -> None:
        registry = _registry()
        ext, _ = registry.register("x", {}, None)
        registry.exit_error(ext, "Extension.Boom")
        assert registry.fatal.result()[0] == "Extension.ExitError"
        with pytest.raises(InvalidStateTransition, match="from ExitError to Ready failed for extension"):
            registry.next_requested(ext)

    asyncio.run(scenario())
