"""A sandbox that cannot be built says why, naming the path, before any process starts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lambdarun.sandbox.bwrap import unavailable
from lambdarun.sandbox.namespace import NamespaceSandbox
from lambdarun.sandbox.spec import SandboxError, SandboxSpec


def _spec(tmp_path: Path) -> SandboxSpec:
    for name in ("task", "opt", "runtime", "lang", "tmp"):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name).chmod(0o755)
    return SandboxSpec(task=tmp_path / "task", opt=tmp_path / "opt", runtime=tmp_path / "runtime",
                       lang=tmp_path / "lang", tmp=tmp_path / "tmp", network="none")  # fmt: skip


@pytest.fixture(autouse=True)
def _needs_a_sandbox() -> None:
    if (reason := unavailable()) is not None:
        pytest.skip(f"no sandbox here: {reason}")


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    (tmp_path / "opt").rmdir()
    with pytest.raises(SandboxError, match=f"{tmp_path}/opt"):
        asyncio.run(NamespaceSandbox.start(spec))


def test_as_root_a_directory_the_sandbox_user_cannot_read_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as an ordinary user the sandbox's user is that user, who reads its own directories")
    spec = _spec(tmp_path)
    (tmp_path / "task").chmod(0o700)
    with pytest.raises(SandboxError, match="must be readable by others"):
        asyncio.run(NamespaceSandbox.start(spec))
