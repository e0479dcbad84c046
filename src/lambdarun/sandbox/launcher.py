"""The sandbox of one generation as the environment uses it: spawn, freeze, thaw, measure, kill.

Today each process gets its own bubblewrap (or none, in plain mode) from the environment's `View`; the processes
spawned here are the ones frozen, measured and killed.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import freeze
from .logpipe import LineSink
from .memory import MemoryMeter
from .processes import Process, kill_all, spawn
from .view import View


class ViewSandbox:
    def __init__(self, view: View) -> None:
        self._view = view
        self._processes: list[Process] = []
        self._memory = MemoryMeter()

    async def spawn(self, name: str, argv: list[str], env: Mapping[str, str], on_line: LineSink,
                    on_frame: LineSink | None = None) -> Process:  # fmt: skip
        view = self._view
        process = await spawn(name, view.command(argv), env, view.cwd, on_line, view.sandboxed, on_frame=on_frame)
        self._processes.append(process)
        return process

    def freeze(self) -> None:
        freeze.freeze(self._processes)

    def thaw(self) -> None:
        freeze.thaw(self._processes)

    def max_memory_used_mb(self) -> int:
        return self._memory.max_used_mb(self._processes)

    async def kill_all(self) -> None:
        await kill_all(self._processes)

    def close(self) -> None:
        self._memory.close()
