"""Where an environment's directories are: on this machine (`HostDirs`), and as its processes see them (`Paths`):
Lambda's own paths inside a sandbox, the real directories when processes run plainly on the host."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .spec import Bind

__all__ = ["LAMBDA_PATHS", "Bind", "HostDirs", "Paths", "bwrap_usable"]


@dataclass(frozen=True)
class HostDirs:
    """Real directories on this machine that back the environment's /var/task, /opt, /var/runtime, /var/lang, /tmp."""

    task: Path
    opt: Path
    runtime: Path
    lang: Path
    tmp: Path


@dataclass(frozen=True)
class Paths:
    """The same directories as the environment's processes see them."""

    task: str
    opt: str
    runtime: str
    lang: str
    tmp: str

    @classmethod
    def of(cls, dirs: HostDirs) -> Paths:
        """The real directories themselves: what processes see without a sandbox."""
        return cls(task=str(dirs.task), opt=str(dirs.opt), runtime=str(dirs.runtime), lang=str(dirs.lang),
                   tmp=str(dirs.tmp))  # fmt: skip


LAMBDA_PATHS = Paths(task="/var/task", opt="/opt", runtime="/var/runtime", lang="/var/lang", tmp="/tmp")


def bwrap_usable() -> str | None:
    """The bwrap path when environments get a real sandbox here, else None (plain processes on the host)."""
    from .sandbox import plain_reason

    return shutil.which("bwrap") if plain_reason() is None else None
