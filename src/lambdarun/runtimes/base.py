"""What every runtime family provides: readiness, the image, and how one environment starts it."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..sandbox.spec import Bind


class RuntimeUnavailable(RuntimeError):
    """The machine lacks what a runtime needs; the message names what is missing and the command that installs it."""


@dataclass(frozen=True)
class Prepared:
    """A runtime made ready for one environment."""

    argv: list[str]  # the command Lambda execs (as the environment sees paths)
    version: str  # `python:3.12.lambdarun`: what INIT_START prints as Runtime Version
    # What /var/runtime/bootstrap itself execs when no wrapper is set, and the variables it exports first: the
    # environment may start that directly and save a shell's start-up on every cold start.
    direct: list[str] | None = None
    exports: dict[str, str] = field(default_factory=dict)
    # What the sandbox mounts for this runtime, read-only and in this order, over the environment's own directories:
    # its image at /var/runtime and /var/lang, what the interpreter links to outside itself, and an empty directory
    # over each of the interpreter's own site-packages.
    binds: tuple[Bind, ...] = ()


class State(enum.Enum):
    READY = "ready"  # the sandbox runs it now
    NOT_INSTALLED = "not-installed"  # everything is here but its image: fetched on first use, or installed now
    MISSING = "missing"  # this machine lacks something lambdarun cannot fetch


@dataclass(frozen=True)
class Status:
    state: State
    detail: str  # what the sandbox gets; or what is missing and the one command that installs it


def install_command(runtime_id: str) -> str:
    return f"`lambdarun runtimes install {runtime_id}`"


def resource(name: str) -> bytes:
    return resources.files("lambdarun.runtimes").joinpath(name).read_bytes()


def bootstrap_script(execution_env: str, command: list[str], exports: dict[str, str]) -> bytes:
    """`/var/runtime/bootstrap`: Lambda's wrapper contract, as every managed runtime's bootstrap implements it.
    `command` words may use `$memory`, the function's memory size in MB, in shell arithmetic."""
    template = resource("bootstrap.sh").decode()
    # Defaults only: a variable the function or its wrapper set is kept, as the real bootstraps do.
    lines = [f'export {name}="${{{name}:-{value}}}"' for name, value in exports.items()]
    script = (
        template.replace("@EXECUTION_ENV@", execution_env)
        .replace("@EXPORTS@", "\n".join(lines))
        .replace("@COMMAND@", " ".join(f'"{part}"' for part in command))  # $((…)) expands inside the quotes
    )
    return script.encode()


def write_if_changed(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` atomically when its content differs: an image's own lambdarun files are kept current."""
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return
    except OSError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_bytes(data)
    temporary.chmod(mode)
    os.replace(temporary, path)


def link_entries(source: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Without a sandbox there are no mounts: `dest` gets a symbolic link to each entry of `source`."""
    for entry in source.iterdir():
        if entry.name not in skip:
            (dest / entry.name).symlink_to(entry)
