"""Stored reference features: bit-exact round trip, reopen, compaction, corruption and
crash detection, the recorded reference hop, and the cap on `extra` metadata."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from catalog_helpers import MODEL, PARAMS, as_input

from streamcover.catalog.errors import CatalogCorruptError, CatalogError
from streamcover.catalog.records import MAX_EXTRA_BYTES, ReferenceInput
from streamcover.catalog.segments import SEGMENT_HEADER_BYTES, quantize_features
from streamcover.catalog.snapshot import build_snapshot
from streamcover.catalog.store import FEATURE_DIR, Catalog
from streamcover.catalog.synthetic import SyntheticRef
from streamcover.catalog.view import SearchView

FPS = 2.1533


def _with_features(r: SyntheticRef, rng: np.random.Generator, *, uint8: bool) -> ReferenceInput:
    """A reference whose feature sequence covers its chunks (20 s windows at FPS)."""
    t = int(np.ceil((float(r.starts[-1]) + 20.0) * FPS))
    feat = (rng.integers(0, 256, (12, t), dtype=np.uint8) if uint8
            else rng.random((12, t), dtype=np.float32) * 0.8)
    base = as_input(r)
    return ReferenceInput(base.id, base.vectors, base.starts, title=base.title,
                          extra=base.extra, features=feat)


def _add(path: Path, inputs: list[ReferenceInput], hop: float | None = 5.0) -> None:
    with Catalog.open(path, "a", model_id=MODEL) as cat:
        cat.add_references(inputs, MODEL, reference_hop_s=hop, feature_fps=FPS)


def _expected(inp: ReferenceInput) -> np.ndarray:
    assert inp.features is not None
    f = inp.features
    if f.dtype == np.uint8:
        return f.T
    return np.rint(f.T * (255.0 / f.max())).astype(np.uint8)


def test_features_round_trip_bit_exact_through_reopen_and_view(
    tmp_path: Path, refs: list[SyntheticRef]
) -> None:
    rng = np.random.default_rng(0)
    inputs = [_with_features(r, rng, uint8=i % 2 == 0) for i, r in enumerate(refs[:6])]
    path = tmp_path / "cat"
    _add(path, inputs[:3])
    _add(path, inputs[3:])  # a second batch: a second feature segment
    assert len(list((path / FEATURE_DIR).iterdir())) == 2
    with Catalog.open(path, "r") as cat:
        assert cat.feature_fps == pytest.approx(FPS)
        assert cat.reference_hop_seconds == 5.0
        for inp in inputs:
            got = cat.ref_features(inp.id)
            assert got.dtype == np.uint8 and got.shape == (inp.features.shape[1], 12)  # type: ignore[union-attr]
            np.testing.assert_array_equal(got, _expected(inp))
        stats = cat.stats()
        keys = {r.id: r.key for r in cat.references()}
        build_snapshot(cat, PARAMS)
    total = sum(inp.features.shape[1] for inp in inputs)  # type: ignore[union-attr]
    assert stats["feature_references"] == 6 and stats["feature_frames"] == total
    assert stats["feature_bytes"] == total * 12 + 2 * SEGMENT_HEADER_BYTES
    view = SearchView.open(path)
    assert view.feature_fps == pytest.approx(FPS)
    for inp in inputs:
        mapped = view.ref_features(keys[inp.id])
        assert mapped is not None and not mapped.flags.writeable  # a view of the read-only map
        np.testing.assert_array_equal(mapped, _expected(inp))
    # Float features keep their scale, so the front end's values come back to 1/510.
    src = inputs[1].features
    stored = view.ref_features(keys[inputs[1].id])
    assert src is not None and stored is not None
    assert view.features.scale[keys[inputs[1].id]] == pytest.approx(src.max())
    back = stored.T / 255.0 * src.max()
    assert np.abs(back - src).max() <= src.max() / 510 + 1e-6


def test_compaction_keeps_live_features_and_drops_removed(
    tmp_path: Path, refs: list[SyntheticRef]
) -> None:
    rng = np.random.default_rng(1)
    inputs = [_with_features(r, rng, uint8=True) for r in refs[:5]]
    path = tmp_path / "cat"
    _add(path, inputs[:2])
    _add(path, inputs[2:])
    with Catalog.open(path, "a") as cat:
        cat.remove(inputs[1].id)
        cat.compact()
        assert len(list((path / FEATURE_DIR).iterdir())) == 1
    with Catalog.open(path, "r") as cat:
        cat.verify()
        for inp in inputs[:1] + inputs[2:]:
            np.testing.assert_array_equal(cat.ref_features(inp.id), _expected(inp))
        assert cat.stats()["feature_references"] == 4
        with pytest.raises(KeyError):
            cat.ref_features(inputs[1].id)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_feature_segment_is_caught(
    tmp_path: Path, refs: list[SyntheticRef], damage: str
) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "cat"
    _add(path, [_with_features(r, rng, uint8=True) for r in refs[:3]])
    (seg,) = (path / FEATURE_DIR).iterdir()
    data = bytearray(seg.read_bytes())
    if damage == "truncate":
        seg.write_bytes(bytes(data[:-7]))
    else:
        data[SEGMENT_HEADER_BYTES + 100] ^= 0x01
        seg.write_bytes(bytes(data))
    with Catalog.open(path, "r") as cat, pytest.raises(CatalogCorruptError, match=seg.name):
        cat.verify()
    with pytest.raises(CatalogCorruptError, match=seg.name):
        SearchView.open(path, verify=True)
    if damage == "truncate":  # the exact-length check holds even without verification
        with Catalog.open(path, "r") as cat, pytest.raises(CatalogCorruptError, match="truncated"):
            cat.features(verify=False)


def test_crash_before_commit_leaves_only_an_orphan_that_is_removed(
    tmp_path: Path, refs: list[SyntheticRef], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    inputs = [_with_features(r, rng, uint8=False) for r in refs[:4]]
    path = tmp_path / "cat"
    _add(path, inputs[:2])

    def crash(*_: object) -> None:
        raise RuntimeError("killed between the segment writes and the commit")

    with monkeypatch.context() as m:
        m.setattr(Catalog, "_register_segment", crash)
        with pytest.raises(RuntimeError):
            _add(path, inputs[2:])
    assert len(list((path / FEATURE_DIR).iterdir())) == 2  # the orphan is on disk
    with Catalog.open(path, "r") as cat:
        assert cat.stats()["feature_references"] == 2
    _add(path, inputs)  # the next writer deletes the orphan; the committed ids are skipped
    assert len(list((path / FEATURE_DIR).iterdir())) == 2
    with Catalog.open(path, "r") as cat:
        cat.verify()
        for inp in inputs:
            np.testing.assert_array_equal(cat.ref_features(inp.id), _expected(inp))


def test_reference_hop_is_recorded_and_a_different_one_refused(
    tmp_path: Path, refs: list[SyntheticRef]
) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "cat"
    _add(path, [_with_features(refs[0], rng, uint8=True)], hop=2.5)
    with pytest.raises(CatalogError, match="reembed"):
        _add(path, [_with_features(refs[1], rng, uint8=True)], hop=5.0)
    # Nothing was written for the refused batch.
    assert len(list((path / FEATURE_DIR).iterdir())) == 1
    # A catalog from before the hop was recorded refuses a hop-stamped add.
    old = tmp_path / "old"
    _add(old, [as_input(refs[0])], hop=None)
    with pytest.raises(CatalogError, match="predates"):
        _add(old, [as_input(refs[1])], hop=5.0)


def test_old_format_catalog_reads_as_having_no_features(
    tmp_path: Path, refs: list[SyntheticRef]
) -> None:
    path = tmp_path / "cat"
    _add(path, [as_input(r) for r in refs[:3]], hop=None)
    db = sqlite3.connect(path / "catalog.sqlite")
    db.executescript("DROP TABLE ref_features; DROP TABLE feature_segments;")
    db.close()
    with Catalog.open(path, "r") as cat:
        s = cat.stats()
        assert s["feature_references"] == 0 and s["reference_hop_seconds"] is None
        assert cat.features().n_references == 0
        cat.verify()
    view = SearchView.open(path)
    assert view.ref_features(int(view.layout.keys[0])) is None


def test_bad_features_are_refused_with_the_reference_named(
    tmp_path: Path, refs: list[SyntheticRef]
) -> None:
    base = as_input(refs[0])
    with Catalog.open(tmp_path / "cat", "a", model_id=MODEL) as cat:
        for feat, why in [
            (np.full((12, 200), np.nan, np.float32), "NaN"),
            (-np.ones((12, 200), np.float32), "non-negative"),
            (np.ones((12, 3), np.float32), "end before"),
            (np.ones((200,), np.float32), "shape"),
        ]:
            bad = ReferenceInput(base.id, base.vectors, base.starts, features=feat)
            with pytest.raises(ValueError, match=why) as err:
                cat.add_references([bad], MODEL, feature_fps=FPS)
            assert base.id in str(err.value)
        with pytest.raises(ValueError, match="feature_fps"):
            cat.add_references([ReferenceInput(base.id, base.vectors, base.starts,
                                               features=np.ones((12, 500), np.float32))], MODEL)
    q, scale = quantize_features(np.zeros((12, 5), np.float32), "silence")
    assert scale == 0.0 and not q.any()


def test_extra_metadata_is_capped(tmp_path: Path, refs: list[SyntheticRef]) -> None:
    base = as_input(refs[0])
    big = ReferenceInput(base.id, base.vectors, base.starts,
                         extra={"notes": "x" * MAX_EXTRA_BYTES})
    with Catalog.open(tmp_path / "cat", "a", model_id=MODEL) as cat:
        with pytest.raises(ValueError, match=f"{MAX_EXTRA_BYTES:,}-byte limit") as err:
            cat.add_references([big], MODEL)
        assert base.id in str(err.value)
        assert cat.stats()["references"] == 0
        ok = ReferenceInput(base.id, base.vectors, base.starts, extra={"notes": "x" * 4000})
        assert cat.add_references([ok], MODEL, max_extra_bytes=4096).added == [base.id]
