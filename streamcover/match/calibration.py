"""Calibrated confidence: the false-alarm rate measured on real unrelated music at a score.

``streamcover calibrate`` writes ``<model>.calibration.json`` next to the model: the
measured curve of false alarms per stream-hour against the match score (negative uploads
whose best top score reached it, over the hours of negative audio), the chosen operating
point and the data. This module only reads it. The lookup is the measured step (at a score
s, the negatives whose best score reached s, per hour: what the operating point's count of
false alarms says, never more or less), monotone, and floored: above the highest score any
negative reached, nothing was measured, so the rate is reported as the bound
``< 1 / hours`` (:meth:`Calibration.false_alarms_per_hour` returns that bound, and
:meth:`Calibration.at_floor` says it is one).

Live set lists are calibrated apart (``streamcover calibrate --live``), on their own score
(the MaxMean of a segment's chunks): the file's ``live`` section holds that curve (false
segments opened per hour of unrelated live audio, at each live threshold), loaded as
:attr:`Calibration.live`. Files without it load as before, with ``live`` None.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_FORMAT = "streamcover-calibration-v1"


class CalibrationError(ValueError):
    """A calibration file is missing, malformed or for another model."""


@dataclass(frozen=True)
class Calibration:
    """The score -> false alarms per stream-hour curve of one model."""

    model_id: str
    scores: np.ndarray  # ascending
    fa_per_hour: np.ndarray  # non-increasing, measured at ``scores``
    negative_hours: float
    threshold: float | None = None
    release_threshold: float | None = None
    # Whether the scores were stage 3's fused ones (None: not recorded).
    stage3: bool | None = None
    # The curve of one-chunk queries (an upload's first window), when measured apart.
    one_chunk: Calibration | None = None
    # The live set-list curve (segment score -> false segments per stream-hour), if measured;
    # its ``threshold`` is the live threshold of its operating point.
    live: Calibration | None = None

    def __post_init__(self) -> None:
        s, f = self.scores, self.fa_per_hour
        if s.ndim != 1 or s.shape != f.shape or s.size == 0:
            raise CalibrationError("calibration curve needs equal, non-empty score and rate arrays")
        if np.any(np.diff(s) <= 0):
            raise CalibrationError("calibration scores must be strictly ascending")
        if np.any(np.diff(f) > 1e-12) or np.any(f < 0):
            raise CalibrationError("false-alarm rates must not grow with the score")
        if not self.negative_hours > 0:
            raise CalibrationError("calibration needs a positive number of negative hours")

    @property
    def floor(self) -> float:
        """The smallest rate the data can show: one false alarm in all the hours measured."""
        return 1.0 / self.negative_hours

    def at_floor(self, score: float) -> bool:
        """Whether no measured negative reached ``score`` (the rate is only bounded)."""
        return self.false_alarms_per_hour(score) <= self.floor + 1e-12 and self._raw(score) < self.floor

    def _raw(self, score: float) -> float:
        # The first measured score at or above ``score``: no negative lies in between.
        i = int(np.searchsorted(self.scores, score, side="left"))
        return 0.0 if i >= len(self.scores) else float(self.fa_per_hour[i])

    def for_chunks(self, chunks_used: int) -> Calibration:
        """The curve that applies to a decision made on ``chunks_used`` query chunks."""
        return self.one_chunk if chunks_used == 1 and self.one_chunk is not None else self

    def for_decision(self, source: str, chunks_used: int) -> Calibration | None:
        """The curve for a decision of a stream of ``source`` ("upload" or "live"); None for
        live decisions when no live curve was measured."""
        return self.live if source == "live" else self.for_chunks(chunks_used)

    def false_alarms_per_hour(self, score: float) -> float:
        """False alarms per stream-hour at ``score``; ``floor`` where none was measured."""
        if not np.isfinite(score):
            raise ValueError(f"score must be finite, got {score}")
        return max(self._raw(score), self.floor)

    def describe(self, score: float) -> str:
        """Human wording, e.g. ``"0.25 false alarms/h"`` or ``"< 1 per 6.5 h measured"``."""
        if self.at_floor(score):
            return f"< 1 per {self.negative_hours:.1f} h measured"
        return f"{self.false_alarms_per_hour(score):.3g} false alarms/h"

    # ---- files -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Calibration:
        try:
            if doc.get("format") != CALIBRATION_FORMAT:
                raise CalibrationError(f"not a {CALIBRATION_FORMAT} document")
            curve = doc["curve"]
            op = doc.get("operating_point") or {}
            scoring = doc.get("scoring") or {}
            one = doc.get("curve_one_chunk")
            return cls(
                model_id=str(doc["model_id"]),
                scores=np.asarray(curve["score"], np.float64),
                fa_per_hour=np.asarray(curve["fa_per_hour"], np.float64),
                negative_hours=float(doc["data"]["negative_hours"]),
                threshold=None if op.get("threshold") is None else float(op["threshold"]),
                release_threshold=(None if op.get("release_threshold") is None
                                   else float(op["release_threshold"])),
                stage3=None if scoring.get("stage3") is None else bool(scoring["stage3"]),
                one_chunk=None if not one else cls(
                    model_id=str(doc["model_id"]),
                    scores=np.asarray(one["score"], np.float64),
                    fa_per_hour=np.asarray(one["fa_per_hour"], np.float64),
                    negative_hours=float(doc["data"]["negative_hours"])),
                live=_live(doc),
            )
        except (KeyError, TypeError) as exc:
            raise CalibrationError(f"calibration document lacks {exc}") from exc

    @classmethod
    def load(cls, path: Path, model_id: str | None = None) -> Calibration:
        """Read a calibration file; with ``model_id``, refuse one made for another model."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(f"cannot read calibration {path}: {exc}") from exc
        cal = cls.from_dict(doc)
        if model_id is not None and cal.model_id != model_id:
            raise CalibrationError(f"calibration {path} is for model {cal.model_id!r}, not {model_id!r}")
        return cal


