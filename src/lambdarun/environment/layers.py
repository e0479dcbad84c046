"""Function code and layers as the environment sees them (SPEC 5.2, 5.3).

Code is a directory (used where it is) or a zip (extracted). Layers are merged into one `/opt` in their order,
a later layer's file replacing an earlier one's; files are hard-linked where possible so merging costs no copy.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path

MAX_LAYERS = 5


class PackageError(ValueError):
    """Code or a layer that cannot be used; the message says which and why."""


def check_package(path: Path, what: str) -> None:
    if not path.exists():
        raise PackageError(f"{what} {path} does not exist")
    if not path.is_dir() and not (path.is_file() and zipfile.is_zipfile(path)):
        raise PackageError(f"{what} {path} is neither a directory nor a zip file")


def extract_zip(archive: Path, target: Path) -> None:
    """Extract keeping the Unix permission bits (zipfile drops them): bootstraps and extensions must stay executable."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            extracted = Path(zf.extract(info, target))
            mode = (info.external_attr >> 16) & 0o7777
            if stat.S_ISLNK(info.external_attr >> 16):
                link_target = extracted.read_text()
                extracted.unlink()
                extracted.symlink_to(link_target)
            elif mode and not info.is_dir():
                extracted.chmod(mode & 0o777)


def materialize_code(code: Path, scratch: Path) -> Path:
    """The host directory to show at /var/task."""
    if code.is_dir():
        return code.resolve()
    target = scratch / "task"
    target.mkdir()
    extract_zip(code, target)
    return target


def merge_layers(layers: Sequence[Path], scratch: Path) -> Path:
    """The host directory to show at /opt: the layers merged in order, later wins."""
    if len(layers) > MAX_LAYERS:
        raise PackageError(f"a function can use at most {MAX_LAYERS} layers, {len(layers)} were given")
    if len(layers) == 1 and layers[0].is_dir():
        return layers[0].resolve()  # nothing to merge
    merged = scratch / "opt"
    merged.mkdir()
    for index, layer in enumerate(layers):
        source = layer
        if layer.is_file():
            source = scratch / f"layer-{index}"
            source.mkdir()
            extract_zip(layer, source)
        _overlay(source, merged)
    return merged


def _overlay(source: Path, target: Path) -> None:
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        dest_dir = target / rel
        dest_dir.mkdir(exist_ok=True)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            src, dest = Path(root) / name, dest_dir / name
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.is_dir():
                shutil.rmtree(dest)
            if src.is_symlink():
                dest.symlink_to(os.readlink(src))
                continue
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)
