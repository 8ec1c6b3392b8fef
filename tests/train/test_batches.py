from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from train_helpers import synthetic_recordings, write_shs_npz

from streamcover.audio.chunking import chunk_features
from streamcover.data.shs import load_shs
from streamcover.data.tracks import TrackSet
from streamcover.train.batches import PKBatchSampler
from streamcover.train.config import AugmentConfig, DataConfig


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> TrackSet:
    path = write_shs_npz(tmp_path_factory.mktemp("shs") / "x.npz",
                         synthetic_recordings(10, 3, frames=(60, 400)))
    return load_shs(path).tracks


def test_batches_are_p_works_by_k_versions_mixing_clips_and_full_tracks(tracks: TrackSet) -> None:
    data = DataConfig(works_per_batch=4, versions_per_work=4, full_max_chunks=3)
    s = PKBatchSampler(tracks, data, AugmentConfig(), seed=1, circular_pitch=True)
    b = s.batch(0)
    assert b.n_samples == 16
    counts = np.bincount(b.labels)
    assert sorted(counts[counts > 0].tolist()) == [4, 4, 4, 4]
    assert b.is_clip.sum() == 8  # ByteCover3: clips and full tracks 1:1
    assert (tracks.labels[b.tracks] == b.labels).all()
    n = b.n_chunks
    assert (n >= 1).all() and (n[~b.is_clip] <= 3).all()
    # full windows come first; short clips are one chunk of a few fixed lengths
    assert b.groups[0].shape[1:] == (12, 43)
    for g, owners in zip(b.groups[1:], b.owners[1:], strict=True):
        assert g.shape[2] < 43 and g.shape[2] in s.short_buckets
        assert b.is_clip[owners].all() and (n[owners] == 1).all()


def test_batch_is_a_pure_function_of_seed_and_step(tracks: TrackSet) -> None:
    data = DataConfig(works_per_batch=3, versions_per_work=2)
    a = PKBatchSampler(tracks, data, AugmentConfig(stitch_prob=0.5), seed=5, circular_pitch=True)
    b = PKBatchSampler(tracks, data, AugmentConfig(stitch_prob=0.5), seed=5, circular_pitch=True)
    x, y = a.batch(17), b.batch(17)
    assert all(np.array_equal(g, h) for g, h in zip(x.groups, y.groups, strict=True))
    assert np.array_equal(x.tracks, y.tracks)
    assert not np.array_equal(a.batch(18).tracks, x.tracks) or not np.array_equal(
        a.batch(18).groups[0], x.groups[0])


def test_without_augmentation_full_track_chunks_are_the_inference_chunks(tracks: TrackSet) -> None:
    data = DataConfig(works_per_batch=2, versions_per_work=2, clip_fraction=0.0,
                      full_max_chunks=50)
    off = AugmentConfig(key_prob=0, tempo_prob=0, stitch_prob=0)
    b = PKBatchSampler(tracks, data, off, seed=3, circular_pitch=True).batch(0)
    first = int(b.tracks[0])
    expected, _ = chunk_features(tracks.feature(first), tracks.frames_per_second, 20, 10, 6)
    got = b.groups[0][b.owners[0] == 0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sampler_needs_two_works(tmp_path: Path) -> None:
    path = write_shs_npz(tmp_path / "one.npz", synthetic_recordings(1, 3))
    with pytest.raises(ValueError, match="at least 2 works"):
        PKBatchSampler(load_shs(path).tracks, DataConfig(), AugmentConfig(), 0, True)