def _live(doc: dict[str, Any]) -> Calibration | None:
    """The live section's curve (None: not measured, or measured without reaching a point)."""
    live = doc.get("live")
    if not live or not (live.get("curve") or {}).get("score"):
        return None
    if live.get("model_id", doc["model_id"]) != doc["model_id"]:
        raise CalibrationError(f"the live calibration is for model {live['model_id']!r}, "
                               f"not {doc['model_id']!r}")
    op = live.get("operating_point") or {}
    return Calibration(
        model_id=str(doc["model_id"]),
        scores=np.asarray(live["curve"]["score"], np.float64),
        fa_per_hour=np.asarray(live["curve"]["fa_per_hour"], np.float64),
        negative_hours=float(live["data"]["negative_hours"]),
        threshold=None if op.get("live_threshold") is None else float(op["live_threshold"]))


def curve_points(negative_best: Sequence[float], negative_hours: float,
                 lo: float = 0.0, hi: float = 1.0, decimals: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The measured curve from each negative stream's best score: at each distinct score s,
    the streams reaching s per hour; plus the end points ``lo`` (all streams that scored
    at all) and ``hi`` (zero). Scores strictly ascending at ``decimals`` places (the
    precision the calibration file keeps, so scores equal there are one point), rates
    non-increasing."""
    if negative_hours <= 0:
        raise ValueError("negative_hours must be positive")
    best = np.sort(np.round(np.asarray([b for b in negative_best if np.isfinite(b)], np.float64), decimals))
    pts = np.unique(np.concatenate([[lo], best[(best > lo) & (best < hi)], [hi]]))
    counts = best.size - np.searchsorted(best, pts, side="left")
    rate = counts / negative_hours
    rate[-1] = 0.0 if best.size == 0 or best[-1] < hi else rate[-1]
    return pts, rate


def default_path(model_path: Path) -> Path:
    """Where a model's calibration lives: ``models/x.pt`` -> ``models/x.calibration.json``."""
    return model_path.with_name(model_path.stem + ".calibration.json")
