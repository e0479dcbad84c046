"""`lambdarun check-extension` against three fixture layers: a well-behaved telemetry extension, one that sends its
data after going back to /event/next, and one that ignores SHUTDOWN."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _unprivileged import Identity, current, ordinary_user

LAYERS = Path(__file__).resolve().parents[1] / "fixtures" / "check"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def _node_major() -> str:
    done = subprocess.run([str(shutil.which("node", path=SYSTEM_PATH)), "--version"], capture_output=True, text=True)
    return done.stdout.strip().lstrip("v").split(".")[0]


def check(identity: Identity, layer: str | Path, *options: str, **env: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(identity.command(["python", "-m", "lambdarun", "check-extension", str(LAYERS / layer),
                                            "--json", *options]),
                          env=identity.env(**env), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def _levels(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f["level"], f["check"], f["summary"]) for f in report["findings"]]


@pytest.mark.slow
def test_a_well_behaved_extension_has_no_finding_above_info() -> None:
    status, report = check(current(), "good")
    assert report["extensions"] == ["good-ext"]
    assert [f for f in report["findings"] if f["level"] != "info"] == [], _levels(report)
    assert status == 0
    checks = {f["check"] for f in report["findings"]}
    # What it was measured on: each rule reported something.
    assert {"init", "post-runtime", "frozen-work", "telemetry", "shutdown", "memory"} <= checks
    (post,) = [f for f in report["findings"] if f["check"] == "post-runtime"]
    assert "median" in post["summary"] and "worst" in post["summary"]
    scenarios = {i["scenario"] for i in report["invokes"]}
    assert scenarios == {"cold", "warm", "error", "heavy logging", "timeout", "after the timeout"}


@pytest.mark.slow
@pytest.mark.parametrize("who", ["root", "user"])
def test_work_after_event_next_is_flagged_with_the_invoke_ids(who: str) -> None:
    if who == "root":
        status, report = check(current(), "after-next")
    else:  # the user cannot reach root's pyenv interpreters: the Node.js function, the system's python3 extension
        if shutil.which("node", path=SYSTEM_PATH) is None:
            pytest.skip("no node in /usr/bin for the ordinary user's nodejs function")
        user = ordinary_user()
        layer = user.private_dir("lambdarun-check-test-") / "after-next"  # a layer of the user's own
        shutil.copytree(LAYERS / "after-next", layer)
        subprocess.run(["chown", "-R", str(user.uid), str(layer.parent)], check=True)
        try:
            # Plain processes: a user's namespaced sandbox reaches the host (the sink) only where it may open
            # /dev/net/tun, which Debian gives root alone.
            status, report = check(user, layer, "--runtime", f"nodejs{_node_major()}.x", PATH=SYSTEM_PATH,
                                   LAMBDARUN_SANDBOX="plain")  # fmt: skip
        finally:
            shutil.rmtree(layer.parent)
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert [(f["check"], f["extension"]) for f in errors] == [("frozen-work", "lazy-exporter")], _levels(report)
    ids = {i["requestId"] for i in report["invokes"]}
    assert errors[0]["invokes"] and set(errors[0]["invokes"]) <= ids
    assert all("freeze" in line for line in errors[0]["evidence"])
    assert status == 1


@pytest.mark.slow
def test_an_extension_ignoring_shutdown_is_flagged_and_fails_the_check() -> None:
    status, report = check(current(), "ignores-shutdown")
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert [(f["check"], f["extension"]) for f in errors] == [("shutdown", "stubborn")], _levels(report)
    # Both shutdowns the battery causes: the reset after the timeout, and the end.
    assert [line.split(":")[0] for line in errors[0]["evidence"]] == ["timeout", "spindown"]
    assert all("killed after" in line for line in errors[0]["evidence"])
    assert status == 1


def test_a_runtime_without_a_built_in_function_is_refused_with_exit_2() -> None:
    done = subprocess.run(current().command(["python", "-m", "lambdarun", "check-extension", str(LAYERS / "good"),
                                             "--runtime", "java17"]),
                          env=current().env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "built-in function for python, nodejs runtimes, not java17" in done.stderr
