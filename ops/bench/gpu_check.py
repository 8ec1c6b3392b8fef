"""The prepared GPU check: encoder, front end and monitor capacity on a borrowed machine.

One self-contained script on purpose: it is copied to a borrowed machine and must run in one
short call with nothing but the project's set-up, so its parts are not spread over modules.

Run through ``ops/bench/gpu-check.sh`` (which runs ``ops/setup.sh`` first), or directly::

    .venv/bin/python ops/bench/gpu_check.py --device cuda            # the full check, <= ~7 min
    .venv/bin/python ops/bench/gpu_check.py --device cpu --quick     # the CPU smoke run, < 60 s

Sections, in order, under one global time budget (``--budget-s``):

1. **Encoder**: the shipped model (``models/streamcover-hpcp-compact.pt``) loaded through
   ``streamcover.model.inference.Encoder``; its BN-folded, channels-last inference network
   (``fold_for_inference`` + ``to_channels_last``, as the Encoder prepares it) timed on
   device-resident 43-frame HPCP chunks in fp32, bf16 and fp16 (autocast) at batch 64,
   256, 1024 and 4096 (synchronised wall clock, median over repeats). Then the monitor's
   own path, ``Encoder.embed_chunks`` (numpy in, numpy out, host-device copies included, at
   the Encoder's own precision: bf16/fp16 autocast on CUDA, fp32 on CPU), at the same
   batches.
2. **Accuracy**: cosine similarity of every precision's embeddings (and of the Encoder's
   path) against fp32 on the CPU, on the same chunks: lower precision is only usable where
   the mean cosine is >= 0.999 and the minimum >= 0.99 (the shipped threshold is 0.70;
   before shipping a precision, SHS test mAP must also stay within 0.002).
3. **Front end**: ``streamcover/audio/frontend.py`` HPCP and CQT, ``features_batch`` on
   waveforms already on the device, as multiples of real time (seconds of audio per second
   of compute), single stream and batched; on CUDA also their agreement with the CPU.
4. **Capacity**: ``streams = min(E / r, F)`` with E the Encoder path's chunks/s at the
   monitor's batch size (``encoder.batch_size``, 64), r = 1 / ``audio.hop_seconds`` = 0.1
   chunk/s per live stream (one 20 s window every 10 s hop) and F the HPCP front end's
   batched real-time multiple (a live stream brings 1 s of audio per second). Also with
   the fastest usable precision and batch. An upper bound: catalog search, decisions and
   Kafka I/O run on the host CPU and are not in it.

Chunks are HPCP features of synthetic chord music (deterministic) computed by the project's
own front end, so the encoder sees chroma-like input; speed does not depend on the content.

Every section stops in time: each ends at a fixed fraction of the budget (``SCHEDULE``; time
a section leaves unused passes to the next), each case gets an equal part of what is left of
its section, repeats
are cut when calls are slow, cases predicted not to fit are skipped (said so), and the JSON
is rewritten after every case and on SIGTERM, so a cut-short run still leaves its figures.
One table goes to stdout at the end; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

# Same as streamcover.device: passive OpenMP waits (must precede the torch import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_encoder import load_avg, peak_rss_mb  # noqa: E402  (ops/bench/bench_encoder.py)

from streamcover.audio.frontend import FrontEnd, make_frontend, push_many  # noqa: E402
from streamcover.config import FrontEndSettings, Settings, get_settings  # noqa: E402
from streamcover.device import gpu_autocast_dtype, select_device, to_channels_last  # noqa: E402
from streamcover.model.inference import Encoder  # noqa: E402
from streamcover.model.optimize import fold_for_inference  # noqa: E402

SCHEMA = "streamcover.gpu-check/1"
DEFAULT_MODEL = ROOT / "models" / "streamcover-hpcp-compact.pt"
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
CHUNK_FRAMES = 43  # 20 s at 2.1533 HPCP frames/s
# Lower precision counts as usable for the capacity estimate only above these (vs CPU fp32).
USABLE_COS_MEAN = 0.999
USABLE_COS_MIN = 0.99


@dataclass(frozen=True)
class Plan:
    """What one run measures (full or --quick)."""

    batches: tuple[int, ...]
    precisions: tuple[str, ...]
    fe_seconds: float  # audio per waveform in the front-end section
    fe_batches: tuple[int, ...]
    cos_chunks: int  # chunks compared against CPU fp32
    music_seconds: float  # synthetic music the chunks are cut from
    min_case_s: float  # time a case repeats for, when the budget allows
    max_repeats: int


FULL = Plan(
    batches=(64, 256, 1024, 4096),
    precisions=("fp32", "bf16", "fp16"),
    fe_seconds=60.0,
    fe_batches=(1, 16, 64),
    cos_chunks=1024,
    music_seconds=90.0,
    min_case_s=2.0,
    max_repeats=50,
)
QUICK = Plan(
    batches=(64, 256),
    precisions=("fp32", "bf16", "fp16"),
    fe_seconds=10.0,
    fe_batches=(1, 4),
    cos_chunks=64,
    music_seconds=30.0,
    min_case_s=0.3,
    max_repeats=5,
)
# The fraction of the budget by whose end each section stops (cumulative, in run order).
SCHEDULE = {
    "encoder": 0.45,
    "monitor_path": 0.60,
    "accuracy": 0.75,
    "frontend": 0.95,
    "host_frontend": 1.0,
}


# -- time budget -------------------------------------------------------------------------


class Budget:
    """A global deadline, with the sections' deadlines as fractions of it."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.deadline = self.start + max(0.0, seconds)

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def elapsed(self) -> float:
        return self.clock() - self.start

    def until(self, section: str) -> float:
        """The clock time by which ``section`` (a ``SCHEDULE`` key) must end."""
        return self.start + SCHEDULE[section] * (self.deadline - self.start)

    def left_in(self, section: str) -> float:
        return max(0.0, self.until(section) - self.clock())


