"""Hostile code and layers, through the CLI and the Python API: a symlink in one layer and a path under it in the
next, as directories and as zips, stay inside /opt; `..` and absolute zip entries are refused with the entry and
the layer named; executables unpacked from zips stay executable. The CLI cases run as root and as an ordinary
user."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _extension_support import FIXTURES
from _unprivileged import Identity, identity  # noqa: F401  (the fixture)

from lambdarun import Function
from lambdarun.environment.layers import PackageError
from lambdarun.sandbox.etc import HOSTS

# A custom runtime whose every response is what /opt/x/f and /opt/hosts hold (the layer directory without the
# sandbox) and whether /opt/bin/tool can be executed.
BOOTSTRAP = """#!/bin/bash
set -euo pipefail
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation"
opt="${LAMBDARUN_OPT_DIR:-/opt}"
while true; do
  curl -sS -D /tmp/headers -o /dev/null "$api/next"
  id=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' /tmp/headers | cut -d' ' -f2 | tr -d '\\r')
  f=$(cat "$opt/x/f" 2>/dev/null || echo missing)
  if [ -x "$opt/bin/tool" ]; then tool=executable; else tool=not-executable; fi
  printf '{"f":"%s","tool":"%s"}' "$f" "$tool" > /tmp/answer
  curl -sS -o /dev/null -X POST "$api/$id/response" --data-binary @/tmp/answer
done
"""


def zip_of(path: Path, entries: list[tuple[str, str, str, int]]) -> Path:
    """A zip of (name, kind: file | link, data or link target, mode) entries, with Unix modes."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = ((stat.S_IFLNK if kind == "link" else stat.S_IFREG) | mode) << 16
            zf.writestr(info, data)
    return path


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("curl", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"the test runtime needs {tool}")


@pytest.fixture
def place(identity: Identity) -> Iterator[Path]:  # noqa: F811
    """A directory the identity owns, with `somewhere` in it: the directory nothing may write into."""
    base = identity.private_dir("lambdarun-test-layers-")
    (base / "somewhere").mkdir()
    (base / "tmp").mkdir()
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_cli(who: Identity, base: Path, code: Path, layers: list[Path]) -> subprocess.CompletedProcess[str]:
    subprocess.run(["chown", "-R", str(who.uid), str(base)], check=True)
    argv = ["python", "-m", "lambdarun", "invoke", str(code), "--runtime", "provided.al2023"]
    for layer in layers:
        argv += ["--layer", str(layer)]
    return subprocess.run(who.command(argv), env=who.env(TMPDIR=str(base / "tmp")), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def code_zip(base: Path) -> Path:
    return zip_of(base / "code.zip", [("bootstrap", "file", BOOTSTRAP, 0o755)])


@pytest.mark.parametrize("form", ["directories", "zips"])
def test_a_symlink_layer_then_a_layer_under_it_writes_only_inside_opt(
    identity: Identity,  # noqa: F811
    place: Path,
    form: str,
) -> None:
    victim = place / "somewhere"
    if form == "zips":
        first = zip_of(place / "l1.zip", [("x", "link", str(victim), 0o777)])
        second = zip_of(place / "l2.zip", [("x/f", "file", "from layer 2", 0o644),
                                           ("bin/tool", "file", "#!/bin/sh\n", 0o755)])  # fmt: skip
    else:
        first, second = place / "l1", place / "l2"
        first.mkdir()
        (first / "x").symlink_to(victim)
        (second / "x").mkdir(parents=True)
        (second / "x" / "f").write_text("from layer 2")
        (second / "bin").mkdir()
        (second / "bin" / "tool").write_text("#!/bin/sh\n")
        (second / "bin" / "tool").chmod(0o755)

    done = run_cli(identity, place, code_zip(place), [first, second])

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"f": "from layer 2", "tool": "executable"}
    assert list(victim.iterdir()) == []
    assert [p.name for p in (place / "tmp").iterdir()] == []


def test_a_zip_writing_through_its_own_symlink_is_refused_with_exit_2(identity: Identity, place: Path) -> None:  # noqa: F811
    victim = place / "somewhere"
    evil = zip_of(place / "evil.zip", [("x", "link", str(victim), 0o777), ("x/f", "file", "pwned", 0o644)])

    done = run_cli(identity, place, code_zip(place), [evil])

    assert done.returncode == 2
    assert "layer 1" in done.stderr and "evil.zip" in done.stderr and "'x/f'" in done.stderr
    assert list(victim.iterdir()) == []
    assert [p.name for p in (place / "tmp").iterdir()] == []


@pytest.mark.parametrize("entry", ["../../escaped", "/tmp/escaped"])
def test_zip_entries_leaving_the_package_are_refused_with_exit_2(
    identity: Identity,  # noqa: F811
    place: Path,
    entry: str,
) -> None:
    layer = zip_of(place / "bad.zip", [("ok", "file", "fine", 0o644), (entry, "file", "pwned", 0o644)])

    done = run_cli(identity, place, code_zip(place), [layer])

    assert done.returncode == 2
    assert f"zip entry {entry!r}" in done.stderr and "layer 1" in done.stderr
    assert not (place / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert [p.name for p in (place / "tmp").iterdir()] == []


def test_the_python_api_raises_naming_the_code_entry(tmp_path: Path) -> None:
    code = zip_of(tmp_path / "code.zip", [("../app.py", "file", "def handler(e, c): pass\n", 0o644)])
    function = Function(code, "python3.11", "app.handler")

    with pytest.raises(PackageError, match=r"code \(.*code\.zip\): zip entry '\.\./app\.py' has a '\.\.' component"):
        function.start()

    assert not (tmp_path.parent / "app.py").exists()


@pytest.mark.usefixtures("sandboxed")
def test_a_symlink_pointing_outside_resolves_inside_the_sandbox(functions: Path, tmp_path: Path) -> None:
    # The link is kept: /etc/hosts is the sandbox's own, which names sandbox.localdomain.
    layer = zip_of(tmp_path / "l.zip", [("hosts", "link", "/etc/hosts", 0o777)])
    with Function(functions / "python_probe", "python3.11", "app.handler", layers=[layer]) as fn:
        result = fn.invoke({"op": "read", "path": "/opt/hosts"})

    assert result.function_error is None, result.payload
    assert result.json() == HOSTS


def test_an_extension_unpacked_from_a_zip_layer_is_executable_and_registers(functions: Path, tmp_path: Path) -> None:
    source = (FIXTURES / "python_ext.py").read_text()
    layer = zip_of(tmp_path / "ext.zip", [("extensions/zipped-ext", "file", source, 0o755)])
    with Function(functions / "python_probe", "python3.11", "app.handler", layers=[layer]) as fn:
        result = fn.invoke({"op": "echo"})

    assert result.function_error is None, result.payload
    assert any("Name: zipped-ext\tState: Ready" in line for line in result.logs), result.logs
