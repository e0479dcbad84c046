"""Processes in the sandbox: one PID namespace, exits as the process gave them, logs and framed logs, freezing of
every process (new sessions included), SIGTERM with its grace, kill_all, and the cgroup joined before exec."""

from __future__ import annotations

import errno
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _sandbox_support import WHO, ordinary_user, run_scenario


@functools.cache
def _spawning(who: str) -> Any:
    return run_scenario(who, "spawning")[0]


@pytest.mark.parametrize("who", WHO)
def test_exits_read_as_the_process_gave_them(who: str) -> None:
    seen = _spawning(who)
    assert seen["exit3"] == [3, "exit status 3"]
    assert seen["exit200"] == [200, "exit status 200"]
    assert seen["killed"] == [-9, "signal: killed"]
    assert seen["segv"] == [-11, "signal: segmentation fault"]


@pytest.mark.parametrize("who", WHO)
def test_a_process_that_cannot_start_raises_oserror_with_the_reason(who: str) -> None:
    seen = _spawning(who)
    assert seen["missing"][0] == errno.ENOENT
    assert seen["not_executable"][0] == errno.EACCES
    assert seen["not_on_path"][0] == errno.ENOENT


@pytest.mark.parametrize("who", WHO)
def test_stdout_stderr_and_the_framed_log_fd_reach_lambdarun(who: str) -> None:
    seen = _spawning(who)
    assert sorted(seen["lines"]) == ["plain stderr", "plain stdout"]
    assert seen["frames"] == ["first line\nsecond line"]


@pytest.mark.parametrize("who", WHO)
def test_processes_share_one_pid_namespace_and_can_signal_each_other(who: str) -> None:
    seen = _spawning(who)
    assert "sys.exit(7)" in " ".join(seen["sibling"]["seen"])
    assert seen["target_exit"] == 7
    assert seen["target_lines"] == ["up", "got USR1"]
    assert seen["host_pid_is_real"]
    assert seen["max_rss_kb"] > 1000


@pytest.mark.parametrize("who", WHO)
def test_a_child_in_a_session_of_its_own_is_frozen_too(who: str) -> None:
    seen, _ = run_scenario(who, "freeze")
    assert seen["after_idle"] == seen["frozen"]  # nothing advanced while frozen, the setsid grandchild included
    assert seen["after_thaw"]["parent"] > seen["frozen"]["parent"]
    assert seen["after_thaw"]["grandchild"] > seen["frozen"]["grandchild"]


@pytest.mark.parametrize("who", WHO)
def test_close_gives_a_runtime_trapping_sigterm_its_grace(who: str) -> None:
    seen, _ = run_scenario(who, "grace")
    assert seen["finished"]  # it wrote its file after 300 ms of work in its handler
    assert seen["exit"] == 0
    assert seen["other_exit"] == -15 and seen["description"] == "signal: terminated"


@pytest.mark.parametrize("who", WHO)
def test_sigterm_to_the_runtime_reaches_it_and_not_init(who: str) -> None:
    seen, _ = run_scenario(who, "grace", {"via": "signal_group"})
    assert seen["finished"] and seen["exit"] == 0
    assert seen["after"] == ["init still serves"]


@pytest.mark.parametrize("who", WHO)
def test_kill_all_leaves_no_process_and_the_sandbox_serves_on(who: str) -> None:
    seen, _ = run_scenario(who, "kill_all")
    assert seen["before"] == 2 and seen["after"] == 0
    assert seen["exit"] == -9
    assert seen["again"] == ["spawned after kill_all"]


@pytest.mark.parametrize("who", WHO)
def test_when_init_is_killed_its_processes_read_as_killed_and_spawning_fails(who: str) -> None:
    seen, _ = run_scenario(who, "init_killed")
    assert seen["exit"] == -9
    assert seen["after"].startswith("OSError")


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A cgroup of the pids controller (v1 here, v2 elsewhere), delegated to the test user."""
    root = Path("/sys/fs/cgroup/pids")
    if not root.is_dir():
        root = Path("/sys/fs/cgroup")
    if os.geteuid() != 0 or not (root / "cgroup.procs").exists():
        pytest.skip("needs root and a pids cgroup hierarchy to make a cgroup")
    cgroup = root / f"lambdarun-test-{uuid.uuid4().hex[:8]}"
    cgroup.mkdir()
    user = ordinary_user()
    for entry in [cgroup, *cgroup.iterdir()]:
        os.chown(entry, user.pw_uid, user.pw_gid)
    yield cgroup
    cgroup.rmdir()


@pytest.mark.parametrize("who", WHO)
def test_each_process_joins_the_given_cgroup_before_it_execs(who: str, pids_cgroup: Path) -> None:
    seen, _ = run_scenario(who, "cgroup", {"cgroup": str(pids_cgroup)})
    assert any(line.endswith(f":/{pids_cgroup.name}") for line in seen["cgroups"]), seen
