"""The monitor's per-stream windowing (streamcover.monitor.stream.StreamRuntime) cuts exactly
the chunks that streamcover.audio.chunking cuts offline (identify, catalog add), however the
feature frames arrive: one implementation of the rules, checked on both paths."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcover.audio.chunking import chunk_features
from streamcover.audio.frontend import make_frontend
from streamcover.config import FrontEndSettings, Settings
from streamcover.monitor.engine import Engine
from streamcover.monitor.stream import Job, StreamRuntime

FRONTEND = make_frontend(FrontEndSettings())
SETTINGS = Settings()


def _runtime() -> StreamRuntime:
    engine = Engine(FRONTEND, encoder=None, searcher=None)  # type: ignore[arg-type]
    return StreamRuntime("s", "upload", 0, 22_050, SETTINGS, engine, 0, 0, 0, None)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 300), st.lists(st.integers(1, 60), min_size=1, max_size=40))
def test_streamed_windows_equal_the_offline_chunks(n: int, cuts: list[int]) -> None:
    rng = np.random.default_rng(n)
    feat = rng.random((12, n), dtype=np.float32)
    fps = float(FRONTEND.frames_per_second)
    a = SETTINGS.audio
    expected, starts = chunk_features(feat, fps, a.window_seconds, a.hop_seconds, a.min_clip_seconds)
    rt = _runtime()
    jobs: list[Job] = []
    pos, i = 0, 0
    while pos < n:
        step = cuts[i % len(cuts)]
        rt._take(feat[:, pos : pos + step], 0.0, 0, jobs)
        pos, i = pos + step, i + 1
    rt.finish(0.0, jobs)
    windows = [j for j in jobs if j.chunk is not None]
    assert [j.chunk is None for j in jobs][-1]  # the end of stream comes last
    assert len(windows) == expected.shape[0]
    if windows:
        np.testing.assert_allclose(np.array([j.start for j in windows]), starts, atol=1e-9)
        for j, want in zip(windows, expected, strict=True):
            np.testing.assert_allclose(j.chunk, want, rtol=1e-6)
    # The stream keeps one window of frames (plus the hop in flight), not the whole input.
    assert rt.feats.shape[1] <= rt.win_f + 60
