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
    base = [sys.executable, "-m", "streamcover", "eval", "--checkpoint", str(CHECKPOINT),
            "--shs", str(npz), "--split-file", str(split), "--split", "test",
            "--baselines", "none", "--durations", "30", "--threads", "1"]
    for rule in ("shorter_first", None):
        out = tmp_path / f"out-{rule}"
        cmd = [*base, "--out", str(out)]
        if rule:
            cmd += ["--score-rule", rule, "--hop-seconds", "5"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        docs[rule] = json.loads((out / "eval.json").read_text())
        assert (out / "eval.png").stat().st_size > 0
    assert docs["shorter_first"]["score_rule"] == "shorter_first"
    assert docs[None]["score_rule"] == "length_weighted"  # catalog.score_rule's default
    # The chunk hop is the monitor's (audio.hop_seconds) unless asked otherwise.
    assert docs[None]["hop_s"] == 10.0 and docs["shorter_first"]["hop_s"] == 5.0
    assert docs[None]["window_s"] == 20.0
    too_long = subprocess.run([*base, "--hop-seconds", "25"], capture_output=True, text=True,
                              timeout=120)
    assert too_long.returncode != 0 and "--hop-seconds must be in (0, 20.0]" in too_long.stderr
    for doc in docs.values():
        (model,) = [v for k, v in doc["results"].items() if k.startswith("model")]
        assert doc["recordings"] == 24 and 0 < model["full"]["map"] <= 1
        assert set(model["short"]) == {"30"}
    bad = subprocess.run([sys.executable, "-m", "streamcover", "eval", "--score-rule", "longest"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
