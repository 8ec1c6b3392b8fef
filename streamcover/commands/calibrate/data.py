"""The audio `streamcover calibrate` runs on: the positive and negative Debian packages'
recordings and the SHS held-out and custom cover sets (``streamcover.eval.detect_data``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamcover.eval.detect_data import CoverSet, Recording


@dataclasses.dataclass
class Data:
    positives: list[Recording]
    negatives: list[Recording]
    covers: list[CoverSet]
    licences: dict[str, str]


def load_data(args: argparse.Namespace, progress: Any) -> Data:
    from streamcover.config import PROJECT_ROOT
    from streamcover.eval.detect_data import (
        NEGATIVE_PACKAGES,
        POSITIVE_PACKAGES,
        cover_set,
        fetch_package,
        package_licence,
        package_recordings,
    )
    from streamcover.train.shs import read_split

    licences: dict[str, str] = {}
    recs: dict[str, list[Recording]] = {"pos": [], "neg": []}
    specs = [("pos", s) for s in POSITIVE_PACKAGES] + [("neg", s) for s in NEGATIVE_PACKAGES]
    task = progress.add_task("packages", total=len(specs), note="")
    for side, spec in specs:
        root = fetch_package(spec.name)
        licences[spec.name] = package_licence(spec.name, root)
        recs[side].extend(package_recordings(spec, root))
        progress.advance(task)
    pos = recs["pos"][: args.max_positive_recordings]
    neg = recs["neg"]
    if args.max_negative_hours is not None:
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(neg))
        kept, total = [], 0.0
        for i in order:
            if total >= args.max_negative_hours * 3600:
                break
            kept.append(neg[i])
            total += neg[i].duration_s
        neg = sorted(kept, key=lambda r: str(r.path))
    split = read_split(args.split or PROJECT_ROOT / "ops" / "train" / "shs100k-test-split.json")
    covers = [cover_set("shs", args.shs, works=split["test"]), cover_set("custom", args.custom)]
    return Data(pos, neg, covers, licences)
