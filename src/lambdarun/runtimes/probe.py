"""Readiness, checked where it matters: a command run in a sandbox with a runtime's mounts, as a function gets it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from ..sandbox.sandbox import Sandbox, plain_reason
from ..sandbox.spec import Bind, SandboxSpec


def in_sandbox(binds: Sequence[Bind], argv: list[str], env: dict[str, str]) -> str | None:
    """None when `argv` succeeds inside a sandbox holding `binds`, else what went wrong (its last line of output).
    Without a sandbox (plain mode) there is nothing more to check than the files themselves: None."""
    if plain_reason() is not None:
        return None
    return _run(_probe(tuple(binds), argv, env))


async def _probe(binds: tuple[Bind, ...], argv: list[str], env: dict[str, str]) -> str | None:
    with tempfile.TemporaryDirectory(prefix="lambdarun-probe-") as scratch:
        task, opt, runtime, lang, tmp = (Path(scratch, name) for name in ("task", "opt", "runtime", "lang", "tmp"))
        for directory in (task, opt, runtime, lang, tmp):
            directory.mkdir(mode=0o755)
        spec = SandboxSpec(task=task, opt=opt, runtime=runtime, lang=lang, tmp=tmp, binds=binds, network="none")
        sandbox = await Sandbox.open(spec)
        lines: list[str] = []
        try:
            process = await sandbox.spawn("probe", argv, env, lambda line, at: lines.append(line))
            status = await asyncio.wait_for(asyncio.shield(process.exited), 60)
            process.drain_logs()
        finally:
            await sandbox.close()
    if status == 0:
        return None
    return lines[-1] if lines else f"exit status {status}"


def _run(probe: Coroutine[Any, Any, str | None]) -> str | None:
    """Run the probe on a loop of its own, also when called from a thread that runs one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe).result()
