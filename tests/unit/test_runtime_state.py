"""The runtime's state machine as the Runtime API enforces it (SPEC 1.8)."""

from __future__ import annotations

import asyncio

import pytest

from lambdarun.core.errors import InvalidStateTransition
from lambdarun.core.runtime import (
    InitErrorReport,
    InvalidRequestId,
    Invocation,
    RuntimeChannel,
    RuntimeReply,
    RuntimeState,
)


def _invocation(request_id: str = "r1") -> Invocation:
    return Invocation(request_id, b"{}", 0, "arn:aws:lambda:us-east-1:123456789012:function:f")


def _reply(is_error: bool = False) -> RuntimeReply:
    return RuntimeReply(b"1", "application/json", is_error, None, 0.0, 0.0)


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_first_next_ends_the_runtime_init() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        assert channel.next_requested() is None
        assert channel.ready.done()
        assert channel.state is RuntimeState.READY

    run(scenario)


def test_parked_next_gets_the_invoke_the_moment_it_is_assigned() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        waiter = channel.park()
        channel.assign(_invocation())
        assert (await waiter).request_id == "r1"
        assert channel.state is RuntimeState.RUNNING

    run(scenario)


def test_next_while_running_renders_the_same_event_again() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        channel.assign(_invocation())
        first = channel.next_requested()
        again = channel.next_requested()
        assert first is not None and again is first

    run(scenario)


def test_event_undelivered_to_a_gone_poller_goes_to_the_next_poll() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        waiter = channel.park()
        channel.assign(_invocation())
        channel.undelivered(await waiter)
        assert channel.next_requested() is channel.current

    run(scenario)


def test_response_for_another_request_id_is_invalid() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        channel.assign(_invocation())
        with pytest.raises(InvalidRequestId):
            channel.reply_received("other", _reply())
        with pytest.raises(InvalidRequestId):
            channel.reply_received("", _reply())

    run(scenario)


def test_second_response_is_an_invalid_state_transition() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        channel.assign(_invocation())
        channel.reply_received("r1", _reply())
        with pytest.raises(InvalidStateTransition, match="from ResponseSent to InvocationErrorResponse"):
            channel.reply_received("r1", _reply(is_error=True))

    run(scenario)


def test_next_after_the_response_is_runtime_done() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        channel.assign(_invocation())
        channel.reply_received("r1", _reply())
        assert channel.done is not None and not channel.done.done()
        channel.next_requested()
        assert channel.done.done()
        assert channel.state is RuntimeState.READY

    run(scenario)


def test_init_error_only_before_the_first_next() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.next_requested()
        with pytest.raises(InvalidStateTransition, match="from Ready to InitError"):
            channel.init_error_received(InitErrorReport(b"{}", "application/json", None))

    run(scenario)


def test_init_error_is_terminal() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        channel.init_error_received(InitErrorReport(b"{}", "application/json", "Runtime.ImportModuleError"))
        with pytest.raises(InvalidStateTransition):
            channel.next_requested()

    run(scenario)
