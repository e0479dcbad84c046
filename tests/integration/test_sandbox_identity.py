"""Inside the sandbox the function is Lambda's unprivileged sbx_user1051 and cannot leave: as root and as a user."""

from __future__ import annotations

import errno
import functools
from typing import Any

import pytest
from _sandbox_support import WHO, run_scenario

pytestmark = pytest.mark.parametrize("who", WHO)


@functools.cache
def _identity(who: str) -> Any:
    return run_scenario(who, "identity")[0]


def test_the_function_is_sbx_user1051_with_no_capability(who: str) -> None:
    seen = _identity(who)
    assert (seen["uid"], seen["gid"], seen["user"]) == (993, 990, "sbx_user1051")
    assert "sbx_user1051:x:993:990:" in seen["passwd"]
    for key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
        assert int(seen[key], 16) == 0, key
    assert seen["NoNewPrivs"] == "1"


def test_remounting_fails(who: str) -> None:
    seen = _identity(who)
    assert seen["remount_root"] != 0
    assert seen["remount_task"] != 0


def test_raw_sockets_fail(who: str) -> None:
    assert _identity(who)["raw_socket"] == errno.EPERM


def test_no_new_namespace_can_be_made(who: str) -> None:
    seen = _identity(who)
    assert seen["unshare_r"] != 0
    assert seen["unshare_net"] != 0


def test_nothing_outside_can_be_ptraced_nor_init(who: str) -> None:
    seen = _identity(who)
    assert seen["ptrace_host"] == errno.ESRCH  # lambdarun's own pid does not exist inside
    assert seen["ptrace_init"] == errno.EPERM
    assert seen["pid1"] == "/var/rapid/init"


def test_bin_sh_is_bash_as_on_amazon_linux(who: str) -> None:
    assert _identity(who)["sh"].startswith("b 5.")


def test_sandbox_localdomain_resolves_to_loopback(who: str) -> None:
    assert _identity(who)["resolve"] == ["127.0.0.1", "127.0.0.1", "127.0.0.1"]
