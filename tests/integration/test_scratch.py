"""An environment's files on the host: nothing is left after a run, a Ctrl-C, or a second Ctrl-C during the
shutdown, and a second lambdarun never deletes the files of an environment that is still running. Each case runs
the real `lambdarun invoke` as root and as an ordinary user."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _extension_support import FIXTURES, MARKER_VAR, assert_no_process_left, options
from _unprivileged import Identity, identity  # noqa: F401  (the fixture)

WAIT = 30.0  # upper bound for anything awaited; a passing run never waits this long

BOOTSTRAP = """#!/bin/bash
# A custom runtime that sleeps $SLEEP seconds on each event before answering it.
set -euo pipefail
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation"
while true; do
  curl -sS -D /tmp/headers -o /tmp/event "$api/next"
  id=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' /tmp/headers | cut -d' ' -f2 | tr -d '\\r')
  echo "handling $id"
  sleep "$SLEEP"
  curl -sS -o /dev/null -X POST "$api/$id/response" --data-binary '"done"'
done
"""


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("curl", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"the test runtime needs {tool}")


class Run:
    """A `lambdarun invoke` in a session of its own (as a terminal runs a job), its stderr read line by line."""

    def __init__(self, who: Identity, argv: list[str], tmpdir: Path) -> None:
        self.process = subprocess.Popen(
            who.command(["python", "-m", "lambdarun", "invoke", *argv]),
            env=who.env(TMPDIR=str(tmpdir)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, wanted: Callable[[str], bool], what: str) -> str:
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"no {what} on stderr; saw: {self.seen}") from None
            self.seen.append(line)
            if wanted(line):
                return line

    def interrupt(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group

    def finish(self) -> tuple[int, str, str]:
        assert self.process.stdout is not None
        out = self.process.stdout.read()  # to its end: the process closes it when it exits
        self.process.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.process.returncode, out, "\n".join(self.seen)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def dirs(identity: Identity) -> Iterator[tuple[Path, Path]]:  # noqa: F811
    """A function's code and a TMPDIR for lambdarun, both the identity's."""
    base = identity.private_dir("lambdarun-test-scratch-")
    code, tmpdir = base / "code", base / "tmp"
    layer = base / "layer" / "extensions"
    for path in (code, tmpdir, layer):
        path.mkdir(parents=True)
    (code / "bootstrap").write_text(BOOTSTRAP)
    (code / "bootstrap").chmod(0o755)
    shutil.copyfile(FIXTURES / "python_ext.py", layer / "lingering")
    (layer / "lingering").chmod(0o755)
    subprocess.run(["chown", "-R", str(identity.uid), str(base)], check=True)
    try:
        yield code, tmpdir
    finally:
        shutil.rmtree(base, ignore_errors=True)


def invoke_args(code: Path, marker: str, sleep: float, lingering: bool = False) -> list[str]:
    argv = [str(code), "--runtime", "provided.al2023", "--timeout", "60", "--env", f"SLEEP={sleep}",
            "--env", f"{MARKER_VAR}={marker}"]  # fmt: skip
    if lingering:
        # An extension that ignores SHUTDOWN: the shutdown sequence lasts its whole 2 s budget.
        (value,) = options("lingering", ignore_shutdown=True).items()
        argv += ["--layer", str(code.parent / "layer"), "--env", "=".join(value)]
    return argv


def scratch_dirs(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.iterdir() if p.name.startswith("lambdarun-"))


def test_a_run_to_the_end_leaves_no_scratch_directory(identity: Identity, dirs: tuple[Path, Path]) -> None:  # noqa: F811
    code, tmpdir = dirs
    marker = uuid.uuid4().hex
    run = Run(identity, invoke_args(code, marker, 0), tmpdir)
    try:
        status, out, err = run.finish()
    finally:
        run.kill()

    assert status == 0, err
    assert json.loads(out) == "done"
    assert scratch_dirs(tmpdir) == []
    assert_no_process_left(marker)


def test_ctrl_c_runs_the_shutdown_sequence_and_leaves_nothing(identity: Identity, dirs: tuple[Path, Path]) -> None:  # noqa: F811
    code, tmpdir = dirs
    marker = uuid.uuid4().hex
    run = Run(identity, invoke_args(code, marker, 60, lingering=True), tmpdir)
    try:
        run.wait_for(lambda line: line.startswith("START RequestId"), "START line")
        assert len(scratch_dirs(tmpdir)) == 1
        run.interrupt()
        status, _, err = run.finish()
    finally:
        run.kill()

    assert status == 130, err
    assert '"eventType":"SHUTDOWN"' in err, err  # the extension got its SHUTDOWN: the usual sequence ran
    assert "killing" not in err
    assert scratch_dirs(tmpdir) == []
    assert_no_process_left(marker)


def test_a_second_ctrl_c_during_the_shutdown_kills_at_once_and_still_leaves_nothing(
    identity: Identity,  # noqa: F811
    dirs: tuple[Path, Path],
) -> None:
    code, tmpdir = dirs
    marker = uuid.uuid4().hex
    run = Run(identity, invoke_args(code, marker, 60, lingering=True), tmpdir)
    try:
        run.wait_for(lambda line: line.startswith("START RequestId"), "START line")
        run.interrupt()
        run.wait_for(lambda line: "IGNORING SHUTDOWN" in line, "the extension holding up the shutdown")
        run.interrupt()
        status, _, err = run.finish()
    finally:
        run.kill()

    assert status == 130, err
    assert "lambdarun: interrupted during shutdown, killing the environment" in err
    assert scratch_dirs(tmpdir) == []
    assert_no_process_left(marker)


def test_a_second_lambdarun_never_deletes_the_files_of_a_running_environment(
    identity: Identity,  # noqa: F811
    dirs: tuple[Path, Path],
) -> None:
    code, tmpdir = dirs
    first_marker, second_marker = uuid.uuid4().hex, uuid.uuid4().hex
    first = Run(identity, invoke_args(code, first_marker, 3), tmpdir)
    try:
        first.wait_for(lambda line: line.startswith("handling"), "the first invoke under way")
        (scratch,) = scratch_dirs(tmpdir)
        files = sorted(p.name for p in (tmpdir / scratch).iterdir())

        second = Run(identity, invoke_args(code, second_marker, 0), tmpdir)  # its start sweeps TMPDIR
        second_status, _, second_err = second.finish()
        assert second_status == 0, second_err
        assert sorted(p.name for p in (tmpdir / scratch).iterdir()) == files

        status, out, err = first.finish()
    finally:
        first.kill()

    assert status == 0, err
    assert json.loads(out) == "done"
    assert scratch_dirs(tmpdir) == []
