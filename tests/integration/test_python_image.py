"""The Python runtimes' images: what Lambda ships imports, what is installed on this machine does not, and sys.path
is Lambda's (SPEC 5.3). The function reports its sys.path and where each asked-for module imports from."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun import Function
from lambdarun.runtimes import registry
from lambdarun.runtimes.python_runtime import find_python

CODE = Path(__file__).resolve().parents[1] / "fixtures" / "functions" / "python_image"
PYTHONS = ["python3.11", "python3.12", "python3.13"]

pytestmark = pytest.mark.usefixtures("sandboxed")


def require_ready(runtime: str) -> None:
    hint = registry.get_runtime(runtime).install_hint()
    if hint is not None:
        pytest.skip(f"{runtime} is not ready here: {hint}")


@pytest.fixture(scope="module")
def python312() -> Iterator[Function]:
    require_ready("python3.12")
    with Function(code=CODE, runtime="python3.12", handler="app.handler") as fn:
        yield fn


@pytest.fixture(scope="module")
def host_only_module() -> str:
    """tomli_w, pip-installed into this machine's Python 3.12 (the interpreter the python3.12 runtime mounts)."""
    require_ready("python3.12")
    python = str(find_python("3.12").executable)
    if subprocess.run([python, "-c", "import tomli_w"], capture_output=True).returncode != 0:
        installed = subprocess.run([python, "-m", "pip", "install", "-q", "tomli-w"], capture_output=True, text=True,
                                   timeout=300)  # fmt: skip
        if installed.returncode != 0:
            pytest.skip(f"could not install tomli-w into {python}: {installed.stderr.strip()[-300:]}")
    imported = subprocess.run([python, "-c", "import tomli_w"], capture_output=True)
    assert imported.returncode == 0, "the host interpreter itself must import it, or the test proves nothing"
    return "tomli_w"


def modules_seen(fn: Function, *names: str) -> dict[str, Any]:
    result = fn.invoke({"modules": list(names)})
    assert result.function_error is None, result.payload
    seen: dict[str, Any] = result.json()["modules"]
    return seen


def test_boto3_and_urllib3_import_from_the_runtime_directory(python312: Function) -> None:
    seen = modules_seen(python312, "boto3", "botocore", "urllib3", "s3transfer", "jmespath", "dateutil", "six")

    assert seen["boto3"] == "/var/runtime/boto3/__init__.py"
    assert seen["urllib3"] == "/var/runtime/urllib3/__init__.py"
    assert all(path.startswith("/var/runtime/") for path in seen.values()), seen


def test_the_runtime_client_is_the_images_not_the_hosts(python312: Function) -> None:
    # This machine's Python 3.12 may have its own awslambdaric; the function gets the image's.
    assert modules_seen(python312, "awslambdaric")["awslambdaric"] == "/var/runtime/awslambdaric/__init__.py"


def test_a_package_installed_only_on_this_machine_does_not_import(python312: Function, host_only_module: str) -> None:
    seen = modules_seen(python312, host_only_module)

    assert seen[host_only_module] == f"ImportError: No module named '{host_only_module}'"


@pytest.mark.parametrize("runtime", PYTHONS)
def test_sys_path_is_lambdas(runtime: str) -> None:
    require_ready(runtime)
    version = runtime.removeprefix("python")
    with Function(code=CODE, runtime=runtime, handler="app.handler") as fn:
        result = fn.invoke({})

    seen = result.json()
    assert seen["executable"] == f"/var/lang/bin/{runtime}"
    assert seen["sys_path"] == [
        "/var/task",
        f"/opt/python/lib/{runtime}/site-packages",
        "/opt/python",
        f"/var/lang/lib/{runtime}/site-packages",
        "/var/runtime",
        f"/var/lang/lib/python{version.replace('.', '')}.zip",
        f"/var/lang/lib/{runtime}",
        f"/var/lang/lib/{runtime}/lib-dynload",
        f"/var/lang/lib/{runtime}/site-packages",  # the interpreter's own site directory (empty here)
        # bootstrap.py's site.addsitedir() of the layer directories appends them again when they do not exist
        f"/opt/python/lib/{runtime}/site-packages",
        "/opt/python",
    ]
    assert seen["pythonpath"] == "/var/runtime"
