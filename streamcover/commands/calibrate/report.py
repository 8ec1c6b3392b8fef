"""What `streamcover calibrate` shows of a sweep: the run's own figures, the printed report
and the DET plot.

Rows and curves are the one-threshold sweep over every window (:func:`~streamcover.eval.detect.sweep`).
The operating point they mark is the calibration file's ``operating_point``: the decision
rule's, ``one_chunk_threshold`` for one-chunk queries and ``threshold`` from two chunks on
(:func:`~streamcover.eval.detect.two_point`), with that rule's false alarms and recall. It
is not the sweep's row at ``threshold``: there one-chunk windows count at ``threshold`` too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamcover.eval.detect import StreamResult, Sweep

TABLE_EVERY = 10  # the report table shows every this many grid thresholds


def run_figures(results: Sequence[StreamResult], threshold: float) -> dict[str, Any]:
    """What the run itself (the live StreamMatcher at the configured threshold) emitted."""
    from streamcover.eval.detect import class_keys

    neg = [r for r in results if r.kind == "negative"]
    detected: dict[str, list[int]] = {}
    for r in results:
        if r.kind == "negative":
            continue
        hit = any(k == "match" and ref == r.true_ref for k, ref, _ in r.events)
        for key in class_keys(r):
            detected.setdefault(key, []).append(int(hit))
    return {"threshold": threshold,
            "false_alarm_events": sum(sum(k == "match" for k, _, _ in r.events) for r in neg),
            "recall": {k: round(sum(v) / len(v), 4) for k, v in sorted(detected.items())}}


def _cells(label: str, row: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    recall = row["recall"]
    return [label, str(row["false_alarms"]), f"{row['fa_per_hour']:.3f}",
            str(row["wrong_reference_events"]),
            *[f"{recall[c]:.3f}" if c in recall else "-" for c in classes]]


def table_rows(sw: Sweep, op: Mapping[str, Any]) -> list[list[str]]:
    """The report table: threshold, FA, FA/h, wrong ref, then recall per class.

    One-threshold sweep rows every :data:`TABLE_EVERY` grid steps; the operating point
    (when reached) as the row marked ``*``, labelled "one-chunk / two-or-more threshold",
    with the calibration file's figures, placed by its two-or-more threshold.
    """
    classes = sorted(sw.recall)
    rows: list[tuple[float, list[str]]] = []
    for i in range(0, len(sw.thresholds), TABLE_EVERY):
        r = sw.row(i)
        rows.append((r["threshold"], _cells(f"{r['threshold']:.3f}", r, classes)))
    if op.get("reached"):
        label = f"* {op['one_chunk_threshold']:.3f} / {op['threshold']:.3f}"
        at = sum(t <= op["threshold"] for t, _ in rows)
        rows.insert(at, (op["threshold"], _cells(label, op, classes)))
    return [cells for _, cells in rows]


def det_marks(sw: Sweep, op: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Where the DET plot marks the operating point: per plotted class, (false alarms per
    stream-hour, zero drawn at half the floor as on the curves; miss rate), from ``op``."""
    if not op.get("reached"):
        return {}
    fa = max(float(op["fa_per_hour"]), 0.5 / sw.negative_hours)
    return {c: (fa, 1.0 - float(op["recall"][c])) for c in _plotted(sw) if c in op["recall"]}


def _plotted(sw: Sweep) -> list[str]:
    return sorted(c for c in sw.recall if not c.startswith("cover-"))


