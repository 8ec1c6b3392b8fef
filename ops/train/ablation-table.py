"""Print the ablation runs' validation figures as a markdown table.

Reads ``<runs>/ablation-*/val_log.csv`` and ``<runs>/recipe-*/val_log.csv`` (written by ``streamcover train``) and prints, per
run, full-length and 30 s mAP at each validation step, the difference of the last one from
``ablation-base``, and the training time.

    .venv/bin/python ops/train/ablation-table.py [--runs ~/.cache/streamcover/runs]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from streamcover.config import default_cache_dir

ORDER = ["ablation-base", "ablation-base-seed2", "ablation-global-only", "ablation-no-ibn",
         "ablation-no-bnneck", "ablation-avgpool", "ablation-maploss", "recipe-wide",
         "recipe-chunks"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=default_cache_dir() / "runs")
    args = ap.parse_args(argv)
    rows: dict[str, list[dict[str, str]]] = {}
    runs = [*args.runs.glob("ablation-*"), *args.runs.glob("recipe-*")]
    for run in sorted(runs, key=lambda p: (
            ORDER.index(p.name) if p.name in ORDER else len(ORDER), p.name)):
        log = run / "val_log.csv"
        if log.exists():
            with log.open(newline="") as fh:
                rows[run.name] = list(csv.DictReader(fh))
    if not rows:
        print(f"no ablation runs with validation logs under {args.runs}")
        return 1
    base = rows.get("ablation-base", [])
    base_last = (float(base[-1]["map_full"]), float(base[-1]["map_30s"])) if base else None
    print("| run | steps | full mAP by step | 30 s mAP by step | last vs base (full / 30 s) "
          "| hours |")
    print("|---|---|---|---|---|---|")
    for name, val in rows.items():
        steps = " / ".join(r["step"] for r in val)
        full = " / ".join(f"{float(r['map_full']):.3f}" for r in val)
        short = " / ".join(f"{float(r['map_30s']):.3f}" for r in val)
        diff = ""
        if base_last and name != "ablation-base" and val[-1]["step"] == base[-1]["step"]:
            diff = (f"{float(val[-1]['map_full']) - base_last[0]:+.3f} / "
                    f"{float(val[-1]['map_30s']) - base_last[1]:+.3f}")
        hours = float(val[-1]["elapsed_s"]) / 3600
        print(f"| {name} | {steps} | {full} | {short} | {diff} | {hours:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
