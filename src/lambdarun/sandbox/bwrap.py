"""The command that builds one sandbox: our init makes the user namespace, bwrap the rest, init is PID 1.

    init userns-exec  a user namespace where sbx_user1051 (993:990) is an unprivileged host user, and where no
                      further user namespace can be made
    bwrap --userns    PID, IPC, UTS, network and mount namespaces in it; the filesystem below
    init serve        PID 1: listens on 127.0.0.1:9001 inside, starts and reaps every process

Run by an ordinary user, sbx_user1051 is that user (the only id it may map) and bwrap starts init as it. Run by
root, sbx_user1051 is the host's `nobody`, never root: the namespace also maps root to root so that bwrap can
build the filesystem from root's files (as `nobody` it could not reach lambdarun's 0700 scratch directory), and
init, started as that root with CAP_SETUID, SETGID and SETPCAP only, drops to 993:990 and every capability before
anything else runs. Files inside keep their owners: what the function must read must be readable by others, as
on Lambda.

The filesystem is Lambda's: /var/task, /opt, /var/runtime, /var/lang read-only, /tmp writable, /usr and the /lib
directories read-only, /etc with only what programs need (etc.py), /proc and a minimal /dev; /bin/sh is bash, as on
Amazon Linux. Nothing else of the host: no /home, /root, host /tmp or /var, no /usr/local (where pip puts
packages, lambdarun's perhaps), no lambdarun installation.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import etc
from .init_binary import InitUnavailable, init_binary
from .spec import SandboxSpec

INIT_PATH = "/var/rapid/init"  # where Lambda's own init lives
API_PORT = 9001
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # each a link into /usr, or a directory, on the host
NOBODY = 65534


@dataclass(frozen=True)
class Descriptors:
    """Descriptor numbers the command refers to, open in the process that runs it."""

    control: int  # the init's end of the control socket
    info: int  # bwrap writes the host pid of init here
    userns: int  # a free number: init userns-exec puts the user namespace there for bwrap
    files: dict[str, int]  # path in the sandbox -> memfd with its content
    cgroup_procs: tuple[int, ...] = ()  # one `cgroup.procs` per hierarchy, each child joins all


def host_identity() -> tuple[int, int]:
    """The host user the sandbox's user is: ourselves, or `nobody` when we are root (never root itself)."""
    if os.geteuid() == 0:
        return NOBODY, NOBODY
    return os.geteuid(), os.getegid()


