"""An environment's /tmp: private, writable, the size of its ephemeral storage, and not part of its memory.

Past the size, writes fail with ENOSPC (SPEC 5.2). The mechanism depends on who runs lambdarun:
- root: an ext4 image of the size, sparse, in the environment's scratch dir, loop-mounted there and bound at /tmp.
  Not a tmpfs: a tmpfs charges its pages to the writer's memory cgroup as shmem, which cannot be reclaimed without
  swap, so 400 MB written to /tmp at 128 MB of memory is OOM-killed. Through the loop mount the same write
  succeeds: file pages are charged too, but they are page cache and get reclaimed. The loop device does direct
  I/O on the image, so the image's own pages are not cached a second time (and 400 MB go in 0.2 s, not 0.9).
  The image holds an `flock` while it is mounted; `sweep()` unmounts the images whose owner died (SIGKILL), and
  the loop device goes with its last mount (autoclear). Set-up costs 20-40 ms (bench/limits_cost.py).
- anyone else: a tmpfs of the size, which bwrap mounts in the sandbox (`--size BYTES --tmpfs /tmp`) at no set-up
  cost. Without a memory cgroup (the usual case: cgroups.py) nothing is charged. In a delegated cgroup it is, and
  the storage's `note` says so: a disk-backed, size-limited /tmp without root would take a FUSE filesystem
  (e.g. fuse2fs on an image), which is not built.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "lambdarun-tmp.img"  # the name the sweep recognises among loop devices' backing files
MB = 1024 * 1024
TMPFS_CHARGED = "/tmp is a tmpfs, and what it holds counts against the function's memory (no loop mount without root)"


class StorageError(OSError):
    """The loop-mounted /tmp could not be made; the message says what failed."""


@dataclass
class EphemeralStorage:
    size_mb: int
    host_path: Path | None  # a directory to bind at /tmp (loop-mounted ext4) ...
    tmpfs_bytes: int | None  # ... or None, and the sandbox mounts a tmpfs of this size at /tmp
    note: str | None = None  # what this mechanism does not give, when it falls short of Lambda's /tmp
    _image: Path | None = field(default=None, repr=False)
    _lock: int | None = field(default=None, repr=False)

    @classmethod
    def create(cls, scratch: Path, size_mb: int, memory_cgroup: bool = False) -> EphemeralStorage:
        """Make /tmp for an environment whose scratch dir is `scratch`: loop-mounted at `scratch/tmp` as root,
        else a tmpfs size for the sandbox to mount; `memory_cgroup`: whether the sandbox has one (for the note).
        Raises StorageError when root cannot mount; `tmpfs()` is the fallback then."""
        if os.geteuid() != 0:
            return cls.tmpfs(size_mb, TMPFS_CHARGED if memory_cgroup else None)
        return cls._loop(scratch, size_mb)

    @classmethod
    def tmpfs(cls, size_mb: int, note: str | None = None) -> EphemeralStorage:
        return cls(size_mb, None, size_mb * MB, note)

    @classmethod
    def _loop(cls, scratch: Path, size_mb: int) -> EphemeralStorage:
        for tool in ("mkfs.ext4", "mount", "umount", "losetup"):
            if shutil.which(tool) is None:
                raise StorageError(f"{tool} is not installed (Debian packages e2fsprogs and mount)")
        image, mountpoint = scratch / IMAGE, scratch / "tmp"
        mountpoint.mkdir(exist_ok=True)
        lock = os.open(image, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        storage = cls(size_mb, mountpoint, None, None, image, lock)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # ext4's own tables take ~4% of a small image; pad it so that `size_mb` is what the function can write.
            os.ftruncate(lock, (size_mb + size_mb // 25 + 4) * MB)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard",
                 str(image))  # fmt: skip
            # Direct I/O set at attach (switching it on a live device costs ~20 ms more); detaching the mounted
            # device only marks it to go with its last mount (autoclear).
            device = _run("losetup", "--find", "--show", "--direct-io=on", str(image)).strip()
            try:
                _run("mount", "-t", "ext4", "-o", "nosuid,nodev", device, str(mountpoint))
            finally:
                subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)
            os.chmod(mountpoint, 0o1777)
            with contextlib.suppress(OSError):
                os.rmdir(mountpoint / "lost+found")  # Lambda's /tmp starts empty
        except BaseException:
            storage.close()
            raise
        return storage

    def mount_args(self, target: str = "/tmp") -> list[str]:
        """bwrap arguments that put this storage at `target` in the sandbox."""
        if self.host_path is not None:
            return ["--bind", str(self.host_path), target]
        assert self.tmpfs_bytes is not None
        return ["--size", str(self.tmpfs_bytes), "--perms", "1777", "--tmpfs", target]

    def close(self) -> None:
        """Unmount and delete the image (the loop device detaches with the mount). Call it once the sandbox's
        processes are gone, and before the scratch dir is removed: removing it first would empty /tmp through
        the mount and leave the mount behind."""
        if self._lock is None:
            return
        assert self._image is not None and self.host_path is not None
        try:
            device = _mounted_device(self.host_path)
            if device is not None:
                _unmount(self.host_path)
                _wait_detached(device)
            self._image.unlink(missing_ok=True)
        finally:
            os.close(self._lock)
            self._lock = None


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StorageError(f"{argv[0]} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _unmount(path: Path | str) -> None:
    """Unmount; lazily when something still holds it open, so that nothing is left mounted in any case."""
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        _run("umount", "--lazy", str(path))


def _wait_detached(device: str, timeout: float = 2.0) -> None:
    """Autoclear detaches a loop device after its last close, in a kernel worker: wait for it, so that nothing is
    left when close() or sweep() returns."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/sys/block/{os.path.basename(device)}/loop") and time.monotonic() < deadline:
        time.sleep(0.001)


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, source) of every mount in lambdarun's mount namespace, innermost last."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            found.append((_unescape(fields[4]), fields[sep + 2]))
    return found


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), path)


def _mounted_device(mountpoint: Path) -> str | None:
    target = os.path.realpath(mountpoint)
    for point, source in reversed(_mountinfo()):
        if point == target:
            return source if source.startswith("/dev/loop") else None
    return None


def sweep() -> list[str]:
    """Unmount the /tmp images of lambdarun processes that died without closing them; returns the loop devices
    freed. Run it before scratch dirs are swept (see close())."""
    freed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/sys/block"):
            try:
                backing = Path(f"/sys/block/{entry.name}/loop/backing_file").read_text().rstrip("\n")
            except OSError:
                continue
            deleted = backing.endswith(" (deleted)")
            image = backing.removesuffix(" (deleted)")
            if os.path.basename(image) != IMAGE or (not deleted and _owned(image)):
                continue
            device = f"/dev/{entry.name}"
            for point, source in reversed(_mountinfo()):
                if source == device:
                    with contextlib.suppress(OSError):
                        _unmount(point)
            # Attached but never mounted (killed in between): no autoclear to count on.
            subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)
            _wait_detached(device)
            if not deleted:
                with contextlib.suppress(OSError):
                    os.unlink(image)
            freed.append(device)
    return freed


def _owned(image: str) -> bool:
    """Whether a live lambdarun holds the image's lock."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
