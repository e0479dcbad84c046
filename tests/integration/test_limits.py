"""A sandbox's limits (issue 9, SPEC 5.2): memory, processes, open files, /tmp, freezing, and nothing left behind.

The sandbox modules are driven directly, with real processes (see _limits_driver.py), as root and as an ordinary
user created by the set-up: without a cgroup (the rlimit fallback and a tmpfs /tmp), and in a cgroup v1 subtree
that root delegates to them.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lambdarun.sandbox import cgroups
from lambdarun.sandbox.limits import Limits

DRIVER = str(Path(__file__).with_name("_limits_driver.py"))
SRC = str(Path(__file__).resolve().parents[2] / "src")
USER = "lambdarun-test"
VENV = Path("/var/tmp/lambdarun-test-venv")  # the system python3 with lambdarun's dependencies, for USER


@dataclass
class Runner:
    """Runs a driver scenario as someone, optionally inside a cgroup given as fds of `cgroup.procs`."""

    name: str
    python: str
    uid: int | None = None  # None: as whoever runs the tests
    join: list[int] = field(default_factory=list)

    def start(self, scenario: str, **kwargs: Any) -> subprocess.Popen[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SRC}
        return subprocess.Popen(
            [self.python, DRIVER, scenario, json.dumps(kwargs)],
            env=env,
            cwd="/",
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            user=self.uid,
            group=self.uid,
            extra_groups=[] if self.uid is not None else None,
            preexec_fn=(lambda: cgroups.join(self.join)) if self.join else None,
        )

    def run(self, scenario: str, **kwargs: Any) -> dict[str, Any]:
        process = self.start(scenario, **kwargs)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{scenario} as {self.name}: {err}"
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        result["stderr"] = err
        if "skip" in result:
            pytest.skip(result["skip"])
        return result


def _root() -> Runner:
    if os.geteuid() != 0:
        pytest.skip("this case runs as root, and the tests do not")
    return Runner("root", sys.executable)


def _user() -> Runner:
    if os.geteuid() != 0:
        pytest.skip("creating the ordinary test user needs root")
    try:
        uid = pwd.getpwnam(USER).pw_uid
    except KeyError:
        if subprocess.run(["useradd", "-m", USER], capture_output=True).returncode != 0:
            pytest.skip(f"could not create the user {USER}")
        uid = pwd.getpwnam(USER).pw_uid
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import httptools, click"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        system = shutil.which("python3", path="/usr/bin:/bin")
        if system is None:
            pytest.skip("no system python3 for the ordinary user (the tests' own may be under /root)")
        install = [str(python), "-m", "pip", "install", "-q", "httptools", "click"]
        for step in ([system, "-m", "venv", "--clear", str(VENV)], install):
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"could not make a venv for the ordinary user: {done.stderr.strip()[-300:]}")
        subprocess.run(["chmod", "-R", "a+rX", str(VENV)], check=True)
    return Runner(USER, str(python), uid)


@pytest.fixture
def root() -> Runner:
    runner = _root()
    try:
        cgroups.create(Limits(128)).close()
    except cgroups.CgroupUnavailable as exc:
        pytest.skip(f"root cannot make a cgroup here: {exc}")
    return runner


@pytest.fixture
def user() -> Runner:
    """The ordinary user, with no cgroup of their own: the fallback."""
    return _user()


@pytest.fixture
def delegated_user() -> Iterator[Runner]:
    """The ordinary user, started in a cgroup v1 subtree that root made and handed to them (v1 names no
    delegation of its own: the directory, its `cgroup.procs` and `tasks` are chowned)."""
    runner = _user()
    mounts = [m for m in cgroups._mounts() if m.version == 1]
    if not any("memory" in m.controllers for m in mounts):
        pytest.skip("no cgroup v1 memory hierarchy to delegate (a cgroup v2 machine delegates through systemd)")
    made: list[Path] = []
    fds: list[int] = []
    try:
        for mount in mounts:
            path = mount.parent / f"delegated-{uuid.uuid4().hex[:8]}"  # not lambdarun-…: a sweep must leave it
            path.mkdir()
            made.append(path)
            for name in ("", "cgroup.procs", "tasks"):
                os.chown(path / name, runner.uid, -1)
            fds.append(os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        runner.name, runner.join = f"{USER} (delegated cgroup)", fds
        yield runner
    finally:
        for fd in fds:
            os.close(fd)
        for path in made:
            path.rmdir()  # fails the test if anything was left in it


@pytest.fixture(params=["root", "delegated user"])
def in_cgroup(request: pytest.FixtureRequest) -> Runner:
    runner: Runner = request.getfixturevalue(request.param.replace(" ", "_"))
    return runner


@pytest.fixture(params=["root", "user"])
def anyone(request: pytest.FixtureRequest) -> Runner:
    runner: Runner = request.getfixturevalue("root" if request.param == "root" else "user")
    return runner


# -- memory


def test_an_allocation_over_the_memory_size_is_oom_killed_and_reported_once(in_cgroup: Runner) -> None:
    seen = in_cgroup.run("oom", memory_mb=128, allocate_mb=200)
    assert seen["returncode"] == -signal.SIGKILL
    assert seen["printed"] == ""
    assert seen["oom_killed"] is True
    assert seen["oom_killed_again"] is False  # reset by the first call
    assert seen["peak_mb"] == 128  # as Lambda reports an OOM: Max Memory Used is the memory size


def test_max_memory_used_of_a_process_holding_100_mb_leaves_out_its_page_cache(in_cgroup: Runner) -> None:
    seen = in_cgroup.run("peak", hold_mb=100, cache_mb=200)
    assert 100 <= seen["vmhwm_mb"] < 128
    # The process wrote 200 MB to a file first: all page cache, charged to the cgroup, and not counted.
    assert abs(seen["peak_mb"] - seen["vmhwm_mb"]) <= seen["vmhwm_mb"] * 0.1
    assert seen["peak_after_exit_mb"] == seen["peak_mb"]  # a high-water mark


# -- /tmp


def test_writing_past_the_ephemeral_storage_fails_with_enospc(anyone: Runner) -> None:
    if anyone.uid is None:
        seen = anyone.run("tmp_write", memory_mb=128, ephemeral_mb=512, write_mb=600)
        assert seen["oom_killed"] is False
    else:
        seen = anyone.run("tmpfs_write", ephemeral_mb=512, write_mb=600)
    assert seen["outcome"] == "ENOSPC"
    assert 512 <= seen["written_mb"] < 600


def test_tmp_does_not_count_against_memory(anyone: Runner) -> None:
    if anyone.uid is None:
        # 400 MB through the loop-mounted /tmp from a process limited to 128 MB: page cache, reclaimed.
        seen = anyone.run("tmp_write", memory_mb=128, ephemeral_mb=512, write_mb=400)
        assert seen["returncode"] == 0 and seen["oom_killed"] is False
        assert seen["peak_mb"] < 64
    else:
        # Without a cgroup nothing limits memory, and the tmpfs that bwrap mounts charges nobody's limit.
        seen = anyone.run("tmpfs_write", ephemeral_mb=512, write_mb=400)
        assert seen["host_path"] is None and seen["tmpfs_bytes"] == 512 * 1024 * 1024
    assert (seen["outcome"], seen["written_mb"]) == ("ok", 400)


# -- processes and open files


@pytest.mark.parametrize("how", ["root", "delegated user", "user"])
def test_the_1025th_process_or_thread_fails_to_start(how: str, request: pytest.FixtureRequest) -> None:
    runner: Runner = request.getfixturevalue(how.replace(" ", "_"))
    # root and the delegated user: the pids cgroup; the user without one: RLIMIT_NPROC in a user namespace.
    seen = runner.run("tasks", in_cgroup=how != "user")
    assert seen["tasks"] == 1024
    assert seen["threads_started"] == 1023
    assert seen["fork"] == "BlockingIOError"


def test_the_1025th_open_file_fails(anyone: Runner) -> None:
    seen = anyone.run("files")
    assert seen == {"open": 1024, "highest_fd": 1023, "error": "EMFILE", "stderr": ""}


# -- freezing


def test_freezing_stops_a_child_in_a_session_of_its_own(in_cgroup: Runner) -> None:
    seen = in_cgroup.run("freeze")
    assert seen["running"] > 10
    assert seen["frozen"] == 0
    assert set(seen["states"].values()) == {"T"}
    assert seen["thawed"] > 10


# -- nothing left behind


def test_close_leaves_no_cgroup_mount_or_loop_device(in_cgroup: Runner) -> None:
    seen = in_cgroup.run("close", with_storage=in_cgroup.uid is None)
    assert seen["left"] == [] and len(seen["cgroup_paths"]) >= 1
    assert seen["returncode"] == -signal.SIGKILL  # what still ran in the cgroup was killed
    if in_cgroup.uid is None:
        assert seen["device"] is not None and seen["device"].startswith("/dev/loop")
        assert seen["mounted"] is False and seen["loop_attached"] is False
        assert seen["scratch_left"] == ["tmp"]  # the empty mount point; the scratch dir's owner removes it


@pytest.mark.parametrize("scratch_swept_first", [False, True])
def test_a_sweep_removes_what_a_sigkilled_lambdarun_left_and_nothing_live(
    root: Runner, scratch_swept_first: bool
) -> None:
    live = cgroups.create(Limits(128))
    orphan = root.start("orphan", memory_mb=128)
    try:
        assert orphan.stdout is not None
        left = json.loads(orphan.stdout.readline())
        orphan.kill()
        orphan.wait()
        paths = [p.parent / left["name"] for p in live.paths]
        assert all(p.is_dir() for p in paths) and _mounted(left["scratch"])
        if scratch_swept_first:  # the scratch dir's own sweep came first: the image is deleted, still mounted
            shutil.rmtree(left["scratch"], ignore_errors=True)

        swept = root.run("sweep")

        assert left["device"] in swept["storage"]
        assert not _mounted(left["scratch"])
        assert not Path(f"/sys/block/{left['device'][5:]}/loop").exists()
        assert sorted(swept["cgroups"]) == sorted(str(p) for p in paths)
        assert not any(p.exists() for p in paths)
        assert not Path(f"/proc/{left['pid']}").exists() or _zombie(left["pid"])
        assert all(p.is_dir() for p in live.paths)  # a live owner's cgroup stays
    finally:
        live.close()
        shutil.rmtree(left["scratch"], ignore_errors=True)


def test_a_sweep_detaches_a_tmp_image_attached_but_never_mounted(root: Runner) -> None:
    left = root.run("attached_unmounted")
    try:
        assert Path(f"/sys/block/{left['device'][5:]}/loop").exists()

        swept = root.run("sweep")

        assert left["device"] in swept["storage"]
        assert not Path(f"/sys/block/{left['device'][5:]}/loop").exists()
    finally:
        subprocess.run(["losetup", "--detach", left["device"]], capture_output=True)
        shutil.rmtree(left["scratch"], ignore_errors=True)


def _mounted(path: str) -> bool:
    return any(f" {path}/" in line for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# -- without a cgroup


def test_without_a_cgroup_the_fallback_says_once_what_is_not_enforced(user: Runner) -> None:
    seen = user.run("unavailable")
    assert seen["created"] is False
    assert seen["stderr"].count("lambdarun: no cgroup for the sandbox") == 1  # announced twice, printed once
    assert "memory is not limited" in seen["line"]
    assert seen["tmpfs_bytes"] == 512 * 1024 * 1024  # /tmp: a tmpfs of the size, for bwrap to mount
