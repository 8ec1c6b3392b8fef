"""What `streamcover calibrate` caches (under ``~/.cache/streamcover/calibration`` by
default) and how it keys it: the query streams' front-end features here, the catalog in
:mod:`.catalog`, both keyed by :func:`digest` of everything that made them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RECIPE = "detect-v1"  # bump when the way streams are made changes (invalidates the feature cache)


def digest(*parts: Any) -> str:
    """A short stable key of JSON-able ``parts`` (anything else by its ``str``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    """Front-end features of query streams, by a key of everything that made them."""

    def __init__(self, root: Path, frontend_key: str) -> None:
        self.root = root / "features"
        self.root.mkdir(parents=True, exist_ok=True)
        self.frontend_key = frontend_key

    def get(self, key: Sequence[Any], make: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.root / f"{digest(RECIPE, self.frontend_key, *key)}.npy"
        if path.is_file():
            try:
                return np.load(path).astype(np.float32)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        feat = make()
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, feat.astype(np.float16))
        tmp.replace(path)
        return feat.astype(np.float16).astype(np.float32)
