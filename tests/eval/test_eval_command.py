"""`streamcover eval` end to end: an SHS-format file, a split, the shipped checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamcover.config import PROJECT_ROOT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_helpers import synthetic_recordings, write_shs_npz

CHECKPOINT = PROJECT_ROOT / "models" / "streamcover-hpcp-compact.pt"


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="needs the shipped HPCP model")
def test_eval_writes_figures_under_the_chosen_score_rule(tmp_path: Path) -> None:
    recs = synthetic_recordings(8, 3, seed=5, frames=(90, 260))
    npz = write_shs_npz(tmp_path / "shs.npz", recs)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": sorted({r[0] for r in recs})}))
    docs = {}
    for rule in ("shorter_first", None):
        out = tmp_path / f"out-{rule}"
        cmd = [sys.executable, "-m", "streamcover", "eval", "--checkpoint", str(CHECKPOINT),
               "--shs", str(npz), "--split-file", str(split), "--split", "test",
               "--baselines", "none", "--durations", "30", "--threads", "1", "--out", str(out)]
        if rule:
            cmd += ["--score-rule", rule]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        docs[rule] = json.loads((out / "eval.json").read_text())
        assert (out / "eval.png").stat().st_size > 0
    assert docs["shorter_first"]["score_rule"] == "shorter_first"
    assert docs[None]["score_rule"] == "length_weighted"  # catalog.score_rule's default
    for doc in docs.values():
        (model,) = [v for k, v in doc["results"].items() if k.startswith("model")]
        assert doc["recordings"] == 24 and 0 < model["full"]["map"] <= 1
        assert set(model["short"]) == {"30"}
    bad = subprocess.run([sys.executable, "-m", "streamcover", "eval", "--score-rule", "longest"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
