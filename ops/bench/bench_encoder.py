"""Encoder throughput on this machine: chunks/s per config, front-end shape, batch and variant.

Run on demand (never in CI)::

    nice -n 10 .venv/bin/python ops/bench/bench_encoder.py                       # both presets
    nice -n 10 .venv/bin/python ops/bench/bench_encoder.py --configs paper --frontends cqt \
        --variants eager,folded,frozen,bf16,compile --batches 1,16,64

For each case it prints the median wall-clock chunks/s, the median chunks per CPU-second
(less sensitive to other processes on a shared machine: x cores = the uncontended ceiling),
FLOPs per chunk (torch's FlopCounterMode, 2 per multiply-add), the GFLOP/s that implies, the
peak RSS while running, and the one-off preparation time (folding, tracing, compiling). A
plain sgemm calibration shows what this CPU does at the moment, so a missed target shows its
bound. The load average is printed because the machine is shared.

Variants: eager (CoverEncoder as trained), folded (BN folded, neck+FC merged: what
``inference.Encoder`` runs), frozen (folded + TorchScript trace/freeze), cl (folded,
channels_last), bf16 (folded under CPU bf16 autocast), int8fc (folded + dynamic int8 head),
compile (torch.compile of folded, inductor).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

# Same as streamcover.device: passive OpenMP waits (must precede the torch import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamcover.device import configure_threads
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder, count_parameters
from streamcover.model.optimize import fold_for_inference, script_for_inference

TARGETS = {("compact", "hpcp"): 400.0, ("paper", "cqt"): 100.0}


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def sgemm_gflops(threads: int, n: int = 1024, reps: int = 10) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


def flops_per_chunk(model: CoverEncoder, bins: int, frames: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(4, 1, bins, frames)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 4


def randomize_stats(model: CoverEncoder) -> CoverEncoder:
    """BN statistics of a trained-looking model (speed does not depend on them, folding does)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


def make_variant(
    name: str, model: CoverEncoder, example: Tensor
) -> tuple[Callable[[Tensor], Tensor], Callable[[], contextlib.AbstractContextManager[None]], bool]:
    """(runner, context factory, wants channels_last input)."""
    if name == "eager":
        return (lambda x: F.normalize(model(x).embedding, dim=1)), nothing, False
    folded = fold_for_inference(model)
    if name == "folded":
        return folded, nothing, False
    if name == "frozen":
        return script_for_inference(folded, example), nothing, False
    if name == "cl":
        return folded.to(memory_format=torch.channels_last), nothing, True  # type: ignore[call-overload]  # stubs omit memory_format
    if name == "bf16":
        return folded, (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), False
    if name == "bf16w":  # weights and activations stored in bf16, no autocast casts
        b16 = fold_for_inference(model).to(torch.bfloat16)
        return (lambda x: b16(x.to(torch.bfloat16)).float()), nothing, False
    if name == "bf16cl":
        b16c = fold_for_inference(model).to(torch.bfloat16, memory_format=torch.channels_last)  # type: ignore[call-overload]
        return (
            (
                lambda x: b16c(
                    x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
                ).float()
            ),
            nothing,
            False,
        )
    if name == "int8fc":
        q = torch.ao.quantization.quantize_dynamic(folded, {nn.Linear}, dtype=torch.qint8)
        return q, nothing, False
    if name == "compile":
        compiled = torch.compile(folded, dynamic=False)
        return compiled, nothing, False
    raise SystemExit(f"unknown variant {name!r}")


