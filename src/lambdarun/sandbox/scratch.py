"""Scratch directories: where an environment keeps its files on the host (unpacked code and layers, /tmp, …).

Each is `lambdarun-scratch-<random>` in the temp directory, owned through an exclusive `flock` held on the
directory itself for the environment's whole life. The kernel drops the lock when its holder dies, whatever PID
namespace either side is in, so `sweep()` removes exactly the directories whose owner has gone (a SIGKILLed
lambdarun): it takes the lock before removing anything, and a live owner's lock cannot be taken. (`kill(pid, 0)`
would be wrong across PID namespaces and after a PID is reused.)

Removal never leaves the directory's own filesystem: a mount point under it (a /tmp image mounted there, a bind
mount) is left in place with everything under it, and so are the directories that contain it; unmounting is the
job of whoever mounted. Mounts made inside the sandbox's own mount namespace are not visible here and vanish with
it. Nothing is followed: symlinks are removed as links.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
import time
import weakref
from pathlib import Path

PREFIX = "lambdarun-scratch-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Scratch:
    """A scratch directory and the lock that says it is in use. `remove()` (or the end of the process, or the
    object's collection) deletes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._remove = weakref.finalize(self, _remove_locked, path, fd, os.getpid())

    @classmethod
    def create(cls, root: Path | None = None) -> Scratch:
        """A fresh directory under `root` (the temp directory by default), locked for this process's use."""
        parent = str(root) if root is not None else tempfile.gettempdir()
        for _ in range(10):
            path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
            try:
                fd = os.open(path, _DIR_FLAGS)
            except FileNotFoundError:
                continue  # a sweep took it before it was locked
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _still_at(fd, path):
                    return cls(path, fd)
            except BlockingIOError:
                pass  # a sweep holds it and is removing it
            os.close(fd)
        raise OSError(f"could not create a scratch directory in {parent}")

    @property
    def removed(self) -> bool:
        return not self._remove.alive

    def remove(self) -> None:
        """Delete the directory (idempotent). Mount points under it stay, see the module's docstring."""
        self._remove()


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the scratch directories in `root` (the temp directory by default) whose owner is gone, among this
    user's; returns those it removed."""
    parent = str(root) if root is not None else tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            fd = os.open(entry.path, _DIR_FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # its owner is alive
            continue
        path = Path(entry.path)
        if not _still_at(fd, path):
            os.close(fd)
        elif _remove_locked(path, fd, os.getpid()):
            removed.append(path)
    return removed


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove `name` in the directory `dir_fd`, a whole tree if it is a directory, following nothing."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = _open_dir(dir_fd, name)
    try:
        _clear(fd, name, st.st_dev, set())
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _remove_locked(path: Path, fd: int, owner: int) -> bool:
    """Delete the directory whose descriptor `fd` holds the lock, then release it. True when nothing is left."""
    if os.getpid() != owner:
        return False  # a forked child exiting: the directory is its parent's
    try:
        dev = os.fstat(fd).st_dev
        mounts = _mount_points(str(path))
        for attempt in range(3):
            # Processes being killed may still create files: try again briefly before giving up.
            if _clear(fd, str(path), dev, mounts):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(path)
                return True
            if any(point.startswith(f"{path}/") for point in mounts):
                return False
            time.sleep(0.05 * (attempt + 1))
        return False
    except OSError:
        return False
    finally:
        os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    """Whether `path` is still the directory `fd` was opened on (a sweep may have removed it meanwhile)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _clear(dir_fd: int, path: str, dev: int, mounts: set[str]) -> bool:
    """Empty the directory `dir_fd` (at `path`) without crossing into another mount; True when it is empty."""
    complete = True
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        child = f"{path}/{entry.name}"
        try:
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.name, dir_fd=dir_fd)
                continue
            if entry.stat(follow_symlinks=False).st_dev != dev or child in mounts:
                complete = False  # a mount point: not ours to empty
                continue
            fd = _open_dir(dir_fd, entry.name)
            try:
                emptied = _clear(fd, child, dev, mounts)
            finally:
                os.close(fd)
            if emptied:
                os.rmdir(entry.name, dir_fd=dir_fd)
            else:
                complete = False
        except FileNotFoundError:
            continue
        except OSError:
            complete = False
    return complete


def _open_dir(dir_fd: int, name: str) -> int:
    """Open a subdirectory to empty it, making it writable first if it is not (a function may `chmod 000` a
    directory of its /tmp). The O_PATH handle needs no permission and never follows a symlink."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.chmod(f"/proc/self/fd/{handle}", 0o700)
        finally:
            os.close(handle)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_mode & 0o300 != 0o300:  # removing entries needs write and search permission
            os.fchmod(fd, 0o700)
    return fd


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mount_points(under: str) -> set[str]:
    """The mount points at or below `under` in this process's mount namespace (same-device bind mounts included,
    which a device check alone would miss)."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return set()
    points = set()
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == under or point.startswith(f"{under}/"):
                points.add(point)
    return points


__all__ = ["PREFIX", "Scratch", "remove_entry", "sweep"]
