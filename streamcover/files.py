"""Crash-safe file writes and locks: the one implementation the whole project uses.

A file that readers may open at any moment (a catalog segment, a snapshot pointer, a
checkpoint, a feature cache entry, a rendered corpus file) is written under a private
temporary name beside its destination and renamed over it, so a reader sees the old
file or the new one, never half of one. Where the write must also survive a power cut
(the catalog), the file and then its directory are fsynced around the rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import zlib
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fsync_file(path)


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data (or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; when the block succeeds, rename it over
    ``dest`` (with ``durable``: fsync the file before and the directory after).

    The temporary name is private to this call (processes writing the same ``dest`` at
    once each rename a whole file; the last one wins) and keeps ``dest``'s suffix, for
    writers that choose a format by it. On failure it is removed and ``dest`` is untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not created here (mkstemp would make it 0600): the writer creates it, under the umask.
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp{dest.suffix}")
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(dest.parent)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` by write-then-rename (fsynced unless ``durable=False``)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str, *, durable: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` by write-then-rename."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def file_crc32(path: Path) -> int:
    """CRC32 of a whole file, read in 4 MiB blocks."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block,
    waiting for other holders: serialises one job across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """Take an exclusive ``flock`` on ``path`` without waiting: the open descriptor
    (closing it releases the lock), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