def identity_args(init: Path, userns_fd: int) -> tuple[list[str], list[str], list[str]]:
    """How the user namespace is made, how bwrap starts init in it, and what init must do (see above)."""
    uid, gid = host_identity()
    if os.geteuid() == 0:
        maps = [f"0 0 1,{etc.UID} {uid} 1", f"0 0 1,{etc.GID} {gid} 1", "allow"]
        start = ["--uid", "0", "--gid", "0", "--cap-drop", "ALL",
                 "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]  # fmt: skip
        switch = ["--user", f"{etc.UID}:{etc.GID}"]
    else:
        maps = [f"{etc.UID} {uid} 1", f"{etc.GID} {gid} 1", "deny"]
        start, switch = ["--uid", str(etc.UID), "--gid", str(etc.GID), "--cap-drop", "ALL"], []
    userns = [str(init), "userns-exec", str(userns_fd), *maps, "--"]
    return userns, ["--userns", str(userns_fd), *start], switch


def binds(spec: SandboxSpec) -> list[tuple[Path, str, bool]]:
    """Every host path of the spec: where it goes, and whether it is writable."""
    tmp = [(spec.tmp, "/tmp", True)] if spec.tmp_bytes is None else []
    return [(spec.task, "/var/task", False), (spec.opt, "/opt", False), (spec.runtime, "/var/runtime", False),
            (spec.lang, "/var/lang", False), *tmp,
            *((b.source, b.target, b.writable) for b in spec.binds)]  # fmt: skip


def command(spec: SandboxSpec, init: Path, bwrap: str, fds: Descriptors) -> list[str]:
    userns, start, switch = identity_args(init, fds.userns)
    argv = [*userns, bwrap, *start,
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--hostname", spec.hostname,
            "--die-with-parent", "--as-pid-1", "--new-session", "--info-fd", str(fds.info)]  # fmt: skip
    mounts = [(str(source), target, writable) for source, target, writable in [*binds(spec), (init, INIT_PATH, False)]]
    argv += _system()
    # bwrap 0.8 makes the missing parents of a target mode 0700, which the function could not traverse.
    targets = [*fds.files, *etc.host_entries(), etc.AMAZON_CA_BUNDLE, *(target for _, target, _ in mounts)]
    argv += [arg for path in _parents(targets) for arg in ("--dir", path)]
    argv += _etc(fds.files)
    for source, target, writable in mounts:
        argv += ["--bind" if writable else "--ro-bind", source, target]
    if spec.tmp_bytes is not None:
        argv += ["--perms", "1777", "--size", str(spec.tmp_bytes), "--tmpfs", "/tmp"]
    for path in (*_own_installation(), *spec.masks):
        argv += ["--tmpfs", path, "--remount-ro", path]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/"]  # /dev/shm would be memory outside limits
    serve = [INIT_PATH, "serve", str(fds.control), "--listen", str(API_PORT), *switch]
    for fd in fds.cgroup_procs:
        serve += ["--cgroup", str(fd)]
    if spec.nofile is not None:
        serve += ["--nofile", str(spec.nofile)]
    if spec.nproc is not None:
        serve += ["--nproc", str(spec.nproc)]
    return [*argv, "--", *serve]


def _system() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr", "--tmpfs", "/usr/local", "--remount-ro", "/usr/local"]
    for name in ROOT_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    sh, bash = os.path.realpath("/bin/sh"), shutil.which("bash", path="/usr/bin:/bin")
    if bash is not None and os.path.basename(sh) != "bash":
        # Bound over what /bin/sh resolves to (dash on Debian): a mount cannot replace the link itself.
        args += ["--ro-bind", os.path.realpath(bash), sh]
    return [*args, "--proc", "/proc", "--dev", "/dev"]


def _etc(files: dict[str, int]) -> list[str]:
    args = []
    for path in etc.host_entries():
        args += ["--ro-bind", path, path]
    for path, fd in files.items():
        args += ["--perms", "0444", "--ro-bind-data", str(fd), path]
    zone = etc.utc_zone()
    if zone is not None:
        args += ["--symlink", zone, "/etc/localtime"]
    if os.path.exists(etc.CA_BUNDLE):
        args += ["--symlink", etc.CA_BUNDLE, etc.AMAZON_CA_BUNDLE]
    return args


def _parents(targets: list[str]) -> list[str]:
    """Every directory above the targets, outermost first, but those of the host's own trees."""
    found = {str(parent) for target in targets for parent in Path(target).parents}
    kept = (p for p in found if p != "/" and not p.startswith(("/usr", "/proc", "/dev")))
    return sorted(kept, key=lambda p: (p.count("/"), p))


def _own_installation() -> list[str]:
    """lambdarun's own package, when it lies under a directory the sandbox sees (a system-wide install)."""
    package = Path(__file__).resolve().parents[1]
    visible = [Path("/usr")] + [Path(f"/{name}").resolve() for name in ROOT_DIRS if os.path.isdir(f"/{name}")]
    if any(package.is_relative_to(root) for root in visible) and not package.is_relative_to("/usr/local"):
        return [str(package)]
    return []


@functools.cache
def unavailable() -> str | None:
    """Why no sandbox can be built here (bwrap, a compiler for init, user namespaces), or None."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        init = init_binary()
    except InitUnavailable as exc:
        return str(exc)
    userns, start, _ = identity_args(init, 3)
    probe = [*userns, bwrap, *start, "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc",
             "--", "true"]  # fmt: skip
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if result.returncode != 0:
        return f"user namespaces are not permitted here ({result.stderr.strip() or result.returncode})"
    return None
