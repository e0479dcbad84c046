"""A sandbox's limits take Lambda's ranges and defaults (SPEC 5.2)."""

from __future__ import annotations

import pytest

from lambdarun.sandbox.limits import Limits


def test_the_defaults_are_lambdas() -> None:
    assert Limits(128) == Limits(memory_mb=128, ephemeral_mb=512, pids=1024, nofile=1024)


@pytest.mark.parametrize(
    ("memory", "ephemeral", "message"),
    [
        (127, 512, "memory 127 MB is outside Lambda's range 128-10240 MB"),
        (10241, 512, "memory 10241 MB is outside Lambda's range 128-10240 MB"),
        (128, 511, "ephemeral storage 511 MB is outside Lambda's range 512-10240 MB"),
        (128, 10241, "ephemeral storage 10241 MB is outside Lambda's range 512-10240 MB"),
    ],
)
def test_sizes_outside_lambdas_ranges_are_refused(memory: int, ephemeral: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(memory, ephemeral)


def test_the_ranges_ends_are_accepted() -> None:
    assert Limits(10240, 10240).ephemeral_mb == 10240
