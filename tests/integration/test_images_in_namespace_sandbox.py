"""The runtime images in the namespace sandbox (sandbox/namespace.py), which shows nothing of the host but /usr, the
/lib directories, /bin and a minimal /etc: an image is complete by itself at /var/lang and /var/runtime, with the
mounts and masks its `Prepared` names, wired as the environment wires them (the image's directories as the
sandbox's runtime and lang, the other binds and the masks as they are).

Run as root, where the sandbox's user is the host's `nobody`; an ordinary user's own images are exercised through
the CLI in test_runtime_install.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from lambdarun.runtimes import registry
from lambdarun.runtimes.python_runtime import find_python
from lambdarun.sandbox import bwrap
from lambdarun.sandbox.sandbox import Sandbox
from lambdarun.sandbox.spec import SandboxSpec
from lambdarun.sandbox.view import LAMBDA_PATHS, HostDirs

ENV = {"PATH": "/var/lang/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": "/var/lang/lib", "LANG": "C.UTF-8",
       "NODE_PATH": "/var/runtime/node_modules"}  # fmt: skip
PYTHON_CHECK = ("import sys; sys.path.insert(0, '/var/runtime'); import awslambdaric, boto3; print(boto3.__file__); "
                "import tomli_w")  # fmt: skip
CASES = {
    # runtime: (argv, what it prints, its exit status)
    "python3.12": (["/var/lang/bin/python3.12", "-c", PYTHON_CHECK],
                   ["/var/runtime/boto3/__init__.py", "No module named 'tomli_w'"], 1),
    "nodejs22.x": (["/var/lang/bin/node", "-e", "console.log(process.version, require.resolve('aws-lambda-ric'), "
                    "require.resolve('@aws-sdk/client-s3'))"],
                   ["v22.", "/var/runtime/node_modules/aws-lambda-ric/", "/var/runtime/node_modules/@aws-sdk/"], 0),
    # The launcher starts the official client, which wants a Runtime API's address.
    "java17": (["/var/lang/bin/java", "-cp", "/var/runtime/launcher:/var/runtime/lib/*", "lambdarun.LambdarunMain"],
               ["at com.amazonaws.services.lambda.runtime.api.client.AWSLambda.main",
                "at lambdarun.LambdarunMain.main"], 1),
}  # fmt: skip


async def run_in_namespace_sandbox(runtime: str, scratch: Path, argv: list[str]) -> tuple[int | None, list[str]]:
    dirs = {name: scratch / name for name in ("task", "opt", "runtime", "lang", "tmp")}
    for directory in dirs.values():
        directory.mkdir()
        directory.chmod(0o755)
    (scratch / "lang" / "bin").mkdir()
    prepared = registry.get_runtime(runtime).prepare(HostDirs(hosts=scratch / "hosts", **dirs), LAMBDA_PATHS, 128)
    mounts = {bind.target: bind.source for bind in prepared.binds}
    spec = SandboxSpec(task=dirs["task"], opt=dirs["opt"], runtime=mounts.get("/var/runtime", dirs["runtime"]),
                       lang=mounts.get("/var/lang", dirs["lang"]), tmp=dirs["tmp"],
                       binds=tuple(b for b in prepared.binds if b.target not in ("/var/runtime", "/var/lang")),
                       masks=prepared.masks, network="none")  # fmt: skip
    sandbox = await Sandbox.open(spec)
    lines: list[str] = []
    try:
        process = await sandbox.spawn("check", argv, ENV, lambda line, at: lines.append(line))
        await asyncio.wait_for(asyncio.shield(process.exited), 60)
        process.drain_logs()
        return process.exited.result(), lines
    finally:
        await sandbox.close()


@pytest.mark.parametrize("runtime", list(CASES))
def test_the_image_runs_in_the_namespace_sandbox(runtime: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("as an ordinary user the images are that user's own: see test_runtime_install.py")
    reason = bwrap.unavailable()
    if reason is not None:
        pytest.skip(f"no namespace sandbox here: {reason}")
    hint = registry.get_runtime(runtime).install_hint()
    if hint is not None:
        pytest.skip(f"{runtime} is not ready here: {hint}")
    if runtime == "python3.12":  # a package of the host's Python 3.12 only, as in test_python_image.py
        python = str(find_python("3.12").executable)
        subprocess.run([python, "-m", "pip", "install", "-q", "tomli-w"], capture_output=True, timeout=300)
        assert subprocess.run([python, "-c", "import tomli_w"]).returncode == 0
    argv, expected, status = CASES[runtime]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o755)

    exit_status, lines = asyncio.run(run_in_namespace_sandbox(runtime, scratch, argv))

    output = "\n".join(lines)
    assert all(text in output for text in expected), output
    assert exit_status == status, output