@dataclass
class Timing:
    median_s: float
    repeats: int
    warmup_s: float
    status: str  # "ok", "short" (fewer repeats than planned: slow) or "warmup-only"


def time_calls(
    fn: Callable[[], object],
    sync: Callable[[], None],
    *,
    case_s: float,
    min_case_s: float,
    max_repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Median wall time of ``fn`` after one warm-up call, within ``case_s`` seconds.

    Repeats until ``min_case_s`` has passed and at least 3 calls are timed, or
    ``max_repeats``; stops early when the next call would pass ``case_s``. A warm-up that
    alone uses the case's time is reported as the only measurement ("warmup-only").
    """
    t0 = clock()
    fn()
    sync()
    warm = clock() - t0
    walls: list[float] = []
    start = clock()
    while len(walls) < max_repeats:
        spent = clock() - t0
        guess = statistics.median(walls) if walls else warm
        if spent + guess > case_s:
            break
        if len(walls) >= 3 and clock() - start >= min_case_s:
            break
        t = clock()
        fn()
        sync()
        walls.append(clock() - t)
    if not walls:
        return Timing(warm, 0, warm, "warmup-only")
    status = "ok" if len(walls) >= min(3, max_repeats) else "short"
    return Timing(statistics.median(walls), len(walls), warm, status)


# -- inputs ------------------------------------------------------------------------------


def synth_music(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic chord music: triads of 6-partial tones over a bass, 0.8-2.4 s per chord,
    with attack/decay envelopes and a little noise (mono float32 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float64)
    pos = 0
    while pos < n:
        length = min(n - pos, int(rng.uniform(0.8, 2.4) * sample_rate))
        t = np.arange(length) / sample_rate
        env = np.minimum(1.0, t / 0.02) * np.exp(-t / 1.5)
        root = int(rng.integers(0, 12))
        third = 3 if rng.random() < 0.5 else 4
        seg = np.zeros(length)
        for semis, octave in ((root, -1), (root, 0), (root + third, 0), (root + 7, 0)):
            f0 = 220.0 * 2 ** ((semis - 9) / 12 + octave)  # A3 = 220 Hz, C4 = semis 0
            for h in range(1, 7):
                if f0 * h < sample_rate / 2:
                    seg += np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h
        out[pos : pos + length] = seg * env
        pos += length
    out += 0.01 * rng.standard_normal(n)
    out /= max(1e-9, float(np.abs(out).max()))
    return (0.8 * out).astype(np.float32)


def hpcp_chunks(frontend: FrontEnd, seconds: float, count: int, bins: int) -> np.ndarray:
    """``count`` HPCP chunks [count, bins, 43] of synthetic music through ``frontend``:
    every 43-frame window at a 1-frame step in all 12 transpositions, tiled to ``count``."""
    feat = frontend.features(synth_music(frontend.sample_rate, seconds))  # [bins, T]
    if feat.shape[0] != bins:
        raise ValueError(f"front end gives {feat.shape[0]} bins, the model wants {bins}")
    if feat.shape[1] < CHUNK_FRAMES:
        raise ValueError(f"{seconds} s of music gives {feat.shape[1]} frames < {CHUNK_FRAMES}")
    wins = np.lib.stride_tricks.sliding_window_view(feat, CHUNK_FRAMES, axis=1)  # [bins, W, 43]
    base = np.ascontiguousarray(wins.transpose(1, 0, 2))  # [W, bins, 43]
    unique = np.concatenate([np.roll(base, k, axis=1) for k in range(bins)])
    reps = -(-count // len(unique))
    return np.ascontiguousarray(np.tile(unique, (reps, 1, 1))[:count], dtype=np.float32)


# -- device helpers ----------------------------------------------------------------------


def sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def precision_context(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``'s type, or explicitly none (fp32)."""
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_avg": load_avg(),
    }
    if device.type == "cuda":
        env.update(_cuda_environment(device))
    return env