def time_case(
    runner: Callable[[Tensor], Tensor],
    ctx: Callable[[], contextlib.AbstractContextManager[None]],
    x: Tensor,
    repeats: int,
    min_seconds: float,
) -> tuple[float, float]:
    """Median wall chunks/s and median chunks per CPU-second."""
    walls: list[float] = []
    cpus: list[float] = []
    with torch.inference_mode(), ctx():
        runner(x)
        runner(x)
        start = time.perf_counter()
        while len(walls) < repeats or time.perf_counter() - start < min_seconds:
            t, c = time.perf_counter(), time.process_time()
            runner(x)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            if len(walls) >= 200:
                break
    n = x.shape[0]
    return n / statistics.median(walls), n / max(statistics.median(cpus), 1e-9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--configs", default="compact,paper")
    ap.add_argument("--frontends", default="hpcp,cqt")
    ap.add_argument("--variants", default="eager,folded,frozen")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--frames", type=int, default=43, help="T per chunk (43 = 20 s at 2.15 fps)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = physical cores)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    threads = configure_threads(args.threads)
    print(
        f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"threads {threads}, load avg {load_avg()} (shared machine)"
    )
    print(f"sgemm 1024^3 calibration: {sgemm_gflops(threads):.1f} GFLOP/s")
    hdr = (
        f"{'config':8} {'fe':4} {'shape':>7} {'variant':8} {'batch':>5} {'chunks/s':>9} "
        f"{'per-cpu-s':>9} {'GFLOP/ch':>8} {'GFLOP/s':>7} {'peakMB':>7} {'prep s':>6}"
    )
    print(hdr)
    rows = []
    for cname in args.configs.split(","):
        for fe in args.frontends.split(","):
            cfg = getattr(EncoderConfig, cname)(fe)
            torch.manual_seed(0)
            model = randomize_stats(CoverEncoder(cfg))
            gflop = flops_per_chunk(model, cfg.in_bins, args.frames) / 1e9
            example = torch.rand(2, 1, cfg.in_bins, args.frames)
            for variant in args.variants.split(","):
                t0 = time.perf_counter()
                try:
                    runner, ctx, cl = make_variant(variant, model, example)
                    with (
                        torch.inference_mode(),
                        ctx(),
                    ):  # first call: tracing/compiling happens here
                        runner(
                            example.contiguous(memory_format=torch.channels_last) if cl else example
                        )
                except Exception as exc:
                    print(f"{cname:8} {fe:4} {variant:8} failed: {type(exc).__name__}: {exc}")
                    continue
                prep = time.perf_counter() - t0
                for bs in (int(b) for b in args.batches.split(",")):
                    x = torch.rand(bs, 1, cfg.in_bins, args.frames)
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    reset_peak_rss()
                    wall, per_cpu = time_case(runner, ctx, x, args.repeats, args.min_seconds)
                    row = {
                        "config": cname,
                        "frontend": fe,
                        "variant": variant,
                        "batch": bs,
                        "bins": cfg.in_bins,
                        "frames": args.frames,
                        "params": count_parameters(model),
                        "chunks_per_s": wall,
                        "chunks_per_cpu_s": per_cpu,
                        "gflop_per_chunk": gflop,
                        "gflops": wall * gflop,
                        "peak_rss_mb": peak_rss_mb(),
                        "prep_s": prep,
                        "threads": threads,
                    }
                    rows.append(row)
                    print(
                        f"{cname:8} {fe:4} {cfg.in_bins:>3}x{args.frames:<3} {variant:8} {bs:>5} "
                        f"{wall:>9.1f} {per_cpu:>9.1f} {gflop:>8.3f} {wall * gflop:>7.1f} "
                        f"{row['peak_rss_mb']:>7.0f} {prep:>6.1f}",
                        flush=True,
                    )
    print(f"load avg at end {load_avg()}")
    for (cname, fe), target in TARGETS.items():
        best = [r for r in rows if r["config"] == cname and r["frontend"] == fe]
        if best:
            top = max(best, key=lambda r: r["chunks_per_s"])
            print(
                f"target {cname}/{fe} >= {target:.0f} chunks/s: best {top['chunks_per_s']:.0f} "
                f"({top['variant']}, batch {top['batch']}); ceiling at this GFLOP/s "
                f"{top['gflops'] / top['gflop_per_chunk']:.0f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
