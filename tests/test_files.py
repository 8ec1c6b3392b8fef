"""The one crash-safe write: whole file or nothing, private temp names, the umask's mode."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from streamcover.files import atomic_path, atomic_write_bytes, file_crc32, file_lock, try_lock


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(dest, b"old")
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]
    assert file_crc32(dest) == zlib.crc32(b"new")


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "f.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_temp_keeps_the_suffix_and_the_file_the_umask_mode(tmp_path: Path) -> None:
    dest = tmp_path / "a.flac"
    with atomic_path(dest) as tmp:
        assert tmp.suffix == ".flac" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask


def test_try_lock_is_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / "LOCK"
    fd = try_lock(lock)
    assert fd is not None
    try:
        assert try_lock(lock) is None
    finally:
        os.close(fd)
    again = try_lock(lock)
    assert again is not None
    os.close(again)
    with file_lock(tmp_path / "build.lock"):
        assert (tmp_path / "build.lock").exists()
