"""The chunker that training and evaluation cut recordings with: the inference one.

It is a parameter (``Chunker``) so tests can swap in a cheaper cut; by default it is
``streamcover.audio.chunking.chunk_features``, so training, evaluation and serving cut
20 s chunks identically.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Chunker = Callable[..., tuple[np.ndarray, np.ndarray]]


def default_chunker() -> Chunker:
    """The inference chunker (imported lazily: it pulls in the audio stack)."""
    from streamcover.audio.chunking import chunk_features

    return chunk_features
