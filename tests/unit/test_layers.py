"""Code and layers are unpacked with Lambda's semantics (in order, last wins) and nothing is written outside the
target, whatever symlinks, `..` entries or absolute names the packages hold."""

from __future__ import annotations

import os
import stat
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from lambdarun.environment import layers
from lambdarun.environment.layers import PackageError, materialize_code, merge_layers

Entry = tuple[str, str, str | bytes, int]  # name, kind ("file" | "dir" | "link"), data (a link's target), mode


def make_zip(path: Path, entries: Sequence[Entry], unix: bool = True) -> Path:
    """A zip whose entries carry Unix modes (or none at all, as zips made on Windows)."""
    kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "link": stat.S_IFLNK}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, kind, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 5, 6, 7, 8, 10))
            info.create_system = 3 if unix else 0
            info.external_attr = (kinds[kind] | mode) << 16 if unix else 0
            zf.writestr(info, data)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory outside every target, with a file in it: nothing may ever be written here."""
    path = tmp_path / "somewhere"
    path.mkdir()
    (path / "keep").write_text("original")
    return path


def untouched(victim: Path) -> bool:
    return sorted(p.name for p in victim.iterdir()) == ["keep"] and (victim / "keep").read_text() == "original"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def dir_layer(root: Path, files: dict[str, str], links: dict[str, str] | None = None) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name, target in (links or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    return root


# -- the case from the issue: a symlink in one layer, a path under it in the next


def test_a_later_directory_layer_replaces_an_earlier_symlink_instead_of_writing_through_it(
    tmp_path: Path, scratch: Path, victim: Path
) -> None:
    first = dir_layer(tmp_path / "l1", {}, {"x": str(victim)})
    second = dir_layer(tmp_path / "l2", {"x/f": "from layer 2"})

    opt = merge_layers([first, second], scratch)

    assert untouched(victim)
    assert not (opt / "x").is_symlink()
    assert (opt / "x" / "f").read_text() == "from layer 2"


def test_a_later_zip_layer_replaces_an_earlier_zip_symlink_instead_of_writing_through_it(
    tmp_path: Path, scratch: Path, victim: Path
) -> None:
    first = make_zip(tmp_path / "l1.zip", [("x", "link", str(victim), 0o777)])
    second = make_zip(tmp_path / "l2.zip", [("x/f", "file", "from layer 2", 0o644)])

    opt = merge_layers([first, second], scratch)

    assert untouched(victim)
    assert (opt / "x" / "f").read_text() == "from layer 2"


def test_a_later_file_replaces_an_earlier_symlink_to_a_file_outside(
    tmp_path: Path, scratch: Path, victim: Path
) -> None:
    first = make_zip(tmp_path / "l1.zip", [("keep", "link", str(victim / "keep"), 0o777)])
    second = make_zip(tmp_path / "l2.zip", [("keep", "file", "from layer 2", 0o644)])

    opt = merge_layers([first, second], scratch)

    assert untouched(victim)
    assert not (opt / "keep").is_symlink()
    assert (opt / "keep").read_text() == "from layer 2"


def test_a_zip_that_writes_under_its_own_symlink_is_refused_naming_the_entry_and_the_layer(
    tmp_path: Path, scratch: Path, victim: Path
) -> None:
    archive = make_zip(tmp_path / "evil.zip", [("x", "link", str(victim), 0o777), ("x/f", "file", "pwned", 0o644)])

    with pytest.raises(PackageError, match=r"layer 2 \(.*evil\.zip\): entry 'x/f' lies under 'x'.*symlink"):
        merge_layers([dir_layer(tmp_path / "ok", {"a": "a"}), archive], scratch)

    assert untouched(victim)


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/tmp/evil", "a/b/../../../evil"])
def test_zip_entries_that_climb_out_or_are_absolute_are_refused(tmp_path: Path, scratch: Path, name: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", [("fine", "file", "x", 0o644), (name, "file", "pwned", 0o644)])

    with pytest.raises(PackageError) as caught:
        merge_layers([archive], scratch)

    assert repr(name) in str(caught.value)
    assert "layer 1" in str(caught.value) and "bad.zip" in str(caught.value)
    assert not (tmp_path / "evil").exists()


def test_code_zip_with_a_dotdot_entry_is_refused_naming_the_code(tmp_path: Path, scratch: Path) -> None:
    archive = make_zip(tmp_path / "code.zip", [("../evil.py", "file", "pwned", 0o644)])

    with pytest.raises(PackageError, match=r"^code \(.*code\.zip\): zip entry '\.\./evil\.py' has a '\.\.' component"):
        materialize_code(archive, scratch)

    assert not (tmp_path / "evil.py").exists()


def test_a_symlink_pointing_outside_is_kept_as_a_link(tmp_path: Path, scratch: Path, victim: Path) -> None:
    # Kept, not followed: inside the sandbox it resolves against the sandbox's own root.
    archive = make_zip(tmp_path / "l.zip", [("certs", "link", "/etc/ssl/certs", 0o777), ("up", "link", "../..", 0o777)])

    opt = merge_layers([archive, dir_layer(tmp_path / "l2", {}, {"v": str(victim)})], scratch)

    assert os.readlink(opt / "certs") == "/etc/ssl/certs"
    assert os.readlink(opt / "up") == "../.."
    assert os.readlink(opt / "v") == str(victim)
    assert untouched(victim)


# -- Lambda's merge semantics


def test_directories_merge_and_the_last_layer_wins_for_the_same_file(tmp_path: Path, scratch: Path) -> None:
    first = dir_layer(tmp_path / "a", {"python/a.py": "a", "python/same.py": "from a"})
    second = make_zip(
        tmp_path / "b.zip", [("python/b.py", "file", "b", 0o644), ("python/same.py", "file", "from b", 0o644)]
    )

    opt = merge_layers([first, second], scratch)

    assert sorted(p.name for p in (opt / "python").iterdir()) == ["a.py", "b.py", "same.py"]
    assert (opt / "python" / "same.py").read_text() == "from b"


def test_a_later_file_or_symlink_replaces_a_whole_earlier_directory(
    tmp_path: Path, scratch: Path, victim: Path
) -> None:
    first = dir_layer(tmp_path / "a", {"lib/x.so": "x", "bin/tool": "t"})
    second = make_zip(tmp_path / "b.zip", [("lib", "file", "now a file", 0o644), ("bin", "link", str(victim), 0o777)])

    opt = merge_layers([first, second], scratch)

    assert (opt / "lib").read_text() == "now a file"
    assert os.readlink(opt / "bin") == str(victim)
    assert untouched(victim)


def test_an_entry_that_is_both_a_file_and_a_directory_in_one_zip_is_refused(tmp_path: Path, scratch: Path) -> None:
    archive = make_zip(tmp_path / "l.zip", [("d/", "dir", "", 0o755), ("d", "file", "x", 0o644)])

    with pytest.raises(PackageError, match=r"entry 'd' appears both as a directory and as a file"):
        merge_layers([archive], scratch)


# -- what is kept of each entry


def test_zip_permission_bits_are_kept_so_extensions_stay_executable(tmp_path: Path, scratch: Path) -> None:
    archive = make_zip(tmp_path / "l.zip", [
        ("extensions/ext", "file", "#!/bin/sh\n", 0o755),
        ("private", "file", "x", 0o600),
        ("setuid", "file", "x", 0o4755),
    ])  # fmt: skip

    opt = merge_layers([archive], scratch)

    assert stat.S_IMODE((opt / "extensions" / "ext").stat().st_mode) == 0o755
    assert os.access(opt / "extensions" / "ext", os.X_OK)
    assert stat.S_IMODE((opt / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((opt / "setuid").stat().st_mode) == 0o755  # set-id bits are dropped


def test_a_zip_without_unix_modes_gets_readable_files(tmp_path: Path, scratch: Path) -> None:
    archive = make_zip(tmp_path / "l.zip", [("dir/", "dir", "", 0), ("dir/f", "file", "x", 0)], unix=False)

    opt = merge_layers([archive], scratch)

    assert stat.S_IMODE((opt / "dir").stat().st_mode) == 0o755
    assert stat.S_IMODE((opt / "dir" / "f").stat().st_mode) == 0o644


def test_a_read_only_directory_in_a_zip_still_gets_its_entries(tmp_path: Path, scratch: Path) -> None:
    archive = make_zip(tmp_path / "l.zip", [("ro/", "dir", "", 0o555), ("ro/f", "file", "x", 0o444)])

    opt = merge_layers([archive], scratch)

    assert (opt / "ro" / "f").read_text() == "x"
    assert stat.S_IMODE((opt / "ro").stat().st_mode) == 0o555


def test_zip_modification_times_are_kept(tmp_path: Path, scratch: Path) -> None:
    # Python compares a .pyc with its source's mtime: a fresh mtime on every start would make it stale.
    archive = make_zip(tmp_path / "code.zip", [("app.py", "file", "X = 1\n", 0o644)])

    task = materialize_code(archive, scratch)

    assert (task / "app.py").stat().st_mtime == time.mktime((2024, 5, 6, 7, 8, 10, 0, 0, -1))


def test_directory_layer_files_are_private_copies_unless_opt_is_read_only(tmp_path: Path, scratch: Path) -> None:
    first = dir_layer(tmp_path / "a", {"data": "original"})
    second = dir_layer(tmp_path / "b", {"other": "b"})

    copied = merge_layers([first, second], scratch)
    (copied / "data").write_text("changed through /opt")
    assert (first / "data").read_text() == "original"

    linked_scratch = tmp_path / "linked"
    linked_scratch.mkdir()
    linked = merge_layers([first, second], linked_scratch, read_only=True)
    assert (linked / "data").stat().st_ino == (first / "data").stat().st_ino


def test_a_zip_that_unzips_past_lambdas_limit_is_refused(
    tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layers, "MAX_UNZIPPED", 1000)  # 250 MB of test data would only slow the test down
    archive = make_zip(tmp_path / "bomb.zip", [("a", "file", b"\0" * 600, 0o644), ("b", "file", b"\0" * 600, 0o644)])

    with pytest.raises(PackageError, match=r"layer 1 \(.*bomb\.zip\): unzips to .* over Lambda's"):
        merge_layers([archive], scratch)

    assert not (scratch / "opt" / "a").exists()


def test_a_directory_layer_holding_a_fifo_is_refused_naming_it(tmp_path: Path, scratch: Path) -> None:
    layer = dir_layer(tmp_path / "a", {"ok": "x"})
    os.mkfifo(layer / "pipe")

    with pytest.raises(PackageError, match=r"layer 1 .*'pipe' is not a file, directory or symlink"):
        merge_layers([layer, dir_layer(tmp_path / "b", {})], scratch)
