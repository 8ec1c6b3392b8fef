"""Benchmark: one training step's forward + backward, default layout vs channels-last.

Builds the encoder of a training config, feeds it a batch of random HPCP chunks and times
forward + backward in both memory layouts, alternating them in one process so a noisy
machine affects both alike. Prints per-repetition seconds, medians and their ratio, and
the largest difference between the two layouts' embeddings.

    .venv/bin/python ops/bench/bench_train_step.py [--config ops/train/hpcp-t2-crops.json]
        [--batch 256] [--frames 43] [--reps 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamcover.device import to_channels_last  # noqa: E402
from streamcover.model.net import CoverEncoder  # noqa: E402
from streamcover.train.config import load_train_config  # noqa: E402
from streamcover.train.loop import build_encoder_config  # noqa: E402


def step_seconds(model: CoverEncoder, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = model(x)
    (out.embedding.pow(2).mean() + out.pooled.mean()).backward()
    return time.perf_counter() - t0, out.embedding.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "ops/train/hpcp-t2-crops.json")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--frames", type=int, default=43)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = build_encoder_config(load_train_config(a.config))
    base = CoverEncoder(cfg).train()
    x = torch.rand(a.batch, 1, cfg.in_bins, a.frames)
    layouts = {
        "default": (copy.deepcopy(base), x),
        "channels_last": (to_channels_last(copy.deepcopy(base), torch.device("cpu")),
                          x.contiguous(memory_format=torch.channels_last)),
    }
    times: dict[str, list[float]] = {k: [] for k in layouts}
    emb: dict[str, torch.Tensor] = {}
    for name, (model, inp) in layouts.items():  # warm-up, and the outputs to compare
        _, emb[name] = step_seconds(model, inp)
    for _ in range(a.reps):
        for name, (model, inp) in layouts.items():
            times[name].append(step_seconds(model, inp)[0])
    print(f"{cfg.name}: batch {a.batch} x {cfg.in_bins} x {a.frames}, {a.threads} thread(s), "
          f"{a.reps} alternating repetitions")
    for name, ts in times.items():
        print(f"{name:14s} median {statistics.median(ts):.3f} s  " + " ".join(f"{t:.2f}" for t in ts))
    ratio = statistics.median(times["default"]) / statistics.median(times["channels_last"])
    diff = (emb["default"] - emb["channels_last"]).abs().max().item()
    print(f"ratio default / channels_last: {ratio:.2f}x; max embedding difference {diff:.2e}")


if __name__ == "__main__":
    main()
