"""Fixtures for the audio tests: chosen tracks of the real Debian music (``debian_music``,
in tests/conftest.py) and their excerpts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from streamcover.audio.decode import load_audio

MUSIC_PACKAGE = "warzone2100-music"
EXCERPT_S = 30.0
# A few tracks of different character (orchestral, electronic, ambient).
TRACKS = ("menu_enhanced.opus", "track22.opus", "track8.opus")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Front-end ops are small: on this shared 2-core machine one intra-op thread is 10-30x
    faster in wall time than two contending ones (docs/frontends.md). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def music_tracks(debian_music: list[Path]) -> list[Path]:
    """The chosen tracks (fails, naming the missing one, if the package layout changed)."""
    by_name = {p.name: p for p in debian_music}
    missing = [t for t in TRACKS if t not in by_name]
    if missing:
        pytest.fail(f"tracks {missing} not found in {MUSIC_PACKAGE}")
    return [by_name[t] for t in TRACKS]


_excerpts: dict[tuple[str, int], np.ndarray] = {}


@pytest.fixture(scope="session")
def music_excerpt(music_tracks: list[Path]):  # type: ignore[no-untyped-def]
    """``music_excerpt(i, sample_rate)``: the first 30 s of track i, decoded once per session."""

    def get(i: int, sample_rate: int) -> np.ndarray:
        key = (str(music_tracks[i]), sample_rate)
        if key not in _excerpts:
            _excerpts[key] = load_audio(music_tracks[i], sample_rate, max_seconds=EXCERPT_S)
        return _excerpts[key]

    return get
