"""Speed and tempo sweep: how an exact copy's MaxMean falls as a re-upload is played faster or
slower, with the HPCP tuning fold on and off, and what query-side tempo probing adds.

    .venv/bin/python ops/bench/speed_sweep.py [--recordings 16] [--excerpt 60]
        [--speeds 0.90,0.94,0.97,1.0,1.03,1.06,1.10] [--tempos 0.85,0.92,1.08,1.15]
        [--phases 1,2] [--probes 0.94,1.0,1.06] [--negatives 16]

Real recordings of the calibration's positive Debian packages (streamcover.eval.detect_data)
are the references, embedded on the catalog's reference grid (``catalog.reference_hop_seconds``)
with the shipped model. Each query is an excerpt from a random start, played at a speed factor
(resampled: tempo and pitch together) or, for ``--tempos``, time-stretched with pitch kept
(phase vocoder); no noise or re-encoding, so only the speed acts. The score is MaxMean over the
query's chunks (query hop ``audio.hop_seconds``) against its own reference. Columns:

  phases=1   the shared data set's HPCP alone (``hpcp_tuning_phases = 1``)
  phases=n   the tuning fold over n phases (2 is the default), references folded alike
             (``--ref-speeds``: references also embedded at those speeds, all as one
             reference's chunks — a lever measured and not adopted, see the result note)
  +probe     the last phases column, and the best MaxMean over copies of the query's
             features resampled in time by the ``--probes`` factors (a lever measured and
             not adopted: it lifts impostors as much as copies; ``--probes ''`` skips it)

``--negatives`` excerpts of the negative packages give the impostor side: their best MaxMean
against every reference, with and without probing (probing raises impostor scores too).
Figures are medians and 10th percentiles; they are deterministic in ``--seed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamcover.audio.chunking import chunk_features
from streamcover.audio.decode import load_audio
from streamcover.audio.frontend import HPCPFrontEnd
from streamcover.audio.hpcp import HPCPParams
from streamcover.audio.speed import change_speed
from streamcover.config import get_settings
from streamcover.eval.detect_data import (
    NEGATIVE_PACKAGES,
    POSITIVE_PACKAGES,
    PackageSpec,
    Recording,
    fetch_package,
    package_recordings,
)
from streamcover.model.loading import load_encoder
from streamcover.progress import progress_bar


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def time_stretch(wave: np.ndarray, rate: float, sample_rate: int) -> np.ndarray:
    """``rate`` times as fast with the pitch kept (phase vocoder on a 4,096-point STFT)."""
    import torchaudio.functional as AF

    n_fft, hop = 4096, 1024
    win = torch.hann_window(n_fft)
    spec = torch.stft(torch.from_numpy(wave), n_fft, hop, window=win, return_complex=True)
    adv = torch.linspace(0, np.pi * hop, n_fft // 2 + 1)[..., None]
    out = AF.phase_vocoder(spec, rate, adv)
    return torch.istft(out, n_fft, hop, window=win).numpy().astype(np.float32)


def resample_time(feat: np.ndarray, factor: float) -> np.ndarray:
    """Features [bins, T] stretched in time by ``factor`` (linear interpolation)."""
    n = feat.shape[1]
    m = max(1, round(n * factor))
    pos = np.linspace(0, n - 1, m)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[None]
    return (feat[:, lo] * (1 - w) + feat[:, hi] * w).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=16)
    ap.add_argument("--negatives", type=int, default=16)
    ap.add_argument("--excerpt", type=float, default=60.0)
    ap.add_argument("--speeds", type=_floats, default=_floats("0.90,0.94,0.97,0.985,1.0,1.015,1.03,1.06,1.10"))
    ap.add_argument("--tempos", type=_floats, default=_floats("0.85,0.92,1.08,1.15"))
    ap.add_argument("--phases", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2])
    ap.add_argument("--probes", type=_floats, default=_floats("0.94,1.0,1.06"))
    ap.add_argument("--ref-speeds", type=_floats, default=[],
                    help="also embed each reference played at these speeds (extra chunks of it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    settings = get_settings()
    encoder, _ = load_encoder(settings)
    a = settings.audio
    ref_hop = settings.catalog.reference_hop_seconds
    fronts = {f"phases={k}": HPCPFrontEnd(HPCPParams(tuning_phases=k)) for k in args.phases}
    last = f"phases={args.phases[-1]}"
    probes = [p for p in args.probes if p != 1.0]
    fps = fronts[last].frames_per_second
    rng = np.random.default_rng(args.seed)

    def embed(feat: np.ndarray, hop: float) -> np.ndarray:
        chunks, _ = chunk_features(feat, fps, a.window_seconds, hop, a.min_clip_seconds)
        return encoder.embed_chunks(chunks)

    def pick(specs: tuple[PackageSpec, ...], count: int) -> list[Recording]:
        recs = [r for s in specs for r in package_recordings(s, fetch_package(s.name))
                if r.duration_s >= args.excerpt + 5]
        idx = rng.choice(len(recs), size=min(count, len(recs)), replace=False)
        return [recs[i] for i in sorted(idx)]

    positives = pick(POSITIVE_PACKAGES, args.recordings)
    negatives = pick(NEGATIVE_PACKAGES, args.negatives)
    conditions = [("speed", s) for s in args.speeds] + [("tempo", t) for t in args.tempos]
    cols = [*fronts, *(["+probe"] if probes else [])]
    scores: dict[tuple[str, float], dict[str, list[float]]] = {c: {k: [] for k in cols} for c in conditions}
    refs: dict[str, list[np.ndarray]] = {name: [] for name in fronts}
    sr = 44_100
    with progress_bar(False) as bar:
        task = bar.add_task("positives", total=len(positives))
        for rec in positives:
            wave = load_audio(rec.path, sr)
            for name, fe in fronts.items():
                variants = [wave] + [change_speed(wave, v) for v in args.ref_speeds]
                refs[name].append(np.concatenate([embed(fe.features(v), ref_hop) for v in variants]))
            start = rng.uniform(0, len(wave) / sr - args.excerpt - 1)
            seg = wave[int(start * sr): int((start + args.excerpt) * sr)]
            for kind, factor in conditions:
                q = change_speed(seg, factor) if kind == "speed" else time_stretch(seg, factor, sr)
                for name, fe in fronts.items():
                    feat = fe.features(q)
                    sims = embed(feat, a.hop_seconds) @ refs[name][-1].T
                    scores[(kind, factor)][name].append(float(sims.max(1).mean()))
                    if name == last and probes:
                        # Probing: the best MaxMean over time-resampled copies of the query.
                        mm = [float(sims.max(1).mean())]
                        for p in probes:
                            s2 = embed(resample_time(feat, p), a.hop_seconds) @ refs[name][-1].T
                            mm.append(float(s2.max(1).mean()))
                        scores[(kind, factor)]["+probe"].append(max(mm))
            bar.advance(task)
        impostor: dict[str, list[float]] = {last: [], **({"+probe": []} if probes else {})}
        task = bar.add_task("negatives", total=len(negatives))
        allrefs = np.concatenate(refs[last])
        owner = np.concatenate([np.full(len(r), i) for i, r in enumerate(refs[last])])
        for rec in negatives:
            wave = load_audio(rec.path, sr)
            start = rng.uniform(0, len(wave) / sr - args.excerpt - 1)
            seg = wave[int(start * sr): int((start + args.excerpt) * sr)]
            feat = fronts[last].features(seg)
            per_probe = []
            for p in [1.0, *probes]:
                sims = embed(feat if p == 1.0 else resample_time(feat, p), a.hop_seconds) @ allrefs.T
                per_ref = [float(sims[:, owner == i].max(1).mean()) for i in range(len(refs[last]))]
                per_probe.append(max(per_ref))
            impostor[last].append(per_probe[0])
            if probes:
                impostor["+probe"].append(max(per_probe))
            bar.advance(task)

    print(f"\n{len(positives)} references, {args.excerpt:.0f} s excerpts; MaxMean median / p10")
    print(f"{'condition':>14}  " + "  ".join(f"{c:>15}" for c in cols))
    for kind, factor in conditions:
        row = scores[(kind, factor)]
        print(f"{kind + ' ' + format(factor, '.3f'):>14}  " + "  ".join(
            f"{np.median(row[c]):7.3f} / {np.percentile(row[c], 10):5.3f}" for c in cols))
    print(f"\n{len(negatives)} unrelated excerpts, best MaxMean over all references: median / p90 / max")
    for name, vals in impostor.items():
        print(f"{name:>14}  {np.median(vals):.3f} / {np.percentile(vals, 90):.3f} / {max(vals):.3f}")


if __name__ == "__main__":
    main()
