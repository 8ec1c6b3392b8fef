"""The catalog's segment files: checksummed float16 embedding rows and uint8 feature frames.

Both kinds are immutable once written: a 64-byte header (magic, shape, payload CRC32,
header CRC32; the embedding header also carries the model-id digest, the feature header
the quantisation code and frame rate) and the little-endian payload, written by
write-then-rename with fsync (``streamcover.files``). Every map checks the header and the
exact length, so a truncated file is caught even without reading the payload; with
``verify=True`` the payload CRC too. A failure is :class:`CatalogCorruptError`, never wrong
vectors fed to the search.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from streamcover.catalog.errors import CatalogCorruptError, ModelMismatchError
from streamcover.files import atomic_write_bytes

SEGMENT_MAGIC = b"SCSEG001"
# magic, header version, dim, rows, payload crc32, model-id digest (16 bytes), header crc32
_SEG_HEADER = struct.Struct("<8sIIQI16sI")
SEGMENT_HEADER_BYTES = 64
assert _SEG_HEADER.size <= SEGMENT_HEADER_BYTES

FEATURE_MAGIC = b"SCFEA001"
# magic, header version, bins, frames, payload crc32, quantisation code, frames/s, header crc32
_FEAT_HEADER = struct.Struct("<8sIIQIIdI")
assert _FEAT_HEADER.size <= SEGMENT_HEADER_BYTES
# Quantisation code 1: uint8 q = round(255 * x / scale), scale = the reference's maximum
# (stored per reference), so x ~= q / 255 * scale. HPCP frames are max-normalised already,
# so for HPCP scale is 1 and q / 255 is the feature (the shared SHS files' convention).
FEATURE_QUANT_U8_MAX = 1
FEATURE_FORMAT = "u8-refmax-v1"
# A feature sequence wider than this is not a front end's output.
_MAX_FEATURE_BINS = 1024


def model_digest(model_id: str) -> bytes:
    """16-byte digest of a model id, stamped into every segment header."""
    import hashlib

    return hashlib.sha256(model_id.encode("utf-8")).digest()[:16]


def write_segment(path: Path, rows: np.ndarray, model_id: str) -> tuple[int, int]:
    """Write float16 ``rows`` [N, D] durably to ``path``; return (crc32, bytes)."""
    data = np.ascontiguousarray(rows, dtype="<f2")
    n, dim = data.shape
    payload = data.tobytes()
    crc = zlib.crc32(payload)
    head = _SEG_HEADER.pack(SEGMENT_MAGIC, 1, dim, n, crc, model_digest(model_id), 0)
    head_crc = zlib.crc32(head[:-4])
    head = head[:-4] + struct.pack("<I", head_crc)
    head = head.ljust(SEGMENT_HEADER_BYTES, b"\0")
    atomic_write_bytes(path, head + payload)
    return crc, len(head) + len(payload)


def _read_head(path: Path, what: str) -> tuple[int, bytes]:
    """(file size, first header bytes) of a segment file; missing or short is corrupt."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(SEGMENT_HEADER_BYTES)
    except FileNotFoundError:
        raise CatalogCorruptError(f"{what} {path} is missing") from None
    if len(head) < SEGMENT_HEADER_BYTES:
        raise CatalogCorruptError(f"{what} {path} is truncated (header is {len(head)} bytes)")
    return size, head


def read_segment_header(path: Path) -> tuple[int, int, int, bytes]:
    """Return (dim, rows, crc32, model digest) after checking magic, header CRC and length."""
    size, head = _read_head(path, "segment")
    magic, _ver, dim, rows, crc, digest, head_crc = _SEG_HEADER.unpack(head[: _SEG_HEADER.size])
    if magic != SEGMENT_MAGIC:
        raise CatalogCorruptError(f"segment {path} has a bad magic number {magic!r}")
    if zlib.crc32(head[: _SEG_HEADER.size - 4]) != head_crc:
        raise CatalogCorruptError(f"segment {path} has a corrupt header (CRC mismatch)")
    expected = SEGMENT_HEADER_BYTES + rows * dim * 2
    if size != expected:
        raise CatalogCorruptError(
            f"segment {path} is {size} bytes, expected {expected} ({rows} rows x {dim} dims): "
            "truncated or partially written"
        )
    return dim, rows, crc, digest


