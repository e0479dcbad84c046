"""Where no sandbox can be built (or LAMBDARUN_SANDBOX=plain), processes run on the host behind the same interface,
and lambdarun says once what is not enforced."""

from __future__ import annotations

import pytest
from _sandbox_support import WHO, run_scenario


@pytest.mark.parametrize("who", WHO)
def test_plain_mode_runs_processes_on_the_host_with_the_api_on_a_host_port(who: str) -> None:
    seen, stderr = run_scenario(who, "plain", {"plain": True})
    assert seen["sandboxed"] is False
    host, port = seen["runtime_api"].split(":")
    assert host == "127.0.0.1" and int(port) not in (0, 9001)
    assert seen["task"].endswith("/task") and seen["lines"][0] == seen["task"]  # real directories, real paths
    assert stderr.count("running without a sandbox") == 1
    assert "LAMBDARUN_SANDBOX=plain" in stderr
