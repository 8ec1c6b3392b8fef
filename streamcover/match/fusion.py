"""Stage-3 fusion: one detection score from MaxMean and the alignment score.

The monitor thresholds one number per (stream, reference), so the fused score must mean the
same thing for every query and must not depend on other queries or on the other candidates.
The rule is a logistic model of "this candidate is the query's work":

    fused = sigmoid(bias + w_maxmean · maxmean + w_align · align)

with ``maxmean`` the stage-2 retrieval score (cosine-based, -1..1) and ``align`` the
:func:`streamcover.match.align.align` score (Qmax / shorter length, 0..1). Both weights
are positive, so the fused score rises with either input: a near-exact copy, whose MaxMean
is already high and which aligns almost end to end, stays high. The output lies in (0, 1),
so one threshold applies to all queries;
it must be calibrated on the fused score, not reused from MaxMean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import overload

import numpy as np


@dataclass(frozen=True)
class FusionParams:
    """Logistic weights of the fused score (see the module docstring)."""

    bias: float
    w_maxmean: float
    w_align: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# MaxMean-led: chosen by detection on real music (`streamcover calibrate`: re-uploads, real
# covers and 7 h of unrelated Debian music), where it detects more at no false alarm than
# the logistic fit to SHS100K-TEST val cover pairs (SHS_VAL_FIT). That fit weights the
# alignment so much that unrelated, repetitive game music scores high (median negative
# 0.46 against 0.09 here); docs/results/2026-12-03-calibration.md.
DEFAULT_PARAMS = FusionParams(bias=-11.0, w_maxmean=12.0, w_align=8.0)
# Fitted by ops/eval/stage3_fusion.py on SHS100K-TEST val (docs/results/2026-12-03-stage3.md):
# the best ranker of covers (test mAP 0.435), the weaker detector.
SHS_VAL_FIT = FusionParams(bias=-4.1815, w_maxmean=2.2596, w_align=5.8944)


@overload
def fuse(maxmean: float, align: float, params: FusionParams = ...) -> float: ...
@overload
def fuse(maxmean: np.ndarray, align: np.ndarray, params: FusionParams = ...) -> np.ndarray: ...


def fuse(maxmean: float | np.ndarray, align: float | np.ndarray,
         params: FusionParams = DEFAULT_PARAMS) -> float | np.ndarray:
    """The fused detection score in (0, 1) of one candidate (or arrays of them, elementwise).

    Non-finite inputs raise ``ValueError``: a NaN would otherwise pass or fail every
    threshold silently.
    """
    mm = np.asarray(maxmean, dtype=np.float64)
    al = np.asarray(align, dtype=np.float64)
    if not (np.all(np.isfinite(mm)) and np.all(np.isfinite(al))):
        raise ValueError("fuse: maxmean and align must be finite")
    z = params.bias + params.w_maxmean * mm + params.w_align * al
    out = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow
    if np.ndim(out) == 0:
        return float(out)
    return out


def fit(maxmean: np.ndarray, align: np.ndarray, positive: np.ndarray, *, ridge: float = 1e-3,
        iterations: int = 50) -> FusionParams:
    """Fit the logistic weights by Newton's method (IRLS) on labelled candidate pairs.

    ``positive[i]`` says whether pair i is a true match. A small ridge keeps the fit finite
    when the classes separate.
    """
    mm = np.asarray(maxmean, np.float64).ravel()
    al = np.asarray(align, np.float64).ravel()
    y = np.asarray(positive, bool).ravel().astype(np.float64)
    if not (len(mm) == len(al) == len(y)) or len(y) == 0:
        raise ValueError("fit: maxmean, align and positive must be non-empty and equally long")
    if y.min() == y.max():
        raise ValueError("fit: needs both positive and negative pairs")
    x = np.stack([np.ones_like(mm), mm, al], axis=1)
    w = np.zeros(3)
    reg = ridge * len(y) * np.diag([0.0, 1.0, 1.0])
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))
        grad = x.T @ (p - y) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return FusionParams(bias=float(w[0]), w_maxmean=float(w[1]), w_align=float(w[2]))
