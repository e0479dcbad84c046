"""Shared by the integration tests: where the fixture functions live, and how to find leftover processes."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lambdarun.sandbox.view import bwrap_usable

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def functions() -> Path:
    return FIXTURES / "functions"


@pytest.fixture(scope="session")
def layers() -> Path:
    return FIXTURES / "layers"


@pytest.fixture(scope="session")
def sandboxed() -> None:
    """Skip when bubblewrap cannot build the Lambda filesystem view (/var/task, /opt, private /tmp) here."""
    if bwrap_usable() is None:
        pytest.skip("bubblewrap (bwrap) is missing or not permitted: no /var/task, /opt or private /tmp view")


@pytest.fixture(scope="session")
def curl() -> None:
    if shutil.which("curl") is None:
        pytest.skip("the bash bootstraps need curl, which is not installed")


@pytest.fixture
def marker() -> str:
    """A unique string to pass into a function's environment, to recognise its processes afterwards."""
    return f"lambdarun-test-marker-{uuid.uuid4().hex}"


def _marked(marker: str) -> list[str]:
    needle = marker.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for name in ("environ", "cmdline"):
            try:
                if needle in (proc / name).read_bytes():
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                    found.append(f"{proc.name}: {command!r}")
                    break
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


@pytest.fixture
def processes_marked() -> Callable[[str], list[str]]:
    """`processes_marked(marker)`: every live process whose environment or command line holds the marker."""
    return _marked
