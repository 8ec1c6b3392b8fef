"""ops/train/ship-model.py, the release step: refuses a model no better than untrained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from train_helpers import TINY_ENCODER

from streamcover.config import PROJECT_ROOT
from streamcover.model.checkpoint import load_checkpoint, save_checkpoint
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder


def _ship_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ship_model", PROJECT_ROOT / "ops" / "train" / "ship-model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _eval_doc(model_map: float, untrained_map: float) -> dict:
    def system(full: float) -> dict:
        return {"full": {"map": full, "p_at_10": full / 2, "mr1": 3.0},
                "short": {"10": {"map": full / 3}, "30": {"map": full / 2}}}

    return {"data": "test split of tiny", "results": {
        "model (tiny-abc)": system(model_map), "untrained encoder": system(untrained_map)}}


def test_ship_writes_fp16_with_test_figures_and_refuses_worse(tmp_path: Path) -> None:
    ship = _ship_module()
    run = tmp_path / "run-x"
    run.mkdir()
    cfg = EncoderConfig.compact("hpcp", name="tiny", **TINY_ENCODER)
    torch.manual_seed(0)
    model = CoverEncoder(cfg)
    save_checkpoint(run / "best.pt", model, cfg,
                    provenance={"steps": 7, "metrics": {"val_map_full": 0.5}, "notes": "run x"})
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_eval_doc(0.4, 0.05)))
    out = tmp_path / "shipped.pt"
    assert ship.main([str(run), str(good), str(out)]) == 0
    shipped = load_checkpoint(out)
    metrics = shipped.provenance.metrics
    assert metrics["test_map_full"] == 0.4 and metrics["test_p10_full"] == 0.2
    assert metrics["test_map_30s"] == 0.2 and metrics["val_map_full"] == 0.5
    assert "shipped fp16 from run-x/best.pt" in shipped.provenance.notes
    assert out.stat().st_size < (run / "best.pt").stat().st_size  # fp16 weights
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(shipped.model.state_dict()[k], v, atol=1e-2, rtol=1e-2), k

    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(_eval_doc(0.05, 0.05)))
    assert ship.main([str(run), str(worse), str(tmp_path / "no.pt")]) == 1
    assert not (tmp_path / "no.pt").exists()
    lacking = tmp_path / "lacking.json"
    doc = _eval_doc(0.4, 0.05)
    del doc["results"]["untrained encoder"]
    lacking.write_text(json.dumps(doc))
    assert ship.main([str(run), str(lacking), str(tmp_path / "no.pt")]) == 2
    assert ship.main([]) == 2


def test_ship_names_a_missing_checkpoint_or_a_bad_eval_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ship = _ship_module()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_eval_doc(0.4, 0.05)))
    assert ship.main([str(tmp_path / "empty-run"), str(good), str(tmp_path / "x.pt")]) == 2
    assert "best.pt" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    cfg = EncoderConfig.compact("hpcp", name="tiny", **TINY_ENCODER)
    save_checkpoint(run / "best.pt", CoverEncoder(cfg), cfg)
    for name, text in [("bad.json", "{not json"), ("list.json", "[1]"),
                       ("nomap.json", json.dumps({"results": {"model x": {},
                                                              "untrained y": {}}}))]:
        (tmp_path / name).write_text(text)
        assert ship.main([str(run), str(tmp_path / name), str(tmp_path / "x.pt")]) == 2, name
        assert name in capsys.readouterr().err
    assert ship.main([str(run), str(tmp_path / "absent.json"), str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()
