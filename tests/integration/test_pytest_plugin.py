"""The pytest plugin as a user's project meets it: lambdarun installed in a virtualenv (the `pytest11` entry point
is what loads the plugin), the sample telemetry extension's test suite run by pytest in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lambdarun.runtimes.registry import get_runtime

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "telemetry-extension"

EXTRA_TESTS = """
import pytest

from test_telemetry_sample import CODE, LAYER


def test_a_failure_shows_the_environment_log(lambda_function):
    fn = lambda_function(CODE["python"], runtime="python3.11", handler="app.handler", layers=[LAYER])
    fn.invoke({"lines": 1})
    assert False, "failing on purpose"


@pytest.mark.lambda_runtimes("python3.11", "{missing}")
def test_across_runtimes(lambda_function, lambda_runtime):
    assert lambda_runtime == "python3.11"
"""


def _missing_runtime() -> str | None:
    for runtime in ("nodejs22.x", "nodejs18.x", "java21", "java17", "nodejs20.x"):
        if get_runtime(runtime).install_hint() is not None:
            return runtime
    return None


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv seeing the machine's packages, with this checkout of lambdarun installed into it."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                           "-e", str(ROOT)], capture_output=True, text=True, timeout=300)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"could not install lambdarun into a virtualenv (it builds with setuptools from PyPI): "
                    f"{done.stderr.strip()[-500:]}")  # fmt: skip
    return python


@pytest.mark.slow
def test_the_sample_extension_suite_runs_with_the_installed_plugin(venv: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(SAMPLE, project)
    missing = _missing_runtime()
    (project / "tests" / "test_plugin_behaviour.py").write_text(EXTRA_TESTS.replace("{missing}", missing or "java17"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    done = subprocess.run([str(venv), "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--junitxml=out.xml",
                           "tests"], cwd=project, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    output = done.stdout + done.stderr
    cases = {case.get("name"): case for case in ET.parse(project / "out.xml").getroot().iter("testcase")}

    def outcome(name: str) -> str:
        children = {child.tag for child in cases[name]}
        return "failed" if "failure" in children else "skipped" if "skipped" in children else "passed"

    sample = {name: outcome(name) for name in cases if name != "test_a_failure_shows_the_environment_log"
              and not name.startswith("test_across_runtimes")}  # fmt: skip
    assert len(sample) >= 7 and "failed" not in sample.values(), output
    # The plugin came from the entry point: nothing in the project names it.
    assert not (project / "conftest.py").exists() and "lambdarun" in output.split("plugins:")[1].splitlines()[0]
    # A failing test's report holds the environment's log, as CloudWatch shows it.
    assert outcome("test_a_failure_shows_the_environment_log") == "failed"
    section = output.split("lambdarun log: function (python3.11)")[1]
    assert "START RequestId:" in section and "REPORT RequestId:" in section and "line 0" in section
    # The marker runs once per runtime; one the machine lacks is skipped with what to install.
    assert outcome("test_across_runtimes[python3.11]") == "passed"
    if missing is not None:
        assert outcome(f"test_across_runtimes[{missing}]") == "skipped"
        assert f"{missing} is not available here" in output
