"""Write a run's best encoder as the shipped fp16 model, with test figures in its provenance.

Usage:
    .venv/bin/python ops/train/ship-model.py RUN_DIR EVAL_JSON [OUT]

Refuses to ship (exit 1) unless the model beats the untrained encoder on the test split's
full-length mAP; exit 2 when RUN_DIR has no usable best.pt or EVAL_JSON does not hold both
(see `streamcover eval --baselines untrained`). docs/training.md, "Releasing a model".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streamcover.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, eval_json = Path(argv[0]), Path(argv[1])
    out = Path(argv[2]) if len(argv) == 3 else Path("models/streamcover-hpcp-compact.pt")
    try:
        loaded = load_checkpoint(run_dir / "best.pt")
    except CheckpointError as exc:
        print(f"cannot ship: {exc}", file=sys.stderr)
        return 2
    try:
        doc = json.loads(eval_json.read_text(encoding="utf-8"))
        results = doc["results"]
        model_key = next((k for k in results if k.startswith("model")), None)
        base_key = next((k for k in results if k.startswith("untrained")), None)
        if model_key is None or base_key is None:
            print(f"{eval_json} needs both the model and the untrained baseline",
                  file=sys.stderr)
            return 2
        m_full = float(results[model_key]["full"]["map"])
        b_full = float(results[base_key]["full"]["map"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        print(f"{eval_json} is not an eval.json of `streamcover eval`: {exc!r}",
              file=sys.stderr)
        return 2
    if not m_full > b_full:
        print(f"not shipping: model full-length mAP {m_full:.4f} <= untrained {b_full:.4f}",
              file=sys.stderr)
        return 1
    metrics = {"test_map_full": m_full, "test_p10_full": results[model_key]["full"]["p_at_10"],
               "test_mr1_full": results[model_key]["full"]["mr1"]}
    for sec, m in results[model_key]["short"].items():
        metrics[f"test_map_{sec}s"] = m["map"]
    prov = loaded.provenance.model_dump()
    prov["metrics"] = {**prov.get("metrics", {}), **metrics}
    prov["notes"] = (prov.get("notes", "") + f"; shipped fp16 from {run_dir.name}/best.pt; "
                     f"test split {doc.get('data', '')}").strip("; ")
    mid = save_checkpoint(out, loaded.model, loaded.cfg, provenance=prov, half=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), model id {mid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
