"""`lambdarun runtimes install`: images built from the registries into a cache anywhere (here under /tmp, which the
sandbox hides), then run with no registry reachable; two installs at once; an ordinary user with a cache of its own.

"No registry" is simulated the way a dead network looks to pip, npm and urllib: every proxy and registry address
points at a closed port. These tests build images, so they are slow; the rest of the suite uses the images
scripts/setup.sh built once per machine.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdarun.runtimes import cache, registry
from lambdarun.runtimes.base import State
from lambdarun.runtimes.nodejs_runtime import find_host_node

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CLOSED = "http://127.0.0.1:9"
NO_REGISTRY = {"HTTPS_PROXY": CLOSED, "HTTP_PROXY": CLOSED, "https_proxy": CLOSED, "http_proxy": CLOSED,
               "PIP_INDEX_URL": f"{CLOSED}/", "npm_config_registry": f"{CLOSED}/",
               "LAMBDARUN_MAVEN_URL": f"{CLOSED}/"}  # fmt: skip
TEST_USER = "lambdarun-test"

pytestmark = pytest.mark.usefixtures("sandboxed")


def lambdarun(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lambdarun", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def offline(env: dict[str, str]) -> dict[str, str]:
    cut = {k: v for k, v in env.items() if k.lower() != "no_proxy"}
    return {**cut, **NO_REGISTRY}


def with_cache(directory: Path) -> dict[str, str]:
    assert directory.is_relative_to("/tmp")
    # npm's download cache is the machine's own, so that only the image is new, not every package download.
    return {**os.environ, "LAMBDARUN_CACHE": str(directory), "npm_config_cache": str(cache.cache_root() / "npm")}


def require_installable(*runtimes: str) -> None:
    for runtime in runtimes:
        status = registry.get_runtime(runtime).status()
        if status.state is State.MISSING:
            pytest.skip(f"{runtime} cannot run on this machine: {status.detail}")


# -- install into a cache under /tmp, then run with no registry


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """(environment naming a fresh cache under /tmp, the install's output): python3.12, nodejs22.x and java17."""
    require_installable("python3.12", "nodejs22.x", "java17")
    env = with_cache(tmp_path_factory.mktemp("cache"))
    done = lambdarun("runtimes", "install", "python3.12", "nodejs22.x", "java17", env=env, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return env, done.stdout


@pytest.mark.slow
def test_install_reports_each_runtime_ready(installed: tuple[dict[str, str], str]) -> None:
    _, output = installed
    states = {line.split()[0]: line.split()[1] for line in output.splitlines()}

    assert states == {"python3.12": "ready", "nodejs22.x": "ready", "java17": "ready"}


@pytest.mark.slow
def test_python_runs_with_no_registry(installed: tuple[dict[str, str], str]) -> None:
    env, _ = installed
    done = lambdarun("invoke", str(FIXTURES / "functions" / "python_image"), "--runtime", "python3.12", "--handler",
                     "app.handler", "--event", '{"modules": ["boto3", "urllib3"]}', env=offline(env))  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert '"boto3": "/var/runtime/boto3/__init__.py"' in done.stdout
    assert '"urllib3": "/var/runtime/urllib3/__init__.py"' in done.stdout


@pytest.mark.slow
def test_node_runs_the_official_client_with_no_registry(installed: tuple[dict[str, str], str]) -> None:
    env, _ = installed
    done = lambdarun("invoke", str(FIXTURES / "nodejs" / "image_probe"), "--runtime", "nodejs22.x", "--handler",
                     "index.handler", "--event", '{"modules": ["@aws-sdk/client-s3"]}', env=offline(env))  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert '"version":"v22.' in done.stdout
    assert "/var/runtime/node_modules/aws-lambda-ric/" in done.stdout
    assert '"path":"/var/runtime/node_modules/@aws-sdk/client-s3/' in done.stdout


@pytest.mark.slow
def test_java_runs_with_no_registry(installed: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = installed
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("compiling the Java fixture needs javac")
    [core] = Path(env["LAMBDARUN_CACHE"]).glob("images/java17-*/runtime/lib/aws-lambda-java-core-*.jar")
    subprocess.run([javac, "-d", str(tmp_path), "-cp", str(core), str(FIXTURES / "java" / "logger" /
                    "ThreeRecords.java")], check=True, capture_output=True, timeout=120)  # fmt: skip
    done = lambdarun("invoke", str(tmp_path), "--runtime", "java17", "--handler", "logger.ThreeRecords::handleRequest",
                     "--memory", "512", "--timeout", "30", env=offline(env))  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '"logged"'


@pytest.mark.slow
def test_runtimes_reports_ready_by_starting_each_in_a_sandbox(installed: tuple[dict[str, str], str]) -> None:
    env, _ = installed
    done = lambdarun("runtimes", env=offline(env))
    states = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()}

    assert [states[r] for r in ("python3.12", "nodejs22.x", "java17")] == ["ready", "ready", "ready"]


@pytest.mark.slow
def test_runtimes_reports_a_broken_image_as_missing(installed: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = installed
    broken = Path(shutil.copytree(Path(env["LAMBDARUN_CACHE"]), tmp_path / "cache", symlinks=True))
    [image] = broken.glob("images/python3.12-*")
    shutil.rmtree(image / "runtime" / "awslambdaric")
    done = lambdarun("runtimes", env={**env, "LAMBDARUN_CACHE": str(broken)})
    [line] = [line for line in done.stdout.splitlines() if line.startswith("python3.12 ")]

    assert line.split()[1] == "missing"
    assert "No module named 'awslambdaric'" in line


# -- no image and no registry


def test_first_use_with_no_registry_names_what_is_missing(tmp_path: Path) -> None:
    require_installable("python3.12")
    env = offline({**os.environ, "LAMBDARUN_CACHE": str(tmp_path)})
    done = lambdarun("invoke", str(FIXTURES / "functions" / "python_image"), "--runtime", "python3.12", "--handler",
                     "app.handler", env=env)  # fmt: skip

    assert done.returncode == 2
    assert "pip could not fetch python3.12's packages" in done.stderr
    assert "`lambdarun runtimes install python3.12`" in done.stderr
    assert not list(tmp_path.glob("images/python3.12-*"))  # nothing half-built looks usable


def test_node_with_no_registry_and_no_image_runs_this_machines_node_with_lambdaruns_client(tmp_path: Path) -> None:
    runtime = next((f"nodejs{major}.x" for major in ("18", "20", "22", "24") if find_host_node(major)), None)
    if runtime is None:
        pytest.skip("no Node.js of a Lambda major is installed on this machine to fall back to")
    env = offline({**os.environ, "LAMBDARUN_CACHE": str(tmp_path)})
    done = lambdarun("invoke", str(FIXTURES / "nodejs" / "image_probe"), "--runtime", runtime, "--handler",
                     "index.handler", env=env)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"{runtime} runs this machine's Node.js" in done.stderr  # said once, with the command that fixes it
    assert f"`lambdarun runtimes install {runtime}` succeeds" in done.stderr
    assert "(file:///var/runtime/index.mjs:" in done.stdout and "aws-lambda-ric" not in done.stdout  # ours


@pytest.mark.slow
def test_without_build_tools_node_gets_lambdaruns_client_and_the_command_for_the_official_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    require_installable("nodejs22.x")
    # Every command of the machine but cmake, which aws-lambda-ric's native addon needs.
    bin_dir = tmp_path_factory.mktemp("bin-without-cmake")
    for directory in ("/usr/bin", "/bin"):
        for command in Path(directory).iterdir():
            if command.name != "cmake" and not os.path.lexists(bin_dir / command.name):
                (bin_dir / command.name).symlink_to(command)
    env = {**with_cache(tmp_path_factory.mktemp("cache")), "PATH": str(bin_dir)}
    installed = lambdarun("runtimes", "install", "nodejs22.x", env=env, timeout=600)

    assert installed.returncode == 0, installed.stderr
    hint = "aws-lambda-ric 4.0.2 needs cmake to build: `apt-get install -y cmake`, then `lambdarun runtimes install"
    assert installed.stdout.split()[:2] == ["nodejs22.x", "ready"]
    assert "lambdarun's runtime client" in installed.stdout and hint in installed.stdout
    done = lambdarun("invoke", str(FIXTURES / "nodejs" / "image_probe"), "--runtime", "nodejs22.x", "--handler",
                     "index.handler", "--event", '{"modules": ["@aws-sdk/client-s3"]}', env=offline(env))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"path":"/var/runtime/node_modules/@aws-sdk/client-s3/' in done.stdout  # the SDK is there all the same


# -- two lambdaruns installing at once


@pytest.mark.slow
def test_two_installs_at_once_build_the_image_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    require_installable("python3.12")
    env = with_cache(tmp_path_factory.mktemp("shared-cache"))
    results: list[subprocess.CompletedProcess[str]] = []

    def install() -> None:
        results.append(lambdarun("runtimes", "install", "python3.12", env=env, timeout=600))

    threads = [threading.Thread(target=install) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sum(r.stderr.count("fetching python3.12") for r in results) == 1
    images = Path(env["LAMBDARUN_CACHE"]) / "images"
    assert len(list(images.glob("python3.12-*"))) == 1
    assert not list(images.glob(".python3.12*.building-*"))


# -- an ordinary user


@pytest.fixture(scope="module")
def ordinary_user() -> Iterator[dict[str, Any]]:
    """A user that is not root, and a directory it can import lambdarun's dependencies from (for /usr/bin/python3.11,
    the only Python 3.11 such a user reaches here)."""
    if os.getuid() != 0:
        pytest.skip("creating a test user needs root")
    python = Path("/usr/bin/python3.11")
    if not python.exists() or shutil.which("runuser") is None:
        pytest.skip("needs /usr/bin/python3.11 and runuser")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", TEST_USER], check=True, capture_output=True)
    home = Path(pwd.getpwnam(TEST_USER).pw_dir)
    root = Path(tempfile.mkdtemp(prefix="lambdarun-user-test-", dir="/tmp"))  # pytest's tmp dirs are root's only
    root.chmod(0o755)
    deps, work = root / "deps", root / "work"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--target", str(deps), "httptools", "click"],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    subprocess.run(["chmod", "-R", "a+rX", str(deps)], check=True)
    work.mkdir()
    # The function's code is the user's own, as it would be (lambdarun makes the code's directory readable to the
    # sandbox's user, which only its owner may do).
    shutil.copytree(FIXTURES / "functions" / "python_image", work / "code")
    subprocess.run(["chown", "-R", TEST_USER, str(work)], check=True)
    keep = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "HTTP_PROXY",
            "https_proxy", "http_proxy", "NO_PROXY", "no_proxy", "LANG")  # fmt: skip
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env |= {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": f"{deps}:{ROOT / 'src'}",
            "LAMBDARUN_CACHE": str(work / "cache")}  # fmt: skip
    yield {"python": str(python), "env": env, "code": str(work / "code")}
    shutil.rmtree(root, ignore_errors=True)


def as_user(user: dict[str, Any], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env_args = [f"{name}={value}" for name, value in user["env"].items()]
    command = ["runuser", "-u", TEST_USER, "--", "env", "-i", *env_args, user["python"], "-m", "lambdarun", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_an_ordinary_user_builds_and_runs_python_from_its_own_cache_under_tmp(ordinary_user: dict[str, Any]) -> None:
    installed = as_user(ordinary_user, "runtimes", "install", "python3.11")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert installed.stdout.split()[:2] == ["python3.11", "ready"]
    # The system's Python 3.11 imports PyYAML from Debian's dist-packages; the function must not.
    host = subprocess.run([ordinary_user["python"], "-c", "import yaml"], capture_output=True)
    assert host.returncode == 0, "the host interpreter itself must import it, or the test proves nothing"

    done = as_user(ordinary_user, "invoke", ordinary_user["code"], "--runtime", "python3.11",
                   "--handler", "app.handler", "--event", '{"modules": ["boto3", "yaml"]}')  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert '"boto3": "/var/runtime/boto3/__init__.py"' in done.stdout
    assert '"yaml": "ImportError: No module named \'yaml\'"' in done.stdout
