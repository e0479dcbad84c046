"""Runtimes are data: for each identifier, its image and how Lambda starts it (SPEC 6.2).

A managed runtime is an image, as on Lambda: `/var/lang` (the interpreter) and `/var/runtime` (the runtime client,
the `bootstrap`, and the SDK Lambda ships with that runtime), built from the registries on first use or by
`lambdarun runtimes install` and cached per user (cache.py; every version in pins.py). `prepare` returns the argv
Lambda execs: for managed runtimes `/var/runtime/bootstrap`, a shell script with the `AWS_LAMBDA_EXEC_WRAPPER`
contract that execs `<interpreter> [flags...] <runtime entry>`; for OS-only runtimes the function's own `bootstrap`.
The families live in python_runtime.py, nodejs_runtime.py, java_runtime.py and dotnet/.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

from ..sandbox.view import HostDirs, Paths
from .base import Prepared, RuntimeUnavailable, State, Status
from .cache import Image
from .fetch import Progress
from .java_runtime import JavaRuntime
from .nodejs_runtime import NodeRuntime
from .python_runtime import PythonRuntime

__all__ = ["Prepared", "RuntimeSpec", "RuntimeUnavailable", "State", "Status", "all_runtimes", "get_runtime"]


class Family(Protocol):
    def status(self) -> Status: ...
    def locate(self) -> str: ...
    def install(self, progress: Progress, replace: bool = False) -> object: ...
    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared: ...
    def image(self) -> Image | None: ...


@dataclass(frozen=True)
class RuntimeSpec:
    id: str
    family: str  # python | nodejs | java | dotnet | provided
    version: str  # 3.12 | 20 | 17 | 8 | al2023

    @property
    def needs_handler(self) -> bool:
        return self.family != "provided"

    @property
    def supports_wrapper(self) -> bool:
        return self.family != "provided"  # OS-only runtimes have no bootstrap of Lambda's to honour it (SPEC 6.2)

    @property
    def runtime_version(self) -> str:
        return f"{self.family}:{self.version}.lambdarun"

    @property
    def _impl(self) -> Family | None:
        return _family(self)

    def locate(self) -> str | None:
        """Make sure the runtime can start here, fetching its image on first use (a progress line on stderr);
        return its interpreter's path on this machine (None for OS-only runtimes). Raises RuntimeUnavailable."""
        return self._impl.locate() if self._impl is not None else None

    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared:
        """How Lambda starts the runtime in one environment; what the sandbox mounts for it is `Prepared.binds`."""
        if self._impl is not None:
            return self._impl.prepare(host, seen, memory_mb)
        # OS-only: `bootstrap` from the code, else from /opt (SPEC 5.3).
        if (host.task / "bootstrap").exists():
            return Prepared([f"{seen.task}/bootstrap"], self.runtime_version)
        return Prepared([f"{seen.opt}/bootstrap"], self.runtime_version)

    def status(self) -> Status:
        """Whether a sandbox runs it now (checked by starting its interpreter in one), and what it holds or lacks."""
        if self._impl is None:
            return Status(State.READY, "OS-only: the function's own bootstrap, from the code or a layer")
        return self._impl.status()

    def install(self, progress: Progress | None = None, replace: bool = False) -> None:
        """Build the runtime's image now (again with `replace`). Raises RuntimeUnavailable."""
        if self._impl is not None:
            self._impl.install(progress or Progress(), replace)

    def image(self) -> Image | None:
        """The runtime's image in the cache, if it is built (None for OS-only runtimes)."""
        return self._impl.image() if self._impl is not None else None

    def install_hint(self) -> str | None:
        """None when the runtime is ready; else what is missing, and the command that installs it."""
        status = self.status()
        return None if status.state is State.READY else status.detail


@functools.cache
def _family(spec: RuntimeSpec) -> Family | None:
    match spec.family:
        case "python":
            return PythonRuntime(spec.id, spec.version)
        case "nodejs":
            return NodeRuntime(spec.id, spec.version)
        case "java":
            return JavaRuntime(spec.id, spec.version)
        case "dotnet":
            return DotnetRuntime(spec.id)
    return None


class DotnetRuntime:
    """The .NET runtimes (runtimes/dotnet/): lambdarun's own client on this machine's .NET, or on .NET Core 3.1
    from PyPI's dotnetcore2; they have no image of their own. dotnet/ imports this module, so it is imported late."""

    def __init__(self, runtime_id: str) -> None:
        self.id = runtime_id

    def status(self) -> Status:
        from . import dotnet

        hint = dotnet.install_hint(self.id)
        if hint is not None:
            return Status(State.MISSING, hint)
        if dotnet.find(self.id) is None or dotnet.client.built(dotnet.cache()) is None:
            return Status(State.NOT_INSTALLED, f"{dotnet.client_note(self.id)}; fetched and compiled on first use, "
                                               f"or now with `lambdarun runtimes install {self.id}`")  # fmt: skip
        return Status(State.READY, dotnet.client_note(self.id))

    def locate(self) -> str:
        from . import dotnet

        return dotnet.locate(self.id)

    def install(self, progress: Progress, replace: bool = False) -> None:
        self.locate()  # fetches .NET when the machine has none, and compiles the client

    def prepare(self, host: HostDirs, seen: Paths, memory_mb: int) -> Prepared:
        from . import dotnet

        return dotnet.prepare(self.id, host, seen)

    def image(self) -> Image | None:
        return None


_RUNTIMES = {
    spec.id: spec
    for spec in (
        RuntimeSpec("python3.11", "python", "3.11"),
        RuntimeSpec("python3.12", "python", "3.12"),
        RuntimeSpec("python3.13", "python", "3.13"),
        RuntimeSpec("nodejs18.x", "nodejs", "18"),
        RuntimeSpec("nodejs20.x", "nodejs", "20"),
        RuntimeSpec("nodejs22.x", "nodejs", "22"),
        RuntimeSpec("nodejs24.x", "nodejs", "24"),
        RuntimeSpec("java17", "java", "17"),
        RuntimeSpec("java21", "java", "21"),
        RuntimeSpec("dotnet10", "dotnet", "10"),
        RuntimeSpec("dotnet8", "dotnet", "8"),
        RuntimeSpec("dotnet6", "dotnet", "6"),  # deprecated on Lambda, still running there
        RuntimeSpec("dotnetcore3.1", "dotnet", "3.1"),  # deprecated; runs faithfully on dotnetcore2's .NET Core 3.1
        RuntimeSpec("provided.al2023", "provided", "al2023"),
        RuntimeSpec("provided.al2", "provided", "al2"),
    )
}


def get_runtime(identifier: str) -> RuntimeSpec:
    try:
        return _RUNTIMES[identifier]
    except KeyError:
        raise KeyError(f"unknown runtime {identifier!r}; supported: {', '.join(_RUNTIMES)}") from None


def all_runtimes() -> list[RuntimeSpec]:
    return list(_RUNTIMES.values())
