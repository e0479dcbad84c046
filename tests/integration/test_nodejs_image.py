"""The Node.js runtimes' images: each runtime id runs its own Node.js major from the npm registry, the official
aws-lambda-ric calls the handler, and the AWS SDK for JavaScript v3 loads from /var/runtime/node_modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdarun import Function
from lambdarun.runtimes import registry

CODE = Path(__file__).resolve().parents[1] / "fixtures" / "nodejs" / "image_probe"
NODES = ["nodejs18.x", "nodejs20.x", "nodejs22.x", "nodejs24.x"]
SDK = [
    f"@aws-sdk/{name}"
    for name in ("client-s3", "client-dynamodb", "lib-dynamodb", "client-sqs", "client-sns", "client-lambda",
                 "client-secrets-manager", "client-ssm")
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("sandboxed")


@pytest.mark.parametrize("runtime", NODES)
def test_each_node_runtime_runs_its_own_major_with_the_official_client_and_the_sdk(runtime: str) -> None:
    hint = registry.get_runtime(runtime).install_hint()
    if hint is not None:
        pytest.skip(f"{runtime} is not ready here: {hint}")
    with Function(code=CODE, runtime=runtime, handler="index.handler") as fn:
        result = fn.invoke({"modules": SDK})

    assert result.function_error is None, result.payload
    seen = result.json()
    assert seen["version"].startswith(f"v{runtime.removeprefix('nodejs').removesuffix('.x')}.")
    # The frame that called the handler is aws-lambda-ric's, not lambdarun's client at /var/runtime/index.mjs.
    assert "/var/runtime/node_modules/aws-lambda-ric/" in seen["callers"][1], seen["callers"]
    for name in SDK:
        assert seen["sdk"][name]["path"].startswith(f"/var/runtime/node_modules/{name}/"), seen["sdk"][name]
        assert seen["sdk"][name]["exports"] > 0
