"""Front-end throughput: CQT and HPCP as multiples of real time, and their peak memory.

    nice -n 10 .venv/bin/python ops/bench/bench_frontend.py [--seconds 60] [--runs 5]
        [--threads 1] [--batch 8] [--designs] [--decode]

For each front-end, in a fresh subprocess (so peak RSS is its own):
  single  features() on one waveform of --seconds (default 60 s)
  batch   features_batch() on --batch waveforms of --seconds each
  stream  FeatureStream.push() in 0.5 s blocks (the monitor's path)
Figures are medians over --runs runs, as wall-clock and as process CPU time (the machine is
shared: CPU time is the bound the code would reach on an idle core). Audio is real music
from ops/fetch-debian-media.sh when available, else a synthetic chord mixture (said so).
--designs also times the CQT alternatives (single-rate FFT kernel, librosa) and --decode
the two resampling paths (PyAV's swresample vs native decode + torchaudio).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TARGET_X_RT = 300.0


def _music(sample_rate: int, seconds: float) -> tuple[np.ndarray, str]:
    from streamcover.audio.decode import load_audio

    proc = subprocess.run(
        [str(ROOT / "ops" / "fetch-debian-media.sh"), "warzone2100-music"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0:
        files = sorted(Path(proc.stdout.strip().splitlines()[-1]).rglob("*.opus"))
        long = [f for f in files if f.stat().st_size > 2_000_000]
        if long:
            x = load_audio(long[0], sample_rate, max_seconds=seconds)
            if len(x) >= int(seconds * sample_rate):
                return x, f"real music ({long[0].name})"
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(0)
    x = 0.02 * rng.standard_normal(len(t))
    for f in (220.0, 277.2, 329.6, 440.0):
        x += 0.2 * np.sin(2 * np.pi * f * t)
    return x.astype(np.float32), "synthetic chord + noise (music fetch failed)"


def _time(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up: kernels, caches, allocator
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(name: str, args: dict[str, Any], queue: Any) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    from streamcover.audio.frontend import make_frontend
    from streamcover.config import FrontEndSettings

    fe = make_frontend(FrontEndSettings(name=name, cqt_pool=args["pool"]))
    x, source = _music(fe.sample_rate, args["seconds"])
    waves = torch.from_numpy(np.stack([np.roll(x, i * 1000) for i in range(args["batch"])]))
    base_rss = _rss_mb()
    sec = args["seconds"]
    out: dict[str, Any] = {"source": source, "fps": fe.frames_per_second}
    wall, cpu = _time(lambda: fe.features(x), args["runs"])
    out["single"] = (sec / wall, sec / cpu)
    wall, cpu = _time(lambda: fe.features_batch(waves), args["runs"])
    out["batch"] = (args["batch"] * sec / wall, args["batch"] * sec / cpu)
    block = int(0.5 * fe.sample_rate)

    def stream() -> None:
        s = fe.stream()
        for i in range(0, len(x), block):
            s.push(x[i : i + block])

    wall, cpu = _time(stream, args["runs"])
    out["stream"] = (sec / wall, sec / cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss"] = (base_rss, peak)
    out["shape"] = list(fe.features(x).shape)
    queue.put(out)


def _designs(args: argparse.Namespace) -> None:
    """CQT alternatives on the same 60 s: multirate GEMM (ours), single-rate FFT kernel, librosa."""
    import torch

    torch.set_num_threads(args.threads)
    from streamcover.audio.cqt import CQTParams, CQTTransform, cqt_frequencies

    p = CQTParams()
    x, source = _music(p.sample_rate, args.seconds)
    print(f"\nCQT designs, {args.seconds:.0f} s of {source}, raw frames (no pooling):")
    ours = CQTTransform(p)
    xt = torch.from_numpy(np.pad(x, ours.context)).unsqueeze(0)
    wall, cpu = _time(lambda: ours.frames(xt), args.runs)
    print(
        f"  multirate + time-domain GEMM (ours)  {args.seconds / wall:8.0f}x RT wall"
        f"  {args.seconds / cpu:8.0f}x RT cpu"
    )
    # Single rate: one 16384-point FFT per hop, dense frequency-domain kernels for 84 bins.
    freqs = cqt_frequencies(p)
    r = 2 ** (1 / 12)
    q = 1 / ((r * r - 1) / (r * r + 1))
    n_fft = 16384
    t = np.arange(n_fft) - n_fft // 2
    ker = np.zeros((84, n_fft), np.complex128)
    for k, f in enumerate(freqs):
        n = q * p.sample_rate / f
        win = np.where(np.abs(t) < n / 2, 0.5 + 0.5 * np.cos(2 * np.pi * t / n), 0.0)
        kk = win * np.exp(2j * np.pi * f * t / p.sample_rate)
        ker[k] = kk / np.abs(kk).sum()
    kf = torch.from_numpy(
        np.conj(np.fft.fft(np.fft.ifftshift(ker, axes=1), axis=1))[:, : n_fft // 2 + 1] / n_fft
    ).to(torch.complex64)
    xs = torch.from_numpy(x).unsqueeze(0)
    rect = torch.ones(n_fft)

    def single_rate() -> torch.Tensor:
        spec = torch.stft(xs, n_fft, 512, window=rect, center=True, return_complex=True)
        return (kf @ spec[0]).abs()

    wall, cpu = _time(single_rate, max(1, args.runs // 2))
    print(
        f"  single-rate 16384-pt FFT + dense kernel {args.seconds / wall:6.0f}x RT wall"
        f"  {args.seconds / cpu:8.0f}x RT cpu"
    )
    try:
        import librosa
    except ImportError:
        print("  librosa not installed: skipped")
        return

    def lib() -> np.ndarray:
        return np.abs(
            librosa.cqt(x, sr=p.sample_rate, hop_length=512, fmin=p.fmin, n_bins=84, tuning=0.0)
        )

    wall, cpu = _time(lib, max(1, args.runs // 2))
    print(
        f"  librosa.cqt (reference, soxr_hq multirate) {args.seconds / wall:4.0f}x RT wall"
        f"  {args.seconds / cpu:8.0f}x RT cpu"
    )


def _decode(args: argparse.Namespace) -> None:
    """Decoding + resampling paths on one whole Opus track (48 kHz stereo)."""
    import torch
    import torchaudio.functional as AF

    torch.set_num_threads(args.threads)
    from streamcover.audio.decode import load_audio, probe_duration

    proc = subprocess.run(
        [str(ROOT / "ops" / "fetch-debian-media.sh"), "warzone2100-music"],
        capture_output=True,
        text=True,
        check=True,
    )
    files = sorted(Path(proc.stdout.strip().splitlines()[-1]).rglob("*.opus"))
    path = max(files, key=lambda f: f.stat().st_size)
    dur = probe_duration(path) or 0.0
    print(f"\nDecode {path.name} ({dur:.0f} s, Opus 48 kHz stereo):")
    for sr in (22_050, 44_100):

        def av_path(sr: int = sr) -> np.ndarray:
            return load_audio(path, sr)

        wall, cpu = _time(av_path, max(1, args.runs // 2))
        print(
            f"  PyAV decode + swresample -> {sr} Hz      {dur / wall:6.0f}x RT wall  {dur / cpu:6.0f}x RT cpu"
        )

        def ta(sr: int = sr) -> np.ndarray:
            y = load_audio(path, 48_000)
            return AF.resample(torch.from_numpy(y), 48_000, sr).numpy()

        wall, cpu = _time(ta, max(1, args.runs // 2))
        print(
            f"  PyAV decode 48 kHz + torchaudio -> {sr} {dur / wall:6.0f}x RT wall  {dur / cpu:6.0f}x RT cpu"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pool", type=int, default=20, help="CQT pooling factor")
    ap.add_argument("--designs", action="store_true", help="also time CQT design alternatives")
    ap.add_argument("--decode", action="store_true", help="also time the decode/resample paths")
    ap.add_argument("--json", action="store_true", help="print results as JSON too")
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"front-end benchmark: {args.seconds:.0f} s of audio, median of {args.runs} runs, "
        f"torch threads={args.threads}, batch={args.batch}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} (shared machine)"
    )
    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {}
    for name in ("cqt", "hpcp"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, vars(args), queue))
        proc.start()
        res = queue.get()
        proc.join()
        results[name] = res
        label = f"{name} (pool {args.pool})" if name == "cqt" else name
        print(f"\n{label}: {res['source']}, output {res['shape']} at {res['fps']:.4f} fps")
        for mode in ("single", "batch", "stream"):
            w, c = res[mode]
            flag = (
                "ok"
                if w >= TARGET_X_RT
                else ("cpu-bound ok, wall hit by contention" if c >= TARGET_X_RT else "MISS")
            )
            print(
                f"  {mode:7s} {w:8.0f}x RT wall  {c:8.0f}x RT cpu   target {TARGET_X_RT:.0f}x: {flag}"
            )
        base, peak = res["rss"]
        print(
            f"  peak RSS {peak:.0f} MB (baseline after imports and audio {base:.0f} MB, +{peak - base:.0f} MB)"
        )
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    if args.designs:
        _designs(args)
    if args.decode:
        _decode(args)
    if args.json:
        print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
