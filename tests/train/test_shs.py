from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from train_helpers import synthetic_recordings, write_shs_npz

from streamcover.data.shs import (
    SHS_FRAMES_PER_SECOND,
    ShsFormatError,
    load_shs,
    make_split,
    read_split,
    split_tracks,
    write_split,
)


def test_load_drops_identical_duplicates_within_a_work_only(tmp_path: Path) -> None:
    recs = synthetic_recordings(3, 3)
    dup = recs[1][2].copy()
    recs.insert(2, (recs[1][0], 99, dup))  # same work, identical bytes -> dropped
    recs.append((recs[-1][0], 98, recs[0][2].copy()))  # identical bytes, other work -> kept
    data = load_shs(write_shs_npz(tmp_path / "x.npz", recs))
    assert data.dropped == [(recs[1][0], 99)]
    assert len(data.tracks) == len(recs) - 1
    assert data.tracks.frames_per_second == pytest.approx(SHS_FRAMES_PER_SECOND)
    f = data.tracks.feature(0)
    assert f.shape == (12, len(recs[0][2])) and f.dtype == np.float32
    np.testing.assert_allclose(f, recs[0][2].T / 255.0, rtol=1e-6)
    assert f.min() >= 0.0 and f.max() <= 1.0


def test_load_limit_works_and_format_errors(tmp_path: Path) -> None:
    path = write_shs_npz(tmp_path / "x.npz", synthetic_recordings(5, 2))
    assert load_shs(path, limit_works=2).tracks.n_works == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, feat=np.zeros((10, 12), np.uint8))
    with pytest.raises(ShsFormatError, match="missing arrays"):
        load_shs(bad)
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_shs(tmp_path / "nope.npz")


def test_split_is_by_work_disjoint_seeded_and_round_trips(tmp_path: Path) -> None:
    data = load_shs(write_shs_npz(tmp_path / "x.npz", synthetic_recordings(40, 3)))
    split = make_split(data.tracks.works, seed=7)
    assert split == make_split(data.tracks.works, seed=7)
    assert split != make_split(data.tracks.works, seed=8)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (32, 4, 4)
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    path = tmp_path / "split.json"
    write_split(path, split, seed=7, source="x.npz", dropped=data.dropped, tracks=data.tracks)
    assert read_split(path) == split
    test = split_tracks(data.tracks, split, "test")
    assert set(test.works.tolist()) == set(split["test"]) and len(test) == 12


def test_read_split_refuses_overlapping_parts(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"train": [1, 2], "val": [2], "test": [3]}')
    with pytest.raises(ValueError, match="two parts"):
        read_split(path)


def test_committed_split_holds_out_at_least_ten_percent_of_works() -> None:
    from streamcover.config import PROJECT_ROOT

    split = read_split(PROJECT_ROOT / "ops" / "train" / "shs100k-test-split.json")
    n = sum(len(v) for v in split.values())
    assert n == 1629
    assert len(split["val"]) + len(split["test"]) >= 0.1 * n
    assert len(split["test"]) >= 0.09 * n
