"""The filesystem view of an environment: where code, layers, runtime and /tmp appear to its processes.

With bubblewrap every process sees Lambda's own paths (`/var/task`, `/opt`, `/var/runtime`, `/var/lang`, a private
`/tmp`, and `/etc/hosts` naming `sandbox` and `sandbox.localdomain`). Without it, processes run plainly and the
same variables point at the real directories; that is announced once per process (`announce_plain_once`).

A runtime's image is mounted, not linked: `/var/runtime` and `/var/lang` are bind mounts of the cached image and of
the interpreter's own directory (`Bind`), so they work wherever the cache lives and whatever else the sandbox hides.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .spec import Bind


@dataclass(frozen=True)
class HostDirs:
    """Real directories on this machine that back the environment's view."""

    task: Path
    opt: Path
    runtime: Path
    lang: Path
    tmp: Path
    hosts: Path
    # What the runtime needs besides (its image at /var/runtime and /var/lang, and paths to hide under an empty
    # directory: the interpreter's own site-packages), mounted after and over the directories above. The runtime's
    # `prepare` fills these lists (and returns the same as `Prepared.binds` and `.masks`); the view reads them when
    # it starts a process.
    binds: list[Bind] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Paths:
    """The same directories as the environment's processes see them."""

    task: str
    opt: str
    runtime: str
    lang: str
    tmp: str


LAMBDA_PATHS = Paths(task="/var/task", opt="/opt", runtime="/var/runtime", lang="/var/lang", tmp="/tmp")
HOSTS_LINE = "127.0.0.1\tlocalhost sandbox sandbox.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class View:
    sandboxed: bool
    paths: Paths

    def __init__(self, dirs: HostDirs) -> None:
        self.dirs = dirs

    def command(self, argv: list[str]) -> list[str]:
        raise NotImplementedError

    @property
    def cwd(self) -> str:
        """Where to start processes, as a host path (bwrap changes into /var/task itself)."""
        return str(self.dirs.task)


class BwrapView(View):
    sandboxed = True
    paths = LAMBDA_PATHS

    def __init__(self, dirs: HostDirs, bwrap: str) -> None:
        super().__init__(dirs)
        self._bwrap = bwrap

    def _mounts(self) -> list[str]:
        d, p = self.dirs, LAMBDA_PATHS
        args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/var"]
        # /var is replaced so that /var/task and friends can be mounted; of the machine's own /var, what programs
        # read comes back (each bind costs start-up time on every cold start).
        for entry in ("lib", "run", "cache"):
            if os.path.isdir(f"/var/{entry}"):
                args += ["--ro-bind", f"/var/{entry}", f"/var/{entry}"]
        replaced = {bind.target for bind in d.binds}  # the image's own /var/runtime and /var/lang, if it has them
        args += ["--ro-bind", str(d.task), p.task]
        for source, target in ((d.runtime, p.runtime), (d.lang, p.lang)):
            if target not in replaced:
                args += ["--ro-bind", str(source), target]
        args += [
            "--ro-bind", str(d.opt), p.opt,
            "--bind", str(d.tmp), p.tmp,
            "--ro-bind", str(d.hosts), "/etc/hosts",
        ]  # fmt: skip
        for bind in d.binds:
            if not _visible_as_is(bind):
                args += ["--bind" if bind.writable else "--ro-bind", str(bind.source), bind.target]
        for path in d.masks:
            args += ["--tmpfs", path, "--remount-ro", path]
        return [*args, "--unshare-pid", "--unshare-ipc", "--die-with-parent"]

    def command(self, argv: list[str]) -> list[str]:
        # Built at each start: the runtime's binds are known only once it is prepared, after the view is made.
        return [self._bwrap, *self._mounts(), "--chdir", LAMBDA_PATHS.task, "--", *argv]


def _visible_as_is(bind: Bind) -> bool:
    """A bind of a host path onto itself that this view shows anyway (it binds / and hides only /var and /tmp)."""
    target = Path(bind.target)
    hidden = any(target.is_relative_to(root) for root in ("/var", "/tmp", "/etc/hosts"))
    return bind.source == target and not hidden


class PlainView(View):
    sandboxed = False

    def __init__(self, dirs: HostDirs) -> None:
        super().__init__(dirs)
        self.paths = Paths(
            task=str(dirs.task),
            opt=str(dirs.opt),
            runtime=str(dirs.runtime),
            lang=str(dirs.lang),
            tmp=str(dirs.tmp),
        )

    def command(self, argv: list[str]) -> list[str]:
        return list(argv)


@functools.cache
def bwrap_usable() -> str | None:
    """The bwrap path when it can build a sandbox on this machine (installed and permitted), else None."""
    if os.environ.get("LAMBDARUN_SANDBOX", "").lower() == "plain":
        return None
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    probe = [
        bwrap,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/var",
        "--unshare-pid",
        "--die-with-parent",
        "--",
        "true",
    ]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return bwrap if ok else None


_announced = False


def make_view(dirs: HostDirs) -> View:
    global _announced
    bwrap = bwrap_usable()
    if bwrap is not None:
        return BwrapView(dirs, bwrap)
    if not _announced:
        _announced = True
        print(
            "lambdarun: bubblewrap (bwrap) is missing or not permitted here; processes run without a private "
            "filesystem view, so /var/task, /opt and /tmp are real directories named by LAMBDA_TASK_ROOT and "
            "friends, and `sandbox.localdomain` may not resolve. Install the `bubblewrap` package for the full view.",
            file=sys.stderr,
        )
    return PlainView(dirs)