def _cuda_environment(device: torch.device) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(device)
    env: dict[str, Any] = {}
    with warnings.catch_warnings():  # the TF32 flags are deprecated in favour of fp32_precision
        warnings.simplefilter("ignore")
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_conv=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            bf16_supported=torch.cuda.is_bf16_supported(),
            encoder_autocast=str(gpu_autocast_dtype(device)).removeprefix("torch."),
        )
    return env


# -- the report ------------------------------------------------------------------------


class Report:
    """The JSON document, rewritten atomically after every case."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.doc: dict[str, Any] = {
            "schema": SCHEMA,
            "complete": False,
            **meta,
            "env": {},
            "model": {},
            "encoder": [],
            "accuracy": [],
            "frontend": [],
            "capacity": {},
            "skipped": [],
            "errors": [],
        }

    def add(self, key: str, row: dict[str, Any]) -> None:
        self.doc[key].append(row)
        self.write()

    def skip(self, what: str, why: str) -> None:
        say(f"skipped {what}: {why}")
        self.add("skipped", {"what": what, "why": why})

    def error(self, what: str, exc: BaseException) -> None:
        say(f"error in {what}: {type(exc).__name__}: {exc}")
        self.add("errors", {"what": what, "error": f"{type(exc).__name__}: {exc}"})

    def write(self) -> None:
        self.doc["written_utc"] = utc_now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, allow_nan=False, default=str))
        tmp.replace(self.path)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def say(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


def finite(x: float) -> float:
    """``x`` if finite, else raise (the JSON holds only real figures)."""
    if not math.isfinite(x):
        raise ValueError(f"non-finite figure {x}")
    return float(x)


# -- sections ----------------------------------------------------------------------------


def _predicted_s(rows: Sequence[dict[str, Any]], path: str, precision: str, batch: int) -> float:
    """Time of one call at ``batch`` from the last measured batch of the same kind (linear)."""
    prev = [
        r
        for r in rows
        if r["path"] == path and r["precision"] == precision and r.get("chunks_per_s")
    ]
    if not prev:
        return 0.0
    return batch / prev[-1]["chunks_per_s"]


def encoder_section(
    enc: Encoder,
    chunks: np.ndarray,
    plan: Plan,
    budget: Budget,
    report: Report,
) -> None:
    """Device-path chunks/s per precision and batch, then the Encoder's own path per batch."""
    dev = enc.device
    runner = to_channels_last(fold_for_inference(enc.model), dev)  # as the Encoder prepares it
    cases = [(p, b) for b in plan.batches for p in plan.precisions]
    for i, (prec, batch) in enumerate(cases):
        x = torch.from_numpy(chunks[:batch, None]).to(dev)
        x = x.contiguous(memory_format=torch.channels_last)

        def call(x: torch.Tensor = x, ctx: torch.dtype | None = PRECISIONS[prec]) -> torch.Tensor:
            with torch.inference_mode(), precision_context(dev, ctx):
                return runner(x)

        encoder_case(
            report,
            plan,
            dev,
            "device",
            prec,
            batch,
            call,
            sync_for(dev),
            left=budget.left_in("encoder"),
            parts=len(cases) - i,
        )

    # The monitor's path: Encoder.embed_chunks at the Encoder's own precision.
    own = encoder_precision(enc)
    monitor_batch = enc.batch_size
    for i, batch in enumerate(plan.batches):
        enc.batch_size = batch
        encoder_case(
            report,
            plan,
            dev,
            "encoder",
            own,
            batch,
            lambda sub=chunks[:batch]: enc.embed_chunks(sub),  # type: ignore[misc]
            lambda: None,  # embed_chunks returns numpy: already synchronised
            left=budget.left_in("monitor_path"),
            parts=len(plan.batches) - i,
        )
    enc.batch_size = monitor_batch


