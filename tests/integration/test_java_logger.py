"""Java's LambdaLogger through the official runtime interface client: one function record per log() call.

The client writes each call as a frame to `_LAMBDA_TELEMETRY_LOG_FD` only when the JVM lets it open
java.io.FileDescriptor (`--add-opens`, SPEC 10.10); otherwise the calls go to stdout and merge into one line.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lambdarun import Function
from lambdarun.runtimes import registry

HANDLER_SOURCE = Path(__file__).resolve().parents[1] / "fixtures" / "java" / "logger" / "ThreeRecords.java"

pytestmark = pytest.mark.usefixtures("sandboxed")


@pytest.fixture(scope="module")
def java_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The handler, compiled against the aws-lambda-java-core jar of the java17 image."""
    runtime = registry.get_runtime("java17")
    hint = runtime.install_hint()
    if hint is not None:
        pytest.skip(f"java17 is not ready here: {hint}")
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("compiling the Java fixture needs javac, which is not installed")
    image = runtime.image()
    assert image is not None
    [core] = (image.runtime / "lib").glob("aws-lambda-java-core-*.jar")
    code = tmp_path_factory.mktemp("java-logger")
    subprocess.run([javac, "-d", str(code), "-cp", str(core), str(HANDLER_SOURCE)], check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    return code


@pytest.mark.slow
def test_each_lambda_logger_call_is_one_function_record(java_code: Path) -> None:
    with Function(code=java_code, runtime="java17", handler="logger.ThreeRecords::handleRequest", memory=512,
                  timeout=30) as fn:  # fmt: skip
        result = fn.invoke({})

    assert result.function_error is None, result.payload
    assert result.json() == "logged"
    calls = [record for record in result.function_logs if "call" in record]
    assert calls == ["first call", "second call", "third call"]