def plot_det(path: Path, sw: Sweep, op: Mapping[str, Any], title: str) -> None:
    """Miss rate against false alarms per stream-hour, one curve per class (one threshold),
    and the operating point ``op`` (the calibration file's) marked on each class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    fa = np.maximum(sw.fa_per_hour, 0.5 / sw.negative_hours)  # zero counts drawn at half the floor
    marks = det_marks(sw, op)
    for cls in _plotted(sw):
        (line,) = ax.plot(fa, 1.0 - sw.recall[cls], label=f"{cls} (n={sw.positives[cls]})")
        if cls in marks:
            ax.plot(*marks[cls], marker="*", ms=12, ls="none", color=line.get_color())
    target = op["target_fa_per_hour"]
    ax.axvline(target, color="grey", ls=":", lw=1)
    ax.axvline(1.0 / sw.negative_hours, color="grey", ls="--", lw=1,
               label=f"floor: 1 per {sw.negative_hours:.1f} h")
    if marks:
        ax.plot([], [], marker="*", ms=10, ls="none", color="black", label="operating point")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per stream-hour (unrelated real music)")
    ax.set_ylabel("miss rate")
    ax.set_ylim(0, 1.02)
    where = ("not reached" if not op.get("reached") else
             f"thresholds {op['one_chunk_threshold']:.3f} (one chunk) / {op['threshold']:.3f}")
    ax.set_title(f"{title}\noperating point ({target}/h): {where}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def print_report(doc: dict[str, Any], sw: Sweep, seconds: float,
                 written: tuple[Path, Path] | None, records: Path) -> None:
    """The figures on stdout: the data, the table (:func:`table_rows`), the run's and the
    operating point's figures, and what was written."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    d = doc["data"]
    con.print(f"model {doc['model_id']}; {d['negative_streams']} negative streams, "
              f"{d['negative_hours']:.2f} h; negative best scores: {doc['negative_best_scores']}")
    table = Table(title="false alarms per stream-hour and recall by threshold",
                  caption="one threshold for every window; * the operating point: "
                          "one-chunk / two-or-more-chunk threshold")
    table.add_column("threshold", no_wrap=True)
    for col in ["FA", "FA/h", "wrong ref", *sorted(sw.recall)]:
        table.add_column(col)
    for cells in table_rows(sw, doc["operating_point"]):
        table.add_row(*cells)
    con.print(table)
    con.print(f"run at threshold {doc['at_run_threshold']['threshold']}: {doc['at_run_threshold']}")
    con.print(f"operating point: {doc['operating_point']}")
    if written:
        con.print(f"wrote {written[0]} and {written[1]}")
    con.print(f"records: {records}; {seconds:.0f} s in all")


def print_live_report(live: Mapping[str, Any], rows: Sequence[Any], seconds: float,
                      written: Path | None, records: Path) -> None:
    """The live protocol's figures on stdout: the data, the sweep rows (``LiveCell``s: at
    the chosen chunk threshold, ``*`` the operating point), the point and what was written."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    d = live["data"]
    con.print(f"model {live['model_id']}; negatives: {d['negative_streams']} live streams, "
              f"{d['negative_hours']:.2f} h; sets: {d['sets']}, {d['set_hours']:.2f} h, "
              f"{d['pieces']} pieces ({d['piece_seconds']}), {d['interludes']} interludes")
    op = live["operating_point"]
    table = Table(title="live: false alarms per stream-hour and piece recall by threshold",
                  caption="false alarms: segments opened on unrelated music; * the operating point")
    for col in ("live/chunk", "FA", "FA/h", "recall", "wrong", "bound. s"):
        table.add_column(col, no_wrap=True)
    for c in rows:
        mark = "* " if op.get("reached") and abs(c.live_threshold - op["live_threshold"]) < 1e-9 \
            and abs(c.chunk_threshold - op["chunk_threshold"]) < 1e-9 else ""
        r = c.as_dict()
        table.add_row(f"{mark}{c.live_threshold:.3f} / {c.chunk_threshold:.3f}", str(r["false_alarms"]),
                      f"{r['fa_per_hour']:.3f}", f"{r['recall']:.3f} ({r['found']}/{r['pieces']})",
                      str(r["wrong_segments"]), "-" if r["boundary_error_s"] is None else f"{r['boundary_error_s']:.1f}")
    con.print(table)
    con.print(f"at the run's thresholds: {live['at_run_thresholds']}")
    con.print(f"operating point: {op}")
    con.print(f"levers: {live.get('levers')}")
    if written:
        con.print(f"wrote the live section of {written}")
    con.print(f"records: {records}; {seconds:.0f} s in all (sweep {live['sweep_seconds']} s)")
