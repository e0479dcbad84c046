"""Readiness, checked where it matters: a command run in a sandbox with a runtime's mounts, as a function gets it."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..sandbox.spec import Bind
from ..sandbox.view import HostDirs, make_view


def in_sandbox(binds: Sequence[Bind], argv: list[str], env: dict[str, str], masks: Sequence[str] = ()) -> str | None:
    """None when `argv` succeeds inside a sandbox holding `binds` and `masks`, else what went wrong. Without a
    sandbox (plain mode) there is nothing more to check than the files themselves: None."""
    with tempfile.TemporaryDirectory(prefix="lambdarun-probe-") as scratch:
        root = Path(scratch)
        dirs = {name: root / name for name in ("task", "opt", "runtime", "lang", "tmp")}
        for directory in dirs.values():
            directory.mkdir()
        (root / "hosts").write_text("127.0.0.1\tlocalhost\n")
        view = make_view(HostDirs(hosts=root / "hosts", binds=list(binds), masks=list(masks), **dirs))
        if not view.sandboxed:
            return None
        try:
            done = subprocess.run(view.command(argv), env=env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)
    if done.returncode == 0:
        return None
    output = (done.stderr or done.stdout).strip().splitlines()
    return output[-1] if output else f"exit status {done.returncode}"
