"""The sandbox shows Lambda's filesystem and nothing else of the host: as root and as a user."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import pytest
from _sandbox_support import WHO, run_scenario

import lambdarun

pytestmark = pytest.mark.parametrize("who", WHO)

HOST_TMP_MARKER = Path("/tmp") / f"lambdarun-host-tmp-{uuid.uuid4().hex}"
WORKTREE = Path(__file__).resolve().parents[2]
ABSENT = ["/root", "/home", "/boot", "/mnt", "/srv", "/run", "/sys", "/var/lib", "/var/log", "/var/tmp",
          "/etc/shadow", "/etc/ssl/private", "/etc/sudoers", str(HOST_TMP_MARKER), str(WORKTREE),
          str(Path(lambdarun.__file__).parent), "/usr/local/bin"]  # fmt: skip


@functools.cache
def _seen(who: str) -> Any:
    HOST_TMP_MARKER.write_text("the host's /tmp")
    try:
        return run_scenario(who, "filesystem", {"absent": ABSENT})[0]
    finally:
        HOST_TMP_MARKER.unlink()


def test_host_paths_are_absent(who: str) -> None:
    assert _seen(who)["present"] == []


def test_only_lambda_directories_are_there(who: str) -> None:
    seen = _seen(who)
    assert set(seen["/var"]) == {"task", "runtime", "lang", "rapid"}
    assert set(seen["/"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "sbin", "tmp",
                              "usr", "var"}  # fmt: skip
    assert {"passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "ssl", "localtime"} <= set(seen["/etc"])
    assert not {"shadow", "sudoers", "hostname", "machine-id"} & set(seen["/etc"])
    assert seen["/usr/local"] == []
    assert not {"sda", "vda", "mem", "kmsg"} & set(seen["/dev"])
    assert seen["cwd"] == "/var/task"


def test_only_tmp_is_writable_and_it_is_the_given_directory(who: str) -> None:
    writes = _seen(who)["writes"]
    assert writes.pop("/tmp/x") == "ok"
    assert all(result in ("Read-only file system", "Permission denied") for result in writes.values()), writes
    assert _seen(who)["tmp_on_host"] == ["x"]
