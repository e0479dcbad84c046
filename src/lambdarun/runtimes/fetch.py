"""Downloads from the registries (npm, Maven Central), checked against pinned digests, with a progress line.

`urllib` honours HTTPS_PROXY/NO_PROXY as pip and npm do; npm's registry address comes from `npm_config_registry`
when set. Any failure to reach a registry is a `FetchError` naming the registry and the reason.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import pins

if TYPE_CHECKING:
    import tarfile

TIMEOUT = 30  # seconds without a byte before a download is given up


class FetchError(RuntimeError):
    """A registry could not be reached, or sent something other than what was pinned."""


class Progress:
    """One line on stderr per step; while downloading, the line counts bytes (in place on a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def step(self, text: str) -> None:
        self.stream.write(f"lambdarun: {text}\n")
        self.stream.flush()

    def bytes(self, label: str, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if not self._tty and not final:
            return
        if not final and now - self._last < 0.2:
            return
        self._last = now
        size = _size(done) + (f" of {_size(total)}" if total else "")
        end = "\n" if final else ""
        self.stream.write(
            f"\rlambdarun: downloading {label}: {size}{end}"
            if self._tty
            else f"lambdarun: downloaded {label}: {size}\n"
        )
        self.stream.flush()


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"


def npm_registry() -> str:
    # npm reads its settings from the environment in either case.
    registry = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or pins.NPM_REGISTRY  # noqa: SIM112
    return registry if registry.endswith("/") else registry + "/"


def npm_package(name: str, version: str, integrity: str, dest: Path, progress: Progress) -> None:
    """Unpack the registry's tarball of `name@version` (an unscoped package) into `dest`, checking its integrity."""
    url = f"{npm_registry()}{name}/-/{name}-{version}.tgz"
    algorithm, _, expected = integrity.partition("-")
    archive = dest.with_name(dest.name + ".tgz")
    digest = _download(url, archive, algorithm, f"{name} {version}", progress)
    if base64.b64encode(digest).decode() != expected:
        archive.unlink(missing_ok=True)
        raise FetchError(f"{url} does not match its pinned integrity {integrity}")
    try:
        _unpack(archive, dest, strip="package/")
    finally:
        archive.unlink(missing_ok=True)


def maven_jar(jar: pins.MavenJar, dest_dir: Path, progress: Progress) -> None:
    base = os.environ.get("LAMBDARUN_MAVEN_URL", pins.MAVEN_CENTRAL)
    url = f"{base.rstrip('/')}/{jar.path}"
    target = dest_dir / jar.file_name
    if _download(url, target, "sha256", jar.file_name, progress).hex() != jar.sha256:
        target.unlink(missing_ok=True)
        raise FetchError(f"{url} does not match its pinned SHA-256 {jar.sha256}")


def _download(url: str, target: Path, algorithm: str, label: str, progress: Progress) -> bytes:
    import urllib.error  # here: urllib costs tens of milliseconds at start-up, and only image builds need it
    import urllib.request

    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, target.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress.bytes(label, done, total)
            progress.bytes(label, done, total, final=True)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        target.unlink(missing_ok=True)
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise FetchError(f"could not download {url}: {reason}") from exc
    return digest.digest()


def _unpack(archive: Path, dest: Path, strip: str) -> None:
    """Extract with the `data` filter (no absolute paths, no links out, no device files), minus a leading dir."""
    import tarfile

    def without_prefix(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if not member.name.startswith(strip):
            return None
        member = member.replace(name=member.name[len(strip) :], deep=False)
        return tarfile.data_filter(member, path) if member.name else None

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter=without_prefix)
            return
        # Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters: the same checks, by hand.
        root = dest.resolve()
        for member in tar.getmembers():
            if not member.name.startswith(strip) or member.name == strip.rstrip("/"):
                continue
            member.name = member.name[len(strip) :]
            _check_member(member, root)
            tar.extract(member, dest, set_attrs=not member.issym())


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    """What the `data` filter refuses: names or links leading out of `root`, devices, set-id bits."""
    import tarfile

    target = (root / member.name).resolve()
    if member.name.startswith("/") or not target.is_relative_to(root):
        raise tarfile.TarError(f"{member.name}: outside the destination")
    if member.issym() or member.islnk():
        base = target.parent if member.issym() else root
        if member.linkname.startswith("/") or not (base / member.linkname).resolve().is_relative_to(root):
            raise tarfile.TarError(f"{member.name}: a link out of the destination ({member.linkname})")
    elif not (member.isfile() or member.isdir()):
        raise tarfile.TarError(f"{member.name}: not a regular file, directory or link")
    member.mode &= 0o755
