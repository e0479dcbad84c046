"""Scratch directories are owned through a lock: a sweep removes only those whose owner is gone, removal follows
no symlink and never enters another mount."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdarun.sandbox.scratch import PREFIX, Scratch, remove_entry, sweep

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "tmp"
    path.mkdir()
    return path


def python(code: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """A Python process running `code` with this checkout's lambdarun, its stdout piped."""
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [*prefix, sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


OWNER = """
    import sys, time
    from pathlib import Path
    from lambdarun.sandbox.scratch import Scratch
    s = Scratch.create(Path(sys.argv[1]))
    (s.path / "file").write_text("in use")
    print(s.path, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def owner(root: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process that owns a scratch directory in `root` until it is killed."""
    process = python(OWNER, str(root))
    try:
        assert process.stdout is not None
        yield process, Path(process.stdout.readline().strip())
    finally:
        process.kill()
        process.wait()


def test_create_makes_a_private_directory_whose_lock_is_held(root: Path) -> None:
    scratch = Scratch.create(root)

    assert scratch.path.parent == root and scratch.path.name.startswith(PREFIX)
    assert scratch.path.stat().st_mode & 0o777 == 0o700
    fd = os.open(scratch.path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
        scratch.remove()


def test_sweep_never_removes_the_directory_of_a_live_owner(
    root: Path, owner: tuple[subprocess.Popen[str], Path]
) -> None:
    _, path = owner

    assert sweep(root) == []

    assert (path / "file").read_text() == "in use"


def test_sweep_removes_the_directory_of_an_owner_killed_without_cleaning_up(
    root: Path, owner: tuple[subprocess.Popen[str], Path]
) -> None:
    process, path = owner
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert sweep(root) == [path]

    assert not path.exists()


def test_sweep_leaves_other_directories_alone(root: Path) -> None:
    (root / "lambdarun-1234-legacy").mkdir()
    (root / "unrelated").mkdir()
    (root / f"{PREFIX}a-file").write_text("not a directory")
    (root / f"{PREFIX}a-link").symlink_to(root / "unrelated")

    assert sweep(root) == []

    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["lambdarun-1234-legacy", "unrelated", f"{PREFIX}a-file", f"{PREFIX}a-link"]
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")
def test_an_owner_in_another_pid_namespace_keeps_its_directory(root: Path) -> None:
    # The owner's PIDs mean nothing here (it is PID 1 in its namespace): only the lock tells that it is alive.
    prefix = ("unshare", "--pid", "--fork") if os.geteuid() == 0 else ("unshare", "--user", "--pid", "--fork")
    process = python(OWNER, str(root), prefix=prefix)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line:
            pytest.skip("unshare could not make a PID namespace here")
        path = Path(line)

        assert sweep(root) == []
        assert (path / "file").read_text() == "in use"
    finally:
        process.kill()
        process.wait()


def test_remove_deletes_everything_without_following_symlinks(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    scratch = Scratch.create(root)
    (scratch.path / "tmp" / "deep" / "er").mkdir(parents=True)
    (scratch.path / "tmp" / "deep" / "er" / "f").write_text("x")
    (scratch.path / "tmp" / "link").symlink_to(outside)
    (scratch.path / "tmp" / "file-link").symlink_to(outside / "keep")

    scratch.remove()

    assert scratch.removed and not scratch.path.exists()
    assert (outside / "keep").read_text() == "x"
    scratch.remove()  # again: nothing to do


def test_remove_deletes_directories_a_function_made_unreadable(root: Path) -> None:
    scratch = Scratch.create(root)
    locked = scratch.path / "tmp" / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_text("x")
    (locked / "inner").chmod(0o500)
    locked.chmod(0)

    scratch.remove()

    assert not scratch.path.exists()


def test_a_scratch_directory_is_removed_when_its_process_exits_without_remove(root: Path) -> None:
    process = python(
        """
        import sys
        from pathlib import Path
        from lambdarun.sandbox.scratch import Scratch
        s = Scratch.create(Path(sys.argv[1]))
        print(s.path)
        """,
        str(root),
    )
    out, _ = process.communicate(timeout=30)

    assert not Path(out.strip()).exists()


def test_a_forked_child_does_not_remove_its_parents_directory(root: Path) -> None:
    scratch = Scratch.create(root)
    pid = os.fork()
    if pid == 0:
        scratch.remove()
        os._exit(0)
    os.waitpid(pid, 0)

    assert scratch.path.exists()
    scratch.remove()


def test_remove_entry_removes_a_tree_and_only_unlinks_symlinks(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep").write_text("x")
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_text("x")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "outside")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_entry(fd, "d")
    finally:
        os.close(fd)

    assert not (tmp_path / "d").exists()
    assert (tmp_path / "outside" / "keep").exists()


MOUNTED = """
    import json, subprocess, sys
    from pathlib import Path
    from lambdarun.sandbox.scratch import Scratch
    root, outside = Path(sys.argv[1]), Path(sys.argv[2])
    s = Scratch.create(root)
    (s.path / "plain").mkdir()
    (s.path / "plain" / "f").write_text("x")
    image = s.path / "tmp"
    image.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(image)], check=True)
    (image / "on-the-mount").write_text("x")
    bind = s.path / "a" / "bind"
    bind.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(outside), str(bind)], check=True)
    s.remove()
    print(json.dumps({
        "tmpfs_file": (image / "on-the-mount").exists(),
        "bound_file": (outside / "keep").exists(),
        "plain": (s.path / "plain").exists(),
        "left": sorted(str(p.relative_to(s.path)) for p in s.path.rglob("*")),
    }))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")
def test_remove_never_enters_a_mount_point_under_the_directory(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    prefix = ("unshare", "--mount") if os.geteuid() == 0 else ("unshare", "--user", "--map-root-user", "--mount")
    process = python(MOUNTED, str(root), str(outside), prefix=prefix)
    out, _ = process.communicate(timeout=30)
    if process.returncode != 0:
        pytest.skip("cannot mount in a private mount namespace here")

    seen = json.loads(out)
    assert seen["tmpfs_file"] and seen["bound_file"], seen
    assert not seen["plain"]
    # The mount points and the directories that hold them stay; whoever mounted unmounts.
    assert seen["left"] == ["a", "a/bind", "a/bind/keep", "tmp", "tmp/on-the-mount"]
