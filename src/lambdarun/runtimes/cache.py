"""Where runtime images live, and building one exactly once.

The cache is per user: `$LAMBDARUN_CACHE`, else `$XDG_CACHE_HOME/lambdarun`, else `~/.cache/lambdarun`. Each image is
a directory `images/<name>` holding `runtime/` (mounted at /var/runtime), perhaps `lang/` (mounted at /var/lang) and
`image.json` (what it holds). An image is built in a temporary directory beside its final place and renamed into
place when complete, under a lock, so two lambdaruns building at once build it once, and a build that dies half way
leaves nothing that looks usable.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "image.json"


def cache_root() -> Path:
    configured = os.environ.get("LAMBDARUN_CACHE")
    if configured:
        return Path(configured).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lambdarun"


def digest(*parts: object) -> str:
    """A short name for a set of pins: images are named after what they hold."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Image:
    root: Path
    manifest: dict[str, Any]

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"

    @property
    def lang(self) -> Path:
        return self.root / "lang"


def load(name: str) -> Image | None:
    root = cache_root() / "images" / name
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return Image(root, manifest)


def build(
    name: str, fill: Callable[[Path], dict[str, Any]], replace: bool = False, waiting: Callable[[], None] | None = None
) -> Image:
    """The image `name`, built by `fill(directory)` (which returns its manifest) unless it exists already.
    With `replace`, an existing image is built again and swapped in."""
    images = cache_root() / "images"
    images.mkdir(parents=True, exist_ok=True)
    with _locked(images / f".{name}.lock", waiting):
        existing = load(name)
        if existing is not None and not replace:
            return existing  # another lambdarun built it while this one waited
        work = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=images))
        work.chmod(0o755)  # an image is read by the sandbox's user, who is not the cache's owner when run as root
        try:
            manifest = fill(work)
            (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            final = images / name
            if final.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{name}.retired-", dir=images))
                os.rename(final, retired / name)
                os.rename(work, final)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    image = load(name)
    assert image is not None
    return image


@contextlib.contextmanager
def _locked(path: Path, waiting: Callable[[], None] | None) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
