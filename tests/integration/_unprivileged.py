"""Running lambdarun as root and as an ordinary user created by the test set-up.

The interpreter the tests run in may live where that user cannot go (pyenv under /root), so the user runs
lambdarun with the system's python3 in a venv holding lambdarun's dependencies, made once in /var/tmp. A case
skips, with the reason, when the user, the venv or its dependencies cannot be had.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "lambdarun-test"
SRC = str(Path(__file__).resolve().parents[2] / "src")
VENV = Path("/var/tmp/lambdarun-test-venv")
DEPENDENCIES = ("httptools", "click")


@dataclass(frozen=True)
class Identity:
    """Who runs lambdarun: `command(argv)` wraps a Python command line (argv[0] is "python") for them."""

    name: str
    python: str
    uid: int

    def command(self, argv: list[str]) -> list[str]:
        python = [self.python, *argv[1:]]
        return python if self.uid == os.geteuid() else ["runuser", "-u", USER, "--", *python]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "VIRTUAL_ENV"))}
        return {**env, "PYTHONPATH": SRC, **extra}

    def private_dir(self, prefix: str) -> Path:
        """A fresh directory in /tmp that this identity owns (pytest's tmp_path is root's alone)."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        os.chown(path, self.uid, -1)
        return path


def current() -> Identity:
    """Whoever runs the tests (root, on the machines these tests are meant for)."""
    return Identity("root" if os.geteuid() == 0 else "invoker", sys.executable, os.geteuid())


def ordinary_user() -> Identity:
    if os.geteuid() != 0:
        pytest.skip("creating the unprivileged test user needs root")
    if shutil.which("runuser") is None:
        pytest.skip("runuser (util-linux) is not installed")
    try:
        uid = pwd.getpwnam(USER).pw_uid
    except KeyError:
        if subprocess.run(["useradd", "-m", USER], capture_output=True).returncode != 0:
            pytest.skip(f"could not create the user {USER}")
        uid = pwd.getpwnam(USER).pw_uid
    python = _venv_python()
    return Identity(USER, python, uid)


def _venv_python() -> str:
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import " + ", ".join(DEPENDENCIES)]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system python3 for the unprivileged user")
    steps = [[system, "-m", "venv", "--clear", str(VENV)], [str(python), "-m", "pip", "install", "-q", *DEPENDENCIES]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"could not make a venv for the unprivileged user: {done.stderr.strip()[-300:]}")
    subprocess.run(["chmod", "-R", "a+rX", str(VENV)], check=True)
    return str(python)


@pytest.fixture(params=["root", "user"])
def identity(request: pytest.FixtureRequest) -> Identity:
    """Each case twice: as root, and as the ordinary user."""
    return current() if request.param == "root" else ordinary_user()