def map_segment(path: Path, *, verify: bool = True, model_id: str | None = None) -> np.memmap:
    """Memory-map a segment as float16 [rows, dim], checking length, header and (optionally) CRC."""
    dim, rows, crc, digest = read_segment_header(path)
    if model_id is not None and digest != model_digest(model_id):
        raise ModelMismatchError(f"segment {path} was written by another model than {model_id!r}")
    mm = np.memmap(path, dtype="<f2", mode="r", offset=SEGMENT_HEADER_BYTES, shape=(rows, dim))
    if verify:
        got = 0
        step = 1 << 13
        for i in range(0, rows, step):
            got = zlib.crc32(np.ascontiguousarray(mm[i : i + step]).tobytes(), got)
        if got != crc:
            raise CatalogCorruptError(f"segment {path} failed its checksum (file is corrupt)")
    return mm


def quantize_features(features: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    """uint8 frames [T, bins] and the scale of a front end's features [bins, T].

    Float input must be finite and non-negative; it is divided by its maximum and rounded
    to 0..255 (``FEATURE_QUANT_U8_MAX``). uint8 input is stored as it is (scale 1).
    """
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[1] < 1 or not 1 <= f.shape[0] <= _MAX_FEATURE_BINS:
        raise ValueError(
            f"{what}: features must be [bins, T] with 1..{_MAX_FEATURE_BINS} bins and T >= 1, "
            f"got shape {f.shape}"
        )
    if f.dtype == np.uint8:
        return np.ascontiguousarray(f.T), 1.0
    x = f.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: features contain NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0:
        raise ValueError(f"{what}: features must be non-negative (minimum {lo:.3g})")
    if hi == 0:
        return np.zeros((x.shape[1], x.shape[0]), np.uint8), 0.0
    q = np.rint(x.T * np.float32(255.0 / hi))
    return np.ascontiguousarray(np.clip(q, 0, 255).astype(np.uint8)), hi


def write_feature_segment(path: Path, frames: np.ndarray, fps: float) -> tuple[int, int]:
    """Write uint8 frames [T, bins] durably to ``path``; return (crc32, bytes)."""
    data = np.ascontiguousarray(frames, dtype=np.uint8)
    n, bins = data.shape
    payload = data.tobytes()
    crc = zlib.crc32(payload)
    head = _FEAT_HEADER.pack(FEATURE_MAGIC, 1, bins, n, crc, FEATURE_QUANT_U8_MAX, float(fps), 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    head = head.ljust(SEGMENT_HEADER_BYTES, b"\0")
    atomic_write_bytes(path, head + payload)
    return crc, len(head) + len(payload)


def read_feature_header(path: Path) -> tuple[int, int, int, float]:
    """Return (bins, frames, crc32, fps) after checking magic, header CRC and exact length."""
    size, head = _read_head(path, "feature segment")
    magic, _ver, bins, frames, crc, quant, fps, head_crc = _FEAT_HEADER.unpack(
        head[: _FEAT_HEADER.size])
    if magic != FEATURE_MAGIC:
        raise CatalogCorruptError(f"feature segment {path} has a bad magic number {magic!r}")
    if zlib.crc32(head[: _FEAT_HEADER.size - 4]) != head_crc:
        raise CatalogCorruptError(f"feature segment {path} has a corrupt header (CRC mismatch)")
    if quant != FEATURE_QUANT_U8_MAX:
        raise CatalogCorruptError(f"feature segment {path} has unknown quantisation {quant}")
    expected = SEGMENT_HEADER_BYTES + frames * bins
    if size != expected:
        raise CatalogCorruptError(
            f"feature segment {path} is {size} bytes, expected {expected} ({frames} frames x "
            f"{bins} bins): truncated or partially written"
        )
    return bins, frames, crc, fps


def map_feature_segment(path: Path, *, verify: bool = True) -> np.ndarray:
    """Memory-map a feature segment as uint8 [frames, bins] (a plain ndarray view)."""
    bins, frames, crc, _fps = read_feature_header(path)
    if frames == 0:
        return np.zeros((0, bins), np.uint8)
    mm = np.memmap(path, dtype=np.uint8, mode="r", offset=SEGMENT_HEADER_BYTES,
                   shape=(frames, bins))
    if verify and zlib.crc32(mm.data) != crc:
        raise CatalogCorruptError(f"feature segment {path} failed its checksum (file is corrupt)")
    return mm.view(np.ndarray)


def stored_crc(path: Path) -> int:
    """The payload CRC32 an embedding segment's header records."""
    return read_segment_header(path)[2]