def encoder_case(
    report: Report,
    plan: Plan,
    dev: torch.device,
    path: str,
    precision: str,
    batch: int,
    call: Callable[[], object],
    sync: Callable[[], None],
    *,
    left: float,
    parts: int,
) -> None:
    """Time one encoder case within ``left / parts`` seconds and add its row (or say why not)."""
    label = "device path" if path == "device" else "Encoder.embed_chunks"
    what = f"encoder {label} {precision} batch {batch}"
    need = 2 * _predicted_s(report.doc["encoder"], path, precision, batch)
    if left <= 0 or need > left:
        report.skip(what, f"predicted {need:.1f} s for warm-up + 1 call, {left:.1f} s left")
        return
    try:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t = time_calls(
            call,
            sync,
            case_s=left / max(1, parts),
            min_case_s=plan.min_case_s,
            max_repeats=plan.max_repeats,
        )
    except Exception as exc:  # e.g. an op without a kernel for this dtype on this device
        report.error(what, exc)
        return
    row: dict[str, Any] = {
        "path": path,
        "precision": precision,
        "batch": batch,
        "chunks_per_s": finite(batch / t.median_s),
        "median_call_s": t.median_s,
        "warmup_s": t.warmup_s,
        "repeats": t.repeats,
        "status": t.status,
    }
    if dev.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    report.add("encoder", row)
    say(f"{what}: {row['chunks_per_s']:.0f} chunks/s ({t.repeats} repeats)")


def encoder_precision(enc: Encoder) -> str:
    """The precision ``Encoder._forward`` runs at on its device (see streamcover.device)."""
    if enc.device.type == "cuda":
        return "bf16" if gpu_autocast_dtype(enc.device) == torch.bfloat16 else "fp16"
    return "bf16" if enc.settings.encoder.cpu_precision == "bf16" else "fp32"


