"""Run both protocols for several systems and report: rich tables, a PNG plot, a JSON file."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamcover.data.tracks import TrackSet
from streamcover.eval.protocols import (
    SHORT_QUERY_SECONDS,
    ChunkSets,
    SetEmbedder,
    full_length,
    short_queries,
)
from streamcover.model.maxmean import ScoreRule


def evaluate_system(embed: SetEmbedder, tracks: TrackSet,
                    seconds: Sequence[float] = SHORT_QUERY_SECONDS, seed: int = 0,
                    short: bool = True, rule: ScoreRule = "length_weighted") -> dict[str, Any]:
    """Full-length and short-query figures of one system on one set of recordings."""
    t0 = time.time()
    refs = ChunkSets.from_list(embed([tracks.feature(i) for i in range(len(tracks))]))
    full, _ = full_length(refs, tracks.works, rule)
    out: dict[str, Any] = {"full": full.as_dict(), "short": {}}
    if short:
        for sec, m in short_queries(embed, tracks, refs, seconds, seed, rule).items():
            out["short"][f"{sec:g}"] = m.as_dict()
    out["seconds"] = round(time.time() - t0, 1)
    return out


def render_tables(results: dict[str, dict[str, Any]], title: str) -> None:
    """Print one table of full-length metrics and one of mAP by query length."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # logs and pipes: do not squeeze the columns
    t = Table(title=f"{title}: full-length protocol")
    for col in ("system", "mAP", "P@10", "MR1", "queries"):
        t.add_column(col, justify="right" if col != "system" else "left")
    for name, r in results.items():
        f = r["full"]
        t.add_row(name, f"{f['map']:.4f}", f"{f['p_at_10']:.4f}", f"{f['mr1']:.1f}",
                  str(f["n_queries"]))
    console.print(t)
    lengths = sorted({k for r in results.values() for k in r["short"]}, key=float)
    if lengths:
        s = Table(title=f"{title}: short queries vs full-length references (mAP)")
        s.add_column("system")
        for k in lengths:
            s.add_column(f"{k} s", justify="right")
        s.add_column("full", justify="right")
        for name, r in results.items():
            s.add_row(name, *[f"{r['short'][k]['map']:.3f}" if k in r["short"] else "-"
                              for k in lengths], f"{r['full']['map']:.3f}")
        console.print(s)


def save_plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """mAP against query length, one line per system; the full-length mAP as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in results.items():
        lengths = sorted(r["short"], key=float)
        xs = [float(k) for k in lengths]
        ys = [r["short"][k]["map"] for k in lengths]
        line = ax.plot(xs, ys, marker="o", label=name)[0] if xs else None
        full_x = (max(xs) if xs else 60.0) + 15.0
        ax.scatter([full_x], [r["full"]["map"]], marker="*", s=120,
                   color=line.get_color() if line is not None else None,
                   label=None if line is not None else name)
    ax.set_xlabel("query length (s); star = full-length query")
    ax.set_ylabel("mAP")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