def cosine_rows(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays."""
    a = ref.astype(np.float64)
    b = out.astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def accuracy_section(
    enc: Encoder, cpu_enc: Encoder, chunks: np.ndarray, plan: Plan, budget: Budget, report: Report
) -> None:
    """Cosine of each precision's (and the Encoder path's) output against CPU fp32."""
    dev = enc.device
    sub = chunks[: plan.cos_chunks]
    ref = cpu_enc.embed_chunks(sub)  # CPU, fp32 (settings forced in main)
    runner = to_channels_last(fold_for_inference(enc.model), dev)
    outs: dict[str, Callable[[], np.ndarray]] = {}
    for prec in plan.precisions:
        ctx = PRECISIONS[prec]

        def run(ctx: torch.dtype | None = ctx) -> np.ndarray:
            ys = []
            for s in range(0, len(sub), 256):
                x = torch.from_numpy(sub[s : s + 256, None]).to(dev)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode(), precision_context(dev, ctx):
                    ys.append(runner(x).float().cpu().numpy())
            return np.concatenate(ys)

        outs[prec] = run
    own = encoder_precision(enc)
    outs[f"encoder ({own})"] = lambda: enc.embed_chunks(sub)
    if "fp32" in outs:  # last: when time is short, the lower precisions' cosines matter most
        outs["fp32"] = outs.pop("fp32")
    for name, fn in outs.items():
        what = f"accuracy {name}"
        left = budget.left_in("accuracy")
        if left <= 0 and report.doc["accuracy"]:
            report.skip(what, "the accuracy section's time is spent")
            continue
        try:
            cos = cosine_rows(ref, fn())
        except Exception as exc:
            report.error(what, exc)
            continue
        mean, low = float(cos.mean()), float(cos.min())
        row = {
            "precision": name,
            "device": str(dev),
            "chunks": len(sub),
            "reference": "cpu fp32 (Encoder.embed_chunks)",
            "cos_mean": finite(mean),
            "cos_min": finite(low),
            "cos_p01": finite(float(np.quantile(cos, 0.01))),
            "usable": bool(mean >= USABLE_COS_MEAN and low >= USABLE_COS_MIN),
        }
        report.add("accuracy", row)
        say(f"{what}: cos mean {mean:.6f} min {low:.6f}")


def frontend_section(device: torch.device, plan: Plan, budget: Budget, report: Report) -> None:
    """HPCP and CQT ``features_batch`` on ``device``: seconds of audio per second of compute."""
    sync = sync_for(device)
    section_end = budget.until("frontend")
    names = ("hpcp", "cqt")
    cases = [(n, b) for n in names for b in plan.fe_batches]
    music: dict[int, np.ndarray] = {}
    for i, (name, batch) in enumerate(cases):
        what = f"frontend {name} batch {batch}"
        left = section_end - budget.clock()
        prev = [
            r for r in report.doc["frontend"] if r["name"] == name and r["path"] == "features_batch"
        ]
        need = 2 * batch * plan.fe_seconds / prev[-1]["x_realtime"] if prev else 0.0
        if left <= 0 or need > left:
            report.skip(what, f"predicted {need:.1f} s for warm-up + 1 call, {left:.1f} s left")
            continue
        try:
            fe = make_frontend(FrontEndSettings(name=name))
            if fe.sample_rate not in music:
                music[fe.sample_rate] = synth_music(fe.sample_rate, plan.fe_seconds, seed=1)
            wave = music[fe.sample_rate]
            stacked = np.stack([np.roll(wave, k * 997) for k in range(batch)])
            waves = torch.from_numpy(stacked).to(device)
            t = time_calls(
                lambda fe=fe, waves=waves: fe.features_batch(waves),  # type: ignore[misc]
                sync,
                case_s=left / (len(cases) - i),
                min_case_s=plan.min_case_s,
                max_repeats=plan.max_repeats,
            )
            feats = fe.features_batch(waves)
            if not bool(torch.isfinite(feats).all()):
                raise ValueError("non-finite features")
            row: dict[str, Any] = {
                "name": name,
                "path": "features_batch",
                "device": str(device),
                "batch": batch,
                "seconds_each": plan.fe_seconds,
                "sample_rate": fe.sample_rate,
                "shape": list(feats.shape),
                "x_realtime": finite(batch * plan.fe_seconds / t.median_s),
                "median_call_s": t.median_s,
                "warmup_s": t.warmup_s,
                "repeats": t.repeats,
                "status": t.status,
            }
            if device.type != "cpu" and batch == plan.fe_batches[0]:
                cpu = fe.features(wave)
                got = feats[0].cpu().numpy()
                row["cpu_max_abs_diff"] = finite(float(np.abs(cpu - got).max()))
                row["cpu_corr"] = finite(float(np.corrcoef(cpu.ravel(), got.ravel())[0, 1]))
        except Exception as exc:
            report.error(what, exc)
            continue
        report.add("frontend", row)
        say(f"{what}: {row['x_realtime']:.0f}x real time ({t.repeats} repeats)")


def host_frontend_section(plan: Plan, budget: Budget, report: Report, torch_threads: int) -> None:
    """The monitor's front end as it runs today: ``push_many`` over many live HPCP streams in
    0.5 s blocks, on the host CPU with the monitor's torch threads.

    Blocks are pushed for all streams in turn until the audio ends or the section's time
    does; the first two are warm-up, the rest are timed (x real time = streams x block
    seconds / mean wall seconds per block)."""
    streams = plan.fe_batches[-1]
    seconds = min(plan.fe_seconds, 20.0)
    what = f"frontend hpcp push_many {streams} streams (host cpu)"
    if budget.left_in("host_frontend") < 1:
        report.skip(what, f"{budget.left_in('host_frontend'):.1f} s of budget left")
        return
    before = torch.get_num_threads()
    try:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        fe = make_frontend(FrontEndSettings(name="hpcp"))
        wave = synth_music(fe.sample_rate, seconds, seed=2)
        block = fe.sample_rate // 2
        blocks = [wave[i : i + block] for i in range(0, len(wave) - block + 1, block)]
        fstreams = [fe.stream() for _ in range(streams)]
        warm = 2
        walls: list[float] = []
        t_warm = time.perf_counter()
        for i, b in enumerate(blocks):
            if i >= warm + 4 and budget.left_in("host_frontend") < 2 * statistics.median(walls):
                break
            t = time.perf_counter()
            push_many(fstreams, [b] * streams)
            if i >= warm:
                walls.append(time.perf_counter() - t)
            elif i == warm - 1:
                t_warm = time.perf_counter() - t_warm
        if not walls:
            raise ValueError(f"{seconds} s of audio is too short to time push_many")
        block_s = block / fe.sample_rate
        row: dict[str, Any] = {
            "name": "hpcp",
            "path": "push_many",
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
            "batch": streams,
            "seconds_each": block_s,  # audio per stream per timed call (one block)
            "seconds_pushed": block_s * (warm + len(walls)),
            "sample_rate": fe.sample_rate,
            "x_realtime": finite(streams * block_s * len(walls) / sum(walls)),
            "median_call_s": sum(walls) / len(walls),
            "warmup_s": t_warm,
            "repeats": len(walls),
            "status": "ok" if len(walls) >= 4 else "short",
            "frames_out": fstreams[0].frames_emitted,
        }
    except Exception as exc:
        report.error(what, exc)
        return
    finally:
        torch.set_num_threads(before)
    report.add("frontend", row)
    say(f"{what}: {row['x_realtime']:.0f}x real time ({len(walls)} blocks timed)")


def capacity(
    encoder_rows: Sequence[dict[str, Any]],
    accuracy_rows: Sequence[dict[str, Any]],
    frontend_rows: Sequence[dict[str, Any]],
    *,
    chunks_per_stream_s: float,
    monitor_batch: int,
) -> dict[str, Any]:
    """The capacity estimate: ``streams = min(E / r, F)`` (see the module docstring).

    E: the Encoder path's chunks/s at ``monitor_batch`` (else its nearest measured batch);
    r: ``chunks_per_stream_s``; F: the HPCP front end's largest-batch real-time multiple.
    ``best`` redoes it with the fastest device-path row whose precision is usable.
    """
    out: dict[str, Any] = {
        "formula": "streams = min(E / r, F); E = encoder chunks/s, r = chunks/s per live "
        "stream (1 / audio.hop_seconds), F = HPCP front end x real time (batched); host-CPU "
        "work (catalog search, decisions, Kafka I/O) not included: an upper bound",
        "chunks_per_stream_s": chunks_per_stream_s,
        "monitor_batch": monitor_batch,
    }
    fe = [r for r in frontend_rows if r["name"] == "hpcp" and r["path"] == "features_batch"]
    f = max(fe, key=lambda r: r["batch"]) if fe else None
    if f is not None:
        out["frontend_x_realtime"] = f["x_realtime"]
        out["frontend_case"] = f"hpcp features_batch {f['device']} batch {f['batch']}"
        out["streams_frontend_bound"] = f["x_realtime"]

    def combine(e: float, frontend: dict[str, Any] | None = f) -> dict[str, Any]:
        res: dict[str, Any] = {"streams_encoder_bound": e / chunks_per_stream_s}
        if frontend is not None:
            x = frontend["x_realtime"]
            res["streams"] = min(res["streams_encoder_bound"], x)
            res["binding"] = "encoder" if res["streams_encoder_bound"] <= x else "frontend"
        else:
            res["streams"] = res["streams_encoder_bound"]
            res["binding"] = "encoder (front end not measured)"
        return res

    mon = [r for r in encoder_rows if r["path"] == "encoder"]
    if mon:
        e = min(mon, key=lambda r: (abs(r["batch"] - monitor_batch), r["batch"]))
        out.update(
            encoder_chunks_per_s=e["chunks_per_s"],
            encoder_case=f"Encoder.embed_chunks {e['precision']} batch {e['batch']}",
            **combine(e["chunks_per_s"]),
        )
        host = [r for r in frontend_rows if r["path"] == "push_many"]
        if host:
            h = host[-1]
            out["host_frontend"] = {
                "frontend_x_realtime": h["x_realtime"],
                "frontend_case": f"hpcp push_many on the host cpu, {h['torch_threads']} "
                f"torch thread(s), {h['batch']} streams (the monitor's front end today)",
                "encoder_case": out["encoder_case"],
                **combine(e["chunks_per_s"], h),
            }
    usable = {r["precision"] for r in accuracy_rows if r["usable"]}
    dev_rows = [r for r in encoder_rows if r["path"] == "device" and r["precision"] in usable]
    if dev_rows:
        b = max(dev_rows, key=lambda r: r["chunks_per_s"])
        out["best"] = {
            "encoder_chunks_per_s": b["chunks_per_s"],
            "encoder_case": f"device path {b['precision']} batch {b['batch']}",
            **combine(b["chunks_per_s"]),
        }
    return out


# -- the table ---------------------------------------------------------------------------


def table(doc: dict[str, Any]) -> str:
    """One plain-text table of every figure in ``doc``."""
    rows: list[tuple[str, str, str, str, str, str]] = []
    cos = {r["precision"]: r for r in doc["accuracy"]}
    for r in doc["encoder"]:
        key = r["precision"] if r["path"] == "device" else f"encoder ({r['precision']})"
        c = cos.get(key)
        rows.append(
            (
                "encoder",
                "device path" if r["path"] == "device" else "Encoder.embed_chunks",
                f"{r['precision']} b{r['batch']}",
                f"{r['chunks_per_s']:.0f}",
                "chunks/s",
                f"cos {c['cos_mean']:.5f} / min {c['cos_min']:.4f}" if c else "",
            )
        )
    for r in doc["frontend"]:
        extra = f"r {r['cpu_corr']:.5f} vs cpu" if "cpu_corr" in r else ""
        rows.append(
            (
                "front end",
                f"{r['name']} {r['path']} {r['device']}",
                f"b{r['batch']} x {r.get('seconds_pushed', r['seconds_each']):.0f} s",
                f"{r['x_realtime']:.0f}",
                "x real time",
                extra,
            )
        )
    cap = doc["capacity"]
    for label, c in (
        ("Encoder path", cap),
        ("best usable", cap.get("best", {})),
        ("host front end", cap.get("host_frontend", {})),
    ):
        if "streams" in c:
            f = c.get("frontend_x_realtime", cap.get("frontend_x_realtime"))
            rows.append(
                (
                    "capacity",
                    label,
                    c["encoder_case"],
                    f"{c['streams']:.0f}",
                    "live streams",
                    f"E/r {c['streams_encoder_bound']:.0f}, "
                    + (f"F {f:.0f}, " if f is not None else "")
                    + f"bound: {c['binding']}",
                )
            )
    head = ("section", "what", "case", "value", "unit", "note")
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                (v.rjust(w) if i == 3 else v.ljust(w))
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------


def default_json_path() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu-check.json" if out else Path("gpu-check.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    ap.add_argument("--quick", action="store_true", help="small cases: the CPU smoke run")
    ap.add_argument(
        "--json", type=Path, default=None, help="$OUT/gpu-check.json, else ./gpu-check.json"
    )
    ap.add_argument(
        "--budget-s", type=float, default=None, help="seconds for all sections (420, quick 30)"
    )
    ap.add_argument(
        "--started-at",
        type=float,
        default=None,
        help="epoch seconds the whole check started (set-up included; gpu-check.sh passes it)",
    )
    ap.add_argument(
        "--max-total-s",
        type=float,
        default=480.0,
        help="hard limit from --started-at, set-up included (the budget is cut to fit)",
    )
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--batches", default=None, help="encoder batches, e.g. 64,256,1024,4096")
    return ap.parse_args(argv)


def effective_budget(args: argparse.Namespace, now: float) -> float:
    """The budget asked for (or the default), cut to what ``--max-total-s`` leaves."""
    asked = args.budget_s if args.budget_s is not None else (30.0 if args.quick else 420.0)
    if args.started_at is None:
        return asked
    # 15 s kept back for the table, the JSON and the process exit.
    return max(0.0, min(asked, args.max_total_s - (now - args.started_at) - 15.0))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(effective_budget(args, time.time()))
    plan = QUICK if args.quick else FULL
    if args.batches:
        plan = dataclasses.replace(plan, batches=tuple(int(b) for b in args.batches.split(",")))
    try:
        device = select_device(args.device)  # "cuda" without CUDA is an error, not a CPU run
    except RuntimeError as exc:
        say(str(exc))
        return 2
    path = args.json or default_json_path()
    report = Report(
        path,
        {
            "started_utc": utc_now(),
            "argv": sys.argv[1:] if argv is None else argv,
            "quick": args.quick,
            "budget_s": round(budget.left(), 1),
            "plan": dataclasses.asdict(plan),
        },
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    rc = 0
    try:
        report.doc["env"] = environment(device)
        report.write()
        say(f"device {device}, budget {budget.left():.0f} s, json {path}")
        base = get_settings()
        settings = base.model_copy(
            update={"encoder": base.encoder.model_copy(update={"cpu_precision": "fp32"})}
        )
        enc = Encoder.from_checkpoint(args.model, device=device, settings=settings)
        cpu_enc = enc if device.type == "cpu" else cpu_encoder(args.model, settings)
        report.doc["model"] = {
            "path": str(args.model),
            "model_id": enc.model_id,
            "frontend": enc.cfg.frontend,
            "in_bins": enc.cfg.in_bins,
            "frames": CHUNK_FRAMES,
            "embed_dim": enc.cfg.embed_dim,
            "encoder_precision": encoder_precision(enc),
        }
        chunks = hpcp_chunks(
            enc.frontend,
            plan.music_seconds,
            max(max(plan.batches), plan.cos_chunks),
            enc.cfg.in_bins,
        )
        report.doc["model"]["input"] = (
            f"HPCP of {plan.music_seconds:.0f} s synthetic chord music, 43-frame windows at a "
            "1-frame step in 12 transpositions, tiled"
        )
        report.write()
        encoder_section(enc, chunks, plan, budget, report)
        accuracy_section(enc, cpu_enc, chunks, plan, budget, report)
        frontend_section(device, plan, budget, report)
        host_frontend_section(plan, budget, report, settings.monitor.torch_threads)
        report.doc["capacity"] = estimate(report.doc, settings)
        report.doc["complete"] = True
    except SystemExit as exc:  # SIGTERM from the shell's timeout: keep what was measured
        say(f"stopped ({exc.code}); writing what was measured")
        rc = int(exc.code) if isinstance(exc.code, int) else 1
    except Exception as exc:
        report.error("run", exc)
        rc = 1
    finally:
        with contextlib.suppress(Exception):
            if not report.doc["capacity"]:
                report.doc["capacity"] = estimate(report.doc, get_settings())
        report.doc["elapsed_s"] = round(budget.elapsed(), 1)
        if math.isfinite(rss := peak_rss_mb()):
            report.doc["env"]["peak_rss_mb"] = round(rss, 1)
        report.doc["finished_utc"] = utc_now()
        report.write()
    print(table(report.doc))
    cap = report.doc["capacity"]
    print(f"capacity: {cap.get('formula', '')}")
    print(
        f"elapsed {report.doc['elapsed_s']:.0f} s of a {report.doc['budget_s']:.0f} s budget; "
        f"{len(report.doc['skipped'])} skipped, {len(report.doc['errors'])} errors; json {path}"
    )
    return rc


def cpu_encoder(model: Path, settings: Settings) -> Encoder:
    """The fp32 CPU reference the accuracy section compares against."""
    return Encoder.from_checkpoint(model, device="cpu", settings=settings)


def estimate(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return capacity(
        doc["encoder"],
        doc["accuracy"],
        doc["frontend"],
        chunks_per_stream_s=1.0 / settings.audio.hop_seconds,
        monitor_batch=settings.encoder.batch_size,
    )


if __name__ == "__main__":
    raise SystemExit(main())
